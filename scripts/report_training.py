"""Write the training record of a cached checkpoint (per-epoch loss / test accuracy) to docs/benchmarks.

    python scripts/report_training.py --model resnet20 --dataset cifar10
"""
import argparse
import json
from pathlib import Path

from snnconv.checkpoints import cached_checkpoint, load_checkpoint

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--dataset", required=True)
ap.add_argument("--note", default="")
ap.add_argument("--suffix", default="", help="appended to the record's file name (e.g. _qcfs4), so records coexist")
args = ap.parse_args()
ck = load_checkpoint(cached_checkpoint(args.model, args.dataset))
hist = ck.get("history", [])
stem = Path("docs/benchmarks") / f"train_{args.model}_{args.dataset}{args.suffix}"
stem.with_suffix(".json").write_text(json.dumps({"model": args.model, "dataset": args.dataset, "final_accuracy":
                                                 ck.get("accuracy"), "epochs": ck.get("epochs"), "history": hist}, indent=2))
lines = [f"# Training record: {args.model} on {args.dataset}", "",
         f"Final test accuracy (full test set): **{ck.get('accuracy'):.2f}%** after {ck.get('epochs')} epochs.", "",
         args.note, "", "| epoch | train loss | test acc (%) | seconds |", "|---:|---:|---:|---:|"]
lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['test_acc']:.2f} | {h['seconds']:.0f} |" for h in hist]
stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
print(f"wrote {stem}.md")
