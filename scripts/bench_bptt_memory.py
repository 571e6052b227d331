#!/usr/bin/env python
"""BPTT memory and time of `snnconv finetune-snn`, with and without activation checkpointing per time step.

For each network x T: one converted network (QCFS thresholds, signed neurons as fine-tuned in
finetune_snn.md), a training step (forward over T steps, cross-entropy, backward) at a fixed batch,
each setting in a fresh process so that its peak resident memory is its own. Reports the peak RSS
over the process's baseline (model loaded, data freed, the peak reset through /proc/self/clear_refs;
Linux), the estimate `activation_memory_mb` prints, and the median step time of ``--reps`` steps after
one warm-up step; the two settings run back to back in one invocation, so their time ratio shares its
machine state.

    python scripts/bench_bptt_memory.py --data-dir ../shared/datasets

writes docs/benchmarks/bptt_memory.json and .md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, footer, save, sha256  # noqa: E402

#: glibc's mmap threshold for the "live memory" columns: blocks above it are returned to the OS on free
MMAP_THRESHOLD = 262144
NETWORKS = {"resnet20_45k": ("resnet20", "cifar10", "docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_45k.pt")}


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: the peak since the last reset) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def one(network: str, t: int, batch: int, checkpoint: bool, reps: int, data_dir: str, threads: int) -> dict:
    """Run in a child process: peak RSS and step times of one setting."""
    import torch

    from snnconv.api import conversion_pipeline, convert_graph, ingest, resolve_model
    from snnconv.config import ConversionConfig, RunConfig
    from snnconv.data.datasets import load_part
    from snnconv.training.snn_finetune import DiffSNN, activation_memory_mb

    torch.set_num_threads(threads)
    model, dataset, ckpt = NETWORKS[network]
    m, shape, _ = resolve_model(RunConfig(model=model, dataset=dataset, data_dir=data_dir, weights=str(REPO / ckpt)),
                                log_fn=lambda _: None)
    g, _ = ingest(m, shape)
    train = load_part(dataset, data_dir, "train")
    calib = [x for x, _ in train.subset(256, 1).batches(256)]
    snn, _ = convert_graph(g, calib, conversion_pipeline(ConversionConfig(method="qcfs", signed=True)))
    x, y = next(iter(train.subset(batch, 2).batches(batch)))
    net = DiffSNN(snn)
    del train, calib, m, g
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    base = _status_mb("VmRSS")
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x, t, checkpoint_steps=checkpoint), y).backward()
        times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")
    return {"peak_over_base_mb": round(peak - base, 1), "estimate_mb": round(activation_memory_mb(snn, t, batch), 1),
            "step_s": times[1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--networks", default="resnet20_45k")
    ap.add_argument("--timesteps", default="2,4,8")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "bptt_memory"))
    args = ap.parse_args()
    if args.child:  # network:T:checkpoint
        net, t, ck = args.child.split(":")
        print(json.dumps(one(net, int(t), args.batch_size, ck == "1", args.reps, args.data_dir, args.threads)))
        return
    rows = []
    for net in args.networks.split(","):
        for t in (int(v) for v in args.timesteps.split(",")):
            res = {}
            for ck in (0, 1):  # a fresh process each: its peak memory is its own
                for alloc, env in (("default", {}), ("mmap", {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})):
                    cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--child", f"{net}:{t}:{ck}",
                           "--batch-size", str(args.batch_size), "--reps", str(args.reps), "--threads",
                           str(args.threads)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                         env={**os.environ, **env}).stdout.strip().splitlines()[-1]
                    res[ck, alloc] = json.loads(out)
                    print(f"{net} T={t} checkpoint={ck} allocator={alloc}: {res[ck, alloc]}", file=sys.stderr,
                          flush=True)
            plain, ckpt = (statistics.median(res[k, "default"]["step_s"]) for k in (0, 1))
            rows.append({"network": net, "checkpoint": NETWORKS[net][2], "checkpoint_sha256": sha256(NETWORKS[net][2]),
                         "timesteps": t, "batch_size": args.batch_size, "estimate_mb": res[0, "default"]["estimate_mb"],
                         "peak_plain_mb": res[0, "default"]["peak_over_base_mb"],
                         "peak_checkpointed_mb": res[1, "default"]["peak_over_base_mb"],
                         "peak_plain_mmap_mb": res[0, "mmap"]["peak_over_base_mb"],
                         "peak_checkpointed_mmap_mb": res[1, "mmap"]["peak_over_base_mb"],
                         "step_plain_s": round(plain, 3), "step_checkpointed_s": round(ckpt, 3),
                         "time_ratio": round(ckpt / plain, 2), "reps": args.reps, "threads": args.threads,
                         "step_plain_mmap_s": round(statistics.median(res[0, "mmap"]["step_s"]), 3),
                         "step_checkpointed_mmap_s": round(statistics.median(res[1, "mmap"]["step_s"]), 3)})
    save(args.out, rows, key=lambda r: (r["network"], r["timesteps"], r["batch_size"]), markdown=markdown,
         script="bench_bptt_memory.py", data_dir=args.data_dir)


def markdown(data: dict) -> str:
    lines = ["# BPTT memory of `snnconv finetune-snn`, with and without activation checkpointing", "",
             f"Command: `{data['command']}`", "",
             "One training step (forward over T steps, cross-entropy, backward) of the converted network (QCFS "
             "thresholds, signed neurons), each setting in a fresh process. `peak` is the peak resident memory over "
             "the process's baseline after loading; `estimate` is what finetune-snn prints and its automatic "
             "checkpointing reads (`activation_memory_mb`: the distinct tensors autograd saves over T steps of a "
             "one-sample batch, parameters excluded, times the batch). Checkpointing keeps only each step's membrane state and recomputes "
             "the step in the backward pass (Chen et al. 2016); gradients are identical "
             "(tests/test_snn_finetune.py). finetune-snn turns it on by itself when the estimate exceeds a quarter of the machine's memory. "
             "Time: the median of the step times after one warm-up, the two settings run back to back.", "",
             "Two allocator settings: glibc's default, which keeps freed heap memory in the process (so the RSS "
             f"peak follows what was ever allocated, not what is live), and `MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}`, "
             "with which every block over 256 KiB is mapped and returned on free, so the RSS follows the live "
             "tensors (what a GPU's caching allocator sees). Times are the default allocator's; with the mmap setting every "
             "step ran about 4x slower (page faults on each fresh block; in the JSON), so it is a way to read the "
             "live memory, not a setting to train with.", "",
             "| network | T | batch | estimate MB | peak MB plain | peak MB checkpointed | peak MB plain (mmap) | "
             "peak MB checkpointed (mmap) | step s plain | step s checkpointed | time ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['network']} | {r['timesteps']} | {r['batch_size']} | {r['estimate_mb']} | "
                     f"{r['peak_plain_mb']} | {r['peak_checkpointed_mb']} | {r['peak_plain_mmap_mb']} | "
                     f"**{r['peak_checkpointed_mmap_mb']}** | {r['step_plain_s']} | "
                     f"{r['step_checkpointed_s']} | {r['time_ratio']}x |")
    return "\n".join(lines + footer(data))


if __name__ == "__main__":
    main()
