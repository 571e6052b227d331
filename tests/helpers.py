"""Helpers shared by several test modules (imported as ``helpers``; tests/ is on sys.path)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) * 1.0 + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
    return model.eval()


def reference_if(current: torch.Tensor, theta: float, v_init: float = 0.0, reset: str = "subtract",
                 levels: int = 1) -> torch.Tensor:
    """Straightforward per-step IF neuron (independent of snnconv): spike counts ``[T, ...]`` for
    input currents ``[T, ...]``, scalar threshold ``theta`` and initial potential ``v_init * theta``."""
    v = torch.full_like(current[0], v_init * theta)
    counts = []
    for t in range(current.shape[0]):
        v = v + current[t]
        if levels == 1:
            s = (v >= theta).to(current.dtype)
        else:
            s = torch.clamp(torch.floor(v / theta), 0, levels)
        v = v - s * theta if reset == "subtract" else torch.where(s > 0, torch.zeros_like(v), v)
        counts.append(s)
    return torch.stack(counts)


class SplitNet(nn.Module):
    """torch.chunk, Tensor.split (list and int sizes), strided and negative-index slicing on the channel axis."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.l = nn.Linear(4 * 8 * 8, 6)

    def forward(self, x):
        y = torch.relu(self.c(x))
        a, b = torch.chunk(y, 2, dim=1)
        c, d = y.split([3, 5], dim=1)
        e = y.split(4, dim=1)[1]
        z = self.l(torch.flatten(a + b + d[:, 1:] + e + c[:, :1] + y[:, 1:8:2] + y[:, -4:], 1))
        p, q = z.split(3, dim=-1)
        return torch.cat([q, p], dim=1)


class LeakyUp(nn.Module):
    """LeakyReLU, nearest and bilinear upsampling, concat: ops both frontends used to refuse."""

    def __init__(self):
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 16 * 16 * 2, 5)

    def forward(self, x):
        y = nn.functional.leaky_relu(self.c(x), 0.1)
        a = nn.functional.interpolate(y, scale_factor=2, mode="nearest")
        b = nn.functional.interpolate(self.d(y), scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(torch.cat([a, b], 1).flatten(1))


class Decoder(nn.Module):
    """Encoder-decoder with transposed convolutions (strided, padded, output padding, grouped, BN after)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.up2 = nn.ConvTranspose2d(6, 4, 2, stride=1, groups=2, dilation=2)
        self.head = nn.Linear(4 * 10 * 10, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        y = torch.relu(self.bn(self.up1(torch.relu(self.enc(x)))))
        return self.head(torch.relu(self.up2(y)).flatten(1))


def conv1d_net() -> nn.Module:
    """Conv1d: strided, padded, dilated and grouped."""
    return nn.Sequential(nn.Conv1d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv1d(8, 4, 3, dilation=2, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12, 5))


#: the op networks of issue 18 point 4 with their per-sample input shapes (tests and scripts/bench_generality.py)
OP_NETS = {"conv1d": (conv1d_net, (3, 32)), "leaky_relu+upsample": (LeakyUp, (3, 8, 8)),
           "conv_transpose2d": (Decoder, (3, 8, 8)), "chunk+split+slice": (SplitNet, (3, 8, 8))}


def torch_to_onnx(model: nn.Module, shape: tuple, path: Path) -> Path:
    """The legacy (TorchScript) exporter: works offline without onnxscript; dynamic batch axis."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, *shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path
