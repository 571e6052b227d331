#!/usr/bin/env python
"""Deployment benchmark: the converted network outside snnconv, in SpikingJelly, snnTorch, Norse and sinabs.

For each network x conversion: convert, export to NIR (the snnconv-dynamics convention when the neurons
need it), then ``snnconv.backends.verify.verify_targets``: the file is run in snnconv (the reference) and,
through ``snnconv.interop``, in each target with that framework's own neurons, on the same test images.
Reported per target and T: accuracy outside snnconv, snnconv's accuracy on the file and on the converted
graph, top-1 agreement with snnconv, spike-train mismatch rate. A target that cannot run a network is
listed with its reason.

    python scripts/bench_deploy.py --data-dir ../shared/datasets

writes docs/benchmarks/deploy.json and deploy.md (command, data, checkpoint hashes at the top).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, checkpoints_line, environment_block, row_checkpoints, save, sha256  # noqa: E402

from snnconv.api import conversion_pipeline, convert_graph, ingest, resolve_model, simulate  # noqa: E402
from snnconv.backends.nir import export_nir  # noqa: E402
from snnconv.backends.verify import verify_targets  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig  # noqa: E402
from snnconv.data.datasets import load_dataset, load_part  # noqa: E402

TARGETS = ("spikingjelly", "snntorch", "norse", "sinabs")
MNIST_QCFS = "snnconv/assets/mnist_cnn_qcfs4-mnist.pt"
R20_QCFS = "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_swa.pt"
VGG_MAXPOOL = "docs/benchmarks/checkpoints/vgg11mp_qcfs16_cifar10.pt"
R18_QCFS = "docs/benchmarks/checkpoints/resnet18-cifar10.pt"  # the headline network (issue 21)

#: network -> (model, dataset, checkpoint, [(row name, ConversionConfig kwargs)])
NETWORKS = {
    "mnist_cnn": ("mnist_cnn", "mnist", MNIST_QCFS, [
        ("qcfs", {"method": "qcfs"}),
        ("qcfs_signed", {"method": "qcfs", "signed": True}),
        # the plain-NIR alternative (reset to zero, start at 0): the same weights as clip(0, lambda), percentile
        # thresholds, and with Li et al.'s bias calibration for T=4 run on the hard-reset neurons
        ("clip_reset_zero", {"method": "percentile", "qcfs_as_clip": True, "reset": "zero", "v_init": 0.0}),
        ("clip_reset_zero_bc4", {"method": "percentile", "qcfs_as_clip": True, "reset": "zero", "v_init": 0.0,
                                 "calibrate": True, "calibration_timesteps": 4}),
    ]),
    "resnet20": ("resnet20", "cifar10", R20_QCFS, [
        ("qcfs_l4_bc4", {"method": "qcfs", "calibrate": True, "calibration_timesteps": 4}),
        ("qcfs_l4_signed_bc4", {"method": "qcfs", "signed": True, "calibrate": True, "calibration_timesteps": 4}),
        ("clip_reset_zero_bc4", {"method": "percentile", "qcfs_as_clip": True, "reset": "zero", "v_init": 0.0,
                                 "calibrate": True, "calibration_timesteps": 4}),
    ]),
    # the headline `snnconv convert --model resnet18 --dataset cifar10`: its recipe card's choice (graded spikes,
    # which only sinabs' multi-spike neurons honour), the binary route at T=4 (signed spikes) and what
    # `--target spikingjelly|snntorch|norse` takes from the card (the best on validation those run)
    "resnet18": ("resnet18", "cifar10", R18_QCFS, [
        ("sfn", {"method": "sfn"}),
        ("qcfs_signed", {"method": "qcfs", "signed": True}),
        ("qcfs_signed_bc4", {"method": "qcfs", "signed": True, "calibrate": True, "calibration_timesteps": 4}),
    ]),
    # max pooling kept (maxpool.md): the count mode is an operator NIR cannot write; the tree builds it from
    # signed IF neurons (ternary units on binary spikes; 2-level units on signed spikes: graded)
    "vgg11_maxpool": ("vgg11", "cifar10", VGG_MAXPOOL, [
        ("qcfs_count_signed", {"method": "qcfs", "signed": True}),
        ("qcfs_tree", {"method": "qcfs", "maxpool": "tree"}),
        ("qcfs_tree_signed", {"method": "qcfs", "signed": True, "maxpool": "tree"}),
    ]),
}


def load_network(key: str, args) -> tuple:
    """A network of :data:`NETWORKS` with its data: ``(model, graph, test, x, y, calib)`` (test images: the
    seeded subset of ``--mnist-samples`` / ``--cifar-samples``; calibration: the training part, seed 1)."""
    model_name, dataset, ckpt, _ = NETWORKS[key]
    samples = args.mnist_samples if dataset == "mnist" else args.cifar_samples
    test = load_dataset(dataset, args.data_dir, train=False).subset(samples, 0)
    calib = [x for x, _ in load_part(dataset, args.data_dir, "train").subset(args.calib_samples, 1).batches(256)]
    x, y = next(iter(test.batches(len(test))))
    model, shape, _ = resolve_model(RunConfig(model=model_name, dataset=dataset, data_dir=args.data_dir,
                                              weights=str(REPO / ckpt)), log_fn=lambda m: None)
    graph, _ = ingest(model, shape)
    return model, graph, test, x, y, calib


def run_network(key: str, args, ts: list[int], log) -> list[dict]:
    _, dataset, ckpt, rows = NETWORKS[key]
    _, graph, test, x, y, calib = load_network(key, args)
    out = []
    for name, conv in rows:
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        cfg = ConversionConfig(**conv)
        snn, _ = convert_graph(graph, calib, conversion_pipeline(cfg))
        own = simulate(snn, test, max(ts), layer_error=False).accuracy()
        row = {"network": key, "dataset": dataset, "method": name, "conversion": conv, "samples": len(test),
               "checkpoint": ckpt, "checkpoint_sha256": sha256(ckpt),
               "snnconv_graph_accuracy": {str(t): own[t - 1] for t in ts}}
        with tempfile.TemporaryDirectory() as d:
            try:
                info = export_nir(snn, Path(d) / "snn.nir")
            except Exception as e:  # noqa: BLE001 - a refused export is a result: say why
                row["export"] = f"refused: {e}"
                out.append(row)
                log(f"[{key}/{name}] export refused: {e}")
                continue
            row["dynamics"] = info["dynamics"]
            rep = verify_targets(Path(d) / "snn.nir", x, max(ts), TARGETS, y, report_t=ts, batch_size=args.verify_batch)
        row["snnconv_file_accuracy"] = rep["snnconv_per_t"]
        row["targets"] = {t: {k: v for k, v in e.items() if k != "layers"} for t, e in rep["targets"].items()}
        row["seconds"] = round(time.time() - t0, 1)
        out.append(row)
        ran = [t for t, e in rep["targets"].items() if e["status"] == "ran"]
        log(f"[{key}/{name}] snnconv {row['snnconv_file_accuracy']}; ran in {', '.join(ran) or 'none'} "
            f"({row['seconds']} s)")
    return out


def markdown(data: dict) -> str:
    lines = ["# Deployment: the converted network outside snnconv", "",
             f"Last command: `{data['command']}` (rows of earlier runs are kept; each names its conversion)", "",
             "Each network is converted, exported to NIR and run, from the file, in snnconv (reference) and in each "
             "target with that framework's own neurons (`snnconv.interop`: SpikingJelly `IFNode(v_reset=None)`, "
             "snnTorch `Leaky(beta=1, reset_mechanism='subtract')`, Norse's `threshold` + `reset_subtract`, sinabs "
             "`IAF(MembraneSubtract)`). Files with subtractive reset / initial membrane use the snnconv-dynamics "
             "NIR convention (`docs/nir.md`). Agreement: top-1 prediction of the target vs snnconv on the same "
             "image; spike mismatch: (step, neuron) entries whose spike differs, over all spiking layers.", "",
             checkpoints_line(row_checkpoints(data["rows"])), "",
             f"Data (last run): {data['data']}; test images per network (rows of earlier runs kept): "
             + ", ".join(f"{k} {v}" for k, v in {r["network"]: r["samples"] for r in data["rows"]}.items()), "",
             "| network | method | dynamics | T | target | target acc (%) | snnconv acc, file (%) | "
             "snnconv acc, graph (%) | agreement (%) | spike mismatch rate |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        ts = sorted(int(t) for t in r.get("snnconv_graph_accuracy", {})) or data["timesteps"]  # each run's own T
        if "targets" not in r:  # the export was refused: what snnconv's own simulation of the graph reaches
            for t in ts:
                ga = r.get("snnconv_graph_accuracy", {}).get(str(t))
                lines.append(f"| {r['network']} | {r['method']} | - | {t} | all | {r.get('export', '')} | | "
                             + (f"{ga:.2f}" if ga is not None else "") + " | | |")
            continue
        for t in ts:
            for name, e in r["targets"].items():
                fa = r["snnconv_file_accuracy"].get(str(t))
                ga = r["snnconv_graph_accuracy"][str(t)]
                if e["status"] != "ran":
                    lines.append(f"| {r['network']} | {r['method']} | {r['dynamics']} | {t} | {name} | "
                                 f"not run: {e.get('error', e['status'])} | {fa:.2f} | {ga:.2f} | | |")
                    continue
                p = e["per_t"][str(t)]
                lines.append(f"| {r['network']} | {r['method']} | {r['dynamics']} | {t} | {name} {e['version']} | "
                             f"{p['accuracy']:.2f} | {fa:.2f} | {ga:.2f} | {p['agreement']:.2f} | "
                             f"{e['spike_mismatch_rate']:.1e} |")
    lines += ["", "Spike mismatch rates are over the whole run to the largest T."] + environment_block(data["environment"])
    return "\n".join(lines)


def parse_args(out: str, mnist_samples: int | None, cifar_samples: int, extra=None):
    """The arguments of the deployment benches (this one and bench_lava.py); returns ``(args, timesteps)``."""
    ap = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--networks", default="mnist_cnn,resnet20")
    ap.add_argument("--only", default=None, help="comma list of method rows to run (default: all)")
    ap.add_argument("--timesteps", default="4,8")
    ap.add_argument("--mnist-samples", type=int, default=mnist_samples, help="default: the full test set if unset")
    ap.add_argument("--cifar-samples", type=int, default=cifar_samples)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verify-batch", type=int, default=250, help="images per verification batch (spike trains "
                    "of every layer are kept per batch: lower it for wide networks)")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / out))
    if extra:
        extra(ap)
    args = ap.parse_args()
    args.only = set(args.only.split(",")) if args.only else None
    torch.set_num_threads(args.threads)
    return args, sorted(int(t) for t in args.timesteps.split(","))


def main() -> None:
    args, ts = parse_args("deploy", None, 1000)
    rows = []
    for key in args.networks.split(","):
        rows += run_network(key, args, ts, lambda m: print(m, file=sys.stderr, flush=True))
    save(args.out, rows, key=lambda r: (r["network"], r["method"]), markdown=markdown, script="bench_deploy.py",
         data_dir=args.data_dir, timesteps=ts,
         data=", ".join(({"mnist": f"MNIST test set ({args.mnist_samples or 'all 10000'} images)",
                          "cifar10": f"CIFAR-10 test set (seeded subset of {args.cifar_samples}, seed 0)"}[d]
                         for d in dict.fromkeys(NETWORKS[k][1] for k in args.networks.split(","))))
              + f"; calibration: {args.calib_samples} images of the training part (validation split excluded), seed 1")

if __name__ == "__main__":
    main()
