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


# -- structure: chain of spiking layers with composed linear maps ----------------------------------------
def _chain(g: Graph) -> tuple[list[str], list[str]]:
    """Spiking nodes in order, and for each its source (input or previous spiking node); refuses branches."""
    from snnconv.runtime.kernels import KERNELS  # noqa: F401  (kernels validate node kinds below)

    spiking = [n for n, node in g.nodes.items() if node.spiking]
    if not spiking:
        raise SnnconvError("Lava export: the graph has no spiking layer")
    bad = [f"{n} ({g.nodes[n].kind}/{getattr(g.nodes[n], 'model', '')})" for n in spiking
           if g.nodes[n].kind != "neuron" or g.nodes[n].model != "if"]
    if bad:
        raise SnnconvError(f"Lava export supports IF neurons (dv=0) only; not: {', '.join(bad)} -> convert with --neuron if")

    def source(name: str) -> str:
        seen, stack, found = set(), list(g.edges[name]), set()
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            if g.nodes[s].spiking or g.nodes[s].kind == "input":
                found.add(s)
            else:
                stack += g.edges[s]
        if len(found) != 1:
            raise SnnconvError(f"Lava export supports feed-forward chains; '{name}' reads from {sorted(found)} "
                               f"(residual adds are not mapped to Lava yet)")
        return found.pop()

    sources = [source(n) for n in spiking] + [source(g.outputs[0])]
    expected = [g.inputs[0]] + spiking
    if sources != expected:
        raise SnnconvError(f"Lava export supports feed-forward chains (layer sources {sources})")
    return spiking, sources


def _linear_map(g: Graph, src: str, dst: str, x: torch.Tensor, include_dst: bool) -> torch.Tensor:
    """Evaluate the non-spiking nodes between ``src`` and ``dst`` with ``src`` = ``x`` ([B, ...])."""
    from snnconv.runtime.kernels import KERNELS

    names = list(g.nodes)
    vals = {src: x}
    for name in names[names.index(src) + 1: names.index(dst) + (1 if include_dst else 0)]:
        if g.nodes[name].spiking or not all(s in vals for s in g.edges[name]):
            continue
        vals[name] = KERNELS[g.nodes[name].kind](g.nodes[name], [vals[s] for s in g.edges[name]])
    last = dst if include_dst else g.edges[dst][0]
    return vals[last].flatten(1)


def _compose(g: Graph, src: str, dst: str, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact sparse matrix ``M`` [N_dst, N_src] and bias ``b`` of the linear ops from ``src`` to ``dst``'s input."""
    shape = g.nodes[src].shape
    n = int(np.prod(shape))
    with torch.no_grad():
        b = _linear_map(g, src, dst, torch.zeros(1, *shape, dtype=torch.float64), False)[0]
        rows, cols, vals = [], [], []
        for i0 in range(0, n, chunk):
            k = min(chunk, n - i0)
            basis = torch.zeros(k, n, dtype=torch.float64)
            basis[torch.arange(k), torch.arange(i0, i0 + k)] = 1
            y = _linear_map(g, src, dst, basis.view(k, *shape), False) - b
            nz = y.nonzero()
            rows.append(nz[:, 1])
            cols.append(nz[:, 0] + i0)
            vals.append(y[nz[:, 0], nz[:, 1]])
        m = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals),
                                    (b.numel(), n), check_invariants=True).coalesce()
    return m, b


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
    _chain(_lower(graph))


def quantize(graph: Graph, x: torch.Tensor) -> dict:
    """The Loihi 2 fixed-point network of ``graph`` for inputs ``x`` (see the module docstring)."""
    low = _lower(graph)
    spiking, sources = _chain(low)
    layers = []
    # layer 0: the analog input's constant current becomes a per-sample bias
    c0 = _linear_map(low, sources[0], spiking[0], x.double(), False).numpy()
    cmax = max(float(np.abs(c0).max()), 1e-12)
    v0 = int(np.clip(math.floor(BIAS_MANT_MAX * 2 ** 7 / (64 * cmax)), 1, VTH_MAX))
    mant, exp, eff = _bias_fixed(np.round(c0 * 64 * v0).astype(np.int64))
    layers.append({"name": spiking[0], "size": c0.shape[1], "vth": v0, "bias_mant": mant, "bias_exp": exp,
                   "bias_eff": eff, "shape": list(low.nodes[spiking[0]].shape)})
    for k in range(1, len(spiking)):
        m, b = _compose(low, sources[k], spiking[k])
        vals = m.values().numpy()
        wmax = max(float(np.abs(vals).max()) if vals.size else 0.0, 1e-12)
        # a spike adds (W_int << e) << 6 to v; the threshold is vth << 6: W_int / 2^-e / vth = w
        if wmax <= W_MAX:
            e, v = 0, int(np.clip(math.floor(W_MAX / wmax), 1, VTH_MAX))
        else:
            e, v = int(math.ceil(math.log2(wmax / W_MAX))), 1
        w_int = np.clip(2 * np.round(vals * v / 2 ** e / 2), -256, W_MAX).astype(np.int64)
        idx = m.indices().numpy()
        keep = w_int != 0
        mant, bexp, beff = _bias_fixed(np.round(b.numpy() * 64 * v).astype(np.int64))
        layers.append({"name": spiking[k], "size": int(b.numel()), "vth": v, "weight_exp": e,
                       "rows": idx[0][keep], "cols": idx[1][keep], "w_int": w_int[keep], "n_in": m.shape[1],
                       "bias_mant": mant, "bias_exp": bexp, "bias_eff": beff,
                       "weights_float_nonzero": int(vals.size), "shape": list(low.nodes[spiking[k]].shape)})
    readout = {"src": spiking[-1], "out": low.outputs[0]}
    return {"layers": layers, "readout": readout, "lowered": low}


def _dense_int(layer) -> torch.Tensor:
    m = torch.zeros(layer["size"], layer["n_in"], dtype=torch.float64)
    m[torch.from_numpy(layer["rows"]), torch.from_numpy(layer["cols"])] = torch.from_numpy(layer["w_int"]).double()
    return m


def reference_spikes(q: dict, steps: int) -> list[torch.Tensor]:
    """snnconv's IF kernel on the integer network with Lava's timing: per layer ``[samples, steps, N]`` (0/1)."""
    from snnconv.neurons.integrate_fire import integrate_fire

    out = []
    prev = None
    for k, L in enumerate(q["layers"]):
        th = torch.tensor(64.0 * L["vth"] + 1, dtype=torch.float64)  # v > 64 vth  <=>  v >= 64 vth + 1
        bias = torch.from_numpy(L["bias_eff"]).double()
        if k == 0:
            cur = bias.unsqueeze(0).expand(steps, *bias.shape).clone()  # [steps, samples, N]
        else:
            m = _dense_int(L).to_sparse() * (2.0 ** (L["weight_exp"] + 6))  # Lava's act_shift = 6
            delayed = torch.cat([torch.zeros_like(prev[:1]), prev[:-1]])  # synapse delivers one step later
            cur = torch.stack([torch.sparse.mm(m, s.T).T for s in delayed]) + bias
        v = torch.zeros(cur.shape[1:], dtype=torch.float64)
        _, counts, _ = integrate_fire(cur, v, th, reset="zero")
        prev = counts
        out.append(counts.permute(1, 0, 2).to(torch.uint8))
    return out


def hardware_report(q: dict, profile: dict = LOIHI2) -> dict:
    rows = []
    for k, L in enumerate(q["layers"]):
        syn = int(L["w_int"].size) if k else 0
        cores = max(math.ceil(L["size"] / profile["neurons_per_core"]), math.ceil(syn / profile["synapses_per_core"]), 1)
        rows.append({"layer": L["name"], "neurons": L["size"], "synapses_in": syn, "cores": cores,
                     "vth": L["vth"], "threshold_eff": 64 * L["vth"], "weight_exp": L.get("weight_exp"),
                     "weight_mantissa_range": [int(L["w_int"].min()), int(L["w_int"].max())] if syn else None,
                     "bias_exp_max": int(L["bias_exp"].max()), "input": "bias (analog input current)" if k == 0 else "Sparse"})
    total_cores = sum(r["cores"] for r in rows)
    return {"profile": "Loihi 2", "limits": profile, "layers": rows, "total_cores": total_cores,
            "total_neurons": sum(r["neurons"] for r in rows), "total_synapses": sum(r["synapses_in"] for r in rows),
            "fits_one_chip": total_cores <= profile["cores_per_chip"],
            "fixed_point": {"weights": "8-bit signed mantissa (even, [-256, 254]) << weight_exp (>= 0 here)",
                            "threshold": "vth (17-bit) << 6", "bias": "13-bit signed mantissa << 0..7",
                            "membrane": "24-bit signed, du=4095 (+ds_offset: no synaptic filter), dv=0 (IF)"}}


def format_hardware(rep: dict) -> str:
    lines = [f"Loihi 2 mapping: {rep['total_cores']} cores ({'fits' if rep['fits_one_chip'] else 'exceeds'} one chip of "
             f"{rep['limits']['cores_per_chip']}), {rep['total_neurons']:,} neurons, {rep['total_synapses']:,} synapses",
             f"{'layer':<16}{'neurons':>9}{'synapses':>11}{'cores':>7}{'vth':>8}{'w_exp':>7}  weights"]
    for r in rep["layers"]:
        lines.append(f"{r['layer']:<16}{r['neurons']:>9}{r['synapses_in']:>11}{r['cores']:>7}{r['vth']:>8}"
                     f"{'-' if r['weight_exp'] is None else r['weight_exp']:>7}  {r['weight_mantissa_range'] or r['input']}")
    return "\n".join(lines)


def _write_netx(path: Path, q: dict, max_dense: int = 4_000_000) -> str:
    """lava-dl netx HDF5 description of the synaptic layers (dense layers only; written when they all fit)."""
    import h5py

    big = [L["name"] for L in q["layers"][1:] if L["size"] * L["n_in"] > max_dense]
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
                grp.create_dataset("weight", data=_dense_int(L).numpy().astype(np.int32) * 2 ** L["weight_exp"])
                grp.create_dataset("bias", data=L["bias_eff"])
            neuron = grp.create_group("neuron")
            for key, val in {"type": b"CUBA", "iDecay": 4095, "vDecay": 0, "vThMant": L["vth"], "refDelay": 1,
                             "gradedSpike": False}.items():
                neuron.create_dataset(key, data=val)
    return "written"


def run_lava(q: dict, steps: int, workdir: Path, timeout: float | None = None) -> list[np.ndarray]:
    """Run the quantized network in Lava (subprocess, Lava venv); spikes per layer ``[samples, steps, N]``."""
    py = lava_python()
    net = {"n_layers": len(q["layers"]), "steps": steps, "du": 4095}  # + Lava's ds_offset 1: decay 4096, u = a
    for k, L in enumerate(q["layers"]):
        net |= {f"size_{k}": L["size"], f"vth_{k}": L["vth"], f"dv_{k}": 0, f"bias_mant_{k}": L["bias_mant"],
                f"bias_exp_{k}": L["bias_exp"]}
        if k:  # CSR arrays (scipy is on the Lava side only)
            order = np.lexsort((L["cols"], L["rows"]))
            indptr = np.concatenate([[0], np.cumsum(np.bincount(L["rows"], minlength=L["size"]))])
            net |= {f"w_data_{k}": L["w_int"][order].astype(np.int32), f"w_indices_{k}": L["cols"][order],
                    f"w_indptr_{k}": indptr, f"w_shape_{k}": np.array([L["size"], L["n_in"]]),
                    f"weight_exp_{k}": L["weight_exp"]}
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
                timesteps: int = 16, x: torch.Tensor | None = None, log_fn=print) -> dict:
    """Write the Loihi 2 network (npz + netx HDF5 + hardware report) to folder ``out``, run it in Lava and
    compare its spikes with snnconv's run of the same integer network. Returns the comparison report."""
    from snnconv.output import atomic_dir

    if x is None:
        from snnconv.data.datasets import load_dataset

        x, _ = next(iter(load_dataset(dataset, data_dir, train=False).subset(samples).batches(samples)))
    in_shape = graph.nodes[graph.inputs[0]].shape
    if tuple(x.shape[1:]) != tuple(in_shape):
        raise SnnconvError(f"inputs are {tuple(x.shape[1:])}, the network's input is {tuple(in_shape)}")
    q = quantize(graph, x)
    hw = hardware_report(q)
    log_fn(format_hardware(hw))
    steps = timesteps + len(q["layers"]) - 1  # room for the one-step synaptic delay per layer
    with atomic_dir(out) as d:
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
