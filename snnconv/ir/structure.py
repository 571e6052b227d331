"""Structural nodes: graph input, residual add, concatenation, flatten/reshape, identity, scale."""
from __future__ import annotations

import dataclasses

import torch

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class Input(Node):
    """Graph input; ``shape`` is the per-sample shape (no batch dimension)."""

    kind = "input"
    arity = (0, 0)


@register_node
@dataclasses.dataclass(eq=False)
class Add(Node):
    r"""Elementwise sum of all inputs (residual connections): :math:`y = \sum_i x_i`."""

    kind = "add"
    arity = (2, None)


@register_node
@dataclasses.dataclass(eq=False)
class Concat(Node):
    """Concatenation of the inputs along ``dim`` (counted with the batch dimension, so 1 = channels)."""

    kind = "concat"
    arity = (1, None)
    dim: int = 1


@register_node
@dataclasses.dataclass(eq=False)
class Flatten(Node):
    """Flatten every dimension from ``start_dim`` (batch is dim 0) into one."""

    kind = "flatten"
    start_dim: int = 1


@register_node
@dataclasses.dataclass(eq=False)
class Reshape(Node):
    """Reshape each sample to ``target`` (batch dimension kept)."""

    kind = "reshape"
    target: tuple = ()


@register_node
@dataclasses.dataclass(eq=False)
class Identity(Node):
    """Pass-through (dropout at inference, no-op casts)."""

    kind = "identity"


@register_node
@dataclasses.dataclass(eq=False)
class Scale(Node):
    r"""Constant affine rescaling :math:`y = s \cdot x + c` (scalar or broadcastable tensors)."""

    kind = "scale"
    scale: torch.Tensor
    offset: torch.Tensor | None = None
