#!/usr/bin/env python
"""Conversion time with and without Li et al.'s layer-wise calibration, in one process.

The same network is converted with ``qcfs --signed`` (no calibration) and with ``qcfs --signed --calibrate
--calib-timesteps T`` by the ``sweep`` method (the default: one layer-by-layer pass, cached upstream trains)
and by ``resimulate`` (the original procedure: the sub-network up to each neuron layer simulated again),
interleaved with repeats; the page reports the minimum time of each and the ratios to the uncalibrated
conversion. Both calibration methods give the same corrections (tests/test_conversion_methods.py).

    python scripts/bench_calib_cost.py --data-dir ../shared/datasets --weights docs/benchmarks/checkpoints/resnet20_qcfs4_cifar10_swa.pt

``--run-eval-samples N`` also times the whole ``snnconv convert`` job (``api.run_convert``: ingest, passes, ANN and
SNN evaluation on N test images up to ``--run-timesteps``, the report) with and without ``--calibrate``, the
quantity the opening of issue 20 measured (a 37-minute run on 2,000 test images, 90 % of it calibration).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, footer, save, sha256  # noqa: E402

from snnconv.api import convert_graph, ingest, resolve_model, run_convert  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig, parse_timesteps  # noqa: E402
from snnconv.data.datasets import load_part  # noqa: E402
from snnconv.passes import Pipeline  # noqa: E402
from snnconv.runtime.simulator import Simulator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--calib-timesteps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--run-eval-samples", type=int, default=None,
                    help="also time the whole convert job on this many test images")
    ap.add_argument("--run-timesteps", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "calib_cost"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, shape, _ = resolve_model(RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                                              weights=args.weights), log_fn=lambda _: None)
    graph, _ = ingest(model, shape)
    calib = [x for x, _ in load_part(args.dataset, args.data_dir, "train").subset(args.calib_samples, 1).batches(256)]
    base = dict(method="qcfs", signed=True)
    variants = {"no calibration": ConversionConfig(**base),
                "calibrate (sweep)": ConversionConfig(**base, calibrate=True,
                                                      calibration_timesteps=args.calib_timesteps),
                "calibrate (resimulate)": ConversionConfig(**base, calibrate=True,
                                                           calibration_timesteps=args.calib_timesteps)}
    times = {k: [] for k in [*variants, "one simulation of the calibration images"]}
    runs = {}
    if args.run_eval_samples:
        run = dict(model=args.model, dataset=args.dataset, data_dir=args.data_dir, weights=args.weights,
                   calib_samples=args.calib_samples, eval_samples=args.run_eval_samples,
                   timesteps=parse_timesteps(args.run_timesteps))
        runs = {"convert job, no calibration": RunConfig(**run, conversion=variants["no calibration"]),
                "convert job, calibrate (sweep)": RunConfig(**run, conversion=variants["calibrate (sweep)"])}
        times.update({k: [] for k in runs})
    plain, _ = convert_graph(graph, calib, Pipeline.from_config(RunConfig(conversion=variants["no calibration"])
                                                                .pipeline_spec()))
    for _ in range(args.reps):  # interleaved repeats: background load hits every variant alike
        t0 = time.perf_counter()  # the reference: what a single pass over the calibration data at T costs
        sim = Simulator(plain, args.calib_timesteps, collect_stats=False)
        for x in calib:
            sim.run(x)
        times["one simulation of the calibration images"].append(time.perf_counter() - t0)
        for name, conv in variants.items():
            spec = RunConfig(conversion=conv).pipeline_spec()
            if name.endswith("(resimulate)"):
                spec = [{**p, "method": "resimulate"} if isinstance(p, dict) and p.get("name") == "calibration" else p
                        for p in spec]
            t0 = time.perf_counter()
            convert_graph(graph, calib, Pipeline.from_config(spec))
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
        for name, cfg in runs.items():
            t0 = time.perf_counter()
            run_convert(cfg, log_fn=lambda _: None, coverage_fn=lambda _: None)
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    ref = best["one simulation of the calibration images"]
    rows = [{"network": args.model, "variant": k, "seconds": best[k], "all_seconds": times[k],
             "ratio_to_uncalibrated": best[k] / best["convert job, no calibration" if k in runs else "no calibration"],
             "ratio_to_one_simulation": best[k] / ref, "calib_samples": args.calib_samples,
             **({"eval_samples": args.run_eval_samples, "run_timesteps": args.run_timesteps} if k in runs else {}),
             "calib_timesteps": args.calib_timesteps, "threads": args.threads, "checkpoint": args.weights,
             "checkpoint_sha256": sha256(args.weights)} for k in times]
    save(args.out, rows, key=lambda r: (r["network"], r["variant"], r["calib_timesteps"]), markdown=markdown,
         script="bench_calib_cost.py", data_dir=args.data_dir)


def markdown(data: dict) -> str:
    lines = ["# Conversion time with layer-wise calibration", "", f"Command: `{data['command']}`", "",
             "`qcfs --signed` conversion with and without Li et al.'s bias calibration (ICML 2021) for the given T, "
             "one process, interleaved repeats, minimum time. `sweep` is snnconv's one-pass calibration, "
             "`resimulate` the original per-layer re-simulation; both give the same corrections. The uncalibrated "
             "QCFS conversion reads no data (thresholds are the trained lambdas), so its time is near zero and a "
             "ratio to it says little; the reference is one simulation of the calibration images at T, the least "
             "any data-driven calibration must spend. The `convert job` rows time the whole `snnconv convert` job "
             "(ingest, passes, ANN and SNN evaluation on the stated test images and T, the report) without and with "
             "`--calibrate`; their ratio is the one a user waits for.", "",
             "| network | variant | calibration images | T | seconds | x one simulation | x uncalibrated |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        scope = f" ({r['eval_samples']} test images, T = {r['run_timesteps']})" if "eval_samples" in r else ""
        lines.append(f"| {r['network']} | {r['variant']}{scope} | {r['calib_samples']} | {r['calib_timesteps']} | "
                     f"{r['seconds']:.2f} | {r.get('ratio_to_one_simulation', float('nan')):.2f} | "
                     f"{r['ratio_to_uncalibrated']:.1f} |")
    return "\n".join(lines + footer(data))


if __name__ == "__main__":
    main()
