#!/usr/bin/env python
"""Low-precision kernels for spike-driven convolutions on this CPU: where they are exact and whether they pay.

A spiking layer's input is a spike map (0/1, or -1/0/1 with signed spikes) times a per-channel threshold, so
``conv(spikes * theta, W) = conv(spikes, W * theta)``: the activation side is exact in any format that holds
-1, 0, 1 (bf16, int8). What decides exactness is the weight format and the accumulator:

* **bf16** (``torch.autocast``): weights rounded to 8 mantissa bits and, on CPUs without native bf16
  (no AVX512-BF16/AMX), emulated by oneDNN; not exact (weights and partial sums are rounded).
* **int8, requantized** (``torch.ao`` quantized conv, x86 engine): exact products of int8 weights (the quantize
  pass's grid) and 0/1 activations, accumulated in int32, but the output is re-quantized to 8 bits, so the
  membrane update is not exact;
* **int8 -> fp32** (``onednn::qconv2d_pointwise`` with an fp32 output, what ``Simulator(kernels="int8")`` runs,
  ``snnconv/runtime/lowp.py``): the same int32 sum, scaled once into fp32: the exact sum rounded once.

Errors are against the exact sum (float64), so the fp32 kernel's own rounding shows too.

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

    from snnconv.ir import Conv2d, IFNeuron
    from snnconv.runtime.lowp import int8_synapse
    codes = q.to(torch.int8)
    node = Conv2d(shape=(cout, hw, hw), weight=w.contiguous(), bias=None, padding=(1, 1), weight_int=codes,
                  weight_scale=scale.view(-1, 1, 1, 1), bits=8)
    synapse, why = int8_synapse(node, IFNeuron(shape=(cin, hw, hw), threshold=torch.tensor(1.0)))
    assert synapse is not None, why

    def int8_fp32():
        return synapse(spikes)

    fns = {"fp32": fp32, "bf16": bf16, "int8": int8, "int8_fp32": int8_fp32}
    out = {k: f() for k, f in fns.items()}
    exact = F.conv2d(spikes.double(), (q * scale.view(-1, 1, 1, 1)).double(), None, 1, 1)
    rel = lambda y: float((y.double() - exact).abs().max() / exact.abs().max())  # noqa: E731
    err = {"fp32": rel(out["fp32"]), "bf16": rel(out["bf16"].float()), "int8": rel(out["int8"].dequantize()),
           "int8_fp32": rel(out["int8_fp32"])}
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
             "convolution). Error: max |kernel - exact| / max |exact|, the exact sum computed in float64.", "",
             "| layer | batch | fp32 (ms) | fp32 error | bf16 speed | bf16 error | int8 requantized speed | error | "
             "**int8 -> fp32 speed** | **error** |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        s, e = r["speed_vs_fp32"], r["max_rel_error_vs_fp32"]
        lines.append(f"| {r['layer']} | {r['batch']} | {r['seconds']['fp32'] * 1000:.2f} | {e.get('fp32', 0):.1e} | "
                     f"{s['bf16']:.2f}x | {e['bf16']:.1e} | {s['int8']:.2f}x | {e['int8']:.1e} | "
                     + (f"**{s['int8_fp32']:.2f}x** | **{e['int8_fp32']:.1e}** |" if "int8_fp32" in s else "- | - |"))
    lines += ["", "Reading: bf16 rounds the weights to 8 mantissa bits (and is emulated, slower than fp32, on CPUs "
              "without AVX512-BF16/AMX); the requantized int8 kernel multiplies and accumulates exactly but rounds "
              "its output to 8 bits, which the membrane update cannot absorb. The int8 -> fp32 kernel keeps the "
              "exact int32 sum and scales it once: its error is one fp32 rounding, below the fp32 kernel's, and "
              "it is what `Simulator(kernels='int8')` runs. Its speed depends on VNNI/AMX (the flags above)."]
    return "\n".join(lines + environment_block(data["environment"]))


if __name__ == "__main__":
    main()
