"""Model zoo: CIFAR variants of ResNet-18/20/34, VGG-11/16, a small MobileNet-style SiLU network, and a
small MNIST CNN.

Defined here (not imported from torchvision) because torchvision does not import beside the
pinned CPU torch. The CIFAR ResNets follow He et al. (CVPR 2016): ResNet-20 is the 3-stage
(16/32/64 channel) network of §4.2; ResNet-18/34 are the 4-stage ImageNet layouts with a 3x3
stem and no stem max-pool, as commonly used for CIFAR. Every nonlinearity is a module (``nn.ReLU``,
``nn.SiLU``, ``nn.Sigmoid``) so that conversion can replace it one-for-one.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from snnconv.errors import SnnconvError


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            # Projection shortcut (option B): keeps the block a pure conv/BN/add graph.
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, widths: list[int], blocks: list[int], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    """VGG-16 with BN for 32x32 inputs (Simonyan & Zisserman 2015, CIFAR variant).

    ``pool='avg'`` swaps max-pooling for average pooling, the usual choice before conversion
    because average pooling is linear and converts exactly.
    """

    def __init__(self, cfg=_VGG16, num_classes: int = 10, in_channels: int = 3, pool: str = "max"):
        super().__init__()
        layers, cin = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(cin, 512), nn.ReLU(), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): ``x * sigmoid(fc2(silu(fc1(mean(x)))))``."""

    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, max(8, c // r), 1), nn.SiLU(), \
            nn.Conv2d(max(8, c // r), c, 1), nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 / EfficientNet block: 1x1 expand, 3x3 depthwise, squeeze-excite, 1x1 project (SiLU)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        mid = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            SqueezeExcite(mid), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetSiLU(nn.Module):
    """A small MobileNetV2/EfficientNet-style CIFAR network (about 0.2M parameters): depthwise-separable
    inverted residuals with SiLU and squeeze-excitation (Sandler et al. 2018; Tan & Le 2019), the kind of
    smooth-activation backbone snnconv converts with function neurons. Expansion 3, the first block at
    stride 2 (16x16 maps): about 5x cheaper to train on a CPU than full-resolution blocks."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        # stride 2 in the first block: depthwise layers at 32x32 dominate the CPU time otherwise
        cfg = [(16, 24, 2), (24, 24, 1), (24, 40, 2), (40, 40, 1), (40, 80, 2), (80, 80, 1)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(*[InvertedResidual(a, b, s, expand=3) for a, b, s in cfg])
        self.head = nn.Sequential(nn.Conv2d(80, 160, 1, bias=False), nn.BatchNorm2d(160), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(160, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class MnistCNN(nn.Module):
    """Small 3-conv + 2-fc CNN for 28x28 digits (about 33k parameters, 130 KB in fp32)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.AvgPool2d(2)]
        self.features = nn.Sequential(*block(in_channels, 16), *block(16, 32), *block(32, 32))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 3 * 3, 64)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(self.features(x)))))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda **kw: ResNet([64, 128, 256, 512], [2, 2, 2, 2], **kw),
    "resnet20": lambda **kw: ResNet([16, 32, 64], [3, 3, 3], **kw),
    "resnet34": lambda **kw: ResNet([64, 128, 256, 512], [3, 4, 6, 3], **kw),
    "vgg16": lambda **kw: VGG(**kw),
    "vgg16_avg": lambda **kw: VGG(pool="avg", **kw),
    "vgg11": lambda **kw: VGG(_VGG11, **kw),
    "vgg11_avg": lambda **kw: VGG(_VGG11, pool="avg", **kw),
    "mobilenet_silu": lambda **kw: MobileNetSiLU(**kw),
    "mnist_cnn": lambda **kw: MnistCNN(**kw),
}


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Instantiate a zoo model by name; raises a one-line :class:`SnnconvError` for unknown names."""
    if name not in MODELS:
        raise SnnconvError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))}, or a path to a .pt/.onnx file)")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
