"""snnTorch 1.0 target: ``snn.Leaky(beta, threshold, reset_mechanism)`` with the membrane passed explicitly.

``beta = 1`` is an IF neuron; ``reset_mechanism="subtract"`` is subtractive reset and ``"zero"`` reset
to zero (snnTorch has no other reset value, so ``v_reset != 0`` is refused). snnTorch applies the reset
at the start of the next step (``reset_delay``), from the previous membrane: the same spike trains.
The initial membrane is the ``mem`` tensor passed to the first call (``v_init * theta``).
For an IF neuron (``beta = 1``) the delayed reset gives snnconv's spike trains exactly. For a LIF neuron
with subtractive reset it does not: snnTorch subtracts the threshold *after* the leak
(``mem = beta*mem + I - theta*s_prev``, snnconv: ``v = beta*(v - theta*s_prev) + I``), and its
``reset_delay=False`` mode subtracts twice when the residue stays above threshold; such neurons are
refused (measured: 12.7% of spike entries differ on a small CNN with beta = 0.9).
snnTorch fires on ``mem - threshold > 0``. With reset to zero the threshold is only a test and is set to
the float32 just below theta (exactly snnconv's ``>=``; membranes equal to theta are common there, e.g.
identical saturated image patches: 1.4% of spikes differed on MNIST before). With subtractive reset theta
itself is subtracted, so the test differs from ``>=`` only when a membrane equals theta exactly.
Graded and signed spikes are refused.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from snnconv.errors import SnnconvError
from snnconv.interop.base import NeuronSpec, Target, register_target


@register_target
class SnnTorch(Target):
    name = "snntorch"
    package = "snntorch"
    supports = frozenset({"subtract", "zero", "v_init", "lif"})
    fire_test = ">"

    def check(self, spec: NeuronSpec) -> None:
        super().check(spec)
        if spec.model == "lif" and spec.reset == "subtract" and spec.leak != 1.0:
            raise SnnconvError(f"snntorch: neuron '{spec.name}' is LIF with subtractive reset; snnTorch's Leaky "
                               f"subtracts the threshold after the leak (a different model for beta < 1)")

    def neuron(self, spec: NeuronSpec):
        with contextlib.redirect_stdout(io.StringIO()):
            import snntorch as snn
        if spec.reset == "zero" and spec.v_reset != 0.0:
            raise SnnconvError(f"snntorch: neuron '{spec.name}' resets to {spec.v_reset}; snnTorch resets to 0 only")
        # subtract: the delayed reset (default) gives snnconv's trains for IF; zero: reset at once (equivalent
        # for these neurons, and the membrane it returns is the post-reset one, as snnconv's)
        # snnTorch fires on mem - threshold > 0. With reset to zero the threshold is only a test, so the float32
        # just below theta makes it snnconv's v >= theta exactly (membranes equal to theta are common there:
        # identical saturated patches); with subtraction theta itself must be subtracted, so it stays theta
        thr = spec.theta if spec.reset == "subtract" else float(np.nextafter(np.float32(spec.theta), np.float32(0)))
        m = snn.Leaky(beta=float(spec.leak), threshold=thr,
                      reset_mechanism="subtract" if spec.reset == "subtract" else "zero", init_hidden=False,
                      reset_delay=spec.reset == "subtract")
        m.mem = None
        return m

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.mem = torch.full((batch, *spec.shape), float(spec.v_init * spec.theta))

    def step(self, module, spec: NeuronSpec, current):
        spk, module.mem = module(current, module.mem)
        return spk
