"""What float16 compaction (scripts/compact_checkpoint.py) and ingestion into the IR do to a trained network's
predictions, on the validation split (never trained on; the test set is not read).

    python scripts/bench_compaction.py --model resnet18 --dataset cifar10 --data-dir ../shared/datasets \
        --original <runs>/resnet18_qcfs4_c2.pt --compact docs/benchmarks/checkpoints/resnet18-cifar10.pt

Three forward passes of the same validation images: the float32 training output as a PyTorch module, the
committed float16 copy as a PyTorch module (weights cast back to float32 on load), and that copy ingested into
the IR (batch norm folded) and run by the IR interpreter. Recorded: the accuracy of each and on how many
images each pair predicts a different class. It separates the two differences between a training record's
accuracy (float32 module) and the accuracy the conversion reports for its ANN (IR of the committed file).
Rows are merged into docs/benchmarks/compaction.json / .md, keyed by the compact checkpoint.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchlib import checkpoints_line, environment_block, save, sha256, shown_path
from snnconv.api import resolve_model
from snnconv.config import RunConfig
from snnconv.data.datasets import load_part
from snnconv.frontends.torch import from_torch
from snnconv.runtime.interpreter import run_ann

FORMS = ("original_module", "compact_module", "compact_ir")


def predictions(fn, split, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x).argmax(1) for x, _ in split.batches(batch_size)])


def markdown(data: dict) -> str:
    lines = ["# Float16 compaction and IR ingestion: effect on predictions", "",
             f"Last command: `{data['command']}` (rows of other runs are kept; each row names its two checkpoints, "
             "the rest of its command)", "",
             "Validation split (held-out training images, never trained on); the test set is not read. "
             "Forms: the float32 training output as a PyTorch module, the committed float16 copy as a module, "
             "and that copy through the IR (batch norm folded).", "",
             "| compact checkpoint | original | images | original module % | compact module % | compact IR % | "
             "differ: original vs compact | differ: compact module vs IR |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        a, d = r["accuracy"], r["differ"]
        lines.append(f"| `{r['checkpoint']}` | `{r['original']}` | {r['samples']} | {a['original_module']:.2f} | {a['compact_module']:.2f} "
                     f"| {a['compact_ir']:.2f} | {d['original_module/compact_module']} "
                     f"({100 * d['original_module/compact_module'] / r['samples']:.1f} %) "
                     f"| {d['compact_module/compact_ir']} |")
    hashes = {}
    for r in data["rows"]:
        hashes.update({r["original"]: r["original_sha256"], r["checkpoint"]: r["checkpoint_sha256"]})
    return "\n".join(lines + ["", checkpoints_line(hashes), *environment_block(data["environment"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--original", required=True, help="the float32 checkpoint training wrote")
    ap.add_argument("--compact", required=True, help="its float16 copy (scripts/compact_checkpoint.py)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/benchmarks/compaction")
    args = ap.parse_args()
    original_sha256, compact_sha256 = sha256(args.original), sha256(args.compact)
    if original_sha256 == compact_sha256:
        raise SystemExit(f"error: {args.original} and {args.compact} have the same content: no compaction to measure")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    val = load_part(args.dataset, args.data_dir, "val")
    labels = val.labels  # batches() without shuffling keeps this order
    preds = {}
    for form, weights in (("original", args.original), ("compact", args.compact)):
        model, shape, _ = resolve_model(RunConfig(model=args.model, dataset=args.dataset, weights=weights),
                                        log_fn=lambda m: None)
        model.eval()
        preds[f"{form}_module"] = predictions(model, val, args.batch_size)
        if form == "compact":
            graph, _ = from_torch(model, shape)
            preds["compact_ir"] = predictions(lambda x: run_ann(graph, x), val, args.batch_size)
    row = {"checkpoint": shown_path(args.compact), "checkpoint_sha256": compact_sha256,
           "original": shown_path(args.original), "original_sha256": original_sha256,
           "model": args.model, "dataset": args.dataset, "samples": len(labels),
           "accuracy": {f: round(100.0 * (preds[f] == labels).float().mean().item(), 2) for f in FORMS},
           "differ": {f"{a}/{b}": int((preds[a] != preds[b]).sum()) for i, a in enumerate(FORMS) for b in FORMS[i + 1:]},
           "seconds": round(time.time() - t0, 1)}
    original = Path(args.original)
    save(args.out, [row], key=lambda r: r["checkpoint"], markdown=markdown, script="bench_compaction.py",
         data_dir=args.data_dir, hide={"<runs>": str(original.parent) if original.is_absolute() else None})


if __name__ == "__main__":
    main()
