r"""NIR export and import (Neuromorphic Intermediate Representation, Pedersen et al., Nat. Commun. 2024).

**What is written is what snnconv simulates.** Export runs in two steps:

1. :func:`lower_for_nir` rewrites the converted graph, exactly in real arithmetic, into the form
   NIR can state: every neuron gets threshold 1 and emits unit spikes; the spike amplitude
   :math:`\theta` of each neuron and every IR ``Scale`` are folded into the weights downstream
   (:math:`W'_{oi} = W_{oi}\,g_i/\theta_o`, :math:`b'_o = b_o/\theta_o`, with :math:`g_i` the gain of
   input channel *i*). This is the weight-normalisation form of threshold balancing (Diehl et al.
   2015; Rueckauer et al. 2017), the exact dual of snnconv's threshold form. Where a gain cannot be
   folded into a weight (an identity shortcut of a residual block, a neuron fed by the input), a
   1x1 convolution (or linear map) with a diagonal kernel is inserted: none of the NIR importers of
   SpikingJelly, Norse or snnTorch maps ``nir.Scale``, all map ``Conv2d``/``Affine``.
2. :func:`to_nir` maps the lowered graph one node to one NIR node. Residual ``Add`` nodes become
   several edges into one node (NIR sums the inputs of a node).

The lowered graph is itself an snnconv graph; :func:`import_nir` of the written file gives it back
node for node, so export -> import -> simulate gives the same outputs bit for bit. The peers are
checked against a simulation of this lowered graph (``snnconv verify``).

**Semantics written** (``dt`` = one simulator step, default 1; see ``docs/nir.md``):

* ``IF``: :math:`v \leftarrow v + \Delta t\, r\, I` with :math:`r = 1/\Delta t`, spike when
  :math:`v > v_\mathrm{thr}`, reset to ``v_reset``. snnconv tests :math:`v \ge 1`; in float32 that is
  :math:`v > \mathrm{nextafter}(1, 0)`, so ``v_threshold`` is written as the float32 just below 1
  and the file states snnconv's test exactly under NIR's strict ``>``.
* ``LIF`` (forward Euler, the discretisation of SpikingJelly, Norse and snnTorch):
  :math:`v \leftarrow v + \frac{\Delta t}{\tau}(v_\mathrm{leak} - v + r I)`; snnconv's
  :math:`v \leftarrow \beta v + I` is :math:`\tau = \Delta t/(1-\beta)`, :math:`r = \tau/\Delta t`,
  :math:`v_\mathrm{leak} = 0`.
* ``CubaLIF``: snnconv's node carries NIR's own fields and is written as is (amplitude folded).
* Readout: the graph ``Output`` is the last ``Affine``'s output at every step, **not** integrated
  by the file. snnconv's prediction at step t is the running mean of those outputs (a non-spiking
  integrator); a consumer of the file integrates them the same way. Recorded in the graph metadata.

**Refused** (NIR has no equivalent, and no exact lowering exists): reset by subtraction, a non-zero
initial membrane, graded (multi-level) spikes, refractory periods, max pooling, unfolded batch
norm, unconverted activations and neuron models NIR lacks. The error lists every offending node
and the conversion option that makes the graph exportable. Quantized weights (``bits``) are written
as the float values they stand for (the same computation); the bit width is kept in node metadata.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from snnconv.errors import SnnconvError
from snnconv.ir import (AvgPool2d, Conv2d, CubaLIF, Flatten, Graph, Input, Linear, Scale,
                        SpikingNeuron)
from snnconv.interop.base import nir_pair, uniform_value
from snnconv.ir.structure import Add

#: Why an IR node kind cannot be written, and the option that makes the graph exportable.
_REFUSED_KINDS = {
    "maxpool2d": "max pooling has no NIR node; convert with --maxpool tree (the exact count mode built from signed "
                 "IF neurons) or use average pooling",
    "batchnorm": "batch norm is not folded; run the fold_batchnorm pass",
    "clip": "activation is not converted to a neuron; run threshold_balance",
    "concat": "concatenation has no NIR node",
    "reshape": "reshape has no NIR node (only flatten)",
    "adaptive_lif": "adaptive LIF has no NIR node; use --neuron if or lif",
    "izhikevich": "Izhikevich neurons have no NIR node; use --neuron if or lif",
    "hodgkin_huxley": "Hodgkin-Huxley neurons have no NIR node; use --neuron if or lif",
}

F32_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


#: how neuron dynamics are written: "nir" = only what NIR's own fields state (reset to v_reset, start at 0,
#: binary spikes); "snnconv" = NIR nodes plus the documented per-node metadata convention (docs/nir.md,
#: "snnconv dynamics") that snnconv.interop's target loaders read: subtractive reset, initial membrane,
#: graded and signed spikes. A plain NIR importer reads such a file as reset-to-zero neurons (a different
#: network): the graph metadata says so, and `snnconv verify` runs it through the loaders.
DYNAMICS = ("nir", "snnconv")
SNNCONV_DYNAMICS_VERSION = 1


def needs_snnconv_dynamics(graph: Graph) -> bool:
    """Whether the graph's neurons use anything NIR's fields cannot state (reset by subtraction, v_init,
    graded or signed spikes)."""
    return any(n.kind == "neuron" and (n.reset != "zero" or n.v_init or n.levels != 1 or n.signed)
               for n in graph.nodes.values())


def _refusals(graph: Graph, dynamics: str = "nir") -> list[str]:
    out = []
    for name, n in graph.nodes.items():
        if n.kind == "neuron":
            if dynamics == "nir":
                if n.reset != "zero":
                    out.append(f"{name}: reset by subtraction (NIR neurons reset to v_reset) -> export with "
                               f"--dynamics snnconv (interop loaders) or convert with --reset zero")
                if n.v_init:
                    out.append(f"{name}: non-zero initial membrane (NIR starts at 0) -> export with --dynamics "
                               f"snnconv or convert with --v-init 0")
                if n.levels != 1:
                    out.append(f"{name}: graded spikes ({n.levels} levels; NIR spikes are binary) -> export with "
                               f"--dynamics snnconv or use binary neurons (levels=1)")
                if n.signed:
                    out.append(f"{name}: signed spikes (NIR spikes are positive) -> export with --dynamics snnconv "
                               f"or convert without --signed")
            elif n.reset == "zero" and (n.levels != 1 or n.signed):
                out.append(f"{name}: graded or signed spikes with reset to zero have no interop loader")
            if n.v_offset is not None and bool(torch.any(n.v_offset != 0)):
                out.append(f"{name}: a per-neuron initial-membrane offset (potential calibration) is not exported "
                           f"-> calibrate with --calibration bias")
            if n.presim:
                out.append(f"{name}: SRP pre-run ({n.presim} steps) is not exported -> convert without srp")
            if n.refractory:
                out.append(f"{name}: refractory period {n.refractory} (not in NIR) -> refractory 0")
        elif n.kind == "scale" and n.offset is not None and bool(torch.any(n.offset != 0)) and \
                _offset_as_bias(n) is None:
            out.append(f"{name}: scale with an offset that is not per channel has no NIR equivalent")
        elif n.kind == "scale" and n.scale.numel() > 1 and _channel_vector(n.scale, n.shape) is None:
            out.append(f"{name}: scale that is not per-channel cannot be folded into weights")
        elif n.kind == "avgpool2d" and (n.ceil_mode or (any(n.padding) and not n.count_include_pad)):
            out.append(f"{name}: average pooling with ceil_mode / count_include_pad=False has no NIR equivalent")
        elif n.kind == "adaptive_avgpool2d":
            src = graph.nodes[graph.edges[name][0]].shape
            if any(s % o for s, o in zip(src[1:], n.output_size)):
                out.append(f"{name}: adaptive average pooling {tuple(src[1:])} -> {n.output_size} is not a fixed window")
        elif n.kind in _REFUSED_KINDS:
            out.append(f"{name}: {_REFUSED_KINDS[n.kind]}")
        elif n.kind not in ("input", "conv2d", "linear", "neuron", "cuba_lif", "avgpool2d", "adaptive_avgpool2d",
                            "flatten", "add", "scale", "identity"):
            out.append(f"{name}: op '{n.kind}' has no NIR mapping")
    for name in graph.nodes:
        srcs = graph.edges[name]
        if len(set(srcs)) != len(srcs):
            out.append(f"{name}: reads the same node twice (NIR edges are unique)")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        out.append("graph: NIR export needs exactly one input and one output")
    return out


def check_exportable(graph: Graph, dynamics: str = "nir") -> None:
    """Raise one :class:`SnnconvError` listing every node NIR cannot express, with the fix for each."""
    if dynamics not in DYNAMICS:
        raise SnnconvError(f"unknown NIR dynamics '{dynamics}' (known: {', '.join(DYNAMICS)})")
    bad = _refusals(graph, dynamics)
    if bad:  # group "node: problem -> fix" lines by problem so the message stays one readable line
        groups: dict[str, list[str]] = {}
        for line in bad:
            node, _, problem = line.partition(": ")
            groups.setdefault(problem, []).append(node)
        parts = [f"{problem.replace(' -> ', f' in {len(nodes)} node(s) ({chr(44).join(nodes)}) -> ', 1)}"
                 if " -> " in problem else f"{problem} in {', '.join(nodes)}" for problem, nodes in groups.items()]
        raise SnnconvError("cannot export to NIR without changing the model: " + "; ".join(parts))


# -- lowering ---------------------------------------------------------------------------------------
def _channel_vector(t: torch.Tensor, shape: tuple) -> torch.Tensor | None:
    """A scale tensor as a scalar or a per-channel ``[C]`` vector (dim 0 of the per-sample shape)."""
    if t.numel() == 1:
        return t.reshape(()).double()
    if not shape:
        return None
    if t.dim() == len(shape) + 1 and t.shape[0] == 1:  # a leading batch dimension of 1
        t = t[0]
    if t.dim() == len(shape) and t.shape[0] == shape[0] and all(s == 1 for s in t.shape[1:]):
        return t.reshape(shape[0]).double()
    return None


def _offset_as_bias(n):
    """``Scale(s, offset)`` with a per-channel ``offset`` as the equivalent 1x1 diagonal convolution (or linear
    map) with bias ``offset``: exact (one nonzero term per output), and NIR has both. None otherwise."""
    c = n.shape[0] if n.shape else None
    if c is None or len(n.shape) not in (1, 3):
        return None
    off = _channel_vector(n.offset, n.shape)
    sc = _channel_vector(n.scale, n.shape)
    if off is None or sc is None:
        return None
    w = torch.diag(_per_channel(sc, c)).float()
    b = _per_channel(off, c).float().clone()
    return Conv2d(w.view(c, c, 1, 1), b) if len(n.shape) == 3 else Linear(w, b)


def _is_one(g: torch.Tensor) -> bool:
    return bool(torch.all(g == 1))


def _per_channel(g: torch.Tensor, c: int) -> torch.Tensor:
    return g.expand(c) if g.dim() == 0 else g


def _diag_node(f: torch.Tensor, shape: tuple):
    """An exact per-channel scaling as a 1x1 convolution (3-D maps) or a linear map (vectors)."""
    c = shape[0]
    w = torch.diag(_per_channel(f, c)).float()
    if len(shape) == 3:
        return Conv2d(w.view(c, c, 1, 1))
    if len(shape) == 1:
        return Linear(w)
    raise SnnconvError(f"cannot express a per-channel scale on a tensor of shape {shape} in NIR")


def _with_weight(node, weight, bias):
    changes = {"weight": weight, "bias": bias}
    for f in ("weight_int", "weight_scale"):  # quantized codes no longer describe the folded weight
        if getattr(node, f, None) is not None:
            changes[f] = None
    new = node.replace(**changes)
    new.shape = node.shape
    return new


def _sum_pool(kernel, stride, padding, channels: int) -> Conv2d:
    """Sum pooling as a depthwise convolution with an all-ones kernel (exact; written as NIR SumPool2d)."""
    return Conv2d(torch.ones(channels, 1, *kernel), None, tuple(stride), tuple(padding), (1, 1), channels)


def _dense_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """The ``groups=1`` weight of a grouped convolution: each group's kernels on its own input channels, zeros
    elsewhere (block diagonal over the groups)."""
    if groups == 1:
        return w
    cout, cin_g = w.shape[:2]
    dense = torch.zeros(cout, cin_g * groups, *w.shape[2:], dtype=w.dtype)
    per = cout // groups
    for gi in range(groups):
        dense[gi * per:(gi + 1) * per, gi * cin_g:(gi + 1) * cin_g] = w[gi * per:(gi + 1) * per]
    return dense


def _is_sum_pool(n) -> bool:
    c = n.weight.shape[0]
    return (n.kind == "conv2d" and n.bias is None and n.groups == c > 1 and n.weight.shape[1] == 1
            and tuple(n.dilation) == (1, 1) and bool(torch.all(n.weight == 1)))


def lower_for_nir(graph: Graph, pool: str = "avg", dynamics: str = "nir") -> Graph:
    """Exact rewrite into NIR form: unit thresholds and unit spikes, amplitudes and scales folded.

    Method: a forward pass tracks, for every tensor, the gain ``g`` (scalar or per channel) with
    ``original = g * lowered``. A synaptic layer absorbs its input gain into its weights and takes
    as output gain the threshold of the neuron it feeds (alone, possibly through a residual add),
    so that neuron's threshold becomes 1 (Diehl et al. 2015 weight normalisation). A neuron's output
    gain is its threshold (its spikes become unit spikes). Gains that cannot be absorbed are
    realised by a diagonal 1x1 convolution. The result is checked by :func:`check_exportable`.

    ``pool="sum"`` writes average pooling as sum pooling (NIR ``SumPool2d``) with the ``1/k^2``
    folded into the next layer's weights like any other gain (for importers without
    ``AvgPool2d``, e.g. Norse); ``"avg"`` keeps NIR ``AvgPool2d``.

    ``dynamics="snnconv"`` also lowers neurons with subtractive reset, an initial membrane (a fraction
    of the threshold, so unchanged by the lowering), graded and signed spikes (see :data:`DYNAMICS`).
    """
    if pool not in ("avg", "sum"):
        raise SnnconvError(f"pool must be 'avg' or 'sum', got {pool!r}")
    check_exportable(graph, dynamics)
    g = graph.copy()
    for name in [n for n, node in g.nodes.items() if node.kind == "identity"]:
        g.bypass(name)
    for name, node in list(g.nodes.items()):  # a per-channel constant current (bias calibration on a residual sum)
        if node.kind == "scale" and node.offset is not None and bool(torch.any(node.offset != 0)):
            new = _offset_as_bias(node)
            new.shape = node.shape
            g.nodes[name] = new

    def threshold_of(name: str) -> torch.Tensor:
        th = g.nodes[name].threshold.double()
        return th.reshape(-1) if th.numel() > 1 else th.reshape(())

    # desired output gain of each node: the threshold of the neuron it alone feeds (through adds)
    desired: dict[str, torch.Tensor] = {}
    for name in reversed(list(g.nodes)):
        cons = g.succs(name)
        d = torch.tensor(1.0, dtype=torch.float64)
        if len(cons) == 1 and name not in g.outputs:
            c = g.nodes[cons[0]]
            if c.kind == "neuron":
                d = threshold_of(cons[0])
            elif c.kind == "add" and cons[0] in desired:
                d = desired[cons[0]]
        desired[name] = d

    gain: dict[str, torch.Tensor] = {}
    one = torch.tensor(1.0, dtype=torch.float64)

    def realise(src: str, dst: str, f: torch.Tensor) -> None:
        """Insert a diagonal scaling by ``f`` on the edge src -> dst."""
        shape = g.nodes[src].shape
        node = _diag_node(f, shape)
        node.shape = shape
        name = g.insert_before(dst, g.unique_name(f"{src}.nir_scale"), node, [src])
        g.edges[dst] = [name if s == src else s for s in g.edges[dst]]

    for name in list(g.nodes):
        node = g.nodes[name]
        srcs = g.edges[name]
        gin = gain.get(srcs[0], one) if srcs else one
        if node.kind == "input":
            gain[name] = one
        elif node.kind in ("conv2d", "linear"):
            d = desired[name]
            w = node.weight.double()
            cout = w.shape[0]
            if node.kind == "conv2d":
                groups, cin_g = node.groups, w.shape[1]
                gi = _per_channel(gin, cin_g * groups).view(groups, cin_g)
                gi = gi.repeat_interleave(cout // groups, 0).view(cout, cin_g, 1, 1)
                do = _per_channel(d, cout).view(cout, 1, 1, 1)
            else:
                gi = _per_channel(gin, w.shape[1]).view(1, -1)
                do = _per_channel(d, cout).view(cout, 1)
            w = (w * gi / do).float()
            b = None if node.bias is None else (node.bias.double() / _per_channel(d, cout)).float()
            g.nodes[name] = _with_weight(node, w, b)
            gain[name] = d
        elif node.kind == "neuron":
            th = threshold_of(name)
            f = gin / th  # the input must arrive in units of this neuron's threshold
            if not _is_one(f):
                realise(srcs[0], name, f)
            vr = node.v_reset / th if node.v_reset else torch.zeros(())
            if vr.dim() and not torch.all(vr == vr[0]):
                raise SnnconvError(f"{name}: reset potential {node.v_reset} with per-channel thresholds gives "
                                   f"per-channel reset values in NIR form (not supported); use v_reset 0")
            new = node.replace(threshold=torch.tensor(1.0), v_reset=float(vr.reshape(-1)[0]))
            new.shape = node.shape
            g.nodes[name] = new
            gain[name] = th
        elif node.kind == "cuba_lif":
            if not _is_one(gin):
                if gin.dim() == 0:
                    node = node.replace(w_in=float(node.w_in * gin))
                else:
                    realise(srcs[0], name, gin)
            new = node.replace(amplitude=1.0)
            new.shape = node.shape
            g.nodes[name] = new
            gain[name] = torch.tensor(float(node.amplitude), dtype=torch.float64)
        elif node.kind == "add":
            d = desired[name]
            for s in list(srcs):
                f = gain.get(s, one) / d
                if not _is_one(f):
                    realise(s, name, f)
            gain[name] = d
        elif node.kind == "scale":
            gain[name] = gin * _channel_vector(node.scale, node.shape)
            g.bypass(name)
        elif node.kind in ("avgpool2d", "adaptive_avgpool2d") and pool == "sum":
            src_shape = g.nodes[srcs[0]].shape
            if node.kind == "avgpool2d":
                k, st, pad = node.kernel_size, node.stride, node.padding
            else:
                k = st = tuple(s // o for s, o in zip(src_shape[1:], node.output_size))
                pad = (0, 0)
            new = _sum_pool(k, st, pad, src_shape[0])
            new.shape = node.shape
            g.nodes[name] = new
            gain[name] = gin / (k[0] * k[1])  # sum = k^2 * average
        elif node.kind in ("avgpool2d", "adaptive_avgpool2d"):
            gain[name] = gin
        elif node.kind == "flatten":
            src_shape = g.nodes[srcs[0]].shape
            if gin.dim() and node.start_dim == 1 and len(src_shape) > 1:
                gin = gin.repeat_interleave(int(np.prod(src_shape[1:])))
            gain[name] = gin
        else:  # pragma: no cover - check_exportable refused it
            raise SnnconvError(f"{name}: op '{node.kind}' has no NIR mapping")
    out = g.outputs[0]
    if not _is_one(gain[out]):  # e.g. the graph ends in a neuron: restore the original output scale
        name = g.unique_name(f"{out}.nir_scale")
        node = _diag_node(gain[out], g.nodes[out].shape)
        g.insert_after(out, name, node)
    g.meta = {**g.meta, "nir_lowered": True}
    g.validate()
    return g


# -- IR -> NIR --------------------------------------------------------------------------------------
def _full(shape, value) -> np.ndarray:
    return np.full(tuple(shape), value, dtype=np.float32)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def to_nir(lowered: Graph, dt: float = 1.0):
    """Map a lowered graph (:func:`lower_for_nir`) one node to one NIR node; adds become edges."""
    import nir

    if dt <= 0:
        raise SnnconvError("dt must be positive")
    g = lowered
    nodes, meta_bits = {}, {}
    for name, n in g.nodes.items():
        if n.kind == "input":
            nodes[name] = nir.Input(input_type={"input": np.array(n.shape)})
        elif n.kind == "conv2d" and _is_sum_pool(n):
            nodes[name] = nir.SumPool2d(kernel_size=np.array(n.weight.shape[-2:]), stride=np.array(n.stride),
                                        padding=np.array(n.padding))
        elif n.kind == "conv2d":
            in_shape = g.nodes[g.edges[name][0]].shape
            bias = _np(n.bias) if n.bias is not None else np.zeros(n.weight.shape[0], np.float32)
            # written with groups=1: nir 1.0 types a conv's input as weight.shape[1] channels whatever its groups,
            # so a grouped conv fails nir.read's type check; the block-diagonal dense weight is the same map
            nodes[name] = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_np(_dense_weight(n.weight, n.groups)),
                                     stride=tuple(n.stride), padding=tuple(n.padding), dilation=tuple(n.dilation),
                                     groups=1, bias=bias)
        elif n.kind == "linear":
            nodes[name] = (nir.Affine(weight=_np(n.weight), bias=_np(n.bias)) if n.bias is not None
                           else nir.Linear(weight=_np(n.weight)))
        elif n.kind == "neuron":
            if n.model == "if":
                nodes[name] = nir.IF(r=_full(n.shape, 1.0 / dt), v_threshold=_full(n.shape, F32_BELOW_ONE),
                                     v_reset=_full(n.shape, n.v_reset))
            else:
                tau = dt / (1.0 - n.leak)
                nodes[name] = nir.LIF(tau=_full(n.shape, tau), r=_full(n.shape, tau / dt), v_leak=_full(n.shape, 0.0),
                                      v_threshold=_full(n.shape, F32_BELOW_ONE), v_reset=_full(n.shape, n.v_reset))
            if n.reset != "zero" or n.v_init or n.levels != 1 or n.signed:  # the snnconv-dynamics convention
                nodes[name].metadata = {"snnconv_reset": n.reset, "snnconv_v_init": float(n.v_init),
                                        "snnconv_levels": int(n.levels), "snnconv_signed": bool(n.signed)}
        elif n.kind == "cuba_lif":
            if not math.isclose(n.dt, dt):
                raise SnnconvError(f"{name}: CubaLIF has dt={n.dt}, the export uses dt={dt}; pass --dt {n.dt}")
            thr = float(np.nextafter(np.float32(n.v_threshold), np.float32(-np.inf)))
            nodes[name] = nir.CubaLIF(tau_syn=_full(n.shape, n.tau_syn), tau_mem=_full(n.shape, n.tau_mem),
                                      r=_full(n.shape, n.r), v_leak=_full(n.shape, n.v_leak),
                                      v_threshold=_full(n.shape, thr), v_reset=_full(n.shape, n.v_reset),
                                      w_in=_full(n.shape, n.w_in))
        elif n.kind == "avgpool2d":
            nodes[name] = nir.AvgPool2d(kernel_size=np.array(n.kernel_size), stride=np.array(n.stride),
                                        padding=np.array(n.padding))
        elif n.kind == "adaptive_avgpool2d":
            src = g.nodes[g.edges[name][0]].shape
            k = np.array([s // o for s, o in zip(src[1:], n.output_size)])
            nodes[name] = nir.AvgPool2d(kernel_size=k, stride=k, padding=np.array([0, 0]))
        elif n.kind == "flatten":
            src = g.nodes[g.edges[name][0]].shape
            nodes[name] = nir.Flatten(input_type={"input": np.array(src)}, start_dim=n.start_dim - 1, end_dim=-1)
        elif n.kind == "add":
            continue
        else:
            raise SnnconvError(f"{name}: op '{n.kind}' has no NIR mapping (lower the graph with lower_for_nir first)")
        if getattr(n, "bits", None):
            meta_bits[name] = int(n.bits)
            nodes[name].metadata = {**(nodes[name].metadata or {}), "snnconv_bits": int(n.bits)}

    def sources(s: str) -> list[str]:
        return [x for p in g.edges[s] for x in sources(p)] if g.nodes[s].kind == "add" else [s]

    edges = []
    for name, srcs in g.edges.items():
        if name in nodes:
            edges += [(s, name) for src in srcs for s in sources(src)]
    out = g.outputs[0]
    nodes["output"] = nir.Output(output_type={"output": np.array(g.nodes[out].shape)})
    edges += [(s, "output") for s in sources(out)]
    if len(set(edges)) != len(edges):
        raise SnnconvError("the graph adds a tensor to itself; NIR edges are unique")
    meta = {"producer": "snnconv", "dt": float(dt),
            "readout": "output = last Affine at every step; prediction(t) = mean of outputs up to t",
            "input": "the encoded input at every step (direct coding: the image every step)"}
    if any(isinstance(nd.metadata, dict) and "snnconv_reset" in nd.metadata for nd in nodes.values()):
        meta["snnconv_dynamics"] = SNNCONV_DYNAMICS_VERSION
        meta["dynamics_note"] = ("neurons carry snnconv_* metadata (subtractive reset, initial membrane, graded/signed "
                                 "spikes) that NIR's fields cannot state; load with snnconv.interop.<target>.load, "
                                 "a plain NIR importer builds reset-to-zero neurons (a different network)")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(graph: Graph, path: str | Path, dt: float = 1.0, pool: str = "avg", overwrite: bool = False,
               dynamics: str | None = None) -> dict:
    """Lower ``graph`` exactly to NIR form and write it to ``path`` (HDF5). Returns a summary.

    ``dynamics`` (:data:`DYNAMICS`): None picks ``"snnconv"`` when the neurons need it
    (:func:`needs_snnconv_dynamics`), so the written network is the converted one, else ``"nir"``.

    An existing ``path`` is replaced only with ``overwrite`` (checked before the lowering)."""
    import nir

    from snnconv.output import atomic_file, check_output_file

    check_output_file(path, overwrite)
    if dynamics is None:
        dynamics = "snnconv" if needs_snnconv_dynamics(graph) else "nir"
    lowered = lower_for_nir(graph, pool, dynamics)
    ng = to_nir(lowered, dt)
    path = Path(path)
    with atomic_file(path, overwrite) as tmp:
        nir.write(tmp, ng)
    counts: dict[str, int] = defaultdict(int)
    for n in ng.nodes.values():
        counts[type(n).__name__] += 1
    inserted = [k for k in lowered.nodes if ".nir_scale" in k]
    return {"path": str(path), "nodes": dict(counts), "edges": len(ng.edges), "dt": dt, "pool": pool, "dynamics": dynamics,
            "diagonal_scales_inserted": inserted, "nir_version": nir.version}


# -- NIR -> IR --------------------------------------------------------------------------------------
def _threshold(a, name: str) -> torch.Tensor:
    """NIR's ``v > thr`` as snnconv's ``v >= theta``: theta = the next float32 above thr; scalar or per channel."""
    a = np.nextafter(np.asarray(a, dtype=np.float32), np.float32(np.inf))
    if np.unique(a).size == 1:
        return torch.tensor(float(a.reshape(-1)[0]))
    if a.ndim >= 1:
        per_c = a.reshape(a.shape[0], -1)
        if np.all(per_c == per_c[:, :1]):
            return torch.from_numpy(per_c[:, 0].copy())
    raise SnnconvError(f"NIR node '{name}': per-neuron thresholds are not supported (scalar or per channel only)")


def from_nir(ng, dt: float | None = None) -> Graph:
    """An snnconv graph from a ``nir.NIRGraph`` (inverse of :func:`to_nir`; foreign files too).

    NIR neurons emit unit spikes; snnconv's emit their threshold, so a neuron whose threshold is not
    1 gets a ``Scale(1/theta)`` after it. ``r*dt != 1`` becomes a ``Scale`` before the neuron. Nodes
    with several incoming edges read an ``Add`` of their sources. ``dt`` defaults to the file's
    ``metadata['dt']`` (written by snnconv), else 1.
    """
    import nir

    if dt is None:
        dt = float(ng.metadata.get("dt", 1.0)) if isinstance(ng.metadata, dict) else 1.0
    from snnconv.interop.base import topological_order

    order, preds = topological_order(ng, "recurrent graphs are not supported by the import")
    g = Graph()
    out_of: dict[str, str] = {}  # NIR node -> IR node holding its output
    output = None
    for name in order:
        n = ng.nodes[name]
        srcs = [out_of[p] for p in preds[name]]
        if len(srcs) > 1 and not isinstance(n, nir.Output):
            srcs = [g.add(g.unique_name(f"{name}.sum"), Add(), srcs)]
        if isinstance(n, nir.Input):
            shape = tuple(int(x) for x in np.asarray(n.input_type["input"]).reshape(-1))
            g.add(name, Input(shape=shape))
            out_of[name] = name
            continue
        if isinstance(n, nir.Output):
            if len(srcs) > 1:
                srcs = [g.add(g.unique_name("output.sum"), Add(), srcs)]
            output = srcs[0]
            continue
        if len(srcs) != 1:
            raise SnnconvError(f"NIR node '{name}' has no input")
        cur = srcs[0]
        if isinstance(n, nir.Conv2d):
            pad = n.padding
            if isinstance(pad, str):
                if pad == "valid":
                    pad = (0, 0)
                else:
                    k = np.asarray(n.weight.shape[-2:])
                    if np.any(np.asarray(nir_pair(n.stride)) != 1) or np.any(k % 2 == 0):
                        raise SnnconvError(f"NIR node '{name}': padding='same' needs stride 1 and odd kernels")
                    pad = tuple(int(x) for x in (np.asarray(nir_pair(n.dilation)) * (k - 1) // 2))
            bias = torch.from_numpy(np.asarray(n.bias, np.float32).copy())
            node = Conv2d(torch.from_numpy(np.asarray(n.weight, np.float32).copy()),
                          None if not torch.any(bias != 0) else bias, nir_pair(n.stride), nir_pair(pad),
                          nir_pair(n.dilation), int(np.asarray(n.groups)))
        elif isinstance(n, (nir.Affine, nir.Linear)):
            w = torch.from_numpy(np.asarray(n.weight, np.float32).copy())
            b = torch.from_numpy(np.asarray(n.bias, np.float32).copy()) if isinstance(n, nir.Affine) else None
            node = Linear(w, b)
        elif isinstance(n, (nir.IF, nir.LIF)):
            th = _threshold(n.v_threshold, name)
            vr = uniform_value(n.v_reset, "v_reset", name)
            r = uniform_value(n.r, "r", name)
            if isinstance(n, nir.IF):
                leak, gain, model = 1.0, r * dt, "if"
            else:
                tau = uniform_value(n.tau, "tau", name)
                if uniform_value(n.v_leak, "v_leak", name) != 0.0:
                    raise SnnconvError(f"NIR node '{name}': LIF with v_leak != 0 is not supported by the import")
                if tau < dt:
                    raise SnnconvError(f"NIR node '{name}': tau={tau} < dt={dt} (Euler step unstable)")
                leak, gain, model = 1.0 - dt / tau, dt * r / tau, "lif"
            if not math.isclose(gain, 1.0, rel_tol=1e-6):
                cur = g.add(g.unique_name(f"{name}.r"), Scale(torch.tensor(gain)), [cur])
            kwargs = {"reset": "zero", "v_reset": vr} if vr else {"reset": "zero"}
            md = n.metadata if isinstance(n.metadata, dict) else {}
            if "snnconv_reset" in md:  # the snnconv-dynamics convention (see DYNAMICS)
                kwargs = {"reset": str(md["snnconv_reset"]), "levels": int(md.get("snnconv_levels", 1)),
                          "signed": bool(md.get("snnconv_signed", False)),
                          "v_init": float(md.get("snnconv_v_init", 0.0))}
                if kwargs["reset"] == "zero" and vr:
                    kwargs["v_reset"] = vr
            node = SpikingNeuron(th, model=model, leak=leak, **kwargs)
            g.add(name, node, [cur])
            out_of[name] = name
            if not bool(torch.all(th == 1)):  # snnconv spikes carry theta, NIR spikes are 1
                ndim = len(np.asarray(n.v_threshold).shape)
                unit = 1.0 / (th.view(-1, *([1] * (ndim - 1))) if th.dim() else th)
                out_of[name] = g.add(g.unique_name(f"{name}.unit"), Scale(unit), [name])
            continue
        elif isinstance(n, nir.CubaLIF):
            f = {k: uniform_value(getattr(n, k), k, name) for k in ("tau_syn", "tau_mem", "r", "v_leak", "v_reset", "w_in")}
            thr = float(np.nextafter(np.float32(uniform_value(n.v_threshold, "v_threshold", name)), np.float32(np.inf)))
            node = CubaLIF(v_threshold=thr, dt=dt, **f)
        elif isinstance(n, nir.SumPool2d) and n.input_type.get("input") is not None:
            node = _sum_pool(nir_pair(n.kernel_size), nir_pair(n.stride), nir_pair(n.padding),
                             int(np.asarray(n.input_type["input"]).reshape(-1)[0]))
        elif isinstance(n, (nir.AvgPool2d, nir.SumPool2d)):
            k = nir_pair(n.kernel_size)
            node = AvgPool2d(k, nir_pair(n.stride), nir_pair(n.padding))
            if isinstance(n, nir.SumPool2d):  # channel count unknown: average times k^2
                g.add(name + ".avg", node, [cur])
                cur, node = name + ".avg", Scale(torch.tensor(float(k[0] * k[1])))
        elif isinstance(n, nir.Flatten):
            if int(n.end_dim) != -1:
                raise SnnconvError(f"NIR node '{name}': flatten with end_dim={n.end_dim} is not supported")
            node = Flatten(start_dim=int(n.start_dim) + 1)
        elif isinstance(n, nir.Scale):
            node = Scale(torch.from_numpy(np.asarray(n.scale, np.float32).copy()))
        else:
            raise SnnconvError(f"NIR node '{name}' ({type(n).__name__}) has no snnconv equivalent")
        g.add(name, node, [cur])
        out_of[name] = name
    if output is None:
        raise SnnconvError("NIR graph has no Output node")
    g.outputs = [output]
    g.meta = {"source": "nir", "dt": dt}
    g.validate()
    return g.infer_shapes()


def import_nir(path: str | Path, dt: float | None = None) -> Graph:
    """Read a NIR HDF5 file into an snnconv graph (see :func:`from_nir`)."""
    import nir

    path = Path(path)
    if not path.is_file():
        raise SnnconvError(f"NIR file {path} not found")
    try:
        ng = nir.read(path)
    except Exception as e:  # h5py/nir raise many types for a bad file
        raise SnnconvError(f"cannot read NIR file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return from_nir(ng, dt)


def check_network(snn: Graph) -> None:
    """Whether the graph has a NIR form (``convert --target``, ``runs_in``), not whether nir is installed."""
    lower_for_nir(snn, dynamics="snnconv" if needs_snnconv_dynamics(snn) else "nir")


def check_export(snn: Graph) -> None:
    """``--export nir``: the one-line refusal now (right after conversion) when the graph has no NIR form."""
    try:
        import nir  # noqa: F401
    except ImportError:
        raise SnnconvError("--export nir needs the nir package: pip install 'snnconv[nir]'") from None
    check_network(snn)


def write_export(path, snn: Graph, ann, input_shape, dataset, data_dir, log_fn=print, timesteps=None) -> None:
    """``--export nir`` (:mod:`snnconv.backends.exports`): the converted SNN as ``snn.nir``."""
    info = export_nir(snn, path)
    log_fn(f"export nir: {Path(path).name} (NIR {info['nir_version']}, {info['dynamics']} dynamics, "
           f"{', '.join(f'{k} {v}' for k, v in info['nodes'].items())}; {info['edges']} edges)"
           + ("; run it with snnconv.interop.load(path, target) or check it with `snnconv verify`"
              if info["dynamics"] == "snnconv" else ""))
