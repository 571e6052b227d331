r"""Hodgkin-Huxley neuron: the squid giant axon model (Hodgkin & Huxley, J. Physiol. 117, 1952),
in the modern convention (rest at -65 mV, 6.3 degC).

.. math::
    C_m \dot V = I - \bar g_\mathrm{Na} m^3 h (V - E_\mathrm{Na}) - \bar g_\mathrm{K} n^4 (V - E_\mathrm{K})
                 - g_\mathrm{L} (V - E_\mathrm{L}), \qquad
    \dot x = \alpha_x(V)(1 - x) - \beta_x(V)\, x, \quad x \in \{m, h, n\}

.. math::
    \alpha_m = \frac{0.1 (V + 40)}{1 - e^{-(V+40)/10}},\ \beta_m = 4 e^{-(V+65)/18},\
    \alpha_h = 0.07 e^{-(V+65)/20},\ \beta_h = \frac{1}{1 + e^{-(V+35)/10}},

.. math::
    \alpha_n = \frac{0.01 (V + 55)}{1 - e^{-(V+55)/10}},\ \beta_n = 0.125 e^{-(V+65)/80}

Units: mV, ms, :math:`\mu\mathrm{F/cm^2}`, :math:`\mathrm{mS/cm^2}`, :math:`\mu\mathrm{A/cm^2}`
(the node's input is :math:`I` for each simulator step). Standard parameters are the defaults:
:math:`C_m = 1`, :math:`\bar g_\mathrm{Na} = 120`, :math:`\bar g_\mathrm{K} = 36`,
:math:`g_\mathrm{L} = 0.3`, :math:`E_\mathrm{Na} = 50`, :math:`E_\mathrm{K} = -77`,
:math:`E_\mathrm{L} = -54.387` (which puts rest at -65 mV).

**Spike.** :math:`s = 1` on an upward crossing of ``v_spike`` (0 mV) within the step:
:math:`V_\mathrm{before} < v_\mathrm{spike} \le V_\mathrm{after}`; there is no reset (the
dynamics repolarise by themselves). :math:`o = A\,s`.

**Discretisation: classical 4th-order Runge-Kutta** with step ``dt`` ms (default 0.01 ms),
``substeps`` RK4 steps per simulator step (default 10, so one simulator step is 0.1 ms), the
input held constant over them. The state starts at ``v_init`` with every gate at its steady
state :math:`x_\infty = \alpha_x / (\alpha_x + \beta_x)` there.
"""
from __future__ import annotations

import dataclasses

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class HodgkinHuxley(Node):
    kind = "hodgkin_huxley"
    spiking = True
    c_m: float = 1.0
    g_na: float = 120.0
    g_k: float = 36.0
    g_l: float = 0.3
    e_na: float = 50.0
    e_k: float = -77.0
    e_l: float = -54.387
    v_init: float = -65.0
    v_spike: float = 0.0  # spike detection level (upward crossing)
    dt: float = 0.01  # RK4 step (ms)
    substeps: int = 10  # RK4 steps per simulator step
    amplitude: float = 1.0

    def __post_init__(self):
        if self.c_m <= 0:
            raise ValueError("c_m must be positive")
        if min(self.g_na, self.g_k, self.g_l) < 0:
            raise ValueError("conductances must be non-negative")
        if self.dt <= 0:
            raise ValueError("dt must be positive")
        if isinstance(self.substeps, bool) or not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError("substeps must be a positive integer")
        if not self.e_k < self.e_na:
            raise ValueError("e_k must be below e_na")
        if self.amplitude <= 0:
            raise ValueError("amplitude must be positive")
