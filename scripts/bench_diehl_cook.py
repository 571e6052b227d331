"""Diehl & Cook (2015) unsupervised STDP network on MNIST as a reference learner (CPU-cheap settings).

    SNNCONV_DATA_DIR=/work/shared/datasets python scripts/bench_diehl_cook.py

writes docs/benchmarks/diehl_cook.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from snnconv.data.datasets import load_dataset
from snnconv.learning.diehl_cook import DiehlCookConfig, DiehlCookNetwork

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--label", type=int, default=1000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data_dir = os.environ.get("SNNCONV_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    t0 = time.time()
    tr = load_dataset("mnist", data_dir, train=True).subset(args.train + args.label, 3)
    te = load_dataset("mnist", data_dir, train=False).subset(args.test, 5)
    X, Xt = tr.images.float().flatten(1) / 255, te.images.float().flatten(1) / 255
    cfg = DiehlCookConfig(n_neurons=args.neurons, steps=args.steps)
    net = DiehlCookNetwork(cfg)
    net.train(X[:args.train], progress_fn=lambda i: print(f"train {i + 1}", file=sys.stderr, flush=True)
              if (i + 1) % 100 == 0 else None)
    t_train = time.time() - t0
    net.assign_labels(X[args.train:], tr.labels[args.train:])
    acc = 100.0 * float((net.predict(Xt) == te.labels).float().mean())
    rep = {"command": "SNNCONV_DATA_DIR=/work/shared/datasets python scripts/bench_diehl_cook.py " + " ".join(sys.argv[1:]),
           "config": asdict(cfg), "train_images": args.train, "label_images": args.label, "test_images": args.test,
           "data": "MNIST train (seeded subset, seed 3: first part learns, rest labels), MNIST test (seeded subset, seed 5)",
           "test_accuracy": acc, "chance": 10.0, "neurons_per_class": torch.bincount(net.labels, minlength=10).tolist(),
           "train_seconds": round(t_train, 1), "seconds": round(time.time() - t0, 1), "epochs": 1}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diehl_cook.json").write_text(json.dumps(rep, indent=1))
    lines = [
        "# Diehl & Cook (2015) unsupervised STDP on MNIST (reference learner)",
        "",
        f"Command: `{rep['command']}` ({rep['seconds']:.0f} s, 1 thread, shared and busy 2-core CPU).",
        "",
        f"{args.neurons} excitatory neurons, one pass over {args.train} training images ({args.steps} ms each), "
        f"neurons labelled on {args.label} other training images, tested on {args.test} test images.",
        "",
        f"**Test accuracy: {acc:.2f}%** (chance 10%). Neurons per assigned class: {rep['neurons_per_class']}.",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in rep["config"].items()) + ".",
        "",
        "The paper reports 82.9% for 100 neurons after one epoch of 60,000 images (350 ms each, "
        "conductance synapses, separate inhibitory layer). This run is far shorter and uses the "
        "simplifications listed in `snnconv/learning/diehl_cook.py` (1 ms steps, updates applied "
        "per image, direct lateral inhibition, current-based synapses), and its parameters were not "
        "tuned: the number above is what this implementation learns in a CPU-cheap budget, not a "
        "reproduction of the paper's accuracy.",
    ]
    (out / "diehl_cook.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
