r"""Signed (negative-spike) neurons that cancel over-firing.

A converted IF neuron whose input is positive early and negative later fires too early and can
never take those spikes back: its output overshoots the ReLU of its mean input (the "unevenness"
error of Bu et al., ICLR 2022, §4). This pass lets every IF neuron emit a negative spike
:math:`-\theta` when its membrane drops below zero while its net spike count is positive (the signed
IF neuron of Hu et al., "Fast-SNN: Fast Spiking Neural Network by Converting Quantized ANN",
TPAMI 2023; the same memory-of-past-spikes rule as the Signed Neuron with Memory of Wang et al.,
IJCAI 2022). With subtractive reset and :math:`v_0 = \theta/2` the net count after t steps is then
:math:`\mathrm{round}(\sum_t I_t / \theta)` clipped to :math:`[0, t]` whenever the membrane stays in
:math:`[0, \theta)`, i.e. the SNN tracks the ANN on the *cumulative* input, not only its positive
part. Dynamics: :class:`snnconv.ir.SpikingNeuron` (``signed``). Hardware must carry a sign bit per
spike (Loihi 2 graded spikes can; binary-spike chips need two axons per neuron).
"""
from __future__ import annotations

from dataclasses import dataclass

from snnconv.ir import Graph
from snnconv.passes.contracts import HAS_NEURONS
from snnconv.passes.base import Pass, PassContext, register_pass


@register_pass
class SignedNeurons(Pass):
    name = "signed_neurons"
    requires = (HAS_NEURONS,)

    @dataclass
    class Config:
        pass

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        done = []
        for name, node in list(graph.nodes.items()):
            if node.kind == "neuron" and not node.refractory:
                graph.replace(name, node.replace(signed=True))
                done.append(name)
        ctx.log(self.name, f"{len(done)} neuron layer(s) emit negative spikes to cancel over-firing", layers=done)
        return graph
