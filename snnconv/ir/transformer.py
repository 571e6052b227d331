r"""Transformer nodes: layer norm, elementwise activations, softmax, matmul, embeddings, tensor views,
and the signed (bipolar) multi-level IF neuron used to convert them.

Dimensions are counted *with* the batch dimension (dim 0 is the batch; a transformer activation is
``[B, S, D]``, attention scores ``[B, H, S, S]``); nodes store negative dims where possible so the
simulator's ``[T*B, ...]`` time batching never shifts them.

Nodes with ``operator = True`` (layer norm, nonlinear activations, softmax, matmul of two dynamic
inputs) have no spiking form: in the SNN they are *spiking-operator* nodes that apply the ANN
function to the running average of their inputs and emit the difference of successive
(time-weighted) outputs (accumulate-and-difference coding, see
:mod:`snnconv.runtime.operators`). ``snnconv.passes.spiking_transformer.spiking_census`` lists
them separately from true spiking nodes.
"""
from __future__ import annotations

import dataclasses

import torch

from snnconv.ir.node import Node, register_node

ACTIVATIONS = ("gelu", "gelu_tanh", "tanh", "sigmoid", "silu", "relu", "hardswish", "hardsigmoid")


@register_node
@dataclasses.dataclass(eq=False)
class LayerNorm(Node):
    r"""Layer normalisation over the last ``ndim`` dimensions:
    :math:`y = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`, with :math:`\mu, \sigma^2`
    the mean and (biased) variance over those dimensions of each token."""

    kind = "layernorm"
    operator = True
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    eps: float = 1e-5
    normalized_shape: tuple = ()

    def __post_init__(self):
        if not self.normalized_shape:
            if self.weight is None:
                raise ValueError("layernorm needs normalized_shape or a weight")
            self.normalized_shape = tuple(self.weight.shape)


@register_node
@dataclasses.dataclass(eq=False)
class Activation(Node):
    r"""Elementwise nonlinearity :math:`y = f(x)`: ``gelu`` :math:`x\,\Phi(x)`, ``gelu_tanh`` (tanh
    approximation), ``tanh``, ``sigmoid`` :math:`1/(1+e^{-x})`, ``silu`` :math:`x/(1+e^{-x})`, ``relu``,
    ``hardswish`` :math:`x\,\mathrm{relu6}(x+3)/6`, ``hardsigmoid`` :math:`\mathrm{relu6}(x+3)/6`."""

    kind = "activation"
    operator = True
    fn: str = "gelu"

    def __post_init__(self):
        if self.fn not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.fn!r}")


@register_node
@dataclasses.dataclass(eq=False)
class Softmax(Node):
    r""":math:`y_i = e^{x_i} / \sum_j e^{x_j}` along ``dim`` (negative: counted from the end)."""

    kind = "softmax"
    operator = True
    dim: int = -1


@register_node
@dataclasses.dataclass(eq=False)
class MatMul(Node):
    r"""Batched matrix product of two dynamic inputs, :math:`Y = A B` over the last two dimensions
    (attention scores :math:`QK^\top` and the weighted values :math:`PV`)."""

    kind = "matmul"
    arity = (2, 2)
    operator = True


@register_node
@dataclasses.dataclass(eq=False)
class Mul(Node):
    r"""Elementwise product of two dynamic inputs with broadcasting, :math:`y = a \odot b` (the gate of a
    squeeze-and-excitation block, :math:`x \odot \sigma(\mathrm{fc}(\bar x))`). No spiking form: an operator
    node on the running averages of both inputs, like :class:`MatMul`."""

    kind = "mul"
    arity = (2, 2)
    operator = True


@register_node
@dataclasses.dataclass(eq=False)
class Embedding(Node):
    r"""Table lookup :math:`y_{s} = E[\mathrm{id}_s]`; the input holds token ids (as floats, cast to
    integers). Computed on the input side: with direct coding it runs once per sample."""

    kind = "embedding"
    weight: torch.Tensor
    padding_idx: int | None = None


@register_node
@dataclasses.dataclass(eq=False)
class Permute(Node):
    """Permutation of the dimensions, ``dims`` counted with the batch (``dims[0]`` must be 0)."""

    kind = "permute"
    dims: tuple = ()

    def __post_init__(self):
        if self.dims and self.dims[0] != 0:
            raise ValueError("permute must keep the batch dimension first")


@register_node
@dataclasses.dataclass(eq=False)
class Select(Node):
    """``x.select(dim, index)`` on a non-batch dimension (the dimension is removed)."""

    kind = "select"
    dim: int = 1
    index: int = 0


@register_node
@dataclasses.dataclass(eq=False)
class Slice(Node):
    """``x[..., start:end:step, ...]`` along a non-batch dimension ``dim``."""

    kind = "slice"
    dim: int = 1
    start: int = 0
    end: int | None = None
    step: int = 1


@register_node
@dataclasses.dataclass(eq=False)
class ConcatConst(Node):
    r"""Concatenate a per-sample constant ``value`` (e.g. a ViT class token) before (``first``) or after
    the input along ``dim``: :math:`y = [c; x]` with :math:`c` broadcast over the batch."""

    kind = "concat_const"
    value: torch.Tensor
    dim: int = 1
    first: bool = True


@register_node
@dataclasses.dataclass(eq=False)
class SignedNeuron(Node):
    r"""Signed (bipolar) multi-level integrate-and-fire neuron with reset by subtraction.

    .. math::
        v_t = v_{t-1} + I_t, \qquad
        s_t = \mathrm{clip}(\lfloor v_t/\theta + \tfrac12 \rfloor, -L, L), \qquad
        v_t \leftarrow v_t - \theta s_t, \qquad o_t = \theta s_t

    with :math:`v_0 = 0`, threshold :math:`\theta` (scalar or one per feature of the last
    dimension) and at most :math:`L` = ``levels`` spikes of either sign per step; ``levels = 0``
    removes the cap (a graded spike carries any integer count, as on Loihi 2). The thresholds sit
    at :math:`\pm\theta/2, \pm 3\theta/2, \dots` (rounding instead of flooring: the
    half-threshold initialisation of Bu et al., ICLR 2022, applied symmetrically). The running mean
    of the output tracks :math:`\bar I` (clipped to :math:`[-L\theta, L\theta]` when capped) with
    error at most :math:`\theta/(2t)`. Negative spikes follow the signed neuron of Kim et al.
    (AAAI 2020, Spiking-YOLO) and the bipolar ST-BIF neuron of You et al. (ICML 2024,
    SpikeZIP-TF), without the ST-BIF spike-count bounds.
    """

    kind = "signed_neuron"
    spiking = True
    threshold: torch.Tensor
    levels: int = 8

    def __post_init__(self):
        if self.levels < 0:
            raise ValueError("levels must be >= 0 (0: no cap on spikes per step)")
        if torch.any(self.threshold <= 0):
            raise ValueError("thresholds must be positive")

    def describe(self) -> str:
        th = self.threshold
        thr = f"{th.item():.4g}" if th.numel() == 1 else f"[{th.numel()} features, mean {th.mean().item():.4g}]"
        return f"signed IF theta={thr} levels={'+-' + str(self.levels) if self.levels else 'uncapped'}"




#: kinds run as accumulate-and-difference operator nodes in the SNN
OPERATOR_KINDS = frozenset(k for k, c in {"layernorm": LayerNorm, "activation": Activation, "softmax": Softmax,
                                           "matmul": MatMul, "mul": Mul}.items() if c.operator)

__all__ = ["LayerNorm", "Activation", "Softmax", "MatMul", "Embedding", "Permute", "Select", "Slice",
           "ConcatConst", "SignedNeuron", "OPERATOR_KINDS", "ACTIVATIONS"]
