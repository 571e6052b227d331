r"""Function neuron: a signed multi-level spiking neuron whose spike count follows a smooth
nonlinearity :math:`f` (SiLU, GELU, sigmoid, tanh, hardswish, hardsigmoid) of its accumulated input.

Per step t, input current :math:`I_t`, threshold :math:`\theta` (scalar or one per channel, dim 1),
at most :math:`L` = ``levels`` spikes of either sign per step:

.. math::
    A_t = A_{t-1} + I_t, \qquad
    e_t = t\, f(A_t / t) - \theta\, n_{t-1}, \qquad
    s_t = \mathrm{clip}(\lfloor e_t/\theta + \tfrac12 \rfloor, -L, L), \qquad
    n_t = n_{t-1} + s_t, \qquad o_t = \theta\, s_t

with :math:`A_0 = n_0 = 0`. The neuron keeps two state variables: the integrated input :math:`A`
(a membrane without reset) and its net spike count :math:`n`. It fires whenever the charge it owes,
:math:`t f(\bar I_t)` with :math:`\bar I_t = A_t/t`, differs from what it has sent by half a threshold or
more, so the running mean of its output, :math:`\theta n_t / t`, tracks :math:`f(\bar I_t)` with error at most
:math:`\theta / (2t)` unless the per-step cap :math:`L` saturates (then the error is carried to later
steps, like a subtractive-reset IF neuron's residue). For :math:`f` = ReLU this is exactly the signed
IF neuron with memory (the owed charge is :math:`\max(A_t, 0)`); for a smooth :math:`f` it is the
*expectation compensation* of Huang et al. (ACM MM 2024, "Towards High-performance Spiking
Transformers from ANN to SNN Conversion", arXiv:2502.21193): the output at step t is the expected
output given the previous t steps minus what was already emitted, delivered as integer multiples of
:math:`\theta` (their multi-threshold neuron when :math:`L > 1`). Negative spikes follow the signed
neuron of Kim et al. (AAAI 2020, Spiking-YOLO); SiLU, GELU and hardswish have small negative lobes,
tanh is odd.

**What the hardware needs.** Besides signed (and, for :math:`L > 1`, graded) spikes, the neuron
evaluates :math:`f` once per step on its own state (a lookup table or a small microcode program on
programmable neuromorphic cores such as Loihi 2); the synapses downstream only accumulate its spikes.
Binary spikes (:math:`L = 1`) reach :math:`f` at a rate of one threshold per step, so at T = 1 the output is
:math:`\theta \cdot \mathrm{round}(f(I)/\theta)` clipped to :math:`[-\theta, \theta]`.
"""
from __future__ import annotations

import dataclasses

import torch

from snnconv.ir.node import Node, register_node

#: the nonlinearities a function neuron can follow
FUNCTIONS = ("silu", "gelu", "gelu_tanh", "sigmoid", "tanh", "hardswish", "hardsigmoid")


@register_node
@dataclasses.dataclass(eq=False)
class FunctionNeuron(Node):
    kind = "function_neuron"
    spiking = True
    fn: str
    threshold: torch.Tensor  # scalar or [C] (channel = dim 1)
    levels: int = 1

    def __post_init__(self):
        if self.fn not in FUNCTIONS:
            raise ValueError(f"function neuron: fn must be one of {FUNCTIONS}, got {self.fn!r}")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise ValueError("function neuron: levels must be a positive integer")
        if torch.any(self.threshold <= 0):
            raise ValueError("function neuron: thresholds must be positive")

    def describe(self) -> str:
        th = self.threshold
        thr = f"{th.item():.4g}" if th.numel() == 1 else f"[{th.numel()} ch, mean {th.mean().item():.4g}]"
        return f"{self.fn} neuron theta={thr} levels=+-{self.levels}"
