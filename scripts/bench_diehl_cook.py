"""Diehl & Cook (2015) unsupervised STDP network on MNIST as a reference learner.

    SNNCONV_DATA_DIR=../shared/datasets nice -n 10 python scripts/bench_diehl_cook.py

One pass of unsupervised learning over ``--train`` MNIST training images, neurons labelled on
``--label`` other training images, accuracy on ``--test`` test images (seeded subsets). Writes
docs/benchmarks/diehl_cook.{md,json} and the learned receptive fields diehl_cook_fields.png.
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
PAPER = {"neurons": 100, "train_images": 60000, "epochs": 1, "test_accuracy": 82.9}


def plot_fields(net: DiehlCookNetwork, path: Path) -> bool:
    """Receptive fields (rows of ``w`` as 28x28 images) with each neuron's assigned class; False
    if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = net.w.shape[0]
    cols = int(n ** 0.5 + 0.999)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.95))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(net.w[i].view(28, 28).numpy(), cmap="hot_r", vmin=0)
            ax.set_title(str(int(net.labels[i])), fontsize=6, pad=1)
    fig.suptitle("Diehl & Cook STDP: learned input weights (title: assigned class)", fontsize=8)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=100)
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--label", type=int, default=2000)
    ap.add_argument("--test", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--theta-plus", type=float, default=DiehlCookConfig.theta_plus)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data_dir = os.environ.get("SNNCONV_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    t0 = time.time()
    tr = load_dataset("mnist", data_dir, train=True).subset(args.train + args.label, 3)
    te = load_dataset("mnist", data_dir, train=False).subset(args.test, 5)
    X, Xt = tr.images.float().flatten(1) / 255, te.images.float().flatten(1) / 255
    cfg = DiehlCookConfig(n_neurons=args.neurons, steps=args.steps, theta_plus=args.theta_plus, seed=args.seed)
    net = DiehlCookNetwork(cfg)
    net.train(X[:args.train], progress_fn=lambda i: print(
        f"train {i + 1}/{args.train} {time.time() - t0:.0f}s theta mean {float(net.theta.mean()):.1f}",
        file=sys.stderr, flush=True) if (i + 1) % 500 == 0 else None)
    t_train = time.time() - t0
    net.assign_labels(X[args.train:], tr.labels[args.train:])
    pred = net.predict(Xt)
    acc = 100.0 * float((pred == te.labels).float().mean())
    per_class = [100.0 * float((pred[te.labels == k] == k).float().mean()) for k in range(10)]
    assigned = torch.bincount(net.labels[net.labels >= 0], minlength=10).tolist()
    silent = int((net.labels < 0).sum())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "diehl_cook_fields.png"
    has_png = plot_fields(net, png)
    rep = {"command": "SNNCONV_DATA_DIR=../shared/datasets nice -n 10 python scripts/bench_diehl_cook.py "
                      + " ".join(sys.argv[1:]),
           "config": asdict(cfg), "train_images": args.train, "label_images": args.label, "test_images": args.test,
           "epochs": 1,
           "data": "MNIST train (seeded subset, seed 3: first --train images learn, the rest label the neurons), "
                   "MNIST test (seeded subset, seed 5)",
           "test_accuracy": acc, "chance": 10.0, "per_class_test_accuracy": per_class,
           "neurons_per_class": assigned, "neurons_silent_unlabelled": silent,
           "theta_mV": {"mean": float(net.theta.mean()), "min": float(net.theta.min()), "max": float(net.theta.max())},
           "paper": PAPER, "fields_png": png.name if has_png else None,
           "train_seconds": round(t_train, 1), "seconds": round(time.time() - t0, 1),
           "threads": 1, "machine": "shared, heavily loaded 2-core CPU (wall times are not compute times)"}
    (out / "diehl_cook.json").write_text(json.dumps(rep, indent=1) + "\n")
    lines = [
        "# Diehl & Cook (2015) unsupervised STDP on MNIST (reference learner)",
        "",
        f"Command: `{rep['command']}` ({rep['seconds']:.0f} s wall, of which training {t_train:.0f} s; "
        "1 thread on a shared, heavily loaded 2-core CPU).",
        "",
        f"Budget: {args.neurons} excitatory neurons, **one pass over {args.train} MNIST training images** "
        f"({args.steps} ms each at 1 ms steps, re-presented at a higher rate when under {cfg.min_spikes} spikes), "
        f"neurons labelled on {args.label} other training images, tested on {args.test} MNIST test images "
        "(seeded subsets). Learning and threshold adaptation are off while labelling and testing.",
        "",
        "| | neurons | training images | test accuracy |",
        "|---|---|---|---|",
        f"| this run (`snnconv.learning.diehl_cook`) | {args.neurons} | {args.train} (1 pass) | **{acc:.2f}%** |",
        f"| Diehl & Cook 2015, Table 1 | {PAPER['neurons']} | {PAPER['train_images']} (1 epoch) | "
        f"{PAPER['test_accuracy']}% |",
        "",
        f"Chance is 10%. Neurons per assigned class (0-9): {assigned}; silent (never fired while "
        f"labelling, no vote): {silent}. Per-class test accuracy (%): "
        + ", ".join(f"{k}: {a:.1f}" for k, a in enumerate(per_class)) + ".",
        f"Adaptive thresholds θ after training: mean {rep['theta_mV']['mean']:.1f} mV "
        f"(min {rep['theta_mV']['min']:.1f}, max {rep['theta_mV']['max']:.1f}).",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in rep["config"].items()) + ".",
        "",
    ]
    if has_png:
        lines += [f"Learned receptive fields (title: assigned class): ![fields]({png.name})", ""]
    lines += [
        "Differences from the paper (listed in the `snnconv/learning/diehl_cook.py` docstring): "
        "far fewer training images, θ+ = 0.5 mV instead of 0.05 mV to let homeostasis act within "
        "that budget, weight changes of an image applied at its end, 1 ms steps, 250 ms per image "
        "with state reset instead of 350 ms + 150 ms rest, current-based synapses and direct lateral "
        "inhibition instead of conductances and an inhibitory population.",
        "",
        "History: the earlier version (θ+ = 0.05 mV, 1,000 training images, 150 ms, silent neurons "
        "labelled as class 0) measured 30.5% with 59 of 100 neurons labelled '0': a few neurons won "
        "every image because their thresholds could not rise enough in 1,000 images, and the rest "
        "never fired (argmax over all-zero responses gave them label 0). The current code with the "
        "paper's θ+ = 0.05 mV and 1,000 training images (250 ms, labelled on 500, tested on 500 "
        "images) measured 23.0% with 64 of 100 neurons silent; θ+ = 0.5 mV with 2,000 images "
        "(labelled on 1,000, tested on 1,000) measured 67.4% with every neuron labelled (both measured "
        "during development with uncommitted revisions of this module (same dynamics and data seeds), "
        "not by this script).",
        "",
        "Development measurements (same module and seeds, one pass over 1,500 training images, 100 "
        "neurons, labelled on 500, tested on 500; not produced by this script): θ+ = 0.5 mV 64.0%, "
        "θ+ = 0.2 mV 57.4%; the θ+ = 0.5 mV network evaluated with every θ set to the mean θ 57.2% "
        "(the learned θ spread helps), and its weights used as plain prototypes (argmax of w·x, no "
        "spiking) 60.2%: the receptive fields, i.e. the number of training images, limit the accuracy, "
        "not the spiking readout.",
    ]
    (out / "diehl_cook.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
