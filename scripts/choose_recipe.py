#!/usr/bin/env python
"""Choose a checkpoint's conversion recipe on the validation split and write its recipe card.

Each candidate recipe converts the checkpoint with the same calibration images of the training part and is
simulated on the validation split (held out of the training split, never trained on); the test set is not
read. Criterion, fixed before looking: the mean validation accuracy over T = 1, 2, 4, 8 (the few-timestep
regime the project is for). The card, ``<checkpoint stem>.recipe.json`` beside the checkpoint, is what
``snnconv convert`` uses for those weights when no conversion option is given (``snnconv.api.recipe_card``);
it records the checkpoint's sha256, so a card is never applied to other weights. Each candidate also lists
the deployment targets that run its converted network as converted (``runs_in``, from
``snnconv.api.target_refusals``: the target's own neurons, and the export that carries it there):
``snnconv convert --target T`` takes the best candidate that T runs.

    python scripts/choose_recipe.py --model resnet18 --dataset cifar10 \\
        --weights docs/benchmarks/checkpoints/resnet18-cifar10.pt --data-dir ../shared/datasets

``--targets-only`` adds ``runs_in`` to an existing card (converting each candidate again, no simulation; the
validation numbers and the choice stay as they were).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, command, sha256  # noqa: E402

from snnconv.api import (conversion_pipeline, convert_graph, ingest, resolve_model, simulate,  # noqa: E402
                         target_refusals)
from snnconv.backends.exports import deployment_targets  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig  # noqa: E402
from snnconv.data.datasets import load_train_val  # noqa: E402
from snnconv.output import atomic_file, check_output_file  # noqa: E402

CRITERION_T = (1, 2, 4, 8)
#: the candidates for a QCFS-trained checkpoint (binary, signed, bias-calibrated, graded) and a ReLU one
QCFS_RECIPES = {"qcfs": {"method": "qcfs"}, "qcfs_signed": {"method": "qcfs", "signed": True},
                "qcfs_signed_bc4": {"method": "qcfs", "signed": True, "calibrate": True, "calibration_timesteps": 4},
                "sfn (graded)": {"method": "sfn"}}
RELU_RECIPES = {"percentile": {"method": "percentile"}, "percentile_signed": {"method": "percentile", "signed": True},
                "calibration": {"method": "calibration", "calibration_timesteps": 4}}


def score(candidates: dict[str, tuple[str, dict]], model: str, dataset: str, data_dir: str | None,
          calib_samples: int = 1024, val_samples: int | None = None, log=lambda m: print(m, file=sys.stderr,
                                                                                      flush=True)) -> tuple[dict, int]:
    """``{name: (weights, conversion)}`` -> (``{name: validation row}``, validation images): each candidate
    converted with ``calib_samples`` training-part images (seed 1) and simulated on the validation split."""
    train, val = load_train_val(dataset, data_dir)
    val = val.subset(val_samples, 0)
    calib = calibration_batches(train, calib_samples)
    rows = {}
    for name, (weights, conv) in candidates.items():
        snn = convert_candidate(weights, conv, model, dataset, data_dir, calib)
        acc = simulate(snn, val, max(CRITERION_T), layer_error=False).accuracy()
        rows[name] = {"weights": Path(weights).name, "conversion": conv,
                      "val_accuracy": {str(t): acc[t - 1] for t in CRITERION_T},
                      "criterion": sum(acc[t - 1] for t in CRITERION_T) / len(CRITERION_T), "runs_in": runs_in(snn)}
        log(f"{name:<24} val {' / '.join(f'{acc[t - 1]:.2f}' for t in CRITERION_T)}  "
            f"mean {rows[name]['criterion']:.2f}  runs in: {', '.join(rows[name]['runs_in']) or 'none'}")
    return rows, len(val)


def calibration_batches(train, n: int) -> list:
    """The card's calibration images: ``n`` of the training part (seed 1), the same for every candidate."""
    return [x for x, _ in train.subset(n, 1).batches(256)]


def convert_candidate(weights, conv: dict, model: str, dataset: str, data_dir: str | None, calib: list):
    """The SNN graph of ``weights`` converted with settings ``conv`` on calibration batches ``calib``."""
    m, shape, _ = resolve_model(RunConfig(model=model, dataset=dataset, data_dir=data_dir, weights=str(weights)),
                                log_fn=lambda _: None)
    graph, _ = ingest(m, shape)
    return convert_graph(graph, calib, conversion_pipeline(ConversionConfig(**conv)))[0]


def runs_in(snn) -> list[str]:
    """The deployment targets that run ``snn`` as converted (their own neurons, and the export that carries it)."""
    return sorted(t for t, why in target_refusals(snn).items() if why is None)


def add_targets(card_path: Path, weights_of, model: str, dataset: str, data_dir: str | None,
                calib_samples: int) -> dict:
    """Add ``runs_in`` to every candidate of the card at ``card_path`` (``weights_of(candidate)``: its checkpoint
    path), converting each with the card's calibration images; nothing else in the card changes. Atomic."""
    card = json.loads(card_path.read_text())
    calib = calibration_batches(load_train_val(dataset, data_dir)[0], calib_samples)
    for name, cand in card["candidates"].items():
        cand["runs_in"] = runs_in(convert_candidate(weights_of(cand), cand["conversion"], model, dataset, data_dir,
                                                    calib))
        print(f"{name:<24} runs in: {', '.join(cand['runs_in']) or 'none'}", file=sys.stderr, flush=True)
    card["targets_checked"] = sorted(deployment_targets())  # a target added later: --target says to re-run this
    with atomic_file(card_path, True) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=1) + "\n")
    return card


def criterion_text() -> str:
    return f"mean validation accuracy over T = {', '.join(map(str, CRITERION_T))}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--weights", required=True, help="the checkpoint (a file written by snnconv train)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--val-samples", type=int, default=None, help="default: the whole validation split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing card")
    ap.add_argument("--targets-only", action="store_true",
                    help="only add the targets that run each candidate (runs_in) to the existing card")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights = Path(args.weights)
    out = weights.with_name(weights.stem + ".recipe.json")
    if args.targets_only:
        if not out.is_file():
            sys.exit(f"{out}: no recipe card to add targets to")
        add_targets(out, lambda c: weights.with_name(c["weights"]), args.model, args.dataset, args.data_dir,
                    args.calib_samples)
        return
    check_output_file(out, args.overwrite)
    _, _, source = resolve_model(RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                                           weights=str(weights)), log_fn=lambda _: None)
    recipes = QCFS_RECIPES if source.get("activation") == "qcfs" else RELU_RECIPES
    rows, n_val = score({k: (weights, v) for k, v in recipes.items()}, args.model, args.dataset, args.data_dir,
                        args.calib_samples, args.val_samples)
    best = max(rows, key=lambda k: rows[k]["criterion"])
    card = {"chosen": best, "conversion": rows[best]["conversion"], "criterion": criterion_text(),
            "validation": f"{n_val} images of the validation split held out of the {args.dataset} training split "
                          f"(seed 0), never trained on; calibration: {args.calib_samples} images of the training "
                          "part (seed 1); the test set was not read",
            "checkpoint": weights.name, "checkpoint_sha256": sha256(weights.resolve()),
            "command": command("choose_recipe.py", args.data_dir).replace(str(REPO) + "/", ""),
            "targets_checked": sorted(deployment_targets()), "candidates": rows}
    with atomic_file(out, args.overwrite) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps({k: card[k] for k in ("chosen", "conversion", "criterion")}, indent=1))


if __name__ == "__main__":
    main()
