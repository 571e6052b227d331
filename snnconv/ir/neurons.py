r"""Spiking neuron node: integrate-and-fire (IF) and leaky IF (LIF), binary or multi-level spikes.

Dynamics per timestep t (direct input current :math:`I_t`, threshold :math:`\theta`, leak
:math:`\beta`; :math:`\beta = 1` is IF):

.. math::
    v_t = \beta\, v_{t-1} + I_t, \qquad
    s_t = \mathrm{clip}(\lfloor v_t / \theta \rfloor, 0, L) \ \text{(} L = \text{levels} \text{)}, \qquad
    o_t = \theta\, s_t

Reset by subtraction: :math:`v_t \leftarrow v_t - \theta s_t` (keeps the residue, so the firing
rate tracks :math:`\mathrm{clip}(I, 0, \theta)/\theta`; Rueckauer et al. 2017, Han et al. 2020).
Reset to zero: :math:`v_t \leftarrow 0` after a spike. The threshold test is ``v >= theta``.
With ``levels = 1`` spikes are binary; ``levels > 1`` is a multi-threshold (graded-spike)
neuron. The output carries the amplitude :math:`\theta` so downstream weights stay those of
the ANN; exporters fold it into the next layer. ``v_init`` is the initial membrane potential
as a fraction of :math:`\theta`.
"""
from __future__ import annotations

import dataclasses

import torch

from snnconv.ir.node import Node, register_node

RESET_MODES = ("subtract", "zero")


@register_node
@dataclasses.dataclass(eq=False)
class SpikingNeuron(Node):
    kind = "neuron"
    spiking = True
    threshold: torch.Tensor  # scalar (per layer) or [C] (per channel, dim 1)
    model: str = "if"  # "if" or "lif"
    leak: float = 1.0  # beta: membrane decay per step; 1.0 for IF
    reset: str = "subtract"
    levels: int = 1
    v_init: float = 0.0

    def __post_init__(self):
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {self.reset!r}")
        if self.model not in ("if", "lif"):
            raise ValueError(f"neuron model must be 'if' or 'lif', got {self.model!r}")
        if not 0.0 < self.leak <= 1.0:
            raise ValueError("leak must be in (0, 1]")
        if self.levels < 1:
            raise ValueError("levels must be >= 1")
        if torch.any(self.threshold <= 0):
            raise ValueError("thresholds must be positive")

    def describe(self) -> str:
        th = self.threshold
        thr = f"{th.item():.4g}" if th.numel() == 1 else f"[{th.numel()} ch, mean {th.mean().item():.4g}]"
        return f"{self.model.upper()} theta={thr} reset={self.reset} levels={self.levels} leak={self.leak} v0={self.v_init}"
