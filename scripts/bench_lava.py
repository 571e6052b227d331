#!/usr/bin/env python
"""Lava / Loihi 2 benchmark: the accurate converted network as one integer Lava network, run in Lava.

For each network x conversion of scripts/bench_deploy.py (same checkpoints, same calibration images):
convert, build the Loihi 2 integer network (``snnconv.backends.lava.build_network``), stream the test
images through ONE Lava network (lava-nc 0.9.0, ``Loihi2SimCfg(select_tag="fixed_pt")``, Python 3.9 side
venv), and compare per T with snnconv's float simulation of the converted graph and with snnconv's
integer reference of the exported network. Reported: accuracy of each, top-1 agreement of Lava with the
float simulation, whether Lava's readout equals the integer reference exactly, spike-count mismatches.

    python scripts/bench_lava.py --data-dir ../shared/datasets

writes docs/benchmarks/lava.json and lava.md (command, data, checkpoint hashes at the top).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_deploy import NETWORKS, load_network, parse_args  # noqa: E402  (same networks, rows, checkpoints, data)
from benchlib import checkpoints_line, environment_block, row_checkpoints, save, sha256  # noqa: E402

from snnconv.api import conversion_pipeline, convert_graph  # noqa: E402
from snnconv.backends import lava  # noqa: E402
from snnconv.config import ConversionConfig  # noqa: E402
from snnconv.runtime.simulator import Simulator  # noqa: E402

ROWS = {"mnist_cnn": ("qcfs", "qcfs_signed"), "resnet20": ("qcfs_l4_signed_bc4",)}


def float_predictions(snn, x: torch.Tensor, T: int, batch: int = 100) -> np.ndarray:
    return torch.cat([Simulator(snn, T).run(x[i:i + batch])[-1].argmax(1) for i in range(0, len(x), batch)]).numpy()


def sdn_row(base: dict, snn, calib: torch.Tensor, x: torch.Tensor, y: np.ndarray, ann: np.ndarray, log) -> dict:
    """The Sigma-Delta route (lava.proc.sdn): one network, every image held for its settling window."""
    t0 = time.time()
    net = lava.build(snn, calib, 0, route="sdn")
    x_int = lava.quantize_input(net, x)
    ref = lava.sdn_stream_reference(net, x_int)
    rate = lava.rate_limit_ann(snn, x).argmax(1)
    with tempfile.TemporaryDirectory() as d:
        lava.write_network(net, Path(d) / "network.npz")
        t1 = time.time()
        got = lava.run_lava(Path(d), x_int)
        lava_s = time.time() - t1
    pred = got["readout"].argmax(1)
    row = {**base, "route": "sdn", "window": net["window"], "state_exp": [L["state_exp"] for L in net["layers"]],
           "rate_limit_ann_accuracy": float((rate == y).mean() * 100),
           "integer_reference_accuracy": float((ref["readout"].argmax(1) == y).mean() * 100),
           "lava_accuracy": float((pred == y).mean() * 100), "agreement_lava_vs_ann": float((pred == ann).mean() * 100),
           "agreement_lava_vs_rate_limit_ann": float((pred == rate).mean() * 100),
           "readout_identical": bool(np.array_equal(ref["readout"], got["readout"])),
           "messages_per_image": ref["messages"] / len(x), "lava_seconds": round(lava_s, 1),
           "seconds": round(time.time() - t0, 1), "hardware": lava.hardware_report(net)}
    log(f"[{base['network']}/{base['method']}] sdn: " + str({k: v for k, v in row.items() if k not in base and k != "hardware"}))
    return row


def run_network(key: str, args, ts: list[int], log) -> list[dict]:
    _, dataset, ckpt, rows = NETWORKS[key]
    model, graph, _, x, y, calib = load_network(key, args)
    y = y.numpy()
    out = []
    for name, conv in rows:
        if name not in ROWS[key] or (args.only and name not in args.only):
            continue
        snn, _ = convert_graph(graph, calib, conversion_pipeline(ConversionConfig(**conv)))
        with torch.no_grad():
            ann = torch.cat([model.eval()(x[i:i + 200]) for i in range(0, len(x), 200)]).argmax(1).numpy()
        base = {"network": key, "dataset": dataset, "method": name, "conversion": conv, "samples": len(x),
                "checkpoint": ckpt, "checkpoint_sha256": sha256(ckpt), "ann_accuracy": float((ann == y).mean() * 100)}
        if "sdn" in args.routes:
            out.append(sdn_row(base, snn, torch.cat(calib), x, y, ann, log))
        if "if" not in args.routes:
            continue
        row = {**base, "route": "if", "per_t": {}}
        for T in ts:
            t0 = time.time()
            net = lava.build_network(snn, torch.cat(calib), T)
            x_int = lava.quantize_input(net, x)
            ref = lava.reference_run(net, x_int)
            flt = float_predictions(snn, x, T)
            with tempfile.TemporaryDirectory() as d:
                lava.write_network(net, Path(d) / "network.npz")
                t1 = time.time()
                got = lava.run_lava(Path(d), x_int)
                lava_s = time.time() - t1
            comp = lava.compare(net, ref, got)
            pred_ref, pred_lava = ref["readout"].argmax(1), got["readout"].argmax(1)
            row["per_t"][str(T)] = {
                "snnconv_float_accuracy": float((flt == y).mean() * 100),
                "integer_reference_accuracy": float((pred_ref == y).mean() * 100),
                "lava_accuracy": float((pred_lava == y).mean() * 100),
                "agreement_lava_vs_float": float((pred_lava == flt).mean() * 100),
                "agreement_lava_vs_reference": comp["top1_agreement"],
                "readout_identical": comp["readout_identical"],
                "spike_count_mismatch_rate": comp["spike_count_mismatch_rate"],
                "lava_seconds": round(lava_s, 1), "seconds": round(time.time() - t0, 1)}
            if T == max(ts):
                row["hardware"] = lava.hardware_report(net)
            log(f"[{key}/{name}] T={T}: {row['per_t'][str(T)]}")
        out.append(row)
    return out


def markdown(data: dict) -> str:
    lines = ["# Lava / Loihi 2: the converted network run in Lava", "",
             f"Last command: `{data['command']}` (rows of earlier runs are kept)", "",
             "Each conversion is exported as ONE integer Lava network (`snnconv.backends.lava`, docs/lava.md): a "
             "RingBuffer streams every test image (8-bit, direct coding) for T steps, back to back; synapses are "
             "Lava's `Conv` / `Dense` (8-bit weights); neurons are snnconv's fixed-point neuron process (subtractive "
             "reset, initial membrane, signed / graded spikes); the readout integrates the last layer's output. Run "
             "with `Loihi2SimCfg(select_tag='fixed_pt')` in lava-nc 0.9.0. *float*: snnconv's simulation of the "
             "converted graph (float32); *integer*: snnconv's run of the exported integer network; *Lava*: the "
             "Lava run. Agreement: same top-1 class on the same image.", "",
             checkpoints_line(row_checkpoints(data["rows"])), "",
             f"Data: {data['data']}", "",
             "## IF route: the converted spiking network", "",
             "| network | method | images | T | ANN acc (%) | float acc (%) | integer acc (%) | Lava acc (%) | Lava vs "
             "float agreement (%) | Lava readout = integer | spike-count mismatch | Lava run (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in data["rows"]:
        for t, p in r.get("per_t", {}).items():
            lines.append(f"| {r['network']} | {r['method']} | {r['samples']} | {t} | {r.get('ann_accuracy', float('nan')):.2f} | "
                         f"{p['snnconv_float_accuracy']:.2f} | "
                         f"{p['integer_reference_accuracy']:.2f} | {p['lava_accuracy']:.2f} | "
                         f"{p['agreement_lava_vs_float']:.2f} | {'yes' if p['readout_identical'] else 'NO'} | "
                         f"{p['spike_count_mismatch_rate']:.1e} | {p['lava_seconds']} |")
    sdn = [r for r in data["rows"] if r.get("route") == "sdn"]
    if sdn:
        lines += ["", "## Sigma-Delta route (lava.proc.sdn SigmaDelta, graded messages)", "",
                  "The same converted weights run as an ANN with clip(0, L) activations (the spiking layers' rate "
                  "limit) by Lava's own SigmaDelta neurons, each image held for its settling window (no T). "
                  "*rate-limit ANN*: that ANN in float64; *integer*: snnconv's step-by-step replica of Lava's "
                  "fixed-point SigmaDelta (which drops the bits shifted out of each message).", "",
                  "| network | weights of | images | window (steps) | ANN acc (%) | rate-limit ANN acc (%) | integer acc (%) "
                  "| Lava acc (%) | Lava vs ANN agreement (%) | Lava readout = integer | messages / image | Lava run (s) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for r in sdn:
            lines.append(f"| {r['network']} | {r['method']} | {r['samples']} | {r['window']} | {r['ann_accuracy']:.2f} | "
                         f"{r['rate_limit_ann_accuracy']:.2f} | {r['integer_reference_accuracy']:.2f} | "
                         f"{r['lava_accuracy']:.2f} | {r['agreement_lava_vs_ann']:.2f} | "
                         f"{'yes' if r['readout_identical'] else 'NO'} | {r['messages_per_image']:.0f} | {r['lava_seconds']} |")
    for r in data["rows"]:
        if "hardware" in r:
            lines += ["", f"### Loihi 2 mapping: {r['network']} / {r['method']} / {r.get('route', 'if')} route", "", "```",
                      lava.format_hardware(r["hardware"]), "```"]
    return "\n".join(lines + environment_block(data["environment"]))


def main() -> None:
    args, ts = parse_args("lava", 200, 50, extra=lambda ap: ap.add_argument(
        "--routes", default="if,sdn", help="if (converted spiking network), sdn (Sigma-Delta)"))
    args.routes = set(args.routes.split(","))
    rows = []
    for key in args.networks.split(","):
        rows += run_network(key, args, ts, lambda m: print(m, file=sys.stderr, flush=True))
    save(args.out, rows, key=lambda r: (r["network"], r["method"], r.get("route", "if")), markdown=markdown,
         script="bench_lava.py", data_dir=args.data_dir, keep=lambda r: "route" in r or "per_t" in r,
         data=f"MNIST test set (seeded subset of {args.mnist_samples}, seed 0), CIFAR-10 test set (seeded "
              f"subset of {args.cifar_samples}, seed 0); calibration and the input's 8-bit scale: "
              f"{args.calib_samples} images of the training part (validation split excluded), seed 1")

if __name__ == "__main__":
    main()
