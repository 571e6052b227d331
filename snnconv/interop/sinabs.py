"""sinabs 3.1 target (SynSense's toolchain for Speck): ``sinabs.layers.IAF`` / ``LIF``.

``reset_fn=MembraneSubtract()`` is subtractive reset (``MembraneReset()`` reset to 0), ``spike_fn`` is
``SingleSpike`` for binary neurons and ``MaxSpike(L)`` for graded ones (``min(floor(v/theta), L)`` spikes
per step, subtracting ``theta`` per spike: snnconv's multi-level neuron exactly). ``min_v_mem=None``: the
membrane is not clipped. The initial membrane: ``init_state_with_shape`` then ``v_mem`` filled with
``v_init * theta``. LIF: ``tau_mem = -1/ln(beta)``, ``norm_input=False``. Fire test ``v - theta >= 0``:
exactly snnconv's. sinabs takes ``(batch, time, ...)``: one step is time 1.
Signed spikes use sinabs' extension points: the layer gets one more state buffer ``n`` (net count),
``spike_fn`` is :class:`SignedSpike` (``required_states = ["v_mem", "n"]``: the positive spikes of
``MaxSpike``/``SingleSpike``, or ``max(floor(v/theta), -min(n, L))`` when ``v < 0``) and ``reset_fn`` is
:class:`SignedSubtract` (``MembraneSubtract`` that also adds the spikes to ``n``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.interop.base import NeuronSpec, Target, register_target


@register_target
class Sinabs(Target):
    name = "sinabs"
    package = "sinabs"
    supports = frozenset({"subtract", "zero", "v_init", "lif", "graded", "signed"})
    fire_test = ">="

    def neuron(self, spec: NeuronSpec):
        import sinabs.layers as sl
        from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, SingleSpike

        if spec.reset == "zero" and spec.v_reset != 0.0:
            raise SnnconvError(f"sinabs: neuron '{spec.name}' resets to {spec.v_reset}; sinabs resets to 0 only")
        kw = {"spike_threshold": float(spec.theta), "min_v_mem": None,
              "spike_fn": SingleSpike if spec.levels == 1 else MaxSpike(max_num_spikes_per_bin=spec.levels),
              "reset_fn": MembraneSubtract() if spec.reset == "subtract" else MembraneReset()}
        if spec.signed:
            if spec.reset != "subtract":
                raise SnnconvError(f"sinabs: neuron '{spec.name}' has signed spikes with reset to zero")
            kw |= {"spike_fn": SignedSpike(spec.levels), "reset_fn": SignedSubtract()}
        layer = sl.IAF(**kw) if spec.model == "if" else \
            sl.LIF(tau_mem=-1.0 / math.log(spec.leak), norm_input=False, **kw)
        if spec.signed:
            layer.register_buffer("n", torch.zeros(0))
        return layer

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.init_state_with_shape((batch, *spec.shape))
        module.v_mem.fill_(float(spec.v_init * spec.theta))

    def step(self, module, spec: NeuronSpec, current):
        return module(current.unsqueeze(1)).squeeze(1)


@dataclass
class SignedSpike:
    """sinabs ``spike_fn`` for snnconv's signed neuron (inference: no surrogate gradient)."""

    levels: int = 1
    required_states = ["v_mem", "n"]

    def apply(self, v_mem, n, spike_threshold, surrogate_grad_fn):
        q = torch.div(v_mem, spike_threshold, rounding_mode="floor")
        pos = q.clamp(0, self.levels)
        neg = torch.maximum(q, -n.clamp(max=self.levels))
        return torch.where(v_mem < 0, neg, pos)


class SignedSubtract:
    """sinabs ``reset_fn``: subtract ``spikes * theta`` (a negative spike adds theta) and count the spikes in
    the layer's ``n`` buffer (in place: sinabs writes back only ``v_mem``)."""

    def __call__(self, spikes, state, threshold):
        state["n"].add_(spikes)
        new = state.copy()
        new["v_mem"] = new["v_mem"] - spikes * threshold
        return new
