r"""Spiking neuron node: integrate-and-fire (IF) and leaky IF (LIF), binary or multi-level spikes.

Dynamics per timestep t (direct input current :math:`I_t`, threshold :math:`\theta`, leak
:math:`\beta`; :math:`\beta = 1` is IF):

.. math::
    v_t = \beta\, v_{t-1} + I_t, \qquad
    s_t = \mathrm{clip}(\lfloor v_t / \theta \rfloor, 0, L) \ \text{(} L = \text{levels} \text{)}, \qquad
    o_t = \theta\, s_t

**Threshold test.** A spike is emitted when :math:`v_t \ge \theta` (``levels = 1``; for
``levels > 1`` the count is :math:`\lfloor v_t/\theta \rfloor`, so :math:`v_t \ge \theta` is again the
test for at least one spike).

**Reset.** ``"subtract"``: :math:`v_t \leftarrow v_t - \theta s_t` (keeps the residue, so the firing
rate tracks :math:`\mathrm{clip}(I, 0, \theta)/\theta`; Rueckauer et al. 2017, Han et al. 2020).
``"zero"``: reset *to* ``v_reset`` (default 0, hence the name): :math:`v_t \leftarrow v_\mathrm{reset}`
after a spike. ``v_reset`` is an absolute membrane value (same units as :math:`\theta`) and is only
used by ``reset="zero"``.

**Refractory period.** ``refractory = r`` steps: after a spike at step t the neuron ignores its
input for steps :math:`t+1, \dots, t+r` and its membrane is held at the post-reset value (no leak,
no integration); it can fire again at step :math:`t+r+1` at the earliest, so the rate is at most
:math:`1/(r+1)` spikes per step.

**Discretisation.** One simulator step is one time bin of width :math:`\Delta t`. IF is exact
for :math:`\Delta t = 1` step (it is a discrete-time model). LIF is the exact solution of
:math:`\tau\, \dot v = -v + R\,i(t)` over one step for an input held constant over the step
(zero-order hold): :math:`\beta = e^{-\Delta t/\tau}` and the per-step input is
:math:`I_t = (1-\beta) R\, i_t`. The only discretisation error is that spikes are aligned to step
ends (a spike time is rounded up to the next step boundary, at most :math:`\Delta t`).

**Signed spikes** (``signed=True``; Wang et al., IJCAI 2022, "Signed Neuron with Memory";
Hu et al., TPAMI 2023, "Fast-SNN"): a neuron whose membrane is negative and which has emitted
more positive than negative spikes so far emits a negative spike,
:math:`s_t = \max(\lfloor v_t/\theta \rfloor, -\min(n_{t-1}, L))` for :math:`v_t < 0` (:math:`n` = net
spike count), reset by subtraction (:math:`v_t \leftarrow v_t - \theta s_t`, i.e. :math:`+\theta`). It
cancels spikes fired too early (over-firing) so the net count tracks the cumulative input; the
net output never goes below zero, so the rate still approximates a ReLU.

**Residual-membrane-potential pre-run** (``presim = tau > 0``; Hao et al., AAAI 2023, "Reducing
ANN-SNN Conversion Error through Residual Membrane Potential", SRP): after the first ``tau`` steps a
neuron whose membrane is not above zero (:math:`v \le 10^{-3}\theta`) is silenced for the rest of
the run, and every membrane restarts at ``v_init``; the readout then only counts steps after the
pre-run (see :mod:`snnconv.passes.srp`).

``v_offset`` (absolute, shaped like one sample's output, or ``[C]``) is added to the initial
membrane ``v_init * theta`` (potential calibration, :mod:`snnconv.passes.calibration`).

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
    v_init: float = 0.0  # fraction of theta
    v_reset: float = 0.0  # absolute reset-to value, used by reset="zero"
    refractory: int = 0  # steps the neuron ignores input after a spike
    signed: bool = False  # emit negative spikes to cancel earlier over-firing (net count stays >= 0)
    presim: int = 0  # SRP pre-run steps (0: off)
    v_offset: torch.Tensor | None = None  # absolute initial-membrane offset (potential calibration)

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
        if isinstance(self.refractory, bool) or not isinstance(self.refractory, int) or self.refractory < 0:
            raise ValueError(f"refractory must be a non-negative integer number of steps, got {self.refractory!r}")
        if self.v_reset != 0.0 and self.reset != "zero":
            raise ValueError("v_reset is only used with reset='zero'")
        if (self.signed or self.presim) and self.refractory:
            raise ValueError("signed spikes and the SRP pre-run are not supported with a refractory period")
        if isinstance(self.presim, bool) or not isinstance(self.presim, int) or self.presim < 0:
            raise ValueError(f"presim must be a non-negative integer number of steps, got {self.presim!r}")
        if torch.any(self.v_reset >= self.threshold):
            raise ValueError("v_reset must be below the threshold (else the neuron fires on every step)")

    def describe(self) -> str:
        th = self.threshold
        thr = f"{th.item():.4g}" if th.numel() == 1 else f"[{th.numel()} ch, mean {th.mean().item():.4g}]"
        extra = f" v_reset={self.v_reset}" if self.v_reset else ""
        extra += f" refractory={self.refractory}" if self.refractory else ""
        extra += " signed" if self.signed else ""
        extra += f" presim={self.presim}" if self.presim else ""
        extra += " v_offset" if self.v_offset is not None else ""
        return (f"{self.model.upper()} theta={thr} reset={self.reset} levels={self.levels} leak={self.leak} "
                f"v0={self.v_init}{extra}")
