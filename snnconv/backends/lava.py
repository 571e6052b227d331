r"""Lava / Loihi 2 export (``snnconv export --format lava``): one integer network for every input, run in Lava.

**What is exported is the accurate network.** The converted graph is lowered exactly to unit
thresholds (:func:`snnconv.backends.nir.lower_for_nir` with ``dynamics="snnconv"``, average pooling as
sum pooling), keeping reset by subtraction, the initial membrane, per-channel thresholds, signed and
graded spikes. Each spiking layer becomes one neuron population; each path of linear ops between two
populations (or from the input) becomes **one Lava synapse process**: a ``Conv`` (shared 8-bit kernel;
a sum-pool or 1x1 scaling next to a convolution is composed into it, e.g. pool 2x2 then conv 3x3 is
one 6x6 stride-2 kernel) or a ``Dense`` after a flatten. Each composition is checked against the graph
on random inputs before it is written. The readout (the last affine layer) is a ``Dense`` into
non-spiking integrators.

**Input and readout are part of the network.** The input is direct coding: the image, quantized to
8-bit integers with one scale (``input_scale``, from the calibration images), is sent by a source
process as a graded spike every step and enters the first layer through its ``Conv`` synapse; any
image can be streamed at run time (``network.npz`` holds no image). The readout integrates the last
layer's output current over the T steps of a sample; ``logits = readout / (readout_scale * T)``.

**Fixed point.** Per output channel ``c`` of a population an even integer threshold :math:`V_c`
(the unit threshold in integer units) is chosen as large as the 8-bit weights allow,
:math:`V_c = \lfloor 254 / \max_i |W_{ci}\,p_i| \rfloor` (``p`` the payload unit of the source:
1 for spikes, ``input_scale`` for the image); weights are :math:`2\,\mathrm{round}(W V_c p / 2)` in
[-256, 254] (Loihi's mixed-sign 8-bit weights are even, as Lava's bit-accurate ``Dense`` truncates
them), biases :math:`\mathrm{round}(b V_c)`, the initial membrane :math:`\mathrm{round}(v_0 V_c)`; the
membrane is 24-bit. LIF leak is Loihi's 12-bit decay ``dv = round((1 - beta) 4096)``.

**Neurons.** Lava's built-in ``LIF`` (and Loihi 2's default neuron program) resets to 0 and starts at 0,
which is the crippled form (docs/benchmarks/deploy.md measures it). Loihi 2 runs microcoded neuron
programs (Intel, *Taking Neuromorphic Computing to the Next Level with Loihi 2*, technology brief,
2021: programmable neuron models, graded spikes with integer payloads), so the export declares the
converted neuron as its own Lava process, ``SnnconvIF`` in ``lava_runner.py``, with a fixed-point
Python model of exactly the integer dynamics above. Synapses and the input are Lava's own processes.

**Timing.** A Lava synapse delivers at step t+1 what it received at step t. Samples are streamed back
to back (T steps each): a population ``d`` hops from the input works on sample ``i`` during steps
``[iT + d, (i+1)T + d)`` and resets to its initial membrane at the start of that window; the shorter
path into a residual sum waits in a dendritic delay line. With this alignment the Lava network
computes, sample by sample, exactly what :func:`reference_run` (snnconv's integer simulation, every
layer in the same step) computes; the comparison checks it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from snnconv.errors import SnnconvError
from snnconv.ir import Graph

#: Loihi 2 figures the hardware report checks against, from public documentation:
#: Intel, "Taking Neuromorphic Computing to the Next Level with Loihi 2", technology brief (2021):
#: 128 neuro cores per chip, up to 1M neurons and 120M synapses per chip, up to 8,192 neurons per core
#: (fewer for neuron programs with more state), graded spikes with integer payloads; synaptic delays and
#: weight widths from Lava 0.9's models (lava/proc/dense, lava/proc/sparse, lava/utils/weightutils.py:
#: 8-bit weights, even in mixed-sign mode; 24-bit membrane and graded payloads). Synaptic memory per
#: core: Loihi's neuro core has 128 KB of synaptic memory (Davies et al., "Loihi: a neuromorphic
#: manycore processor with on-chip learning", IEEE Micro 38(1), 2018); public Loihi 2 figures are of the
#: same order (128-192 KB, flexibly shared with neuron state), so 128 KB is used as the bound here.
LOIHI2 = {
    "cores_per_chip": 128,
    "neurons_per_chip": 1_000_000,
    "synapses_per_chip": 120_000_000,
    "neurons_per_core": 8192,
    "synaptic_memory_per_core_bytes": 128 * 1024,
    "weight_bits": 8,
    "membrane_bits": 24,
    "payload_bits": 24,
    "max_delay": 62,
}
W_MAX = 254  # largest even 8-bit weight (mixed sign: -256..254 in steps of 2)
V_MAX = 2 ** 16  # threshold cap: keeps |v| well inside the 24-bit membrane
INPUT_BITS = 8


def lava_python() -> Path:
    """The Python of the Lava side venv, or a one-line error saying how to make it."""
    venv = Path(os.environ.get("SNNCONV_LAVA_VENV", Path.home() / ".cache" / "snnconv" / "lava-venv"))
    py = venv / "bin" / "python"
    if not py.is_file():
        raise SnnconvError(f"Lava is not installed (no venv at {venv}): run `bash scripts/setup_lava.sh` "
                           f"(Python 3.9 + lava-nc 0.9.0 side venv; lava-nc does not run on Python 3.11), see docs/lava.md")
    r = subprocess.run([str(py), "-c", "import lava.magma, lava.proc.lif.process"], capture_output=True, text=True)
    if r.returncode:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise SnnconvError(f"the Lava venv {venv} does not import lava ({tail}); rerun `bash scripts/setup_lava.sh`")
    return py


# -- structure: spiking layers, each fed by one or more earlier layers through composed linear maps ------
def _structure(g: Graph) -> tuple[list[str], dict[str, list[str]], dict[str, int]]:
    """Spiking nodes in order, the sources of each (the input and/or earlier spiking nodes reached
    backwards through non-spiking, linear nodes), and each node's depth (synaptic hops on the
    longest path from the input). Refuses what Lava's ``LIF`` cannot run."""
    spiking = [n for n, node in g.nodes.items() if node.spiking]
    if not spiking:
        raise SnnconvError("Lava export: the graph has no spiking layer")
    bad = [f"{n} ({g.nodes[n].kind}/{getattr(g.nodes[n], 'model', '')})" for n in spiking
           if g.nodes[n].kind != "neuron" or g.nodes[n].model not in ("if", "lif")]
    if bad:
        raise SnnconvError(f"Lava export maps IF and LIF neurons (Loihi CUBA LIF, du=4095) only; not: "
                           f"{', '.join(bad)} -> convert with --neuron if or --neuron lif")

    def sources(name: str) -> list[str]:
        seen, stack, found = set(), list(g.edges[name]), []
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            if g.nodes[s].spiking or g.nodes[s].kind == "input":
                found.append(s)
            else:
                stack += g.edges[s]
        return sorted(found, key=list(g.nodes).index)

    srcs = {n: sources(n) for n in spiking + [g.outputs[0]]}
    if len(srcs[g.outputs[0]]) != 1 or not g.nodes[srcs[g.outputs[0]][0]].spiking:
        raise SnnconvError(f"Lava export: the readout must read one spiking layer, it reads {srcs[g.outputs[0]]}")
    depth = {g.inputs[0]: -1}
    for n in spiking:  # a layer fed only by the (analog) input has depth 0; each Sparse hop adds one step
        depth[n] = max(0, *(depth[s] + 1 for s in srcs[n]))
    return spiking, srcs, depth


def _linear_map(g: Graph, vals: dict, dst: str, include_dst: bool = False) -> torch.Tensor:
    """Evaluate the non-spiking nodes up to ``dst`` (its input, or ``dst`` itself) with the given source
    values ``{node: [B, ...]}``; nodes that read anything else are skipped. Returns ``[B, ...]``."""
    from snnconv.runtime.kernels import KERNELS

    names = list(g.nodes)
    vals = dict(vals)
    start = min(names.index(s) for s in vals)
    for name in names[start + 1: names.index(dst) + (1 if include_dst else 0)]:
        if name in vals or g.nodes[name].spiking or not all(s in vals for s in g.edges[name]):
            continue
        vals[name] = KERNELS[g.nodes[name].kind](g.nodes[name], [vals[s] for s in g.edges[name]])
    return vals[dst if include_dst else g.edges[dst][0]]


def _zeros(g: Graph, srcs: list[str], batch: int = 1) -> dict:
    return {s: torch.zeros(batch, *g.nodes[s].shape, dtype=torch.float64) for s in srcs}


def _double_graph(g: Graph) -> Graph:
    d = g.copy()
    for node in d.nodes.values():
        for k, v in node.tensors().items():
            setattr(node, k, v.double())
    return d


def _lower(graph: Graph) -> Graph:
    """The graph in unit-threshold form (float64) with snnconv's neuron dynamics, or a one-line refusal."""
    from snnconv.backends.nir import lower_for_nir

    try:
        return _double_graph(lower_for_nir(graph, pool="sum", dynamics="snnconv"))
    except SnnconvError as e:
        raise SnnconvError(str(e).replace("cannot export to NIR", "cannot export to Lava/Loihi")) from None


def check_lava(graph: Graph) -> None:
    """Raise the one-line refusal now if ``graph`` cannot be mapped to Lava (cheap: no weights composed)."""
    _structure(_lower(graph))


def _paths(g: Graph, src: str, dst: str) -> list[list[str]]:
    """Every path of non-spiking nodes from ``src`` to ``dst``'s input (node names, src excluded)."""
    out = []

    def walk(node: str, acc: list[str]) -> None:
        if node == src:
            out.append(acc[::-1])
            return
        if g.nodes[node].spiking or g.nodes[node].kind == "input":
            return
        for s in g.edges[node]:
            walk(s, acc + [node])

    walk(g.edges[dst][0], [])
    return out


def _conv_geometry(g: Graph, path: list[str]) -> tuple[tuple, tuple, tuple] | None:
    """Kernel, stride and padding of the convolutions along ``path`` composed into one (None if the path
    holds anything but convolutions and sums): conv A then conv B is one conv with kernel
    ``K_A + (K_B - 1) S_A``, stride ``S_A S_B``, padding ``P_A + P_B S_A`` (exact when A's windows tile its
    input, as sum pooling and 1x1 convolutions do; checked numerically by the caller)."""
    K, S, P = [1, 1], [1, 1], [0, 0]
    for name in path:
        n = g.nodes[name]
        if n.kind == "add":
            continue
        if n.kind != "conv2d" or tuple(n.dilation) != (1, 1):
            return None
        for d in (0, 1):
            K[d] += (n.weight.shape[2 + d] - 1) * S[d]
            P[d] += n.padding[d] * S[d]
            S[d] *= n.stride[d]
    return tuple(K), tuple(S), tuple(P)


def _probe_conv(f, in_shape: tuple, out_shape: tuple, K: tuple, S: tuple, P: tuple, chunk: int = 512) -> torch.Tensor:
    """The kernel ``[Co, Ci, K0, K1]`` of a linear map ``f`` known to be that convolution: tap (c, ky, kx)
    is read at an output position whose window has it inside the image (a tap never inside is unused: 0)."""
    ci, h, w = in_shape
    co, ho, wo = out_shape
    probes = []
    for ky in range(K[0]):
        y_out = next((yo for yo in range(ho) if 0 <= S[0] * yo - P[0] + ky < h), None)
        for kx in range(K[1]):
            x_out = next((xo for xo in range(wo) if 0 <= S[1] * xo - P[1] + kx < w), None)
            if y_out is not None and x_out is not None:
                probes += [(c, ky, kx, y_out, x_out) for c in range(ci)]
    weight = torch.zeros(co, ci, *K, dtype=torch.float64)
    for i0 in range(0, len(probes), chunk):
        part = probes[i0:i0 + chunk]
        x = torch.zeros(len(part), ci, h, w, dtype=torch.float64)
        for b, (c, ky, kx, yo, xo) in enumerate(part):
            x[b, c, S[0] * yo - P[0] + ky, S[1] * xo - P[1] + kx] = 1
        y = f(x)
        for b, (c, ky, kx, yo, xo) in enumerate(part):
            weight[:, c, ky, kx] = y[b, :, yo, xo]
    return weight


def _dense(f, in_shape: tuple, chunk: int = 1024) -> torch.Tensor:
    """The matrix ``[N_out, N_in]`` of a linear map ``f`` (inputs and outputs flattened in CHW order)."""
    n = int(np.prod(in_shape))
    cols = []
    for i0 in range(0, n, chunk):
        k = min(chunk, n - i0)
        basis = torch.zeros(k, n, dtype=torch.float64)
        basis[torch.arange(k), torch.arange(i0, i0 + k)] = 1
        cols.append(f(basis.view(k, *in_shape)).flatten(1).T)
    return torch.cat(cols, 1)


def _connection(g: Graph, srcs: list[str], src: str, dst: str, const: torch.Tensor) -> dict:
    """One synapse process for the part of ``dst``'s input current that is linear in ``src`` (the other
    sources at 0, the constant part ``const`` removed): a convolution when the path composes into one
    (verified on random inputs), else a dense matrix."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return _linear_map(g, {**_zeros(g, srcs, x.shape[0]), src: x}, dst) - const

    in_shape, out_shape = tuple(g.nodes[src].shape), tuple(const.shape[1:])
    paths = _paths(g, src, dst)
    geo = _conv_geometry(g, paths[0]) if len(paths) == 1 and len(in_shape) == 3 and len(out_shape) == 3 else None
    if geo is not None:
        K, S, P = geo
        w = _probe_conv(f, in_shape, out_shape, K, S, P)
        x = torch.randn(2, *in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        want, got = f(x), F.conv2d(x, w, stride=S, padding=P)
        if got.shape == want.shape and float((got - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max())):
            return {"kind": "conv", "weight": w, "stride": S, "padding": P}
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n_in * n_out > 16_000_000:
        raise SnnconvError(f"Lava export: the linear ops from {src} to {dst} are neither one convolution nor a "
                           f"dense map small enough to write ({n_out} x {n_in})")
    return {"kind": "dense", "weight": _dense(f, in_shape)}


# -- the integer network ----------------------------------------------------------------------------------
def _even_round(a: np.ndarray) -> np.ndarray:
    return (2 * np.round(a / 2)).astype(np.int64)


def _decay(node) -> int:
    """Loihi ``dv`` (12 bit) for the neuron's leak ``beta``: the membrane decays by ``(4096 - dv) / 4096``."""
    return 0 if node.model == "if" else int(np.clip(round((1.0 - float(node.leak)) * 4096), 0, 4095))


def _bits(levels: int, signed: bool) -> int:
    """Graded-message bits a population's spikes need (0: binary spikes)."""
    return 0 if levels == 1 and not signed else int(math.ceil(math.log2(levels + 1))) + int(signed)


def _float_network(graph: Graph) -> dict:
    """The lowered graph as populations with their float synapses (conv or dense, per source), constant
    currents, hop offsets, and the readout's float matrix and bias; shared by both routes."""
    low = _lower(graph)
    spiking, srcs, depth = _structure(low)
    inp = low.inputs[0]
    index = {n: k for k, n in enumerate(spiking)}
    layers = []
    for name in spiking:
        const = _linear_map(low, _zeros(low, srcs[name]), name)  # the constant input current (biases)
        conns = []
        for s in srcs[name]:
            c = _connection(low, srcs[name], s, name, const)
            conns.append({**c, "src": -1 if s == inp else index[s], "src_name": s,
                          "weight": c["weight"].numpy(), "src_offset": 0 if s == inp else depth[s] + 1})
        layers.append({"name": name, "node": low.nodes[name], "shape": tuple(low.nodes[name].shape),
                       "bias": const[0].numpy(), "offset": depth[name] + 1, "conns": conns})
    last, out = srcs[low.outputs[0]][0], low.outputs[0]
    base = _linear_map(low, _zeros(low, [last]), out, include_dst=True)[0].numpy()
    m = _dense(lambda x: _linear_map(low, {last: x}, out, include_dst=True) - torch.from_numpy(base),
               tuple(low.nodes[last].shape)).numpy()
    return {"lowered": low, "layers": layers, "input_shape": tuple(low.nodes[inp].shape),
            "readout": {"src": index[last], "src_name": last, "weight": m, "bias": base,
                        "offset": layers[index[last]]["offset"] + 1}}


def _input_scale(calib_x: torch.Tensor) -> float:
    return float(calib_x.abs().max()) / (2 ** (INPUT_BITS - 1) - 1) or 1.0


def _channel_max(c: dict, scale: np.ndarray, channels: int) -> np.ndarray:
    """Per output channel, the largest |weight x source scale| of connection ``c`` (``scale`` per source
    channel, or a scalar)."""
    w = np.abs(c["weight"])
    if c["kind"] == "conv":
        return (w * np.reshape(scale, (1, -1, 1, 1))).reshape(channels, -1).max(1)
    return (w * np.reshape(scale, (1, -1))).reshape(channels, -1).max(1)


def _source_scale(c: dict, scales: list, in_scale: float):
    """Value of one unit of the source's payload, per source channel (dense: per flattened source neuron)."""
    if c["src"] < 0:
        return np.asarray(in_scale)
    s = scales[c["src"]]
    return s if c["kind"] == "conv" or s.size == int(np.prod(c["weight"].shape[1:])) else \
        np.repeat(s, c["weight"].shape[1] // s.size)


def build_network(graph: Graph, calib_x: torch.Tensor, timesteps: int) -> dict:
    """The Loihi 2 integer network of ``graph`` for the IF route (see the module docstring). ``calib_x``
    (training or calibration images, not test images) sets the input's 8-bit scale."""
    fn = _float_network(graph)
    in_scale = _input_scale(calib_x)
    layers = []
    for F_ in fn["layers"]:
        node, shape = F_["node"], F_["shape"]
        unit = np.ones(1)
        amax = np.zeros(shape[0])
        for c in F_["conns"]:
            p = np.asarray(in_scale) if c["src"] < 0 else unit
            amax = np.maximum(amax, _channel_max(c, p, shape[0]))
        v = np.floor(W_MAX / np.maximum(amax, 1e-12))
        v = np.clip(v - v % 2, 2, V_MAX).astype(np.int64)
        vb = v.reshape((-1,) + (1,) * (len(shape) - 1))
        L = {"name": F_["name"], "shape": shape, "vth": v, "bias": np.round(F_["bias"] * vb).astype(np.int64),
             "v_init": np.round(float(node.v_init) * v).astype(np.int64), "levels": int(node.levels),
             "signed": int(bool(node.signed)), "reset": int(node.reset == "subtract"), "dv": _decay(node),
             "leak": float(node.leak), "offset": F_["offset"], "conns": []}
        for c in F_["conns"]:
            p = in_scale if c["src"] < 0 else 1.0
            rows = v if c["kind"] == "conv" or len(shape) == 1 else np.repeat(v, int(np.prod(shape[1:])))
            w_int = _even_round(c["weight"] * p * rows.reshape((-1,) + (1,) * (c["weight"].ndim - 1)))
            src_bits = INPUT_BITS if c["src"] < 0 else _bits(layers[c["src"]]["levels"], layers[c["src"]]["signed"])
            L["conns"].append({**{k: c[k] for k in ("src", "src_name", "kind", "stride", "padding") if k in c},
                               "weight": np.clip(w_int, -256, W_MAX), "delay": L["offset"] - c["src_offset"] - 1,
                               "bits": src_bits})
        delays = {c["delay"] for c in L["conns"] if c["delay"]}
        if len(delays) > 1 or (delays and max(delays) > LOIHI2["max_delay"]):
            raise SnnconvError(f"Lava export: {L['name']} needs delays {sorted(delays)} (one delay line of at most "
                               f"{LOIHI2['max_delay']} steps per population)")
        L["delay"] = max(delays, default=0)
        layers.append(L)
    r = fn["readout"]
    v_r = int(np.clip(np.floor(W_MAX / max(float(np.abs(r["weight"]).max()), 1e-12)), 1, V_MAX))
    src = layers[r["src"]]
    readout = {"src": r["src"], "src_name": r["src_name"], "weight": np.clip(_even_round(r["weight"] * v_r), -256, W_MAX),
               "bias": np.round(r["bias"] * v_r).astype(np.int64), "scale": v_r, "offset": r["offset"],
               "bits": _bits(src["levels"], src["signed"])}
    return {"route": "if", "layers": layers, "readout": readout, "input_scale": in_scale,
            "input_shape": fn["input_shape"], "timesteps": int(timesteps), "lowered": fn["lowered"]}


SDN_MESSAGE_BITS = 12


def build_sdn(graph: Graph, calib_x: torch.Tensor, message_bits: int = SDN_MESSAGE_BITS) -> dict:
    r"""The Sigma-Delta route with Lava's own ``lava.proc.sdn.SigmaDelta`` (graded spikes; O'Connor & Welling
    2016, "Sigma delta quantized networks"; Intel's route for converted ANNs on Loihi 2).

    A Sigma-Delta neuron accumulates its input (sigma), applies ReLU and sends the change of its
    activation as a graded spike once it reaches the threshold. The ANN computed is the converted graph's
    rate limit ``a = clip(z, 0, L)`` per neuron (``L`` = spike levels, unit thresholds): the same weights
    with clip(0, lambda) activations. Lava's SigmaDelta has ReLU only, so each population is a pair,
    ``relu(z + b) - relu(z + b - L)`` = clip, the second entering the next layer with negated weights.

    Fixed point (Lava 0.9 ``PySigmaDeltaModelFixed``): a population's state is in an internal unit
    :math:`v_c = \max_i |W_{ci}| m_i / 254` per output channel (8-bit even weights; ``m`` the source's
    message unit) and its messages are the state changes shifted right by ``state_exp`` ``e`` (one per
    population, chosen so that ``L`` spans about ``2**message_bits`` message units): :math:`m_c = v_c 2^e`;
    the threshold is one message unit, the bias is given in message units. Lava's fixed-point model drops
    the bits shifted out of each sent change (floor), so downstream sums drift from the sender's state
    by up to one message unit per message; :func:`sdn_stream_reference` reproduces this bit for bit and
    the benchmark measures what it costs. The input is streamed as the change of the 8-bit image at the
    start of each sample's window of ``window`` steps (the longest path); no state is reset."""
    fn = _float_network(graph)
    in_scale = _input_scale(calib_x)
    z_calib, _ = _float_forward(fn, calib_x)
    scales, layers = [], []
    for F_, z in zip(fn["layers"], z_calib):
        shape, C = F_["shape"], F_["shape"][0]
        amax = np.zeros(C)
        for c in F_["conns"]:
            amax = np.maximum(amax, _channel_max(c, _source_scale(c, scales, in_scale), C))
        top = float(F_["node"].levels)
        # internal unit: as fine as the 8-bit weights allow, but the state (sigma = z - bias and z on the
        # calibration images, with 4x headroom, and L) stays inside the 24-bit range
        sig = (z - torch.from_numpy(np.asarray(F_["bias"], dtype=np.float64))).abs()  # sigma = z - bias
        zmax = torch.maximum(z.abs(), sig).transpose(0, 1).reshape(C, -1).max(1).values.numpy()
        v = np.maximum(np.where(amax > 0, amax / W_MAX, 1.0),
                       4 * np.maximum(zmax, top) / 2 ** (LOIHI2["membrane_bits"] - 1))
        e = int(max(0, math.floor(math.log2(max(top / float(v.max()), 1.0) / 2 ** message_bits))))
        m = v * 2 ** e
        conns = []
        for c in F_["conns"]:
            ps = _source_scale(c, scales, in_scale)
            if c["kind"] == "conv":
                eff = c["weight"] * np.reshape(ps, (1, -1, 1, 1)) / v.reshape(-1, 1, 1, 1)
            else:
                rows = v if len(shape) == 1 else np.repeat(v, int(np.prod(shape[1:])))
                eff = c["weight"] * np.reshape(ps, (1, -1)) / rows.reshape(-1, 1)
            conns.append({**{k: c[k] for k in ("src", "src_name", "kind", "stride", "padding") if k in c},
                          "weight": np.clip(_even_round(eff), -256, W_MAX)})
        mb = m.reshape((-1,) + (1,) * (len(shape) - 1))
        layers.append({"name": F_["name"], "shape": shape, "offset": F_["offset"], "conns": conns, "state_exp": e,
                       "bias": np.round(F_["bias"] / mb).astype(np.int64),
                       "bias_n": np.round((F_["bias"] - top) / mb).astype(np.int64)})
        scales.append(m)
    r = fn["readout"]
    ps = _source_scale({"src": r["src"], "kind": "dense", "weight": r["weight"]}, scales, in_scale)
    eff = r["weight"] * np.reshape(ps, (1, -1))
    a_r = float(np.abs(eff).max()) / W_MAX
    readout = {"src": r["src"], "src_name": r["src_name"], "weight": np.clip(_even_round(eff / a_r), -256, W_MAX),
               "bias": np.round(r["bias"] / a_r).astype(np.int64), "scale": a_r, "offset": r["offset"]}
    return {"route": "sdn", "layers": layers, "readout": readout, "input_scale": in_scale,
            "input_shape": fn["input_shape"], "window": r["offset"] + 1, "lowered": fn["lowered"]}


def _f64(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _synapse(c: dict, src: torch.Tensor, w: torch.Tensor, out_shape) -> torch.Tensor:
    """The current connection ``c`` (conv or dense, weight ``w``) sends for source values ``src`` ``[B, ...]``."""
    if c["kind"] == "conv":
        return F.conv2d(src, w, stride=c["stride"], padding=c["padding"])
    return (src.flatten(1) @ w.T).view(src.shape[0], *out_shape)


def _float_forward(fn: dict, x: torch.Tensor) -> tuple[list[torch.Tensor], np.ndarray]:
    """The rate-limit ANN of a float network (every neuron ``clip(z, 0, L)``): each population's input
    ``z`` and the readout, in float64."""
    zs, acts, xb = [], [], x.double()
    for L in fn["layers"]:
        z = _f64(L["bias"]).expand(xb.shape[0], *L["shape"]).clone()
        for c in L["conns"]:
            z += _synapse(c, xb if c["src"] < 0 else acts[c["src"]], _f64(c["weight"]), L["shape"])
        zs.append(z)
        acts.append(z.clamp(0, float(L["node"].levels)))
    r = fn["readout"]
    return zs, (acts[r["src"]].flatten(1) @ _f64(r["weight"]).T + _f64(r["bias"])).numpy()


def rate_limit_ann(graph: Graph, x: torch.Tensor) -> np.ndarray:
    """Float64 output of the ANN the Sigma-Delta route quantizes: the lowered graph with every neuron
    replaced by ``clip(z, 0, L)`` (its firing-rate limit), same synapses and readout."""
    return _float_forward(_float_network(graph), x)[1]


def sdn_stream_reference(net: dict, x_int: np.ndarray) -> dict:
    """The Sigma-Delta network streamed over ``x_int`` exactly as Lava's fixed-point models run it (one
    stream, step by step: a synapse delivers at t+1; SigmaDelta ``sigma += a_in``, ``act = relu(sigma +
    bias << e)``, send ``delta`` when ``|delta| >= 1 << e`` as ``delta >> e``; a ``Sigma`` readout): readout
    at the end of each sample's window ``[samples, n_out]`` (bias included) and the number of messages."""
    P, n = net["window"], x_int.shape[0]
    d = _f64
    frames = d(x_int)
    pops = []
    for L in net["layers"]:
        e = 2.0 ** L["state_exp"]
        z = torch.zeros(1, *L["shape"], dtype=torch.float64)
        pops.append({"sigma": z.clone(), "e": e, "bias": (d(L["bias"]) * e, d(L["bias_n"]) * e),
                     "act": [z.clone(), z.clone()], "res": [z.clone(), z.clone()], "msg": [z.clone(), z.clone()],
                     "w": [d(c["weight"]) for c in L["conns"]]})
    r = net["readout"]
    wr, sig_r = d(r["weight"]), torch.zeros(1, r["weight"].shape[0], dtype=torch.float64)
    prev_in = torch.zeros(1, *frames.shape[1:], dtype=torch.float64)
    out, messages, last, peak = [], 0, torch.zeros_like(frames[:1]), 0.0
    for t in range(n * P):
        i, k = divmod(t, P)
        now_in = frames[i:i + 1] - last if k == 0 else torch.zeros_like(prev_in)
        if k == 0:
            last = frames[i:i + 1]
        a_in = []
        for L, p in zip(net["layers"], pops):  # all synapses read the previous step's messages
            a = torch.zeros(1, *L["shape"], dtype=torch.float64)
            for c, w in zip(L["conns"], p["w"]):
                srcs = [(prev_in, w)] if c["src"] < 0 else [(pops[c["src"]]["msg"][0], w), (pops[c["src"]]["msg"][1], -w)]
                for src, wi in srcs:
                    a += _synapse(c, src, wi, L["shape"])
            a_in.append(a)
        last_pop = pops[r["src"]]
        sig_r += (last_pop["msg"][0] - last_pop["msg"][1]).flatten(1) @ wr.T
        for p, a in zip(pops, a_in):
            p["sigma"] += a
            peak = max(peak, float(p["sigma"].abs().max()))
            for j in (0, 1):
                act = torch.relu(p["sigma"] + p["bias"][j])
                delta = act - p["act"][j] + p["res"][j]
                s = torch.where(delta.abs() >= p["e"], delta, torch.zeros_like(delta))
                p["res"][j], p["act"][j] = delta - s, act
                p["msg"][j] = torch.floor(s / p["e"])
                messages += int((s != 0).sum())
        prev_in = now_in
        if k == P - 1:
            out.append(sig_r[0].clone() + d(r["bias"]))
    if peak >= 2 ** (LOIHI2["membrane_bits"] - 1):
        raise SnnconvError(f"Lava export (Sigma-Delta): a sigma state reaches {peak:.3g}, outside Loihi's 24-bit state")
    return {"readout": torch.stack(out).numpy().astype(np.int64), "messages": messages}


def quantize_input(net: dict, x: torch.Tensor) -> np.ndarray:
    """Images ``[B, C, H, W]`` as the 8-bit integers the network's source sends (``round(x / input_scale)``)."""
    lim = 2 ** (INPUT_BITS - 1)
    return np.clip(np.round(x.double().numpy() / net["input_scale"]), -lim, lim - 1).astype(np.int64)


def reference_run(net: dict, x_int: np.ndarray, batch: int = 64) -> dict:
    """snnconv's run of the integer network (float64, exact for these integers; every layer in the same
    step, which the Lava timing reproduces window by window): readout membranes ``[B, n_out]`` and spike
    events per neuron summed over the samples, per layer. The neurons run snnconv's own kernel
    (:func:`snnconv.runtime.neurons.integrate_fire.integrate_fire_ext`, per-neuron integer thresholds); a LIF layer's
    membrane first takes Loihi's integer decay ``v * (4096 - dv) >> 12`` (truncated towards zero)."""
    from snnconv.runtime.neurons.integrate_fire import integrate_fire_ext

    T, r = net["timesteps"], net["readout"]
    weights = [[_f64(c["weight"]) for c in L["conns"]] for L in net["layers"]]
    vths = [_f64(L["vth"]) for L in net["layers"]]
    wr, br = _f64(r["weight"]), _f64(r["bias"])
    readout, counts = [], [np.zeros(L["shape"], np.int64) for L in net["layers"]]
    for b0 in range(0, x_int.shape[0], batch):
        x = _f64(x_int[b0:b0 + batch])
        B = x.shape[0]
        states = [{"v": _f64(L["v_init"]).reshape((-1,) + (1,) * (len(L["shape"]) - 1)).expand(B, *L["shape"]).clone(),
                   "n": torch.zeros(B, *L["shape"], dtype=torch.float64), "t": 0, "mask": None} for L in net["layers"]]
        acc = torch.zeros(B, wr.shape[0], dtype=torch.float64)
        for _ in range(T):
            spikes = []
            for k, (L, st) in enumerate(zip(net["layers"], states)):
                cur = _f64(L["bias"]).expand(B, *L["shape"]).clone()
                for c, w in zip(L["conns"], weights[k]):
                    cur += _synapse(c, x if c["src"] < 0 else spikes[c["src"]], w, L["shape"])
                if L["dv"]:
                    p = st["v"] * (4096 - L["dv"])
                    st["v"] = torch.sign(p) * torch.floor(p.abs() / 4096)
                _, spk, _ = integrate_fire_ext(cur.unsqueeze(0), st, vths[k], 1.0, "subtract" if L["reset"] else "zero",
                                               L["levels"], 0.0, bool(L["signed"]))
                if float(st["v"].abs().max()) >= 2 ** (LOIHI2["membrane_bits"] - 1):
                    raise SnnconvError(f"Lava export: {L['name']}'s membrane leaves the 24-bit range")
                spikes.append(spk[0])
                counts[k] += spk[0].abs().sum(0).numpy().astype(np.int64)
            acc += spikes[r["src"]].flatten(1) @ wr.T + br
        readout.append(acc)
    return {"readout": torch.cat(readout).numpy().astype(np.int64), "counts": counts}


ROUTES = ("if", "sdn")


def build(graph: Graph, calib_x: torch.Tensor, timesteps: int, route: str = "if") -> dict:
    """The Loihi 2 integer network of ``graph`` for ``route``: ``if`` (the converted spiking network,
    :func:`build_network`) or ``sdn`` (Sigma-Delta, :func:`build_sdn`; no T: each sample settles)."""
    if route not in ROUTES:
        raise SnnconvError(f"unknown Lava route '{route}' (known: {', '.join(ROUTES)})")
    return build_network(graph, calib_x, timesteps) if route == "if" else build_sdn(graph, calib_x)


def reference(net: dict, x_int: np.ndarray) -> dict:
    """snnconv's run of the exported integer network, in Lava's arithmetic (what Lava must reproduce)."""
    return reference_run(net, x_int) if net["route"] == "if" else sdn_stream_reference(net, x_int)


def logits(net: dict, readout: np.ndarray) -> np.ndarray:
    """Readout -> the network's output (IF: mean over T of the last affine layer's output)."""
    return readout * net["readout"]["scale"] if net["route"] == "sdn" else \
        readout / (net["readout"]["scale"] * net["timesteps"])


# -- files, the Lava run, the comparison ----------------------------------------------------------------
def write_network(net: dict, path: Path) -> None:
    """``network.npz``: everything the Lava side needs, no image (inputs are streamed at run time)."""
    arrays = {"route": np.array(net["route"]), "n_layers": len(net["layers"]), "input_scale": net["input_scale"],
              "input_shape": np.array(net["input_shape"])}
    if net["route"] == "sdn":
        arrays |= {"window": net["window"], "readout_src": net["readout"]["src"], "readout_w": net["readout"]["weight"],
                   "readout_bias": net["readout"]["bias"], "readout_size": net["readout"]["weight"].shape[0]}
        for k, L in enumerate(net["layers"]):
            arrays |= {f"shape_{k}": np.array(L["shape"]), f"bias_{k}": L["bias"], f"bias_n_{k}": L["bias_n"],
                       f"state_exp_{k}": L["state_exp"], f"n_conns_{k}": len(L["conns"])}
            for j, c in enumerate(L["conns"]):
                key = f"{k}_{j}"
                arrays |= {f"src_{key}": c["src"], f"kind_{key}": np.array(c["kind"]), f"w_{key}": c["weight"]}
                if c["kind"] == "conv":
                    arrays |= {f"stride_{key}": np.array(c["stride"]), f"padding_{key}": np.array(c["padding"])}
        np.savez_compressed(path, **arrays)
        return
    arrays["timesteps"] = net["timesteps"]
    for k, L in enumerate(net["layers"]):
        arrays |= {f"shape_{k}": np.array(L["shape"]), f"vth_{k}": L["vth"], f"bias_{k}": L["bias"],
                   f"v_init_{k}": L["v_init"], f"offset_{k}": L["offset"], f"levels_{k}": L["levels"],
                   f"signed_{k}": L["signed"], f"reset_{k}": L["reset"], f"dv_{k}": L["dv"], f"delay_{k}": L["delay"],
                   f"n_conns_{k}": len(L["conns"])}
        for j, c in enumerate(L["conns"]):
            key = f"{k}_{j}"
            arrays |= {f"src_{key}": c["src"], f"kind_{key}": np.array(c["kind"]), f"w_{key}": c["weight"],
                       f"bits_{key}": c["bits"], f"delayed_{key}": int(c["delay"] > 0)}
            if c["kind"] == "conv":
                arrays |= {f"stride_{key}": np.array(c["stride"]), f"padding_{key}": np.array(c["padding"])}
    r = net["readout"]
    arrays |= {"readout_src": r["src"], "readout_w": r["weight"], "readout_bias": r["bias"],
               "readout_scale": r["scale"], "readout_offset": r["offset"], "readout_bits": r["bits"],
               "readout_size": r["weight"].shape[0]}
    np.savez_compressed(path, **arrays)


def run_lava(folder: Path, x_int: np.ndarray, timeout: float | None = None) -> dict:
    """Stream ``x_int`` through ``folder/network.npz`` in Lava (Loihi2SimCfg fixed_pt, subprocess in the Lava
    venv); returns the readout membranes and spike counts like :func:`reference_run`."""
    py = lava_python()
    np.savez_compressed(folder / "inputs.npz", x=x_int)
    runner = folder / "lava_runner.py"  # run from the export folder: Lava scans the runner's folder for models
    if not runner.is_file():
        shutil.copyfile(Path(__file__).with_name("lava_runner.py"), runner)
    r = subprocess.run([str(py), "-I", "-B", str(runner),  # -B: no __pycache__ left in the export folder
                        str(folder / "network.npz"), str(folder / "inputs.npz"),
                        str(folder / "lava_result.npz")], capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        tail = " | ".join(r.stderr.strip().splitlines()[-3:])
        raise SnnconvError(f"the Lava run failed (exit {r.returncode}): {tail}")
    got = np.load(folder / "lava_result.npz")
    out = {"readout": got["readout"], "counts": [got[f"count{k}"] for k in range(sum(1 for f in got.files
                                                                                      if f.startswith("count")))],
           "messages": int(got["messages"]) if "messages" in got.files else None}
    (folder / "inputs.npz").unlink()
    (folder / "lava_result.npz").unlink()
    return out


def compare(net: dict, ref: dict, got: dict) -> dict:
    """Lava against the integer reference: readout equality, top-1 agreement, spike-count mismatches."""
    layers = {}
    for L, a, b in zip(net["layers"], ref.get("counts", []), got.get("counts") or []):
        layers[L["name"]] = {"reference_spikes": int(a.sum()), "lava_spikes": int(b.sum()),
                             "neurons_with_different_counts": int((a != b).sum()), "neurons": int(a.size)}
    agree = float((ref["readout"].argmax(1) == got["readout"].argmax(1)).mean() * 100)
    return {"readout_identical": bool(np.array_equal(ref["readout"], got["readout"])), "top1_agreement": agree,
            "messages": ref.get("messages"),
            "spike_count_mismatch_rate": sum(v["neurons_with_different_counts"] for v in layers.values()) /
            max(1, sum(v["neurons"] for v in layers.values())), "layers": layers}


def hardware_report(net: dict, profile: dict = LOIHI2) -> dict:
    """Per population: neurons, stored weights (a convolution stores its kernel once per core it spans),
    the cores it needs, and which Loihi 2 limit binds."""
    rows = []
    pair = 2 if net["route"] == "sdn" else 1  # Sigma-Delta: relu(z) and relu(z - L) populations, +W and -W synapses
    for L in net["layers"] + [{"name": "readout", "shape": (net["readout"]["weight"].shape[0],), "delay": 0,
                               "conns": [{"kind": "dense", **net["readout"]}]}]:
        k = pair if L["name"] != "readout" else 1
        neurons = k * int(np.prod(L["shape"]))
        kernel_bytes = pair * sum(int(c["weight"].size) for c in L["conns"]) * profile["weight_bits"] // 8
        by_neurons = math.ceil(neurons / profile["neurons_per_core"])
        convs = [c for c in L["conns"] if c["kind"] == "conv"]  # shared kernels: stored once, not per synapse
        by_memory = math.ceil(kernel_bytes / profile["synaptic_memory_per_core_bytes"])
        cores = max(1, by_neurons, by_memory)
        fan_in = sum(int(np.prod(c["weight"].shape[1:])) for c in L["conns"])
        rows.append({"layer": L["name"], "neurons": neurons, "weight_bytes": kernel_bytes, "fan_in": fan_in,
                     "synapses": neurons * fan_in if not convs else sum(
                         int(np.prod(L["shape"][1:])) * int(c["weight"][0].size) * L["shape"][0] for c in convs),
                     "cores": cores, "binding": "neurons per core" if by_neurons >= by_memory else "synaptic memory",
                     "delay": L.get("delay", 0),
                     "synapse_processes": [f"{c['kind']} from {c.get('src_name', '?')}" +
                                           (f" (delay {c['delay']})" if c.get("delay") else "") for c in L["conns"]]})
    total = sum(r["cores"] for r in rows)
    return {"profile": "Loihi 2", "limits": profile, "layers": rows, "total_cores": total,
            "total_neurons": sum(r["neurons"] for r in rows), "total_synapses": sum(r["synapses"] for r in rows),
            "fits_one_chip": total <= profile["cores_per_chip"]
            and sum(r["synapses"] for r in rows) <= profile["synapses_per_chip"]}


def format_hardware(rep: dict) -> str:
    lines = [f"Loihi 2 mapping: {rep['total_cores']} cores ({'fits' if rep['fits_one_chip'] else 'exceeds'} one chip of "
             f"{rep['limits']['cores_per_chip']}), {rep['total_neurons']:,} neurons, {rep['total_synapses']:,} synapses",
             f"{'layer':<18}{'neurons':>9}{'weights(B)':>12}{'fan-in':>8}{'cores':>7}  binds / synapses"]
    for r in rep["layers"]:
        lines.append(f"{r['layer']:<18}{r['neurons']:>9}{r['weight_bytes']:>12}{r['fan_in']:>8}{r['cores']:>7}  "
                     f"{r['binding']}; {', '.join(r['synapse_processes'])}")
    return "\n".join(lines)


MANIFEST = """# snnconv Lava / Loihi 2 network

Files: `network.npz` (the integer network), `lava_runner.py` (builds it as one Lava process graph;
runs under lava-nc 0.9 on Python 3.9), `hardware.md` / `hardware.json` (Loihi 2 mapping), `comparison.json`.

Run any images: quantize them with `x_int = clip(round(x / input_scale), -128, 127)` (x normalised as for
the ANN, shape [N, C, H, W]; input_scale = {scale!r}), save `np.savez("inputs.npz", x=x_int)`, then
`python lava_runner.py network.npz inputs.npz result.npz`. `result.npz["readout"]` [N, {n_out}] divided by
`readout_scale * T` = {rs} * {T} is the network's output (argmax = class). T = {T} steps per image; the
images are streamed back to back through one network. See snnconv's docs/lava.md.
"""


MANIFEST_SDN = """# snnconv Lava / Loihi 2 network (Sigma-Delta route)

Files: `network.npz` (the integer network: lava.proc.sdn SigmaDelta population pairs, Conv/Dense synapses),
`lava_runner.py` (builds it as one Lava process graph; lava-nc 0.9 on Python 3.9), `hardware.md`,
`comparison.json`.

Run any images: `x_int = clip(round(x / input_scale), -128, 127)` (input_scale = {scale!r}),
`np.savez("inputs.npz", x=x_int)`, `python lava_runner.py network.npz inputs.npz result.npz`. Each image is
held for {P} steps (its change is sent once, then the network settles); `result.npz["readout"]` [N, {n_out}]
times readout_scale = {rs!r} is the network's output. See snnconv's docs/lava.md.
"""


def export_lava(graph: Graph, out: str | Path, dataset: str = "mnist-bundled", data_dir=None, samples: int = 4,
                timesteps: int = 16, x: torch.Tensor | None = None, calib_x: torch.Tensor | None = None,
                log_fn=print, overwrite: bool = False, route: str = "if") -> dict:
    """Write the Loihi 2 network (network.npz, runner, hardware report) to folder ``out``, stream ``samples``
    test images (or ``x``) through it in Lava, and compare with snnconv's integer reference. Returns the
    comparison report. ``out`` is checked before any work (:mod:`snnconv.output`)."""
    from snnconv.output import atomic_dir, check_output_dir

    check_output_dir(out, overwrite)
    if x is None or calib_x is None:
        from snnconv.data.datasets import load_dataset

        if x is None:
            x, _ = next(iter(load_dataset(dataset, data_dir, train=False).subset(samples).batches(samples)))
        if calib_x is None:
            calib_x, _ = next(iter(load_dataset(dataset, data_dir, train=True).subset(256).batches(256)))
    in_shape = graph.nodes[graph.inputs[0]].shape
    if tuple(x.shape[1:]) != tuple(in_shape):
        raise SnnconvError(f"inputs are {tuple(x.shape[1:])}, the network's input is {tuple(in_shape)}")
    net = build(graph, calib_x, timesteps, route)
    hw = hardware_report(net)
    log_fn(format_hardware(hw))
    x_int = quantize_input(net, x)
    ref = reference(net, x_int)
    with atomic_dir(out, overwrite) as d:
        write_network(net, d / "network.npz")
        shutil.copyfile(Path(__file__).with_name("lava_runner.py"), d / "lava_runner.py")
        (d / "README.md").write_text((MANIFEST if route == "if" else MANIFEST_SDN).format(
            scale=net["input_scale"], n_out=net["readout"]["weight"].shape[0], rs=net["readout"]["scale"],
            T=timesteps, P=net.get("window")))
        (d / "hardware.json").write_text(json.dumps(hw, indent=2))
        (d / "hardware.md").write_text("```\n" + format_hardware(hw) + "\n```\n")
        report = {"route": route, "samples": int(x.shape[0]), "timesteps": timesteps if route == "if" else None,
                  "hardware": hw}
        try:
            got = run_lava(d, x_int)
        except SnnconvError as e:
            report["lava"] = f"not run: {e}"
        else:
            report["comparison"] = compare(net, ref, got)
        (d / "comparison.json").write_text(json.dumps(report, indent=2))
    if "comparison" not in report:
        raise SnnconvError(f"wrote {out}/ (network, hardware report), but {report['lava']}")
    c = report["comparison"]
    for name, v in c["layers"].items():
        log_fn(f"  {name:<18} snnconv {v['reference_spikes']:>9}  lava {v['lava_spikes']:>9}  "
               f"neurons with other counts {v['neurons_with_different_counts']}")
    steps = f"{timesteps} steps" if route == "if" else f"a {net['window']}-step Sigma-Delta window"
    log_fn(f"Lava (Loihi2SimCfg fixed_pt, one network, {report['samples']} samples x {steps} streamed) vs "
           f"snnconv's integer reference: readout {'identical' if c['readout_identical'] else 'DIFFERS'}, top-1 "
           f"agreement {c['top1_agreement']:.1f}%; wrote {Path(out).name}/")
    return report


def check_network(snn: Graph) -> None:
    """Whether the network maps to Lava's processes (``convert --target lava``, ``runs_in``), not whether the
    Lava venv is installed on this machine."""
    check_lava(snn)


def check_export(snn: Graph) -> None:
    """``--export lava``: the mapping refusal and the Lava venv check, right after conversion."""
    check_network(snn)
    lava_python()


def write_export(path, snn: Graph, ann, input_shape, dataset, data_dir, log_fn=print, timesteps=None) -> None:
    """``--export lava`` (:mod:`snnconv.backends.exports`): the Lava network folder ``lava/``, its sample window
    the run's largest T (``timesteps``; default 16): the network runs in Lava at the T the run reports."""
    export_lava(snn, path, dataset=dataset, data_dir=data_dir, log_fn=log_fn, timesteps=timesteps or 16)
