"""Synaptic layers: 2-D convolution and transposed convolution, affine (linear) and batch normalisation.

Conv/linear nodes may carry quantized weights (set by the ``quantize`` pass): ``weight_int`` (integer
codes), ``weight_scale`` (broadcastable to ``weight``) and ``bits``; ``weight`` then holds exactly
``weight_int * weight_scale`` so the simulator and exporters use the quantized values.
"""
from __future__ import annotations

import dataclasses

import torch

from snnconv.ir.node import Node, register_node


def _check_quantized(node) -> None:
    if node.weight_int is None:
        return
    if node.weight_int.shape != node.weight.shape or node.weight_int.is_floating_point():
        raise ValueError(f"{node.kind} weight_int must be an integer tensor shaped like the weight")
    if node.weight_scale is None or node.bits is None:
        raise ValueError(f"{node.kind} weight_int needs weight_scale and bits")


def _synaptic_params(node) -> int:
    """Weights and biases only (integer codes and scales restate the weight, they are not extra parameters)."""
    return node.weight.numel() + (node.bias.numel() if node.bias is not None else 0)


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
    weight_int: torch.Tensor | None = None  # integer codes (quantize pass); weight == weight_int * weight_scale
    weight_scale: torch.Tensor | None = None
    bits: int | None = None

    def __post_init__(self):
        if self.weight.dim() != 4:
            raise ValueError(f"conv2d weight must be 4-D, got {tuple(self.weight.shape)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise ValueError("conv2d bias must have one entry per output channel")
        _check_quantized(self)

    def num_params(self) -> int:
        return _synaptic_params(self)


@register_node
@dataclasses.dataclass(eq=False)
class ConvTranspose2d(Node):
    r"""2-D transposed convolution (the adjoint of a strided convolution; decoders, upsampling heads):
    :math:`y = W^\top \star_s x + b`, weight ``[C_in, C_out / groups, kH, kW]`` as in PyTorch, with stride,
    padding, output padding, dilation and groups."""

    kind = "conv_transpose2d"
    synaptic = True
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    output_padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    weight_int: torch.Tensor | None = None
    weight_scale: torch.Tensor | None = None
    bits: int | None = None

    def __post_init__(self):
        if self.weight.dim() != 4:
            raise ValueError(f"conv_transpose2d weight must be 4-D, got {tuple(self.weight.shape)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[1] * self.groups,):
            raise ValueError("conv_transpose2d bias must have one entry per output channel")
        _check_quantized(self)

    def out_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    def num_params(self) -> int:
        return _synaptic_params(self)


@register_node
@dataclasses.dataclass(eq=False)
class Linear(Node):
    r"""Affine map over the last dimension: :math:`y = W x + b`."""

    kind = "linear"
    synaptic = True
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    weight_int: torch.Tensor | None = None  # integer codes (quantize pass); weight == weight_int * weight_scale
    weight_scale: torch.Tensor | None = None
    bits: int | None = None

    def __post_init__(self):
        if self.weight.dim() != 2:
            raise ValueError(f"linear weight must be 2-D, got {tuple(self.weight.shape)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise ValueError("linear bias must have one entry per output feature")
        _check_quantized(self)

    def num_params(self) -> int:
        return _synaptic_params(self)


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
