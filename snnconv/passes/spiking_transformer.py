r"""Transformer -> spiking transformer: signed multi-level IF neurons on every synaptic input and
every attention-matmul operand; operator nodes for what has no spiking form.

Method (after SpikeZIP-TF, You et al., ICML 2024, "SpikeZIP-TF: Conversion is All You Need for
Transformer-based SNN"):

* **Spike streams into every weight layer.** Each Linear/Conv input becomes the output of a
  signed (bipolar) multi-level IF neuron (:class:`snnconv.ir.SignedNeuron`: reset by subtraction,
  rounding thresholds, graded spikes of either sign), so every synaptic layer
  is driven by spikes (accumulates, SynOps). Layers fed by the input side (token/position
  embeddings, the embedding layer norm, the attention mask: everything computed from the input
  before the first weight layer) keep their analog input, like the first convolution of a CNN
  under direct coding (counted as MACs).
* **Spike streams into both operands of each attention matmul** (``spike_matmul``): Q, K, V and
  the softmax output pass through signed neurons, as in SpikeZIP-TF's spike-equivalent
  self-attention. The neuron sits right after the producer (before head reshapes/transposes)
  so thresholds are per feature of the projection.
* **Operator nodes.** Softmax, layer norm, GELU/tanh and the matmul itself have no spiking
  form here. They stay as nodes with ``operator = True`` that the simulator runs with
  accumulate-and-difference coding (:mod:`snnconv.runtime.operators`): the ANN function of the
  running averages of the inputs, output as the difference of successive time-weighted results
  (SpikeZIP-TF's Spike-Softmax / Spike-LayerNorm, written for running averages). GELU is such an
  operator followed by a signed neuron (the neuron in front of the next Linear), i.e. a signed
  neuron on the accumulated GELU values. :func:`spiking_census` reports, per node, which kind it is.

Thresholds: ``theta = s / levels`` where ``s`` is the ``percentile`` of ``|x|`` of the neuron's
input on calibration data, per feature (last dimension, floored at ``feature_floor`` times the
layer's scale so features silent during calibration, e.g. attention to padding, do not get
near-zero thresholds) or per layer (data-based normalisation as in Rueckauer et al. 2017, on
absolute values because the currents are signed), so one step
resolves ``[-s, s]`` into ``2 levels + 1`` values. ``max_spikes`` caps the spikes per step
(then the rate response is ``clip(x, -max_spikes theta, max_spikes theta)``); the default 0 leaves
it uncapped because transformer activations have outlier features far beyond the calibration
range (BERT-style models: clipping them to the calibration maximum alone costs ~1.5% cosine on
all-MiniLM-L6-v2, measured), so a few neurons send large graded spikes; the benchmark reports how large.
Unlike SpikeZIP-TF no quantised ANN is trained first (post-training conversion), and the ST-BIF
spike-count bounds are not used. Residual additions, scalings, reshapes and transposes are
linear and act on the streams unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.ir import Graph, SignedNeuron
from snnconv.passes.base import Pass, PassContext, register_pass, check_config
from snnconv.progress import progress
from snnconv.runtime.interpreter import run_ann

SYNAPTIC = ("linear", "conv2d")
VIEWS = ("reshape", "permute", "identity", "flatten")
# pools between a neuron and a synaptic layer that keep it spike-driven in the census: an average of spikes folds
# into the next layer's weights (each spike still triggers one weighted update), and every SNN max-pool mode
# sends spikes (count: binary increments of the window maximum; gate and wta: the spikes of one input)
SPIKE_POOLS = ("avgpool2d", "adaptive_avgpool2d", "maxpool2d")
NEURON_KINDS = ("neuron", "signed_neuron", "adaptive_lif", "cuba_lif", "izhikevich", "hodgkin_huxley")


def input_side(graph: Graph) -> set[str]:
    """Nodes computed from the graph input alone before any weight layer, matmul or neuron."""
    side: set[str] = set()
    for name, node in graph.nodes.items():
        if node.kind == "input" or (node.kind not in SYNAPTIC + ("matmul",) and not node.spiking
                                    and all(s in side for s in graph.preds(name)) and graph.preds(name)):
            side.add(name)
    return side


@register_pass
class SpikingTransformer(Pass):
    name = "spiking_transformer"

    @dataclass
    class Config:
        levels: int = 16  # threshold = s / levels: one step resolves [-s, s] into 2 levels + 1 values
        max_spikes: int = 0  # cap on spikes of either sign per step (0: uncapped graded spikes)
        percentile: float = 99.99  # of |x|, the calibration range s
        granularity: str = "feature"  # "feature" (last dim) or "layer"
        spike_matmul: bool = True  # signed neurons on both operands of attention matmuls
        feature_floor: float = 0.05  # per-feature scales are at least this fraction of the layer's scale
        max_rows: int = 20000  # calibration rows (tokens) kept per neuron for the percentile

        def validate(self, where: str) -> None:
            checks = [(self.levels >= 1, "levels must be >= 1"),
                      (self.max_spikes >= 0, "max_spikes must be >= 0"),
                      (0 < self.percentile <= 100, "percentile must be in (0, 100]"),
                      (self.granularity in ("feature", "layer"), "granularity must be 'feature' or 'layer'")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        side = input_side(graph)
        edges: list[tuple[str, str]] = []  # (consumer, source) edges to drive with spikes
        for name, node in graph.nodes.items():
            if node.kind in SYNAPTIC:
                (src,) = graph.preds(name)
                if src not in side:
                    edges.append((name, src))
            elif node.kind == "matmul" and c.spike_matmul:
                edges += [(name, s) for s in graph.preds(name)]
        # walk back through single-consumer views so the neuron sits right after the producer
        plan: dict[str, list[tuple[str, str]]] = {}  # producer -> [(consumer, source) edges to rewire]
        for cons, src in edges:
            if graph.nodes[cons].kind == "matmul":
                while graph.nodes[src].kind in VIEWS and len(graph.succs(src)) == 1 and src not in graph.outputs:
                    cons, src = src, graph.preds(src)[0]
            if graph.nodes[src].kind in NEURON_KINDS or graph.nodes[src].kind == "input":
                continue
            if (cons, src) not in plan.setdefault(src, []):
                plan[src].append((cons, src))
        if not plan:
            ctx.log(self.name, "no synaptic inputs to convert")
            return graph
        scales = self._scales(graph, list(plan), ctx)
        for src, rewire in plan.items():
            th = (scales[src] / c.levels).clamp_min(1e-8)
            neuron = graph.unique_name(f"{src}.spike")
            self._insert(graph, src, neuron, SignedNeuron(th, levels=c.max_spikes), [cons for cons, _ in rewire])
        census = spiking_census(graph)
        counts = census_counts(census)
        ctx.log(self.name, f"{len(plan)} signed IF neuron layer(s) (theta = p{c.percentile} of |x| / {c.levels} per "
                           f"{c.granularity}, {c.max_spikes or 'uncapped'} spikes/step); " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
                neurons=list(plan), census=counts)
        return graph

    @staticmethod
    def _insert(graph: Graph, src: str, name: str, node, consumers: list[str]) -> None:
        order = list(graph.nodes)
        pos = order.index(src) + 1
        graph.nodes = {k: graph.nodes[k] for k in order[:pos]} | {name: node} | {k: graph.nodes[k] for k in order[pos:]}
        graph.edges[name] = [src]
        for d in consumers:
            graph.edges[d] = [name if s == src else s for s in graph.edges[d]]
        node.shape = graph.nodes[src].shape

    @torch.no_grad()
    def _scales(self, graph: Graph, nodes: list[str], ctx: PassContext) -> dict[str, torch.Tensor]:
        c = self.config
        wanted, rows = set(nodes), {n: [] for n in nodes}
        kept = {n: 0 for n in nodes}
        gen = torch.Generator().manual_seed(0)

        def record(name, t):
            if name not in wanted or kept[name] >= c.max_rows:
                return
            flat = t.abs().reshape(-1, t.shape[-1]) if c.granularity == "feature" else t.abs().reshape(-1, 1)
            take = min(flat.shape[0], c.max_rows - kept[name])
            if take < flat.shape[0]:
                flat = flat[torch.randperm(flat.shape[0], generator=gen)[:take]]
            rows[name].append(flat.clone())
            kept[name] += flat.shape[0]

        for x in progress(ctx.calibration_batches(), desc="calibration statistics"):
            run_ann(graph, x, record=record)
        out = {}
        for n in nodes:
            v = torch.cat(rows[n])  # [N, F]
            k = max(1, min(v.shape[0], int(round(c.percentile / 100.0 * v.shape[0]))))
            s = v.kthvalue(k, dim=0).values
            if c.granularity == "feature":  # features (nearly) silent in calibration get the layer's scale
                flat = v.flatten()
                layer = flat.kthvalue(max(1, min(flat.numel(), int(round(c.percentile / 100.0 * flat.numel()))))).values
                s = torch.maximum(s, c.feature_floor * layer)
            s = torch.where(s > 0, s, v.amax().clamp_min(1e-6))
            out[n] = s.reshape(()) if c.granularity == "layer" else s
        return out


ROLES = {
    "spiking": "spiking neuron",
    "synaptic_spikes": "synaptic, spike-driven (accumulates)",
    "synaptic_analog": "synaptic, analog input (MACs)",
    "operator": "operator node (accumulate-and-difference, real-valued)",
    "linear": "linear/structural on streams (add, scale, view)",
    "input_side": "input side (computed once per sample)",
    "input": "input",
}


def spiking_census(graph: Graph) -> list[dict]:
    """Per node: ``{"node", "kind", "role"}`` where role says how spiking it really is (see ``ROLES``):
    a true spiking neuron, a synaptic layer driven by spikes or by analog values, an operator node
    (real-valued function of accumulated inputs, no spiking form), a linear op on streams, or input-side."""
    side = input_side(graph)
    out = []
    for name, node in graph.nodes.items():
        if node.kind == "input":
            role = "input"
        elif node.spiking:
            role = "spiking"
        elif name in side:
            role = "input_side"
        elif getattr(node, "operator", False) or node.kind in ("clip", "maxpool2d"):
            role = "operator"
        elif node.synaptic:
            src = graph.preds(name)[0]
            while graph.nodes[src].kind in VIEWS + SPIKE_POOLS and graph.preds(src):
                src = graph.preds(src)[0]
            role = "synaptic_spikes" if graph.nodes[src].spiking else "synaptic_analog"
        else:
            role = "linear"
        out.append({"node": name, "kind": node.kind, "role": role})
    return out


def census_counts(census: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in census:
        counts[row["role"]] = counts.get(row["role"], 0) + 1
    return counts


def census_markdown(census: list[dict]) -> str:
    counts = census_counts(census)
    lines = ["| role | nodes |", "|---|---:|"] + [f"| {ROLES[r]} | {n} |" for r, n in counts.items()]
    lines += ["", "| node | op | role |", "|---|---|---|"]
    lines += [f"| {r['node']} | {r['kind']} | {ROLES[r['role']]} |" for r in census]
    return "\n".join(lines)
