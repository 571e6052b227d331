"""Synaptic layers: 2-D convolution, affine (linear) and batch normalisation."""
from __future__ import annotations

import dataclasses

import torch

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class Conv2d(Node):
    r"""2-D convolution: :math:`y = W \star x + b` with stride, padding, dilation and groups."""

    kind = "conv2d"
    synaptic = True
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1

    def __post_init__(self):
        if self.weight.dim() != 4:
            raise ValueError(f"conv2d weight must be 4-D, got {tuple(self.weight.shape)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise ValueError("conv2d bias must have one entry per output channel")


@register_node
@dataclasses.dataclass(eq=False)
class Linear(Node):
    r"""Affine map over the last dimension: :math:`y = W x + b`."""

    kind = "linear"
    synaptic = True
    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __post_init__(self):
        if self.weight.dim() != 2:
            raise ValueError(f"linear weight must be 2-D, got {tuple(self.weight.shape)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise ValueError("linear bias must have one entry per output feature")


@register_node
@dataclasses.dataclass(eq=False)
class BatchNorm(Node):
    r"""Inference batch norm over dim 1: :math:`y = \gamma (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`."""

    kind = "batchnorm"
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    eps: float = 1e-5

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent per-channel affine map ``y = a * x + c``."""
        a = self.weight / torch.sqrt(self.running_var + self.eps)
        return a, self.bias - a * self.running_mean
