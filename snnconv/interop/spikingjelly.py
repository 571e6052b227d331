"""SpikingJelly 2.0 target: ``activation_based.neuron.IFNode`` / ``LIFNode`` in single-step mode.

``v_reset=None`` is SpikingJelly's subtractive ("soft") reset; the initial membrane is set by assigning
the float ``v_init * theta`` to ``node.v`` after ``reset()`` (SpikingJelly broadcasts a float ``v`` to
the input's shape on the first step). ``LIFNode(tau, decay_input=False)`` integrates
``v <- v - (v - v_reset)/tau + x``, which is snnconv's ``v <- beta*v + I`` for ``tau = 1/(1-beta)``
(with subtractive reset the leak is towards 0). Fire test ``v - v_threshold >= 0``: exactly snnconv's.
Graded and signed spikes have no SpikingJelly neuron and are refused.
"""
from __future__ import annotations

from snnconv.interop.base import NeuronSpec, Target, register_target


@register_target
class SpikingJelly(Target):
    name = "spikingjelly"
    package = "spikingjelly"
    supports = frozenset({"subtract", "zero", "v_init", "lif"})
    fire_test = ">="

    def neuron(self, spec: NeuronSpec):
        from spikingjelly.activation_based import neuron

        v_reset = None if spec.reset == "subtract" else spec.v_reset
        if spec.model == "if":
            return neuron.IFNode(v_threshold=spec.theta, v_reset=v_reset, step_mode="s")
        return neuron.LIFNode(tau=1.0 / (1.0 - spec.leak), decay_input=False, v_threshold=spec.theta,
                              v_reset=v_reset, step_mode="s")

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.reset()
        module.v = float(spec.v_init * spec.theta)

    def step(self, module, spec: NeuronSpec, current):
        return module(current)
