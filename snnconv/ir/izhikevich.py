r"""Izhikevich neuron (Izhikevich, IEEE Trans. Neural Netw. 14(6), 2003, "Simple model of spiking
neurons").

.. math::
    \dot v = 0.04 v^2 + 5 v + 140 - u + I, \qquad \dot u = a\,(b v - u)

.. math::
    \text{if } v \ge v_\mathrm{peak}\ (30\ \mathrm{mV}):\quad s = 1,\ v \leftarrow c,\ u \leftarrow u + d;
    \qquad o = A\, s

:math:`v` in mV, time in ms, :math:`I` the injected current (dimensionless, Izhikevich's units).
The node's input is :math:`I` for each simulator step.

**Discretisation: forward Euler** with step ``dt`` ms (default 0.5 ms, as in Izhikevich's
published code), ``substeps`` Euler steps per simulator step (the input is held over them), so
one simulator step lasts ``dt * substeps`` ms (default 1 ms). Both :math:`v` and :math:`u` are
advanced from the values at the start of the Euler step; the threshold test ``v >= v_peak`` and
the reset are applied after every Euler step. ``counts`` per simulator step is the number of
spikes in it (0 or 1 unless a step is longer than the shortest inter-spike interval).
Initial state :math:`v_0` = ``v_init``, :math:`u_0 = b v_0`.

Presets (:meth:`Izhikevich.preset`) are the cortical classes of the 2003 paper.
"""
from __future__ import annotations

import dataclasses

from snnconv.ir.node import Node, register_node

PRESETS = {
    "regular_spiking": dict(a=0.02, b=0.2, c=-65.0, d=8.0),
    "intrinsically_bursting": dict(a=0.02, b=0.2, c=-55.0, d=4.0),
    "chattering": dict(a=0.02, b=0.2, c=-50.0, d=2.0),
    "fast_spiking": dict(a=0.1, b=0.2, c=-65.0, d=2.0),
}


@register_node
@dataclasses.dataclass(eq=False)
class Izhikevich(Node):
    kind = "izhikevich"
    spiking = True
    a: float = 0.02  # recovery time scale (1/ms)
    b: float = 0.2  # recovery sensitivity to v
    c: float = -65.0  # after-spike reset of v (mV)
    d: float = 8.0  # after-spike increment of u
    v_peak: float = 30.0  # spike cut-off (mV)
    v_init: float = -65.0  # initial membrane potential (mV)
    dt: float = 0.5  # Euler step (ms)
    substeps: int = 2  # Euler steps per simulator step
    amplitude: float = 1.0

    def __post_init__(self):
        if self.dt <= 0:
            raise ValueError("dt must be positive")
        if isinstance(self.substeps, bool) or not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError("substeps must be a positive integer")
        if self.a <= 0:
            raise ValueError("a must be positive")
        if self.c >= self.v_peak:
            raise ValueError("reset value c must be below v_peak")
        if self.v_init >= self.v_peak:
            raise ValueError("v_init must be below v_peak")
        if self.amplitude <= 0:
            raise ValueError("amplitude must be positive")

    @classmethod
    def preset(cls, name: str, **overrides) -> "Izhikevich":
        """A neuron of one of the classes in :data:`PRESETS` (``regular_spiking``, ``fast_spiking``,
        ``chattering``, ``intrinsically_bursting``); ``overrides`` set any other field."""
        if name not in PRESETS:
            raise ValueError(f"unknown Izhikevich preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
