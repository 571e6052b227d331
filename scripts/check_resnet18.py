"""Mechanics check: CIFAR ResNet-18 with *untrained* (randomly initialised, seeded) weights converts and runs.

    python scripts/check_resnet18.py --data-dir ../shared/datasets

The untrained weights are written to a checkpoint and passed explicitly with --weights (snnconv
never converts untrained weights on its own). Writes docs/benchmarks/resnet18_untrained.md with
the IR summary and the report of a T=4 run on a few test images. Accuracy is meaningless here
(random weights); what is checked is that ingest, conversion, simulation and reporting run on
the full ResNet-18 graph (residual adds, projection shortcuts, global pooling).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

from snnconv.api import run_convert
from snnconv.config import RunConfig
from snnconv.ir import Graph
from snnconv.models.zoo import build_model

ap = argparse.ArgumentParser()
ap.add_argument("--data-dir", default=None)
ap.add_argument("--samples", type=int, default=16)
args = ap.parse_args()

torch.manual_seed(0)
with tempfile.TemporaryDirectory() as tmp:
    ck = Path(tmp) / "resnet18-untrained.pt"
    torch.save({"model": "resnet18", "state_dict": build_model("resnet18").state_dict()}, ck)
    out = Path(tmp) / "run"
    cfg = RunConfig(model="resnet18", weights=str(ck), dataset="cifar10", data_dir=args.data_dir,
                    timesteps=[1, 2, 4], eval_samples=args.samples, calib_samples=64, batch_size=16,
                    output_dir=str(out))
    report = run_convert(cfg)
    snn = Graph.load(out / "snn.pt")
    md = (out / "report.md").read_text()
lines = ["# ResNet-18 (CIFAR) with untrained weights: conversion mechanics check", "",
         f"Command: `python {' '.join(sys.argv)}` ({args.samples} CIFAR-10 test images).", "",
         "## Converted IR", "", "```", snn.summary(), "```", "", md.replace("# snnconv report", "## Report")]
Path("docs/benchmarks/resnet18_untrained.md").write_text("\n".join(lines))
print("wrote docs/benchmarks/resnet18_untrained.md")
