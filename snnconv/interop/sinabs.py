"""sinabs 3.1 target (SynSense's toolchain for Speck): ``sinabs.layers.IAF`` / ``LIF``.

``reset_fn=MembraneSubtract()`` is subtractive reset (``MembraneReset()`` reset to 0), ``spike_fn`` is
``SingleSpike`` for binary neurons and ``MaxSpike(L)`` for graded ones (``min(floor(v/theta), L)`` spikes
per step, subtracting ``theta`` per spike: snnconv's multi-level neuron exactly). ``min_v_mem=None``: the
membrane is not clipped. The initial membrane: ``init_state_with_shape`` then ``v_mem`` filled with
``v_init * theta``. LIF: ``tau_mem = -1/ln(beta)``, ``norm_input=False``. Fire test ``v - theta >= 0``:
exactly snnconv's. Signed spikes are refused. sinabs takes ``(batch, time, ...)``: one step is time 1.
"""
from __future__ import annotations

import math

from snnconv.errors import SnnconvError
from snnconv.interop.base import NeuronSpec, Target, register_target


@register_target
class Sinabs(Target):
    name = "sinabs"
    package = "sinabs"
    supports = frozenset({"subtract", "zero", "v_init", "lif", "graded"})
    fire_test = ">="

    def neuron(self, spec: NeuronSpec):
        import sinabs.layers as sl
        from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, SingleSpike

        if spec.reset == "zero" and spec.v_reset != 0.0:
            raise SnnconvError(f"sinabs: neuron '{spec.name}' resets to {spec.v_reset}; sinabs resets to 0 only")
        kw = {"spike_threshold": float(spec.theta), "min_v_mem": None,
              "spike_fn": SingleSpike if spec.levels == 1 else MaxSpike(max_num_spikes_per_bin=spec.levels),
              "reset_fn": MembraneSubtract() if spec.reset == "subtract" else MembraneReset()}
        if spec.model == "if":
            return sl.IAF(**kw)
        return sl.LIF(tau_mem=-1.0 / math.log(spec.leak), norm_input=False, **kw)

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.init_state_with_shape((batch, *spec.shape))
        module.v_mem.fill_(float(spec.v_init * spec.theta))

    def step(self, module, spec: NeuronSpec, current):
        return module(current.unsqueeze(1)).squeeze(1)
