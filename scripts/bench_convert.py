"""Accuracy-vs-T benchmark of the conversion methods on one trained model (full test set).

    python scripts/bench_convert.py --model resnet20 --dataset cifar10 --data-dir ../shared/datasets

Writes docs/benchmarks/convert_<model>_<dataset>.json and .md: the ANN accuracy next to the SNN
accuracy at every T for each method, with firing rate and energy at the largest T. Every method
is simulated once to max(T); the accuracy at smaller T comes from the same run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from snnconv.api import ann_accuracy, convert_graph, conversion_pipeline, environment, resolve_model, simulate
from snnconv.config import ConversionConfig, RunConfig, parse_timesteps
from snnconv.data.datasets import load_dataset
from snnconv.frontends.torch import from_torch

METHODS = {
    "max / layer / v0=0 (Diehl 2015, Rueckauer 2017)": ConversionConfig(method="max", granularity="layer", v_init=0.0),
    "p99.99 / layer / v0=0 (Rueckauer 2017)": ConversionConfig(method="percentile", percentile=99.99,
                                                               granularity="layer", v_init=0.0),
    "p99.9 / channel / v0=theta/2 (snnconv default)": ConversionConfig(),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--timesteps", default="1,2,4,8,16,32,64")
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--eval-samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--methods", default="all", help="comma-separated indices into METHODS (0,1,2) or 'all'")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    ts = parse_timesteps(args.timesteps)
    cfg = RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, weights=args.weights)
    model, shape, source = resolve_model(cfg)
    test = load_dataset(args.dataset, args.data_dir, train=False).subset(args.eval_samples)
    calib = load_dataset(args.dataset, args.data_dir, train=True).subset(args.calib_samples, seed=1)
    calib_batches = [x for x, _ in calib.batches(256)]
    graph, _ = from_torch(model, shape)
    ann, _ = ann_accuracy(graph, test)
    print(f"ANN {ann:.2f}%", flush=True)
    rows = []
    chosen = list(METHODS.items())
    if args.methods != "all":
        chosen = [chosen[int(i)] for i in args.methods.split(",")]
    for label, conv in chosen:
        t0 = time.time()
        snn, _ = convert_graph(graph, calib_batches, conversion_pipeline(conv))
        stats = simulate(snn, test, max(ts), args.batch_size, layer_error=False)
        acc = stats.accuracy()
        rates = stats.firing_rates()
        row = {"method": label, "conversion": conv.__dict__, "accuracy": {str(t): acc[t - 1] for t in ts},
               "mean_firing_rate": sum(rates.values()) / len(rates),
               "energy_uj": {str(t): stats.energy_uj()[t - 1] for t in ts}, "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(label, " ".join(f"T{t}={acc[t - 1]:.2f}" for t in ts), flush=True)
    cmd = "python " + " ".join(sys.argv)
    result = {"model": args.model, "dataset": args.dataset, "samples": len(test), "calib_samples": len(calib),
              "weights": source, "ann_accuracy": ann, "timesteps": ts, "methods": rows, "command": cmd,
              "environment": environment(), "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"convert_{args.model}_{args.dataset}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# {args.model} on {args.dataset}: SNN accuracy vs timesteps", "",
             f"Command: `{cmd}`  ", f"Test samples: {len(test)}; calibration samples: {len(calib)} (training split); "
             f"date {result['date']}; torch {torch.__version__}.", "",
             f"ANN accuracy: **{ann:.2f}%** (checkpoint accuracy recorded at training: "
             f"{source.get('checkpoint_accuracy')})", "",
             "| method | " + " | ".join(f"T={t}" for t in ts) + " | firing rate | energy @T=max (uJ) |",
             "|---|" + "---:|" * (len(ts) + 2)]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(f"{r['accuracy'][str(t)]:.2f}" for t in ts)
                     + f" | {r['mean_firing_rate']:.4f} | {r['energy_uj'][str(max(ts))]:.3g} |")
    lines += ["", "Firing rate: mean over neuron layers of spike events per neuron per step at T=max. "
              "Energy: 0.9 pJ/SynOp + 4.6 pJ/MAC (first layer, analog input), per sample."]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / stem}.md")


if __name__ == "__main__":
    main()
