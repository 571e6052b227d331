r"""Adaptive leaky integrate-and-fire neuron (ALIF; Bellec et al., NeurIPS 2018, "Long short-term
memory and learning-to-learn in networks of spiking neurons").

An LIF neuron whose threshold rises by :math:`b` with every spike and relaxes back to
:math:`\vartheta_0` with decay :math:`\rho` per step (spike-frequency adaptation). Per step t, with
input :math:`x_t`:

.. math::
    v_t = \beta\, v_{t-1} + x_t, \qquad
    \vartheta_t = \vartheta_0 + b\, a_{t-1}, \qquad
    s_t = \begin{cases} 1 & v_t \ge \vartheta_t \\ 0 & \text{else} \end{cases}

.. math::
    v_t \leftarrow \begin{cases} v_t - \vartheta_t s_t & \text{reset = subtract} \\
                                 v_\mathrm{reset} & \text{reset = zero},\ s_t = 1 \end{cases}, \qquad
    a_t = \rho\, a_{t-1} + s_t, \qquad o_t = A\, s_t

(:math:`A` = ``amplitude``). The threshold test is ``v >= theta_t``; :math:`a_0 = 0`, :math:`v_0 = 0`.
With :math:`b = 0` this is exactly :class:`~snnconv.ir.SpikingNeuron` with ``model="lif"``.

**Discretisation.** One step is a bin of width :math:`\Delta t`; the model is the exact
step-to-step solution of :math:`\tau_m \dot v = -v + R\,i`, :math:`\tau_a \dot a = -a + \sum_k
\tau_a\delta(t-t_k)` for input held constant over a step: :math:`\beta = e^{-\Delta t/\tau_m}`,
:math:`\rho = e^{-\Delta t/\tau_a}`, :math:`x_t = (1-\beta)R\,i_t` (see :meth:`from_time_constants`).
Bellec et al. write :math:`a_{t+1} = \rho a_t + (1-\rho) s_t` and :math:`\vartheta = b_0 + \beta_B a`,
which is this node with :math:`b = \beta_B (1-\rho)`.
"""
from __future__ import annotations

import dataclasses
import math

from snnconv.ir.neurons import RESET_MODES
from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class AdaptiveLIF(Node):
    kind = "adaptive_lif"
    spiking = True
    threshold: float = 1.0  # theta_0, baseline threshold
    leak: float = 0.9  # beta = exp(-dt / tau_mem)
    adapt_decay: float = 0.95  # rho = exp(-dt / tau_adapt)
    adapt_strength: float = 0.1  # b: threshold increase per unit of adaptation (one spike)
    reset: str = "subtract"
    v_reset: float = 0.0  # reset-to value for reset="zero"
    amplitude: float = 1.0

    def __post_init__(self):
        if self.threshold <= 0:
            raise ValueError("threshold must be positive")
        if not 0.0 < self.leak <= 1.0:
            raise ValueError("leak must be in (0, 1]")
        if not 0.0 <= self.adapt_decay < 1.0:
            raise ValueError("adapt_decay must be in [0, 1)")
        if self.adapt_strength < 0:
            raise ValueError("adapt_strength must be >= 0")
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {self.reset!r}")
        if self.v_reset != 0.0 and self.reset != "zero":
            raise ValueError("v_reset is only used with reset='zero'")
        if self.v_reset >= self.threshold:
            raise ValueError("v_reset must be below the threshold")
        if self.amplitude <= 0:
            raise ValueError("amplitude must be positive")

    @classmethod
    def from_time_constants(cls, tau_mem: float, tau_adapt: float, dt: float = 1.0, **kw) -> "AdaptiveLIF":
        """Node for membrane/adaptation time constants ``tau_mem``, ``tau_adapt`` and step ``dt``."""
        if min(tau_mem, tau_adapt, dt) <= 0:
            raise ValueError("time constants and dt must be positive")
        return cls(leak=math.exp(-dt / tau_mem), adapt_decay=math.exp(-dt / tau_adapt), **kw)
