"""ANN-mode interpreter: runs an IR graph as an ordinary network (neurons as their rate response).

Used to check that ingestion preserved the model, to collect activation statistics for
threshold balancing, and as the reference for per-layer ANN-vs-SNN error.
"""
from __future__ import annotations

from typing import Callable

import torch

from snnconv.ir import Graph
from snnconv.runtime.kernels import KERNELS


@torch.no_grad()
def run_ann(graph: Graph, *inputs: torch.Tensor, record: Callable[[str, torch.Tensor], None] | None = None):
    """Evaluate ``graph`` on ``inputs``; ``record(name, tensor)`` is called for every node output."""
    values: dict[str, torch.Tensor] = dict(zip(graph.inputs, inputs))
    remaining = _consumer_counts(graph)
    outputs = set(graph.outputs)
    for name, node in graph.nodes.items():
        if node.kind != "input":
            srcs = graph.edges[name]
            values[name] = KERNELS[node.kind](node, [values[s] for s in srcs])
            for s in srcs:  # free tensors nobody needs any more: bounds peak memory
                remaining[s] -= 1
                if remaining[s] == 0 and s not in outputs:
                    del values[s]
        if record is not None:
            record(name, values[name])
    outs = [values[o] for o in graph.outputs]
    return outs[0] if len(outs) == 1 else outs


def _consumer_counts(graph: Graph) -> dict[str, int]:
    counts = {n: 0 for n in graph.nodes}
    for srcs in graph.edges.values():
        for s in srcs:
            counts[s] += 1
    return counts
