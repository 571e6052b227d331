#!/usr/bin/env python
"""Write a compact copy of a checkpoint for committing: floating-point weights in float16 (half the size),
metadata (history, accuracies, training settings) kept; prints the sha256 of the result.

    python scripts/compact_checkpoint.py <run>/vgg11_qcfs4_cifar10.pt docs/benchmarks/checkpoints/vgg11_qcfs4_cifar10.pt

Loading casts the weights back to float32 (``load_state_dict`` copies into the model's parameters), so the
compact file is what the benchmarks that cite it convert: its numbers are the numbers of this file.

A resumable training state (``<out>.state.pt``, with an ``optimizer`` entry) is compacted the same way, its
momentum buffers in bfloat16 (the optimizer casts them back on load): this parks an unfinished run in the
repository between working sessions on machines that keep nothing else. Re-running the training command with the
parked state copied next to its ``--out`` resumes the run from float16-rounded weights, which the record says.
"""
import argparse
import hashlib
import sys
from pathlib import Path

import torch

from snnconv.checkpoints import load_checkpoint, save_checkpoint
from snnconv.errors import SnnconvError
from snnconv.output import check_output_file

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--overwrite", action="store_true")
args = ap.parse_args()
try:  # bad input or an existing destination: one line, no traceback
    check_output_file(args.dst, args.overwrite, "checkpoint")
    ck = load_checkpoint(args.src)
except SnnconvError as e:
    sys.exit(f"error: {e}")
ck["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
ck["compact"] = "float16 weights (scripts/compact_checkpoint.py)"
if isinstance(ck.get("optimizer"), dict):  # a training state: momentum buffers in bfloat16
    for buf in ck["optimizer"].get("state", {}).values():
        for k, v in list(buf.items()):
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
                buf[k] = v.bfloat16()
    ck["compact"] += ", optimizer state in bfloat16 (a parked training state)"
save_checkpoint(args.dst, ck, overwrite=args.overwrite)
print(f"{args.dst}: {Path(args.dst).stat().st_size / 2**20:.1f} MiB, sha256 "
      f"{hashlib.sha256(Path(args.dst).read_bytes()).hexdigest()}")
