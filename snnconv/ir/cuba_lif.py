r"""Current-based leaky integrate-and-fire neuron with an exponential synapse (NIR ``CubaLIF``).

Continuous-time model (the same equations and field names as NIR's ``CubaLIF``):

.. math::
    \tau_\mathrm{syn}\, \dot I = -I + w_\mathrm{in}\, x(t), \qquad
    \tau_\mathrm{mem}\, \dot v = (v_\mathrm{leak} - v) + R\, I

.. math::
    s = \begin{cases} 1 & v \ge v_\mathrm{threshold} \\ 0 & \text{else} \end{cases}, \qquad
    v \leftarrow v_\mathrm{reset} \text{ if } s = 1, \qquad o = A\, s

**Discretisation: exact exponential integration** (Rotter & Diesmann 1999) of the linear
system over one step of width :math:`\Delta t` = ``dt``, with the input :math:`x_t` held constant
over the step (zero-order hold). With :math:`\alpha = e^{-\Delta t/\tau_\mathrm{syn}}`,
:math:`\beta = e^{-\Delta t/\tau_\mathrm{mem}}`, :math:`I^\infty_t = w_\mathrm{in} x_t`:

.. math::
    v_t = v_\mathrm{leak} + (v_{t-1} - v_\mathrm{leak})\beta + R\, I^\infty_t (1-\beta)
          + R\,(I_{t-1} - I^\infty_t)\,\kappa, \qquad
    I_t = I^\infty_t + (I_{t-1} - I^\infty_t)\,\alpha

.. math::
    \kappa = \frac{\tau_\mathrm{syn}}{\tau_\mathrm{syn} - \tau_\mathrm{mem}}(\alpha - \beta)
    \quad (\tau_\mathrm{syn} \ne \tau_\mathrm{mem}), \qquad
    \kappa = \frac{\Delta t}{\tau_\mathrm{mem}}\,\beta \quad (\tau_\mathrm{syn} = \tau_\mathrm{mem}).

This is exact (no truncation error) for piecewise-constant input; the only approximation is
that the threshold is tested at step ends (``v >= v_threshold``; NIR writes ``v > v_threshold``,
which differs only on a set of measure zero). A delta spike :math:`w\,\delta(t - t_k)` in NIR's
equation corresponds to :math:`x = 1/\Delta t` during one step. Initial state :math:`I_0 = 0`,
:math:`v_0 = v_\mathrm{leak}`. Times are in any unit, consistently (``dt``, ``tau_*``).
"""
from __future__ import annotations

import dataclasses

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class CubaLIF(Node):
    kind = "cuba_lif"
    spiking = True
    tau_syn: float = 5.0
    tau_mem: float = 10.0
    r: float = 1.0  # membrane resistance R
    v_leak: float = 0.0
    v_threshold: float = 1.0
    v_reset: float = 0.0
    w_in: float = 1.0
    dt: float = 1.0  # one simulator step, same time unit as tau_syn / tau_mem
    amplitude: float = 1.0

    def __post_init__(self):
        if self.tau_syn <= 0 or self.tau_mem <= 0:
            raise ValueError("tau_syn and tau_mem must be positive")
        if self.dt <= 0:
            raise ValueError("dt must be positive")
        if self.r <= 0:
            raise ValueError("r (membrane resistance) must be positive")
        if self.v_reset >= self.v_threshold:
            raise ValueError("v_reset must be below v_threshold")
        if self.amplitude <= 0:
            raise ValueError("amplitude must be positive")
