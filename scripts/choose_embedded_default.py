#!/usr/bin/env python
"""Choose the recipe of the embedded default (`snnconv convert` with no model) on the validation split.

Candidates: the bundled MNIST CNN checkpoints trained on the 55,000-image training part (``*-mnist-55k.pt``:
ReLU, QCFS L=4, QCFS L=2; ``snnconv train ... --epochs 5 --seed 0``, the validation split held out) with
the conversion recipes that suit them. Each is converted with 1,024 calibration
images of the training part and simulated on the 5,000-image validation split (never trained on); the
test set is not read. Criterion, fixed before looking: the mean validation accuracy over T = 1, 2, 4, 8
(the few-timestep regime the project is for). Each candidate lists the deployment targets that run it
(``runs_in``; ``--targets-only`` adds them to the existing file). Writes ``snnconv/assets/embedded_default.json``, which
``snnconv.api.apply_run_defaults`` reads.

    python scripts/choose_embedded_default.py --data-dir ../shared/datasets
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, command, sha256  # noqa: E402

from choose_recipe import add_targets, criterion_text, score  # noqa: E402

from snnconv.backends.exports import deployment_targets  # noqa: E402
from snnconv.checkpoints import BUNDLED_DIR  # noqa: E402

#: name -> (bundled checkpoint, conversion settings)
CANDIDATES = {
    "percentile (ReLU CNN)": ("mnist_cnn-mnist-55k.pt", {"method": "percentile"}),
    "qcfs": ("mnist_cnn_qcfs4-mnist-55k.pt", {"method": "qcfs"}),
    "qcfs_signed": ("mnist_cnn_qcfs4-mnist-55k.pt", {"method": "qcfs", "signed": True}),
    "qcfs_signed_bc4": ("mnist_cnn_qcfs4-mnist-55k.pt", {"method": "qcfs", "signed": True, "calibrate": True,
                                                    "calibration_timesteps": 4}),
    "sfn (graded)": ("mnist_cnn_qcfs4-mnist-55k.pt", {"method": "sfn"}),
    "qcfs_l2_signed": ("mnist_cnn_qcfs2-mnist-55k.pt", {"method": "qcfs", "signed": True}),
    "sfn_l2 (graded)": ("mnist_cnn_qcfs2-mnist-55k.pt", {"method": "sfn"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "snnconv" / "assets" / "embedded_default.json"))
    ap.add_argument("--targets-only", action="store_true",
                    help="only add the targets that run each candidate (runs_in) to the existing file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.targets_only:
        add_targets(Path(args.out), lambda c: BUNDLED_DIR / c["weights"], "mnist_cnn", "mnist", args.data_dir,
                    args.calib_samples)
        return
    rows, n_val = score({k: (BUNDLED_DIR / c, conv) for k, (c, conv) in CANDIDATES.items()}, "mnist_cnn", "mnist",
                        args.data_dir, args.calib_samples)
    best = max(rows, key=lambda k: rows[k]["criterion"])
    data = {"chosen": best, "weights": rows[best]["weights"], "conversion": rows[best]["conversion"],
            "criterion": criterion_text(),
            "validation": f"{n_val} images held out of the MNIST training split (seed 0), never trained on; "
                          f"calibration: {args.calib_samples} images of the training part (seed 1)",
            "command": command("choose_embedded_default.py", args.data_dir),
            "checkpoints": {c: sha256(BUNDLED_DIR / c) for c in sorted({v[0] for v in CANDIDATES.values()})},
            "targets_checked": sorted(deployment_targets()), "candidates": rows}
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: data[k] for k in ("chosen", "weights", "conversion", "criterion")}, indent=1))


if __name__ == "__main__":
    main()
