"""SpikingJelly 2.0 target: ``activation_based.neuron.IFNode`` / ``LIFNode`` in single-step mode.

``v_reset=None`` is SpikingJelly's subtractive ("soft") reset; the initial membrane is set by assigning
the float ``v_init * theta`` to ``node.v`` after ``reset()`` (SpikingJelly broadcasts a float ``v`` to
the input's shape on the first step). ``LIFNode(tau, decay_input=False)`` integrates
``v <- v - (v - v_reset)/tau + x``, which is snnconv's ``v <- beta*v + I`` for ``tau = 1/(1-beta)``
(with subtractive reset the leak is towards 0). Fire test ``v - v_threshold >= 0``: exactly snnconv's.
Signed spikes (``signed_neurons``): SpikingJelly has no such neuron, so the loader subclasses its
``IFNode`` / ``LIFNode`` (SpikingJelly 2.0 neurons are a ``single_step_functional_forward`` over their registered memories), adding
a memory ``n`` (net spike count) and the negative branch after the node's own charge / fire / soft reset:
fire -1 when ``v < 0`` and ``n > 0``, and add theta back (the soft reset ``v - spike * v_threshold``). Graded spikes are refused.
"""
from __future__ import annotations

import torch

from snnconv.interop.base import NeuronSpec, Target, register_target


@register_target
class SpikingJelly(Target):
    name = "spikingjelly"
    package = "spikingjelly"
    supports = frozenset({"subtract", "zero", "v_init", "lif", "signed"})
    fire_test = ">="

    def neuron(self, spec: NeuronSpec):
        from spikingjelly.activation_based import neuron

        v_reset = None if spec.reset == "subtract" else spec.v_reset
        base = neuron.IFNode if spec.model == "if" else neuron.LIFNode
        kw = {} if spec.model == "if" else {"tau": 1.0 / (1.0 - spec.leak), "decay_input": False}
        if spec.signed:
            return _signed(base)(v_threshold=spec.theta, v_reset=v_reset, step_mode="s", **kw)
        return base(v_threshold=spec.theta, v_reset=v_reset, step_mode="s", **kw)

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.reset()
        module.v = float(spec.v_init * spec.theta)

    def step(self, module, spec: NeuronSpec, current):
        return module(current)


def _signed(base):
    """A SpikingJelly node class with snnconv's signed spikes (see the module docstring)."""

    class SignedNode(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_memory("n", 0.0)  # net spike count; the states are (v, n)

        def single_step_functional_forward(self, inputs, states, **kwargs):
            (spike,), (v, *rest) = super().single_step_functional_forward(inputs, states[:1] + states[2:], **kwargs)
            n = torch.as_tensor(states[1], dtype=spike.dtype)
            neg = ((v < 0) & (n > 0)).to(spike.dtype)  # after a positive spike v >= 0: the branches exclude
            v = v + neg * self.v_threshold  # SpikingJelly's soft reset of a -1 spike
            spike = spike - neg
            return (spike,), (v, n + spike, *rest)

    SignedNode.__name__ = f"Signed{base.__name__}"
    return SignedNode
