"""Treat trained QCFS (quantized) clips as plain clips ``clip(0, lambda)``.

Lets the data-based methods (max-norm, percentile, calibration) convert a network trained with
the QCFS activation of Bu et al. (ICLR 2022) as if it were an ordinary clipped-ReLU network, the
comparison Bu et al. make in their Table 1 (same weights, different conversion). The threshold
balancing that follows caps each threshold at the trained ``lambda``.
"""
from __future__ import annotations

from dataclasses import dataclass

from snnconv.ir import Graph
from snnconv.passes.contracts import NO_NEURONS
from snnconv.passes.base import Pass, PassContext, register_pass


@register_pass
class DequantizeClips(Pass):
    name = "dequantize_clips"
    requires = (NO_NEURONS,)

    @dataclass
    class Config:
        pass

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        done = []
        for name, node in list(graph.nodes.items()):
            if node.kind == "clip" and node.levels:
                graph.replace(name, node.replace(levels=0, source="clip"))
                done.append(name)
        if done:
            ctx.log(self.name, f"{len(done)} QCFS activation(s) treated as plain clip(0, lambda)", layers=done)
        return graph
