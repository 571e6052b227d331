"""Leak compensation for converted LIF neurons.

A LIF neuron with decay :math:`\\beta < 1` and subtractive reset, driven by a constant current
:math:`I`, loses :math:`(1-\\beta)\\,\\bar v` per step to the leak, so its rate is
:math:`r = (I - (1-\\beta)\\bar v)/\\theta` instead of the IF rate :math:`I/\\theta`. In the
steady state the membrane residue is spread over :math:`[0, \\theta)`, so :math:`\\bar v \\approx
\\theta/2`. This pass adds the lost charge back as a constant bias current
:math:`(1-\\beta)\\,\\theta/2` (per channel when thresholds are per channel), folded into the bias
of the conv/linear layer that feeds the neuron (a weight-side change; a scale node carries it
when the neuron is fed by a residual add). The correction follows the leak analysis of
Rueckauer et al. 2017 (§2.3) and the bias-shift view of Deng & Gu (ICLR 2021, "Optimal
conversion of conventional ANNs to SNNs"), applied to the leak term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.ir import Graph, Scale
from snnconv.passes.contracts import HAS_NEURONS
from snnconv.passes.base import Pass, PassContext, register_pass


@register_pass
class LeakCompensation(Pass):
    name = "leak_compensation"
    requires = (HAS_NEURONS,)

    @dataclass
    class Config:
        v_mean: float = 0.5  # mean steady-state membrane residue, as a fraction of the threshold

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        done = []
        for name in list(graph.nodes):
            node = graph.nodes[name]
            if node.kind != "neuron" or node.leak >= 1.0:
                continue
            comp = (1.0 - node.leak) * self.config.v_mean * node.threshold.reshape(-1)
            (src,) = graph.preds(name)
            prod = graph.nodes[src]
            if prod.kind in ("conv2d", "linear") and len(graph.succs(src)) == 1:
                bias = prod.bias if prod.bias is not None else torch.zeros(prod.weight.shape[0])
                graph.replace(src, prod.replace(bias=bias + comp.expand(prod.weight.shape[0])))
            else:
                if comp.numel() == 1:
                    offset = comp[0]
                else:  # per-channel: broadcast over the spatial dims of conv feature maps
                    offset = comp.view(-1, *([1] * (len(node.shape) - 1)))
                graph.insert_after(src, graph.unique_name(f"{name}.leak_comp"), Scale(torch.tensor(1.0), offset))
            done.append(name)
        ctx.log(self.name, f"leak compensated in {len(done)} LIF layer(s)", layers=done)
        return graph
