"""Write the training record of a cached checkpoint (per-epoch loss / test accuracy) to docs/benchmarks.

    python scripts/report_training.py --model resnet20 --dataset cifar10
    python scripts/report_training.py --model resnet20 --dataset cifar10 --checkpoint run.pt --suffix _c2

``--checkpoint`` may also be a run's ``<name>.state.pt`` (an unfinished, resumable run): the record
then says how many epochs are done.
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
ap.add_argument("--checkpoint", default=None, help="checkpoint or .state.pt file (default: the cached checkpoint)")
args = ap.parse_args()
ck = load_checkpoint(Path(args.checkpoint) if args.checkpoint else cached_checkpoint(args.model, args.dataset))
hist = ck.get("history", [])
if "optimizer" in ck:  # a training state: the run is not finished
    ck = {"accuracy": hist[-1]["test_acc"] if hist else None, "epochs": ck["epoch"], "unfinished": True}
stem = Path("docs/benchmarks") / f"train_{args.model}_{args.dataset}{args.suffix}"
stem.with_suffix(".json").write_text(json.dumps({"model": args.model, "dataset": args.dataset, "final_accuracy":
                                                 ck.get("accuracy"), "epochs": ck.get("epochs"), "history": hist}, indent=2))
lines = [f"# Training record: {args.model} on {args.dataset}", "",
         ("Unfinished run (resumable): test accuracy (full test set) " if ck.get("unfinished") else
          "Final test accuracy (full test set): ") + f"**{ck.get('accuracy'):.2f}%** after {ck.get('epochs')} epochs.", "",
         args.note, "", "| epoch | train loss | test acc (%) | seconds |", "|---:|---:|---:|---:|"]
lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['test_acc']:.2f} | {h['seconds']:.0f} |" for h in hist]
stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
print(f"wrote {stem}.md")
