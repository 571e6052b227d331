"""Pooling nodes: average, max and adaptive average pooling over 2-D feature maps."""
from __future__ import annotations

import dataclasses

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class AvgPool2d(Node):
    r"""Average pooling, :math:`y = \frac{1}{k^2}\sum_{window} x`; linear, so it converts exactly."""

    kind = "avgpool2d"
    synaptic = True  # a sum-pool with weight 1/k^2: counts as synaptic operations
    kernel_size: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True


@register_node
@dataclasses.dataclass(eq=False)
class MaxPool2d(Node):
    """Max pooling. In the SNN it is run with the gating scheme of the simulator (see runtime)."""

    kind = "maxpool2d"
    kernel_size: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    ceil_mode: bool = False


@register_node
@dataclasses.dataclass(eq=False)
class AdaptiveAvgPool2d(Node):
    """Adaptive average pooling to ``output_size`` (global average pooling when (1, 1))."""

    kind = "adaptive_avgpool2d"
    synaptic = True
    output_size: tuple = (1, 1)


@register_node
@dataclasses.dataclass(eq=False)
class Upsample(Node):
    """Resize each map to ``size`` (H, W): ``nearest`` (copies) or ``bilinear`` (a fixed linear interpolation,
    ``align_corners`` as in PyTorch). Linear in its input, so spike trains pass through it unchanged in rate."""

    kind = "upsample"
    size: tuple = ()
    mode: str = "nearest"
    align_corners: bool = False

    def __post_init__(self):
        if self.mode not in ("nearest", "bilinear"):
            raise ValueError(f"upsample mode must be 'nearest' or 'bilinear', got {self.mode!r}")
