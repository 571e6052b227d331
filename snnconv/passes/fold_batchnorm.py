"""Fold inference batch norm into the preceding convolution / linear layer.

For ``y = a * (W x + b) + c`` (``a, c`` from :meth:`BatchNorm.scale_shift`) the folded layer is
``W' = a W`` (per output channel) and ``b' = a b + c``. Standard in every conversion method since
Rueckauer et al. 2017 (§2.2.1). Matched as a subgraph: a conv/linear whose only consumer is a
batch norm, so it also folds inside residual blocks and shortcuts. A batch norm with no foldable
producer stays as an affine node (the simulator runs it as a constant per-step current scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.ir import Graph
from snnconv.passes.base import Pass, PassContext, register_pass


@register_pass
class FoldBatchNorm(Pass):
    name = "fold_batchnorm"

    @dataclass
    class Config:
        pass

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        folded = []
        for name in list(graph.nodes):
            node = graph.nodes.get(name)
            if node is None or node.kind != "batchnorm":
                continue
            (src,) = graph.preds(name)
            prod = graph.nodes[src]
            if prod.kind not in ("conv2d", "linear", "conv_transpose2d") or len(graph.succs(src)) != 1 \
                    or src in graph.outputs or (prod.kind == "conv_transpose2d" and prod.groups != 1):
                continue
            a, c = node.scale_shift()
            if prod.kind == "conv_transpose2d":  # weight [C_in, C_out, kH, kW]: output channels on dim 1
                w = prod.weight * a.view(1, -1, 1, 1)
            else:
                w = prod.weight * a.view(-1, *([1] * (prod.weight.dim() - 1)))
            bias = prod.bias if prod.bias is not None else torch.zeros_like(a)
            graph.replace(src, prod.replace(weight=w, bias=a * bias + c))
            graph.bypass(name)
            folded.append(f"{name}->{src}")
        ctx.log(self.name, f"folded {len(folded)} batch norm(s)", folded=folded)
        return graph


@register_pass
class RemoveIdentity(Pass):
    """Drop identity nodes (dropout at inference, no-op copies)."""

    name = "remove_identity"

    @dataclass
    class Config:
        pass

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        gone = [n for n, node in graph.nodes.items() if node.kind == "identity"]
        for n in gone:
            graph.bypass(n)
        ctx.log(self.name, f"removed {len(gone)} identity node(s)", removed=gone)
        return graph
