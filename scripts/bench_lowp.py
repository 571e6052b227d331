#!/usr/bin/env python
"""Low-precision kernels for spike-driven convolutions on this CPU: where they are exact and whether they pay.

A spiking layer's input is a spike map (0/1, or -1/0/1 with signed spikes) times a per-channel threshold, so
``conv(spikes * theta, W) = conv(spikes, W * theta)``: the activation side is exact in any format that holds
-1, 0, 1 (bf16, int8). What decides exactness is the weight format and the accumulator:

* **bf16** (``torch.autocast``): weights rounded to 8 mantissa bits and, on CPUs without native bf16
  (no AVX512-BF16/AMX), emulated by oneDNN; not exact (weights and partial sums are rounded).
* **int8** (``torch.ao`` quantized conv, fbgemm/x86 engine): exact products of int8 weights (the quantize
  pass's grid) and 0/1 activations, accumulated in int32, but the output is re-quantized to 8 bits, so the
  membrane update is not exact (torch exposes no int32-output quantized conv on CPU).

For each layer shape (ResNet-20 and ResNet-18 stages, batch 64, firing rate 0.15) the script times fp32
channels-last (what the simulator runs), bf16 autocast and int8, interleaved in one process with repeats,
and reports the speed ratio to fp32 and the error of each against the fp32 result.

    python scripts/bench_lowp.py --threads 2 --reps 5
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, environment_block, save  # noqa: E402

SHAPES = {  # name -> (channels in, channels out, H = W)
    "resnet20 stage 1 (16ch, 32x32)": (16, 16, 32),
    "resnet20 stage 3 (64ch, 8x8)": (64, 64, 8),
    "resnet18 stage 1 (64ch, 32x32)": (64, 64, 32),
    "resnet18 stage 3 (256ch, 8x8)": (256, 256, 8),
}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f or "bf16" in f)


def measure(cin: int, cout: int, hw: int, batch: int, rate: float, reps: int) -> dict:
    torch.manual_seed(0)
    spikes = (torch.rand(batch, cin, hw, hw) < rate).float().contiguous(memory_format=torch.channels_last)
    # int8-grid weights (as the quantize pass leaves them): w = q * scale per output channel
    scale = torch.rand(cout) * 0.01 + 0.005
    q = torch.randint(-127, 128, (cout, cin, 3, 3)).float()
    w = (q * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
    ref = F.conv2d(spikes, w, None, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation is deprecated in torch 2.13 (still works)
        torch.backends.quantized.engine = "x86"
        wq = torch.quantize_per_channel(q * scale.view(-1, 1, 1, 1), scale.double(), torch.zeros(cout, dtype=torch.long),
                                        0, torch.qint8)
        conv = torch.ao.nn.quantized.Conv2d(cin, cout, 3, padding=1)
        conv.set_weight_bias(wq, None)
        # the output is quint8: zero point 128 holds signed sums; the best 8-bit grid for this layer's range
        conv.scale, conv.zero_point = float(ref.abs().max() / 127), 128
        xq = torch.quantize_per_tensor(spikes, 1.0, 0, torch.quint8)

    def fp32():
        return F.conv2d(spikes, w, None, 1, 1)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.conv2d(spikes, w, None, 1, 1)

    def int8():
        return conv(xq)

    fns = {"fp32": fp32, "bf16": bf16, "int8": int8}
    out = {k: f() for k, f in fns.items()}
    err = {"bf16": float((out["bf16"].float() - ref).abs().max() / ref.abs().max()),
           "int8": float((out["int8"].dequantize() - ref).abs().max() / ref.abs().max())}
    times = {k: [] for k in fns}
    for _ in range(reps):  # interleaved: drift of the machine hits every kernel alike
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(5):
                f()
            times[k].append((time.perf_counter() - t0) / 5)
    best = {k: min(v) for k, v in times.items()}
    return {"seconds": best, "speed_vs_fp32": {k: best["fp32"] / v for k, v in best.items()},
            "max_rel_error_vs_fp32": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0.15)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "low_precision"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, (cin, cout, hw) in SHAPES.items():
        r = measure(cin, cout, hw, args.batch, args.rate, args.reps)
        rows.append({"layer": name, "batch": args.batch, "rate": args.rate, **r})
        print(name, {k: round(v, 2) for k, v in r["speed_vs_fp32"].items()}, r["max_rel_error_vs_fp32"], flush=True)
    save(args.out, rows, key=lambda r: (r["layer"], r["batch"]), markdown=markdown, script="bench_lowp.py",
         data_dir=None, cpu_flags=cpu_flags())


def markdown(data: dict) -> str:
    lines = ["# Low-precision convolution kernels for spike maps on this CPU", "", f"Command: `{data['command']}`", "",
             f"CPU flags: {' '.join(data.get('cpu_flags', [])) or '(unknown)'}. Binary spike maps (firing rate as "
             "listed) convolved with int8-grid weights, 3x3, stride 1; times are the minimum over interleaved repeats "
             "in one process. Speed is fp32 time / kernel time (> 1: faster than the simulator's fp32 channels-last "
             "convolution). Error: max |kernel - fp32| / max |fp32| (0 would be exact).", "",
             "| layer | batch | fp32 (ms) | bf16 speed | bf16 error | int8 speed | int8 error |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        s, e = r["speed_vs_fp32"], r["max_rel_error_vs_fp32"]
        lines.append(f"| {r['layer']} | {r['batch']} | {r['seconds']['fp32'] * 1000:.2f} | {s['bf16']:.2f}x | "
                     f"{e['bf16']:.1e} | {s['int8']:.2f}x | {e['int8']:.1e} |")
    lines += ["", "Reading: bf16 is emulated here (no AVX512-BF16/AMX), so it is slower and rounds weights; the int8 "
              "kernel multiplies and accumulates exactly (int8 x {0,1} in int32) but re-quantizes its output to 8 "
              "bits, which the membrane update cannot absorb without error. Neither is used by the simulator on this "
              "CPU; a GPU or a CPU with int32-output int8 kernels (VNNI/AMX with oneDNN's s32 destination) is where "
              "the exact int8 path would pay."]
    return "\n".join(lines + environment_block(data["environment"]))


if __name__ == "__main__":
    main()
