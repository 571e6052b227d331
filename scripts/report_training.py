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
new_format = bool(hist) and "val_acc" in hist[0]  # since the validation split: val every epoch, test once
if "optimizer" in ck:  # a training state: the run is not finished
    ck = {"accuracy": None, "val_accuracy": hist[-1].get("val_acc") if hist else None,
          "epochs": ck["epoch"], "unfinished": True}
stem = Path("docs/benchmarks") / f"train_{args.model}_{args.dataset}{args.suffix}"
stem.with_suffix(".json").write_text(json.dumps({"model": args.model, "dataset": args.dataset, "final_accuracy":
                                                 ck.get("accuracy"), "val_accuracy": ck.get("val_accuracy"),
                                                 "epochs": ck.get("epochs"), "history": hist}, indent=2))
fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
if ck.get("unfinished"):
    head = (f"Unfinished run (resumable): {len(hist)} epoch(s) done, last validation accuracy "
            f"**{fmt(ck.get('val_accuracy'))}%**; the test set is scored once, when the run ends.")
elif new_format:
    head = (f"Final test accuracy (full test set, scored once): **{fmt(ck.get('accuracy'))}%**; validation "
            f"({ck.get('val_samples', '?')} held-out training images): {fmt(ck.get('val_accuracy'))}%; "
            f"{ck.get('epochs')} epochs on {ck.get('train_samples', '?')} images.")
else:
    head = f"Final test accuracy (full test set): **{fmt(ck.get('accuracy'))}%** after {ck.get('epochs')} epochs."
lines = [f"# Training record: {args.model} on {args.dataset}", "", head, "", args.note, ""]
if new_format:
    lines += ["| epoch | train loss | val acc (%) | train seconds | images/s |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {fmt(h.get('val_acc'))} | {h['train_seconds']:.0f} | "
              f"{h['images_per_second']:.0f} |" for h in hist]
else:
    lines += ["| epoch | train loss | test acc (%) | seconds |", "|---:|---:|---:|---:|"]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['test_acc']:.2f} | {h['seconds']:.0f} |" for h in hist]
stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
print(f"wrote {stem}.md")
