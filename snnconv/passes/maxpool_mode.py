"""How the SNN runs max pooling: set ``spike_mode`` on every max-pool node.

``count`` (the IR default) emits the change of the window maximum of the accumulated inputs, so the
pooled spike count equals the maximum of the input spike counts at every step (exact in rate);
``gate`` is the gating scheme of Rueckauer et al. (Front. Neurosci. 2017, §2.2.3), which passes the
spikes of the input that has fired most so far; ``wta`` is winner-take-all by lateral inhibition (the first
input of a window to fire wins it for the rest of the run; Masquelier & Thorpe 2007). See :class:`snnconv.ir.MaxPool2d` for both and
tests/test_maxpool.py / docs/design.md for the comparison on a trained max-pool CNN.
"""
from __future__ import annotations

from dataclasses import dataclass

from snnconv.ir import Graph
from snnconv.ir.pooling import MAXPOOL_MODES
from snnconv.passes.base import Pass, PassContext, check_config, register_pass


@register_pass
class MaxPoolMode(Pass):
    name = "maxpool_mode"

    @dataclass
    class Config:
        mode: str = "count"

        def validate(self, where: str) -> None:
            check_config(where, [(self.mode in MAXPOOL_MODES, f"mode must be one of {', '.join(MAXPOOL_MODES)}")])

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        pools = [k for k, n in graph.nodes.items() if n.kind == "maxpool2d"]
        for k in pools:
            graph.replace(k, graph.nodes[k].replace(spike_mode=self.config.mode))
        ctx.log(self.name, f"{len(pools)} max-pool layer(s) run in {self.config.mode} mode" if pools else
                "no max pooling")
        return graph
