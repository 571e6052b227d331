r"""Max pooling built from signed integrate-and-fire neurons, so max-pool networks can be exported.

The simulator's ``count`` max-pool mode (:class:`snnconv.ir.MaxPool2d`) is exact, but it is an operator
only snnconv runs: NIR has no max-pool primitive and no peer simulator has the mode. This pass rewrites every
max-pool layer into ordinary synaptic layers and neurons that compute the same spike trains.

Method. The identity :math:`\max(a, b) = b + \mathrm{ReLU}(a - b)` applied pairwise over the window (a tree
of :math:`K - 1` units for a window of K inputs, depth :math:`\lceil \log_2 K \rceil`) builds a max from
ReLUs and sums, as in the spiking max-pooling of Gaurav et al. ("Spiking Approximations of the MaxPooling
Operation in Deep SNNs", IJCNN 2022, arXiv:2205.07076), who use it to run max-pool CNNs on Loihi. Here each
ReLU unit is a *signed* IF neuron (the negative-spike neuron of Wang et al., IJCAI 2022; Hu et al., TPAMI
2023; :class:`snnconv.ir.SignedIFNeuron`) with the pool input's threshold, subtractive reset and initial
membrane :math:`\theta/2`. Every signal in the tree is an integer number of spikes of that threshold, and
for such input a signed neuron's net count after t steps is exactly :math:`\max(0, D_t)`, D being its
accumulated input in spikes (by induction over steps: the membrane stays at :math:`\theta/2`, or at
:math:`\theta/2 + D_t` while :math:`D_t < 0`; the half-threshold margin absorbs float rounding). So each
unit's net output equals the ReLU of the accumulated difference, each tree node's accumulated value is the
maximum of its inputs' accumulated values, and the last neuron (which takes the pool's name) emits the
change of the window maximum at every step: **the count mode's output, spike for spike**.

Where the pool's input is binary (0/1 spikes), the tree units see a difference that changes by at most one
spike per step and are ternary; with signed or L-level inputs they need 2L levels (graded), which only
targets with graded spikes run. The tree needs the pool to read a spiking neuron (it takes that neuron's
threshold and spike code) and no ``ceil_mode``; anything else is a one-line error naming the layer.

Cost: :math:`K - 1` extra neurons per pooled output (3 for 2x2 windows) and their synaptic events, which
the energy report counts. It runs after calibration (calibration passes compare neurons with ANN layers;
the tree's neurons have none), which is exact because the tree computes the count mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Add, Conv2d, Graph, SpikingNeuron
from snnconv.passes.base import Pass, PassContext, register_pass
from snnconv.passes.contracts import HAS_NEURONS

Term = tuple  # ("tap", i) or ("r", level, unit)


def _combine(x: dict, y: dict, sign: float) -> dict:
    out = dict(x)
    for k, v in y.items():
        out[k] = out.get(k, 0.0) + sign * v
    return {k: v for k, v in out.items() if v != 0.0}


def max_tree(k: int) -> tuple[list[list[dict]], dict]:
    """The pairwise max tree over ``k`` window inputs: ``(levels, root)``. ``levels[l][j]`` is the input of
    unit j of level l (a ReLU unit) and ``root`` the window maximum, each as ``{term: coefficient}`` over the
    window's inputs ``("tap", i)`` and the outputs of lower units ``("r", l, j)``."""
    values = [{("tap", i): 1.0} for i in range(k)]
    levels: list[list[dict]] = []
    while len(values) > 1:
        units, nxt = [], []
        for a, b in zip(values[0::2], values[1::2]):
            nxt.append(_combine({("r", len(levels), len(units)): 1.0}, b, 1.0))  # max(a, b) = relu(a - b) + b
            units.append(_combine(a, b, -1.0))
        if len(values) % 2:
            nxt.append(values[-1])
        levels.append(units)
        values = nxt
    return levels, values[0]


def _branches(name: str, exprs: list[dict], pool, channels: int, widths: list[int]) -> list[tuple[str, Conv2d, str]]:
    """The synaptic layers feeding ``len(exprs)`` units per channel: one conv over the pool's input for the
    window taps, one grouped 1x1 conv per lower level. Returns ``(node name, node, source)`` triples with
    source ``"input"`` or ``"level<l>"``."""
    n, (kh, kw) = len(exprs), pool.kernel_size
    out = []
    taps = torch.zeros(channels * n, 1, kh, kw)
    lower = [torch.zeros(channels * n, w, 1, 1) for w in widths]
    for j, e in enumerate(exprs):
        for term, coef in e.items():
            if term[0] == "tap":
                taps[j::n, 0, term[1] // kw, term[1] % kw] = coef
            else:
                lower[term[1]][j::n, term[2], 0, 0] = coef
    if taps.any():
        out.append((f"{name}.taps", Conv2d(weight=taps, stride=pool.stride, padding=pool.padding,
                                          dilation=pool.dilation, groups=channels), "input"))
    for lvl, w in enumerate(lower):
        if w.any():
            out.append((f"{name}.from{lvl}", Conv2d(weight=w, groups=channels), f"level{lvl}"))
    return out


def _per_unit(theta: torch.Tensor, n: int) -> torch.Tensor:
    return theta.clone() if theta.numel() == 1 else theta.reshape(-1).repeat_interleave(n)


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
    levels, root = max_tree(kh * kw)
    up_levels, up_signed = getattr(up, "levels", 1), bool(getattr(up, "signed", False))
    unit_levels = up_levels * (2 if up_signed else 1)  # the largest change of a difference in one step
    order = list(graph.nodes)
    pos = order.index(name)
    new: dict[str, tuple] = {}  # name -> (node, sources), in order

    def emit(tag: str, exprs: list[dict], widths: list[int], neuron: SpikingNeuron) -> None:
        branches = _branches(f"{name}.{tag}", exprs, pool, channels, widths)
        c_out = channels * len(exprs)
        srcs = []
        for bname, node, source in branches:
            node.shape = (c_out, ho, wo)
            new[bname] = (node, [src if source == "input" else f"{name}.{source}"])
            srcs.append(bname)
        head = f"{name}.{tag}" if tag != "out" else name
        if len(srcs) > 1:
            add = Add()
            add.shape = (c_out, ho, wo)
            new[f"{head}.sum"] = (add, srcs)
            srcs = [f"{head}.sum"]
        neuron.shape = (c_out, ho, wo)
        new[head] = (neuron, srcs)

    widths: list[int] = []
    for lvl, units in enumerate(levels):
        emit(f"level{lvl}", units, widths, SpikingNeuron(threshold=_per_unit(up.threshold, len(units)),
                                                         v_init=0.5, levels=unit_levels, signed=True))
        widths.append(len(units))
    emit("out", [root], widths, SpikingNeuron(threshold=up.threshold.clone(), v_init=0.5, levels=up_levels,
                                              signed=up_signed))
    for n in new:
        if n != name and n in graph.nodes:
            raise SnnconvError(f"max pool '{name}': node name '{n}' is taken")
    nodes = {k: graph.nodes[k] for k in order[:pos]}
    nodes.update({k: v[0] for k, v in new.items()})
    nodes.update({k: graph.nodes[k] for k in order[pos + 1:]})
    graph.nodes = nodes
    for k, (_, srcs) in new.items():
        graph.edges[k] = srcs
    return [k for k in new if k != name]


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
            added += sum(graph.nodes[n].kind == "neuron" for n in lower_maxpool(graph, k)) + 1
        graph.validate()
        ctx.log(self.name, f"{len(pools)} max-pool layer(s) built from signed IF neurons ({added} neuron layers, "
                "the count mode spike for spike)" if pools else "no max pooling", layers=pools)
        return graph
