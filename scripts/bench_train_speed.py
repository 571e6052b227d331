#!/usr/bin/env python
"""Training-step speed of the zoo models on this machine: fp32 vs bf16 autocast, contiguous vs channels-last.

One step = forward + backward + SGD step on a batch of 128 random CIFAR-sized images (QCFS L=4 activations,
as the headline nets train). The first step is a warm-up; the minimum of the timed ones is reported.

    python scripts/bench_train_speed.py

writes docs/benchmarks/train_speed.json and .md. Run it on an otherwise idle machine (pause long jobs).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from snnconv.api import with_activation
from snnconv.models.zoo import build_model
from snnconv.report import environment
from snnconv.training.ann import bf16_native

REPO = Path(__file__).resolve().parent.parent


def step_seconds(name: str, channels_last: bool, bf16: bool, steps: int, batch: int = 128) -> float:
    torch.manual_seed(0)
    m = with_activation(build_model(name, 10, 3), "qcfs", 4).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    torch.set_num_threads(2)
    rows = []
    for name in ("resnet20", "resnet18"):
        for bf16 in (False, True):
            for cl in (False, True):
                steps = 1 if (bf16 and not bf16_native() and name == "resnet18") else 3
                s = step_seconds(name, cl, bf16, steps)
                rows.append({"model": name, "bf16": bf16, "channels_last": cl, "seconds_per_step": round(s, 3),
                             "images_per_second": round(128 / s, 1), "minutes_per_epoch_45k": round(s * 352 / 60, 1),
                             "timed_steps": steps})
                print(rows[-1], file=sys.stderr, flush=True)
    data = {"command": "python scripts/bench_train_speed.py", "bf16_native": bf16_native(), "rows": rows,
            "environment": environment()}
    out = REPO / "docs" / "benchmarks" / "train_speed"
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    lines = ["# Training-step speed on this machine", "", f"Command: `{data['command']}`", "",
             "Forward + backward + SGD step, batch 128, QCFS L=4 activations, 2 threads; minimum over the timed "
             f"steps after one warm-up. Native bf16 on this CPU: **{data['bf16_native']}** (without it, oneDNN "
             "emulates bf16 and autocast is much slower than fp32; `snnconv train --bf16` then trains in fp32).", "",
             "| model | bf16 autocast | channels-last | s/step | images/s | min/epoch (45k images) |",
             "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['bf16']} | {r['channels_last']} | {r['seconds_per_step']} | "
              f"{r['images_per_second']} | {r['minutes_per_epoch_45k']} |" for r in rows]
    lines += ["", "## Environment", "", "```", json.dumps(data["environment"], indent=1), "```", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
