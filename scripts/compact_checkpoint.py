#!/usr/bin/env python
"""Write a compact copy of a checkpoint for committing: floating-point weights in float16 (half the size),
metadata (history, accuracies, training settings) kept; prints the sha256 of the result.

    python scripts/compact_checkpoint.py <run>/vgg11_qcfs4_cifar10.pt docs/benchmarks/checkpoints/vgg11_qcfs4_cifar10.pt

Loading casts the weights back to float32 (``load_state_dict`` copies into the model's parameters), so the
compact file is what the benchmarks that cite it convert: its numbers are the numbers of this file.
"""
import argparse
import hashlib
from pathlib import Path

import torch

from snnconv.checkpoints import load_checkpoint, save_checkpoint

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--overwrite", action="store_true")
args = ap.parse_args()
ck = load_checkpoint(args.src)
ck["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
ck["compact"] = "float16 weights (scripts/compact_checkpoint.py)"
save_checkpoint(args.dst, ck, overwrite=args.overwrite)
print(f"{args.dst}: {Path(args.dst).stat().st_size / 2**20:.1f} MiB, sha256 "
      f"{hashlib.sha256(Path(args.dst).read_bytes()).hexdigest()}")
