"""Accuracy vs noise level (0-45%) for the plain and the noise-robust SNN, beside a nearest-class-mean baseline.

    python scripts/bench_robustness.py --model mnist_cnn --dataset mnist --data-dir ../shared/datasets --eval-samples 500
    python scripts/bench_robustness.py --model resnet20 --dataset cifar10 --weights resnet20_qcfs4_cifar10.pt \
        --eval-samples 500 --train-samples 5000 --bf16

The robust model is the same ANN fine-tuned with the noise curriculum of
`snnconv.training.robust.robust_finetune` (0 -> 45%, Gaussian / spike-flip / weight noise), then
converted with the same pipeline (``--method``, default ``qcfs`` for a QCFS-trained checkpoint, else
``percentile``). Noise kinds and the baseline: see
`snnconv.passes.robustness`. Writes docs/benchmarks/robustness.{json,md} and
robustness_<model>_<dataset>.png.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_model_args, load_model_and_data  # noqa: E402

from snnconv.api import ann_accuracy, conversion_pipeline, convert_graph
from snnconv.config import ConversionConfig
from snnconv.frontends.torch import from_torch
from snnconv.passes.robustness import NearestClassMean, noise_curves
from snnconv.training.robust import robust_finetune

KINDS = ("gaussian", "flip", "weight", "threshold")
TITLES = {"gaussian": "input Gaussian noise (std / input range)", "flip": "input spike bit flips (rate, rate coding)",
          "weight": "weight noise (relative std)", "threshold": "threshold jitter (relative std)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the robust fine-tuning")
    ap.add_argument("--eval-samples", type=int, default=500)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--train-samples", type=int, default=20000, help="samples for the robust fine-tuning epoch(s)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--levels", default="0,0.15,0.3,0.45")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    levels = [float(v) for v in args.levels.split(",")]
    model, shape, source, method, train, test, batches = load_model_and_data(args, args.eval_samples)
    x_max = float(max(b.abs().max() for b in batches))
    value_range = float(max(b.max() for b in batches) - min(b.min() for b in batches))
    ncm = NearestClassMean(train.subset(10000, seed=4))
    t0 = time.time()
    robust, hist = robust_finetune(copy.deepcopy(model), train.subset(args.train_samples, seed=2), epochs=args.epochs,
                                   timesteps=args.timesteps, x_max=x_max, value_range=value_range, lr=args.lr,
                                   augment=not args.dataset.startswith("mnist"), bf16=args.bf16)
    ft_s = time.time() - t0
    result = {"levels": levels, "timesteps": args.timesteps, "x_max": x_max, "value_range": value_range,
              "finetune": hist, "finetune_seconds": round(ft_s, 1), "models": {}}
    for label, m in (("plain", model), ("robust", robust)):
        g, _ = from_torch(m.eval(), shape)
        snn, _ = convert_graph(g, batches, conversion_pipeline(ConversionConfig(method=method)))
        ann, _ = ann_accuracy(g, test)
        curves = {}
        for kind in KINDS:
            curves[kind] = noise_curves(snn, test, kind, levels, args.timesteps, ncm, x_max=x_max,
                                        value_range=value_range)
            print(label, kind, [(r["level"], round(r["snn"], 2), r["ncm"]) for r in curves[kind]], flush=True)
        result["models"][label] = {"ann_accuracy": ann, "curves": curves}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = f"{args.model}/{args.dataset}"
    png = out / f"robustness_{args.model}_{args.dataset}.png"
    plot(result, png, key)
    jpath = out / "robustness.json"
    data = json.loads(jpath.read_text()) if jpath.is_file() else {}
    data[key] = {**result, "samples": len(test), "weights": source.get("weights"), "method": method, "png": png.name,
                 "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d")}
    jpath.write_text(json.dumps(data, indent=2))
    render(data, out / "robustness.md")


def plot(result: dict, path: Path, title: str) -> None:
    from snnconv.report import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, len(KINDS), figsize=(4 * len(KINDS), 3.4), sharey=True)
    for ax, kind in zip(axes, KINDS):
        for label, style in (("plain", "o-"), ("robust", "s-")):
            rows = result["models"][label]["curves"][kind]
            ax.plot([r["level"] * 100 for r in rows], [r["snn"] for r in rows], style, label=f"SNN {label}")
        rows = result["models"]["plain"]["curves"][kind]
        if rows[0]["ncm"] is not None:
            ax.plot([r["level"] * 100 for r in rows], [r["ncm"] for r in rows], "k--", label="nearest class mean")
        ax.set_title(TITLES[kind], fontsize=9)
        ax.set_xlabel("noise level (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy (%) at T={result['timesteps']}")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict, path: Path) -> None:
    lines = ["# Noise robustness: plain vs noise-curriculum fine-tuned SNN", "",
             "Accuracy (%) of the converted SNN at fixed T under each noise kind, for the plain ANN and the same ANN "
             "fine-tuned with the 0 -> 45% noise curriculum (`snnconv.training.robust`), both converted with the "
             "default pipeline. `NCM` is a nearest-class-mean classifier on the same noisy inputs (its class means "
             "get the same weight noise; it has no thresholds). Gaussian/weight/threshold rows use direct input; "
             "the spike-flip rows use rate-coded input (T steps, amplitude x_max) whose events are flipped at the "
             "given rate (drop and spurious alike), and NCM sees the time average of the same spike trains.", ""]
    for key, d in data.items():
        lv = d["levels"]
        p, r = d["models"]["plain"], d["models"]["robust"]
        lines += [f"## {key}", "", f"Command: `{d['command']}` ({d['samples']} test samples, T={d['timesteps']}, "
                  f"{d['date']}). ANN clean accuracy: plain {p['ann_accuracy']:.2f}%, robust {r['ann_accuracy']:.2f}%. "
                  f"Fine-tuning: " + ", ".join(f"epoch {h['epoch']} loss {h['loss']:.3f}" for h in d["finetune"])
                  + f" ({d['finetune_seconds']} s). Weights `{Path(d['weights'] or '-').name}`, conversion "
                  f"`{d.get('method', 'percentile')}`. Figure: `{d['png']}`.", "",
                  "| noise | model | " + " | ".join(f"{v * 100:g}%" for v in lv) + " |",
                  "|---|---|" + "---:|" * len(lv)]
        for kind in KINDS:
            for label, m in (("SNN plain", p), ("SNN robust", r)):
                lines.append(f"| {kind} | {label} | " + " | ".join(f"{row['snn']:.2f}" for row in m["curves"][kind]) + " |")
            ncm = p["curves"][kind]
            if ncm[0]["ncm"] is not None:
                lines.append(f"| {kind} | NCM | " + " | ".join(f"{row['ncm']:.2f}" for row in ncm) + " |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
