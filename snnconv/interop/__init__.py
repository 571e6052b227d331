"""Deployment targets: run an exported NIR file in another framework with *that framework's* neurons.

NIR's IF node resets to ``v_reset`` and starts at 0; the accurate converted networks reset by
subtraction, start at :math:`\\theta/2` and may use graded spikes. snnconv writes those dynamics into
the NIR file as per-node metadata (the "snnconv dynamics" convention, :data:`snnconv.backends.nir.DYNAMICS`,
``docs/nir.md``), and each target here builds the network from the file with the target's native
neuron modules set to those dynamics:

============  ==============================================================  =====================
target        neuron built                                                    threshold test
============  ==============================================================  =====================
spikingjelly  ``neuron.IFNode(v_reset=None)`` / ``LIFNode(decay_input=False)``  ``v - th >= 0`` (exact)
snntorch      ``snn.Leaky(beta, reset_mechanism="subtract"|"zero")``          ``mem - th > 0``
norse         Norse's ``threshold`` + ``reset_subtract`` / ``iaf`` step        ``v - th > 0``
sinabs        ``layers.IAF`` / ``LIF`` with ``MembraneSubtract``, Single/MaxSpike ``v - th >= 0`` (exact)
============  ==============================================================  =====================

Synapses (Conv2d, Affine/Linear, pooling, Flatten) are plain ``torch.nn`` layers, as in every one of
these frameworks. The graph runs in topological order (so residual graphs work, unlike nirtorch 2.6's
depth-first executor), batched, one step at a time; the readout integrates the ``Output`` node over
steps (the prediction at step t is the mean of outputs 1..t, as in snnconv).

Targets are registered plug-ins (:func:`register_target`); ``snnconv verify --targets`` and
``scripts/bench_deploy.py`` use them. ``snnconv convert --target`` also takes the export targets that run the
network themselves (Lava: :func:`snnconv.backends.exports.deployment_targets`).
"""
from __future__ import annotations

from snnconv.interop.base import TARGETS, NeuronSpec, Target, load, register_target, run_file
from snnconv.interop import spikingjelly, snntorch, norse, sinabs  # noqa: E402,F401 - registers the targets



__all__ = ["TARGETS", "Target", "NeuronSpec", "register_target", "load", "run_file"]
