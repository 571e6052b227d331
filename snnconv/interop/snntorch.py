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
Signed spikes: a subclass of ``snn.Leaky`` overriding snnTorch's two spike hooks, ``fire`` (adds the
negative branch: -1 when ``mem < 0`` and the net count ``n > 0``) and ``mem_reset`` (the delayed reset is
the previous step's signed spike, so the subtraction adds theta back after a negative spike).
Graded spikes are refused.
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
    supports = frozenset({"subtract", "zero", "v_init", "lif", "signed"})
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
        cls = _signed_leaky(snn.Leaky) if spec.signed else snn.Leaky
        m = cls(beta=float(spec.leak), threshold=thr,
                reset_mechanism="subtract" if spec.reset == "subtract" else "zero", init_hidden=False,
                reset_delay=spec.reset == "subtract")
        m.mem = None
        return m

    def begin(self, module, spec: NeuronSpec, batch: int) -> None:
        module.mem = torch.full((batch, *spec.shape), float(spec.v_init * spec.theta))
        if spec.signed:
            module.n = torch.zeros((batch, *spec.shape))
            module.last = torch.zeros((batch, *spec.shape))

    def step(self, module, spec: NeuronSpec, current):
        spk, module.mem = module(current, module.mem)
        return spk


def _signed_leaky(base):
    """``snn.Leaky`` with snnconv's signed spikes (see the module docstring)."""

    class SignedLeaky(base):
        def fire(self, mem):
            pos = super().fire(mem)
            neg = ((mem < 0) & (self.n > 0)).to(pos.dtype)
            spk = pos - neg
            self.n = self.n + spk
            self.last = spk.detach()
            return spk

        def mem_reset(self, mem):
            return self.last

    return SignedLeaky
