r"""Max pooling built from signed integrate-and-fire neurons, so max-pool networks can be exported.

The simulator's ``count`` max-pool mode (:class:`snnconv.ir.MaxPool2d`) is exact, but it is an operator
only snnconv runs: NIR has no max-pool primitive and no peer simulator has the mode. This pass rewrites every
max-pool layer into ordinary synaptic layers and neurons that compute the same spike trains.

Method. The identity :math:`\max(a, b) = b + \mathrm{ReLU}(a - b)` applied pairwise over the window
(:math:`\lceil \log_2 K \rceil` levels for a window of K inputs) builds a max from ReLUs and sums, as in the
spiking max pooling of Gaurav et al. ("Spiking Approximations of the MaxPooling Operation in Deep SNNs",
IJCNN 2022, arXiv:2205.07076), who use such identities to run max-pool CNNs on Loihi. Each level is two
neuron layers that read only the layer before them (:func:`max_tree_layers`): a difference layer
(``relu(a - b)`` and a relay of ``b`` for every pair) and a sum layer (``relu(a - b) + b``), so every
population has one source, which Lava's export needs. Every unit is a *signed* IF neuron (the
negative-spike neuron of Wang et al., IJCAI 2022; Hu et al., TPAMI 2023; :class:`snnconv.ir.SignedIFNeuron`)
with the pool input's threshold, subtractive reset and initial membrane :math:`\theta/2`.

Why it is exact: every signal in the tree is a whole number of spikes of that threshold, and for such
input a signed neuron's net count after t steps is exactly :math:`\max(0, D_t)`, D being its accumulated
input in spikes (by induction over steps: the membrane stays at :math:`\theta/2`, or at
:math:`\theta/2 + D_t` while :math:`D_t < 0`; the half-threshold margin absorbs float rounding). A relay's
input never accumulates below zero, so it passes its input on unchanged. Each sum unit's accumulated output
is therefore the maximum of its pair's accumulated values, and the last neuron (which takes the pool's name)
emits the change of the window maximum at every step: **the count mode's output, spike for spike**.

Where the pool's input is binary (0/1 spikes), the units see a difference that changes by at most one spike
per step and are ternary; with signed or L-level inputs they need 2L levels (graded), which only targets with
graded spikes run. The tree needs the pool to read a spiking neuron (it takes that neuron's threshold and
spike code) and no ``ceil_mode``; anything else is a one-line error naming the layer.

Cost: for a 2x2 window, 9 neurons per pooled output (4 + 2 + 2 + 1 over four layers) and their synaptic
events, which the energy report counts; four layers of latency on hardware that pipelines layers (Lava),
none in snnconv's and the peers' synchronous simulation. The pass runs after calibration (calibration passes
compare neurons with ANN layers; the tree's neurons have none), which is exact because the tree computes the
count mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Conv2d, Graph, SpikingNeuron
from snnconv.passes.base import Pass, PassContext, register_pass
from snnconv.passes.contracts import HAS_NEURONS


def max_tree_layers(k: int) -> list[torch.Tensor]:
    """The pairwise max tree over ``k`` window inputs as layers of ReLU units: ``A_1 .. A_n``, with
    ``v_l = relu(A_l v_{l-1})``, ``v_0`` the window's inputs (>= 0) and ``v_n`` one value, their maximum.

    Each tree level is two layers, so that every layer reads only the layer before it (one source and one
    delay per population, as Lava's export needs): a difference layer with, for every pair (a, b), the units
    ``relu(a - b)`` and ``relu(b) = b`` (a relay), and a sum layer ``relu(a - b) + b = max(a, b)``. An unpaired
    input is relayed through both."""
    if k == 1:
        return [torch.ones(1, 1)]
    layers, m = [], k
    while m > 1:
        diff, total = [], []
        for p in range(m // 2):
            a, b = 2 * p, 2 * p + 1
            d = torch.zeros(m)
            d[a], d[b] = 1.0, -1.0
            r = torch.zeros(m)
            r[b] = 1.0
            diff += [d, r]
            total.append([2 * p, 2 * p + 1])
        if m % 2:
            diff.append(torch.nn.functional.one_hot(torch.tensor(m - 1), m).float())
            total.append([len(diff) - 1])
        s = torch.zeros(len(total), len(diff))
        for i, cols in enumerate(total):
            s[i, cols] = 1.0
        layers += [torch.stack(diff), s]
        m = len(total)
    return layers


def lower_maxpool(graph: Graph, name: str) -> list[str]:
    """Replace max-pool node ``name`` by its neuron tree (in place); returns the new node names."""
    pool, (src,) = graph.nodes[name], graph.edges[name]
    up = graph.nodes[src]
    if up.kind != "neuron":
        raise SnnconvError(f"max pool '{name}': the neuron tree needs the pool to read a spiking neuron; it reads "
                           f"'{src}' ({up.kind}); use --maxpool count")
    if pool.ceil_mode:
        raise SnnconvError(f"max pool '{name}': ceil_mode is not supported by the neuron tree; use --maxpool count")
    channels, ho, wo = pool.shape
    kh, kw = pool.kernel_size
    layers = max_tree_layers(kh * kw)
    up_levels, up_signed = getattr(up, "levels", 1), bool(getattr(up, "signed", False))
    unit_levels = up_levels * (2 if up_signed else 1)  # the largest change of a difference in one step
    plan = []  # (node name, node, its source), in order; the last is the output neuron and keeps the pool's name
    prev = src
    for i, a in enumerate(layers):
        n_out, n_in = a.shape
        last = i == len(layers) - 1
        head = name if last else f"{name}.tree{i}"
        if i == 0:  # the window taps of the pool's input, one kernel per unit
            w = a.view(1, n_out, kh, kw).expand(channels, -1, -1, -1).reshape(channels * n_out, 1, kh, kw)
            syn = Conv2d(weight=w.contiguous(), stride=pool.stride, padding=pool.padding, dilation=pool.dilation,
                         groups=channels)
        else:
            w = a.view(1, n_out, n_in, 1, 1).expand(channels, -1, -1, -1, -1).reshape(channels * n_out, n_in, 1, 1)
            syn = Conv2d(weight=w.contiguous(), groups=channels)
        syn.shape = (channels * n_out, ho, wo)
        neuron = (SpikingNeuron(threshold=up.threshold.clone(), v_init=0.5, levels=up_levels, signed=up_signed)
                  if last else SpikingNeuron(threshold=_per_unit(up.threshold, n_out), v_init=0.5, levels=unit_levels,
                                             signed=True))
        neuron.shape = (channels * n_out, ho, wo)
        plan += [(f"{head}.syn", syn, prev), (head, neuron, f"{head}.syn")]
        prev = head
    clash = next((n for n, _, _ in plan[:-1] if n in graph.nodes), None)
    if clash:  # checked before the graph is touched
        raise SnnconvError(f"max pool '{name}': node name '{clash}' is taken")
    for n, node, source in plan[:-1]:
        graph.insert_before(name, n, node, [source])
    _, neuron, source = plan[-1]  # the pool's own node becomes the tree's output neuron: its consumers keep reading it
    graph.nodes[name], graph.edges[name] = neuron, [source]
    return [n for n, _, _ in plan[:-1]]


def _per_unit(theta: torch.Tensor, n: int) -> torch.Tensor:
    return theta.clone() if theta.numel() == 1 else theta.reshape(-1).repeat_interleave(n)


@register_pass
class MaxPoolTree(Pass):
    name = "maxpool_tree"
    requires = (HAS_NEURONS,)

    @dataclass
    class Config:
        pass

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        pools = [k for k, n in graph.nodes.items() if n.kind == "maxpool2d"]
        added = 0
        for k in pools:
            added += sum(graph.nodes[n].kind == "neuron" for n in lower_maxpool(graph, k)) + 1  # + the pool's own
        graph.validate()
        ctx.log(self.name, f"{len(pools)} max-pool layer(s) built from signed IF neurons ({added} neuron layers, "
                "the count mode spike for spike)" if pools else "no max pooling", layers=pools)
        return graph
