"""Norse 1.1 target, built from Norse's own functional neuron pieces.

Reset to a value: ``norse.torch.functional.iaf.iaf_feed_forward_step`` (IF) or ``lif_box_feed_forward_step``
(LIF), unchanged. Subtractive reset: Norse ships ``functional.reset.reset_subtract`` but no IF step using
it, so the step is composed of Norse's pieces: ``v <- leak*v + I``, ``z = functional.threshold.threshold(v -
v_th)`` (Norse's Heaviside with its surrogate), ``v <- reset_subtract(z, v, 0, theta)``. The initial
membrane is the state's ``v``. Norse fires on ``v - v_th > 0``; ``v_th`` is the float32 just below theta, so
that is exactly snnconv's ``v >= theta``, and the subtraction uses theta itself.
Signed spikes: the negative branch is one more Norse ``threshold`` on ``-v`` (fires when ``v < 0``),
kept only while the net count ``n > 0``; ``reset_subtract`` with the signed spike adds theta back.
Graded spikes are refused.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from snnconv.interop.base import NeuronSpec, Target, register_target


class NorseNeuron(nn.Module):
    """State holder for one layer of Norse neurons (Norse's functional API is stateless)."""

    def __init__(self, spec: NeuronSpec):
        super().__init__()
        self.spec = spec
        self.v_th = torch.tensor(float(np.nextafter(np.float32(spec.theta), np.float32(0.0))))
        self.v = None


@register_target
class Norse(Target):
    name = "norse"
    package = "norse"
    supports = frozenset({"subtract", "zero", "v_init", "lif", "signed"})
    fire_test = ">="  # v - nextafter(theta, 0) > 0 is v >= theta in float32

    def neuron(self, spec: NeuronSpec):
        return NorseNeuron(spec)

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.v = torch.full((batch, *spec.shape), float(spec.v_init * spec.theta))
        module.n = torch.zeros((batch, *spec.shape))

    def step(self, module, spec: NeuronSpec, current):
        from norse.torch.functional.reset import reset_subtract, reset_value
        from norse.torch.functional.threshold import threshold

        v = module.v * spec.leak + current if spec.leak != 1.0 else module.v + current
        z = threshold(v - module.v_th, "super", torch.tensor(100.0))
        if spec.signed:  # v < 0 is -v > 0: Norse's threshold on -v, only while the net count is positive
            z = z - threshold(-v, "super", torch.tensor(100.0)) * (module.n > 0)
            module.n = module.n + z
        if spec.reset == "subtract":
            module.v = reset_subtract(z, v, torch.tensor(0.0), torch.tensor(spec.theta))
        else:
            module.v = reset_value(z, v, torch.tensor(spec.v_reset), torch.tensor(spec.theta))
        return z
