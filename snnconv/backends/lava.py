r"""Lava / Loihi 2 export (``snnconv export --format lava``): quantized network, hardware report, real Lava run.

**Network.** The converted graph is first lowered exactly to unit thresholds and unit spikes
(:func:`snnconv.backends.nir.lower_for_nir`, average pooling as sum pooling), so the same
restrictions as NIR apply (Loihi's LIF resets to 0; reset by subtraction, a non-zero initial
membrane, graded spikes and max pooling are refused with the option that fixes them). The linear ops
between two spiking layers (convolution, sum pooling, flatten, affine) are composed into one exact
sparse matrix :math:`M_k` and bias :math:`b_k` (the Jacobian of the linear sub-graph, computed on
basis vectors). The analog input never enters the chip: the first layer's constant current
:math:`c_0 = W_0 x + b_0` (direct coding) becomes that layer's per-neuron bias, as usual on Loihi.
The readout (last affine layer) is applied to the last layer's spikes on the host.

**Fixed point (Loihi 2 profile, as Lava's bit-accurate ``PyLifModelBitAcc`` / ``Sparse`` models).**
Per layer an integer threshold scale :math:`V` (``vth``, 17-bit) and a weight exponent :math:`e\ge0`:
the effective threshold is :math:`64V` and :math:`W^{int} = 2\,\mathrm{round}(M\,V/2^{e+1})`, an even
8-bit mantissa in [-256, 254] (Lava keeps 7 magnitude bits + sign in mixed-sign mode), with
:math:`V` and :math:`e` chosen so that :math:`\max|W^{int}|` uses the full range. Biases are
:math:`\mathrm{round}(b\,64V)` as a 13-bit signed mantissa times :math:`2^{0..7}`. The membrane is 24-bit.
Neurons: ``du = 4095`` (with Loihi's 1-bit ``ds_offset`` the current decays by 4096/4096, so the
synaptic current is the input of this step, no filter) and ``dv = 0`` (IF). A spike adds
:math:`(W^{int} \ll e) \ll 6` to the membrane (Lava's ``act_shift``), so :math:`W^{int} = \mathrm{round}(M\,V/2^e)`.

**Comparison.** The same integer network is run by snnconv's IF kernel
(:func:`snnconv.neurons.integrate_fire.integrate_fire`, float64, exact for these integers) with
Lava's timing (a ``Sparse`` synapse delivers at step t+1 what it received at step t; Lava tests
``v > 64V``, which for integers is ``v >= 64V + 1``), and by Lava in a Python 3.9 subprocess
(``lava_runner.py`` under the venv of ``scripts/setup_lava.sh``). Spike trains are compared per layer.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph

#: Loihi 2 limits used by the hardware report. Source: Intel, "Taking Neuromorphic Computing to the
#: Next Level with Loihi 2" (technology brief, 2021): 128 neuromorphic cores per chip, up to 1M
#: neurons (8192 per core) and up to 120M synapses per chip; fixed-point widths from Lava 0.9's
#: bit-accurate models (lava/proc/lif/models.py, lava/proc/dense/models.py, lava/utils/weightutils.py).
LOIHI2 = {
    "cores_per_chip": 128,
    "neurons_per_core": 8192,
    "synapses_per_chip": 120_000_000,
    "synapses_per_core": 120_000_000 // 128,  # chip total spread evenly; the real bound depends on encoding
    "weight_mantissa_bits": 8,  # signed; even values in mixed-sign mode
    "weight_exp_range": [-8, 7],
    "membrane_bits": 24,
    "vth_bits": 17,  # effective threshold vth << 6
    "bias_mant_bits": 13,
    "bias_exp_range": [0, 7],
    "decay_bits": 12,
}
W_MAX = 254  # largest even 8-bit mantissa
BIAS_MANT_MAX = 4095
VTH_MAX = 2 ** 17 - 1
UV_MAX = 2 ** 23 - 1


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
    values ``{node: [B, ...]}``; nodes that read anything else are skipped."""
    from snnconv.runtime.kernels import KERNELS

    names = list(g.nodes)
    vals = dict(vals)
    start = min(names.index(s) for s in vals)
    for name in names[start + 1: names.index(dst) + (1 if include_dst else 0)]:
        if name in vals or g.nodes[name].spiking or not all(s in vals for s in g.edges[name]):
            continue
        vals[name] = KERNELS[g.nodes[name].kind](g.nodes[name], [vals[s] for s in g.edges[name]])
    return vals[dst if include_dst else g.edges[dst][0]].flatten(1)


def _zeros(g: Graph, srcs: list[str], batch: int = 1) -> dict:
    return {s: torch.zeros(batch, *g.nodes[s].shape, dtype=torch.float64) for s in srcs}


def _compose(g: Graph, srcs: list[str], src: str, dst: str, chunk: int = 1024) -> torch.Tensor:
    """Exact sparse matrix ``M`` [N_dst, N_src]: the part of ``dst``'s input current that is linear in
    ``src`` (the other sources held at 0, the constant part subtracted). Residual adds give one
    matrix per source; Lava sums them at the ``LIF``'s ``a_in`` port."""
    shape = g.nodes[src].shape
    n = int(np.prod(shape))
    with torch.no_grad():
        b = _linear_map(g, _zeros(g, srcs), dst)[0]
        rows, cols, vals = [], [], []
        for i0 in range(0, n, chunk):
            k = min(chunk, n - i0)
            basis = torch.zeros(k, n, dtype=torch.float64)
            basis[torch.arange(k), torch.arange(i0, i0 + k)] = 1
            y = _linear_map(g, {**_zeros(g, srcs, k), src: basis.view(k, *shape)}, dst) - b
            nz = y.nonzero()
            rows.append(nz[:, 1])
            cols.append(nz[:, 0] + i0)
            vals.append(y[nz[:, 0], nz[:, 1]])
        return torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals),
                                       (b.numel(), n), check_invariants=True).coalesce()


def _double_graph(g: Graph) -> Graph:
    d = g.copy()
    for node in d.nodes.values():
        for k, v in node.tensors().items():
            setattr(node, k, v.double())
    return d


# -- quantization ---------------------------------------------------------------------------------------
def _bias_fixed(b_int: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer bias as 13-bit mantissa x 2^exp (exp 0..7); returns (mant, exp, effective)."""
    mag = np.abs(b_int)
    exp = np.zeros_like(b_int, dtype=np.int64)
    while np.any((mag >> exp) > BIAS_MANT_MAX) and exp.max() < 7:
        exp = np.where((mag >> exp) > BIAS_MANT_MAX, exp + 1, exp)
    mant = np.clip(np.round(b_int / 2.0 ** exp), -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int64)
    return mant, exp, mant * 2 ** exp


def _lower(graph: Graph) -> Graph:
    """The graph in unit-threshold form (float64), or the NIR refusal reworded for Loihi."""
    from snnconv.backends.nir import lower_for_nir

    try:
        return _double_graph(lower_for_nir(graph, pool="sum"))
    except SnnconvError as e:
        raise SnnconvError(str(e).replace("cannot export to NIR", "cannot export to Lava/Loihi (Loihi LIF: reset "
                                                                   "to 0, v starts at 0, binary spikes)")) from None


def check_lava(graph: Graph) -> None:
    """Raise the one-line refusal now if ``graph`` cannot be mapped to Lava (cheap: no quantization)."""
    _structure(_lower(graph))


def _decay(node) -> tuple[int, float]:
    """Loihi ``dv`` (12 bit) for the neuron's leak ``beta``: the membrane decays by ``(4096 - dv) / 4096``."""
    if node.model == "if":
        return 0, 1.0
    dv = int(np.clip(round((1.0 - float(node.leak)) * 4096), 0, 4095))
    return dv, (4096 - dv) / 4096


def quantize(graph: Graph, x: torch.Tensor) -> dict:
    """The Loihi 2 fixed-point network of ``graph`` for inputs ``x`` (see the module docstring)."""
    low = _lower(graph)
    spiking, srcs, depth = _structure(low)
    inp = low.inputs[0]
    index = {n: k for k, n in enumerate(spiking)}
    layers = []
    for name in spiking:
        # constant current: the biases plus the analog input's contribution (direct coding), per sample
        zero = _zeros(low, srcs[name], x.shape[0])
        if inp in srcs[name]:
            zero[inp] = x.double()
        c = _linear_map(low, zero, name).numpy()
        conns = [(s, _compose(low, srcs[name], s, name)) for s in srcs[name] if s != inp]
        vals = np.concatenate([m.values().numpy() for _, m in conns]) if conns else np.zeros(0)
        wmax = max(float(np.abs(vals).max()) if vals.size else 0.0, 1e-12)
        cmax = max(float(np.abs(c).max()), 1e-12)
        # a spike adds (W_int << e) << 6 to v; the threshold is vth << 6: W_int * 2^e / vth = w.
        # vth as large as the 8-bit weights and the 13+7-bit biases allow
        v_bias = int(np.clip(math.floor(BIAS_MANT_MAX * 2 ** 7 / (64 * cmax)), 1, VTH_MAX))
        if not conns:
            e, v = 0, v_bias
        elif wmax <= W_MAX:
            e, v = 0, int(np.clip(min(math.floor(W_MAX / wmax), v_bias), 1, VTH_MAX))
        else:
            e, v = int(math.ceil(math.log2(wmax / W_MAX))), 1
        mant, bexp, beff = _bias_fixed(np.round(c * 64 * v).astype(np.int64))
        dv, leak_eff = _decay(low.nodes[name])
        L = {"name": name, "size": c.shape[1], "vth": v, "weight_exp": e, "bias_mant": mant, "bias_exp": bexp,
             "bias_eff": beff, "dv": dv, "leak": float(getattr(low.nodes[name], "leak", 1.0)), "leak_eff": leak_eff,
             "depth": depth[name], "reads_input": inp in srcs[name], "conns": [],
             "shape": list(low.nodes[name].shape), "weights_float_nonzero": int(vals.size)}
        for s, m in conns:
            w_int = np.clip(2 * np.round(m.values().numpy() * v / 2 ** e / 2), -256, W_MAX).astype(np.int64)
            idx = m.indices().numpy()
            keep = w_int != 0
            L["conns"].append({"src": index[s], "src_name": s, "delay": depth[name] - depth[s] - 1,
                               "rows": idx[0][keep], "cols": idx[1][keep], "w_int": w_int[keep], "n_in": m.shape[1]})
        layers.append(L)
    readout = {"src": srcs[low.outputs[0]][0], "out": low.outputs[0]}
    return {"layers": layers, "readout": readout, "lowered": low}


def _conn_matrix(L: dict, c: dict) -> torch.Tensor:
    """A connection's integer weights as the sparse current it adds per input spike (``<< weight_exp << 6``)."""
    idx = torch.from_numpy(np.stack([c["rows"], c["cols"]]))
    vals = torch.from_numpy(c["w_int"]).double() * 2.0 ** (L["weight_exp"] + 6)  # Lava's act_shift = 6
    return torch.sparse_coo_tensor(idx, vals, (L["size"], c["n_in"]), check_invariants=True).coalesce()


def _loihi_decay_run(cur: torch.Tensor, dv: int, th: float) -> torch.Tensor:
    """Loihi's fixed-point LIF membrane (``PyLifModelBitAcc``): ``v = sign(v*(4096-dv)) * (|v*(4096-dv)| >> 12)
    + I``, spike when ``v >= th``, reset to 0; ``cur`` ``[steps, B, N]`` integer-valued; returns 0/1 spikes."""
    v = torch.zeros(cur.shape[1:], dtype=torch.float64)
    out = torch.empty_like(cur)
    for t in range(cur.shape[0]):
        p = v * (4096 - dv)
        v = torch.sign(p) * torch.floor(p.abs() / 4096) + cur[t]
        out[t] = (v >= th).double()
        v = torch.where(out[t] > 0, torch.zeros_like(v), v)
    return out


def reference_spikes(q: dict, steps: int) -> list[torch.Tensor]:
    """snnconv's run of the integer network with Lava's timing: per layer ``[samples, steps, N]`` (0/1).

    IF layers run snnconv's IF kernel (:func:`snnconv.neurons.integrate_fire.integrate_fire`); LIF layers
    the integer Loihi decay (:func:`_loihi_decay_run`). A ``Sparse`` synapse delivers at step t+1 what it
    received at step t, a connection with ``delay`` d at step t+1+d (Lava ``DelaySparse``); the input
    currents of several connections add up (fan-in at the ``LIF``'s ``a_in``)."""
    from snnconv.neurons.integrate_fire import integrate_fire

    out = []
    for L in q["layers"]:
        th = 64.0 * L["vth"] + 1  # v > 64 vth  <=>  v >= 64 vth + 1
        bias = torch.from_numpy(L["bias_eff"]).double()  # [samples, N]
        cur = bias.unsqueeze(0).expand(steps, *bias.shape).clone()  # [steps, samples, N]
        for c in L["conns"]:
            m, spk = _conn_matrix(L, c), out[c["src"]].double()  # [samples, steps, N_src]
            lag = 1 + c["delay"]
            for t in range(lag, steps):
                cur[t] += torch.sparse.mm(m, spk[:, t - lag].T).T
        if L["dv"]:
            counts = _loihi_decay_run(cur, L["dv"], th)
        else:
            _, counts, _ = integrate_fire(cur, torch.zeros(cur.shape[1:], dtype=torch.float64),
                                          torch.tensor(th, dtype=torch.float64), reset="zero")
        out.append(counts.permute(1, 0, 2).to(torch.uint8))
    return out


def hardware_report(q: dict, profile: dict = LOIHI2) -> dict:
    rows = []
    for L in q["layers"]:
        syn = sum(int(c["w_int"].size) for c in L["conns"])
        w = np.concatenate([c["w_int"] for c in L["conns"]]) if syn else None
        cores = max(math.ceil(L["size"] / profile["neurons_per_core"]), math.ceil(syn / profile["synapses_per_core"]), 1)
        fed = [f"{c['src_name']}" + (f" (delay {c['delay']})" if c["delay"] else "") for c in L["conns"]]
        rows.append({"layer": L["name"], "neurons": L["size"], "synapses_in": syn, "cores": cores,
                     "vth": L["vth"], "threshold_eff": 64 * L["vth"], "weight_exp": L["weight_exp"] if syn else None,
                     "weight_mantissa_range": [int(w.min()), int(w.max())] if syn else None,
                     "bias_exp_max": int(L["bias_exp"].max()), "dv": L["dv"], "leak": L["leak"],
                     "leak_eff": L["leak_eff"], "depth": L["depth"],
                     "input": " + ".join((["bias (analog input current)"] if L["reads_input"] else []) +
                                         [f"Sparse from {f}" for f in fed])})
    total_cores = sum(r["cores"] for r in rows)
    return {"profile": "Loihi 2", "limits": profile, "layers": rows, "total_cores": total_cores,
            "total_neurons": sum(r["neurons"] for r in rows), "total_synapses": sum(r["synapses_in"] for r in rows),
            "fits_one_chip": total_cores <= profile["cores_per_chip"],
            "fixed_point": {"weights": "8-bit signed mantissa (even, [-256, 254]) << weight_exp (>= 0 here)",
                            "threshold": "vth (17-bit) << 6", "bias": "13-bit signed mantissa << 0..7",
                            "membrane": "24-bit signed, du=4095 (+ds_offset: no synaptic filter), "
                                        "dv=0 (IF) or round((1-beta)*4096) (LIF)",
                            "fan-in": "several Sparse/DelaySparse into one LIF a_in are summed by the port"}}


def format_hardware(rep: dict) -> str:
    lines = [f"Loihi 2 mapping: {rep['total_cores']} cores ({'fits' if rep['fits_one_chip'] else 'exceeds'} one chip of "
             f"{rep['limits']['cores_per_chip']}), {rep['total_neurons']:,} neurons, {rep['total_synapses']:,} synapses",
             f"{'layer':<16}{'neurons':>9}{'synapses':>11}{'cores':>7}{'vth':>8}{'w_exp':>7}{'dv':>6}  weights / input"]
    for r in rep["layers"]:
        lines.append(f"{r['layer']:<16}{r['neurons']:>9}{r['synapses_in']:>11}{r['cores']:>7}{r['vth']:>8}"
                     f"{'-' if r['weight_exp'] is None else r['weight_exp']:>7}{r.get('dv', 0):>6}  "
                     f"{r['weight_mantissa_range'] or ''} {r['input']}")
    return "\n".join(lines)


def _is_chain(q: dict) -> bool:
    """Layer 0 reads the input only, every later layer exactly the previous one, without extra delay."""
    return all((L["reads_input"] and not L["conns"]) if k == 0 else
               (not L["reads_input"] and len(L["conns"]) == 1 and L["conns"][0]["src"] == k - 1
                and L["conns"][0]["delay"] == 0) for k, L in enumerate(q["layers"]))


def _write_netx(path: Path, q: dict, max_dense: int = 4_000_000) -> str:
    """lava-dl netx HDF5 description of the synaptic layers (feed-forward chains of dense layers only)."""
    import h5py

    if not _is_chain(q):
        return "not written: netx describes feed-forward chains; this network has fan-in (residual adds) or delays"
    big = [L["name"] for L in q["layers"][1:] if L["size"] * L["conns"][0]["n_in"] > max_dense]
    if big:
        return f"not written: netx describes layers as dense/conv matrices; composed layers {big} exceed {max_dense:,} entries"
    with h5py.File(path, "w") as f:
        lay = f.create_group("layer")
        for i, L in enumerate(q["layers"]):
            grp = lay.create_group(str(i))
            if i == 0:
                grp.create_dataset("type", data=b"input")
                grp.create_dataset("shape", data=np.array([L["size"]]))
                grp.create_dataset("bias", data=L["bias_eff"][0])
            else:
                grp.create_dataset("type", data=b"dense")
                grp.create_dataset("shape", data=np.array([L["size"]]))
                w = _conn_matrix(L, L["conns"][0]).to_dense() / 64  # W_int << weight_exp
                grp.create_dataset("weight", data=w.numpy().astype(np.int32))
                grp.create_dataset("bias", data=L["bias_eff"][0])
            neuron = grp.create_group("neuron")
            for key, val in {"type": b"CUBA", "iDecay": 4095, "vDecay": L["dv"], "vThMant": L["vth"], "refDelay": 1,
                             "gradedSpike": False}.items():
                neuron.create_dataset(key, data=val)
    return "written"


def run_lava(q: dict, steps: int, workdir: Path, timeout: float | None = None) -> list[np.ndarray]:
    """Run the quantized network in Lava (subprocess, Lava venv); spikes per layer ``[samples, steps, N]``."""
    py = lava_python()
    net = {"n_layers": len(q["layers"]), "steps": steps, "du": 4095}  # + Lava's ds_offset 1: decay 4096, u = a
    for k, L in enumerate(q["layers"]):
        net |= {f"size_{k}": L["size"], f"vth_{k}": L["vth"], f"dv_{k}": L["dv"], f"bias_mant_{k}": L["bias_mant"],
                f"bias_exp_{k}": L["bias_exp"], f"n_conns_{k}": len(L["conns"]), f"weight_exp_{k}": L["weight_exp"]}
        for j, c in enumerate(L["conns"]):  # CSR arrays (scipy is on the Lava side only)
            order = np.lexsort((c["cols"], c["rows"]))
            indptr = np.concatenate([[0], np.cumsum(np.bincount(c["rows"], minlength=L["size"]))])
            key = f"{k}_{j}"
            net |= {f"w_data_{key}": c["w_int"][order].astype(np.int32), f"w_indices_{key}": c["cols"][order],
                    f"w_indptr_{key}": indptr, f"w_shape_{key}": np.array([L["size"], c["n_in"]]),
                    f"src_{key}": c["src"], f"delay_{key}": c["delay"]}
    np.savez_compressed(workdir / "network.npz", **net)
    runner = Path(__file__).with_name("lava_runner.py")
    r = subprocess.run([str(py), "-I", str(runner), str(workdir / "network.npz"), str(workdir / "lava_spikes.npz")],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        tail = "\n".join(r.stderr.strip().splitlines()[-3:])
        raise SnnconvError(f"the Lava run failed (exit {r.returncode}): {tail}")
    got = np.load(workdir / "lava_spikes.npz")
    return [got[f"layer{k}"] for k in range(len(q["layers"]))]


def compare_lava(q: dict, ref: list[torch.Tensor], got: list[np.ndarray]) -> dict:
    layers = {}
    for L, r, g in zip(q["layers"], ref, got):
        r = r.numpy()
        layers[L["name"]] = {"snnconv_spikes": int(r.sum()), "lava_spikes": int(g.sum()),
                             "mismatches": int((r != g).sum()), "neurons": L["size"]}
    return {"layers": layers, "identical": all(v["mismatches"] == 0 for v in layers.values())}


def export_lava(graph: Graph, out: str | Path, dataset: str = "mnist-bundled", data_dir=None, samples: int = 4,
                timesteps: int = 16, x: torch.Tensor | None = None, log_fn=print, overwrite: bool = False) -> dict:
    """Write the Loihi 2 network (npz + netx HDF5 + hardware report) to folder ``out``, run it in Lava and
    compare its spikes with snnconv's run of the same integer network. Returns the comparison report.

    ``out`` is checked before any work (an existing folder is replaced only when it is an snnconv
    folder and ``overwrite`` is set, :mod:`snnconv.output`)."""
    from snnconv.output import atomic_dir, check_output_dir

    check_output_dir(out, overwrite)
    if x is None:
        from snnconv.data.datasets import load_dataset

        x, _ = next(iter(load_dataset(dataset, data_dir, train=False).subset(samples).batches(samples)))
    in_shape = graph.nodes[graph.inputs[0]].shape
    if tuple(x.shape[1:]) != tuple(in_shape):
        raise SnnconvError(f"inputs are {tuple(x.shape[1:])}, the network's input is {tuple(in_shape)}")
    q = quantize(graph, x)
    hw = hardware_report(q)
    log_fn(format_hardware(hw))
    steps = timesteps + max(L["depth"] for L in q["layers"])  # room for the one-step synaptic delay per hop
    with atomic_dir(out, overwrite) as d:
        netx = _write_netx(d / "network.net", q)
        (d / "hardware.json").write_text(json.dumps(hw, indent=2))
        (d / "hardware.md").write_text("```\n" + format_hardware(hw) + "\n```\n")
        ref = reference_spikes(q, steps)
        report = {"samples": int(x.shape[0]), "steps": steps, "netx": netx, "hardware": hw}
        try:
            got = run_lava(q, steps, d)
        except SnnconvError as e:
            report["lava"] = f"not run: {e}"
        else:
            report["comparison"] = compare_lava(q, ref, got)
        (d / "comparison.json").write_text(json.dumps(report, indent=2))
    if "comparison" not in report:
        raise SnnconvError(f"wrote {out}/ (network, hardware report), but {report['lava']}")
    for name, c in report["comparison"]["layers"].items():
        log_fn(f"  {name:<16} snnconv {c['snnconv_spikes']:>8}  lava {c['lava_spikes']:>8}  mismatches {c['mismatches']}")
    log_fn(f"Lava (Loihi2SimCfg fixed_pt) vs snnconv on the quantized network, {report['samples']} samples x {steps} "
           f"steps: spikes {'identical' if report['comparison']['identical'] else 'DIFFER'}; wrote {out}/")
    return report
