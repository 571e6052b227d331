r"""Pruning of conv/linear synapses to a sparsity target.

Criteria (``method``):

* ``magnitude``: smallest :math:`|w|` first (Han et al., NeurIPS 2015, "Learning both weights and
  connections for efficient neural networks"). Channel-structured: whole output channels
  (filters) with the smallest mean :math:`|w|` (the L1 filter criterion of Li et al., ICLR 2017,
  "Pruning filters for efficient ConvNets", normalised by fan-in so that layers compare).
* ``activity``: synapses whose presynaptic neurons rarely fire. Each input element's activity
  is its mean rate on the calibration batches (the graph run in ANN mode, where a neuron's output
  is its rate response :math:`\theta \cdot` rate, so this is the firing rate times the spike
  amplitude). Unstructured: score :math:`|w_{ij}| \cdot a_j` (activity-weighted magnitude, as in
  Wanda, Sun et al., ICLR 2024, with the mean rate in place of the activation norm); a synapse
  from a silent neuron never carries an event, so it can go at no cost. Channel-structured:
  whole *input* channels (every synapse leaving one presynaptic channel) with the lowest activity.

``scope``: ``global`` ranks all candidates of all layers together (channel and activity scores
are divided by the layer's mean score so layers with different activation units compare), ``layer`` prunes every layer to the target. The
output channels of the last layer (the classes) are never removed by output-channel pruning.
A pruned output channel also loses its bias (the channel is removed, its neurons fall silent).

The target is reached exactly for unstructured pruning (up to ties) and to within one channel
for channel pruning; the achieved sparsity (zero weights / weights of the pruned layers) is
reported in the pass log and in ``graph.meta["pruning"]``. Quantized layers keep
``weight_int`` consistent (pruned codes are 0). The simulator counts SynOps from the non-zero
weight pattern, so pruning shows up directly in the SynOps/energy statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.passes.base import Pass, PassContext, register_pass, check_config
from snnconv.runtime.interpreter import run_ann


@torch.no_grad()
def input_activity(graph: Graph, batches, layers: list[str]) -> dict[str, torch.Tensor]:
    """Mean |input| per input channel (conv) or feature (linear) of each layer over ``batches``."""
    srcs = {graph.preds(n)[0]: [] for n in layers}
    for n in layers:
        srcs[graph.preds(n)[0]].append(n)
    sums: dict[str, torch.Tensor] = {}
    count = 0

    def rec(name, t):
        if name in srcs:
            v = t.abs().transpose(0, 1).reshape(t.shape[1], -1).mean(1) if t.dim() > 2 else t.abs().mean(0)
            sums[name] = sums.get(name, 0) + v

    for x in batches:
        run_ann(graph, x, record=rec)
        count += 1
    if count == 0:
        raise SnnconvError("activity pruning needs calibration batches")
    out = {}
    for s, ls in srcs.items():
        for n in ls:
            out[n] = sums[s] / count
    return out


def _groups(graph: Graph, name: str, method: str, structure: str, act, is_last: bool):
    """(scores [G], sizes [G], mask_fn(selected bool[G]) -> weight mask) for one layer."""
    w = graph.nodes[name].weight
    if structure == "unstructured":
        score = w.abs()
        if method == "activity":
            a = act[name]
            if w.dim() == 4:
                groups = graph.nodes[name].groups
                if groups != 1:  # grouped conv: input channel j of output o is o's group offset + j
                    a = torch.ones(w.shape[1])
                score = score * a.view(1, -1, 1, 1)
            else:
                score = score * a.view(1, -1)
        return score.flatten(), torch.ones(w.numel()), lambda sel: sel.view_as(w)
    if method == "magnitude":  # output channels
        if is_last:
            return torch.empty(0), torch.empty(0), lambda sel: torch.zeros_like(w, dtype=torch.bool)
        per = w[0].numel()
        score = w.abs().flatten(1).mean(1)
        return score, torch.full((w.shape[0],), float(per)), \
            lambda sel: sel.view(-1, *([1] * (w.dim() - 1))).expand_as(w)
    # activity, input channels
    if w.dim() == 4 and graph.nodes[name].groups != 1:
        raise SnnconvError(f"activity channel pruning does not support grouped conv '{name}'")
    a = act[name]
    per = w.shape[0] * (w[0, 0].numel() if w.dim() == 4 else 1)
    view = (1, -1, 1, 1) if w.dim() == 4 else (1, -1)
    return a, torch.full((w.shape[1],), float(per)), lambda sel: sel.view(view).expand_as(w)


def _select(scores: torch.Tensor, sizes: torch.Tensor, need: float) -> torch.Tensor:
    """Lowest-score groups whose sizes add up to at least ``need`` (a bool mask over groups)."""
    sel = torch.zeros(scores.numel(), dtype=torch.bool)
    if need <= 0 or scores.numel() == 0:
        return sel
    order = torch.argsort(scores, stable=True)
    cum = torch.cumsum(sizes[order], 0)
    k = int(torch.searchsorted(cum, torch.tensor(need, dtype=cum.dtype)).item()) + 1
    sel[order[:min(k, scores.numel())]] = True
    return sel


@register_pass
class Prune(Pass):
    name = "prune"

    @dataclass
    class Config:
        sparsity: float = 0.5  # fraction of the weights of the pruned layers to set to zero
        method: str = "magnitude"  # magnitude | activity
        scope: str = "global"  # global | layer
        structure: str = "unstructured"  # unstructured | channel
        keep_first_last: bool = False  # never prune the first and last synaptic layer

        def validate(self, where: str) -> None:
            checks = [(0.0 <= self.sparsity < 1.0, "sparsity must be in [0, 1)"),
                      (self.method in ("magnitude", "activity"), "method must be 'magnitude' or 'activity'"),
                      (self.scope in ("global", "layer"), "scope must be 'global' or 'layer'"),
                      (self.structure in ("unstructured", "channel"), "structure must be 'unstructured' or 'channel'")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        layers = [n for n, node in graph.nodes.items() if node.kind in ("conv2d", "linear")]
        last = layers[-1] if layers else None
        if c.keep_first_last:
            layers = layers[1:-1]
        if not layers:
            ctx.log(self.name, "no layers to prune")
            return graph
        act = input_activity(graph, ctx.calibration_batches(), layers) if c.method == "activity" else None
        groups = {n: _groups(graph, n, c.method, c.structure, act, n == last) for n in layers}
        total = sum(graph.nodes[n].weight.numel() for n in layers)
        already = {n: graph.nodes[n].weight.eq(0) for n in layers}
        selected: dict[str, torch.Tensor] = {}
        if c.scope == "layer":
            for n, (score, size, _) in groups.items():
                selected[n] = _select(score, size, c.sparsity * graph.nodes[n].weight.numel())
        else:
            norm = {n: (g[0] / g[0].mean().clamp_min(1e-12)) if c.structure == "channel" or c.method == "activity" else g[0]
                    for n, g in groups.items()}
            scores = torch.cat([norm[n] for n in layers])
            sizes = torch.cat([groups[n][1] for n in layers])
            sel = _select(scores, sizes, c.sparsity * total)
            i = 0
            for n in layers:
                k = groups[n][0].numel()
                selected[n], i = sel[i:i + k], i + k
        per_layer = {}
        for n in layers:
            node = graph.nodes[n]
            mask = groups[n][2](selected[n]) | already[n]
            changes = {"weight": node.weight.masked_fill(mask, 0.0)}
            if node.weight_int is not None:
                changes["weight_int"] = node.weight_int.masked_fill(mask, 0)
            if c.structure == "channel" and c.method == "magnitude" and node.bias is not None:
                dead = mask.flatten(1).all(1)
                changes["bias"] = node.bias.masked_fill(dead, 0.0)
            graph.replace(n, node.replace(**changes))
            per_layer[n] = float(mask.float().mean())
        zeros = sum(int(graph.nodes[n].weight.eq(0).sum()) for n in layers)
        achieved = zeros / total
        graph.meta["pruning"] = {"target": c.sparsity, "achieved": achieved, "method": c.method, "scope": c.scope,
                                 "structure": c.structure, "layers": per_layer}
        ctx.log(self.name, f"{c.method} {c.structure} pruning ({c.scope}): sparsity {achieved:.4f} "
                           f"(target {c.sparsity}) over {len(layers)} layer(s)", achieved=achieved, layers=per_layer)
        return graph
