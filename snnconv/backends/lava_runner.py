"""Lava side of ``snnconv export --format lava`` (runs under the Python 3.9 lava-nc 0.9.0 venv; numpy only).

Usage: ``python lava_runner.py NETWORK.npz SPIKES_OUT.npz``. Reads the quantized network written by
:mod:`snnconv.backends.lava`, builds per sample a Lava process graph (``LIF`` layers with integer
``vth``/``bias_mant``/``bias_exp``, ``du=4095`` (+ ``ds_offset``: no current filter), ``dv=0`` for IF or the
LIF's 12-bit decay, joined by ``Sparse`` synapses with 8-bit weight mantissas and a weight exponent; a
connection that must wait ``d`` extra steps to stay aligned with a longer path is a ``DelaySparse`` with
delay ``d``; a layer fed by several connections (residual add) has them all connected to its ``a_in``
port, which sums them), probes every layer's ``s_out`` with a ``Monitor``, runs it
with ``Loihi2SimCfg(select_tag="fixed_pt")`` (Lava's bit-accurate Loihi models) and writes the
spike trains ``layer{k}`` ``[samples, steps, neurons]`` back.

This file must not import snnconv or torch: it runs in the other interpreter.
"""
import sys

import numpy as np


def main(net_path, out_path):
    from scipy.sparse import csr_matrix

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor
    from lava.proc.sparse.process import DelaySparse, Sparse

    net = np.load(net_path)
    n_layers = int(net["n_layers"])
    steps = int(net["steps"])
    samples = net["bias_mant_0"].shape[0]  # biases are [samples, N]: the analog input current differs per sample
    out = {f"layer{k}": [] for k in range(n_layers)}
    for s in range(samples):
        lifs, conns, monitors = [], [], []
        for k in range(n_layers):
            n = int(net[f"size_{k}"])
            lif = LIF(shape=(n,), du=int(net["du"]), dv=int(net[f"dv_{k}"]), vth=int(net[f"vth_{k}"]),
                      bias_mant=net[f"bias_mant_{k}"][s].astype(np.int32),
                      bias_exp=net[f"bias_exp_{k}"][s].astype(np.int32), name=f"layer{k}")
            for j in range(int(net[f"n_conns_{k}"])):
                key = f"{k}_{j}"
                w = csr_matrix((net[f"w_data_{key}"], net[f"w_indices_{key}"], net[f"w_indptr_{key}"]),
                               shape=tuple(net[f"w_shape_{key}"]))
                delay = int(net[f"delay_{key}"])
                kw = dict(weights=w, weight_exp=int(net[f"weight_exp_{k}"]), num_weight_bits=8, name=f"syn{key}")
                if delay:
                    d = csr_matrix((np.full(w.nnz, delay, dtype=int), w.indices, w.indptr), shape=w.shape)
                    syn = DelaySparse(delays=d, max_delay=delay, **kw)
                else:
                    syn = Sparse(**kw)
                lifs[int(net[f"src_{key}"])].s_out.connect(syn.s_in)
                syn.a_out.connect(lif.a_in)  # fan-in: the InPort sums all connected a_out
                conns.append(syn)
            mon = Monitor()
            mon.probe(target=lif.s_out, num_steps=steps)
            lifs.append(lif)
            monitors.append(mon)
        lifs[0].run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        for k, (lif, mon) in enumerate(zip(lifs, monitors)):
            data = mon.get_data()[lif.name]["s_out"]
            out[f"layer{k}"].append(np.asarray(data).reshape(steps, -1).astype(np.uint8))
        lifs[0].stop()
    np.savez_compressed(out_path, **{k: np.stack(v) for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
