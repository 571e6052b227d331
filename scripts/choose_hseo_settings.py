#!/usr/bin/env python
"""Choose HSEO's search settings on the validation split (never on the test set).

HSEO (``snnconv.passes.hseo``) searches threshold scales, initial membranes and leaks with CMA-ES on
labelled samples of the training part. Its *settings* (fitness weight of SynOps, width of the search
boxes, CMA-ES step) are a campaign decision: earlier they were adopted after test-set runs
(docs/benchmarks/hseo.md). This script runs every candidate setting from the same starting conversion,
scores each searched network on the validation split (5,000 training images never trained on, never
searched on), and records the best: highest validation accuracy at T, ties broken by fewer SynOps.
The test set is not read here; ``scripts/bench_accuracy.py`` reads the chosen settings
(``docs/benchmarks/hseo_settings.json``) for its ``_hseo<T>`` rows and scores the test set once.

    python scripts/choose_hseo_settings.py --data-dir ../shared/datasets
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, footer, save, sha256  # noqa: E402

from snnconv.api import conversion_pipeline, convert_graph, held_out_split, ingest, resolve_model, simulate  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig  # noqa: E402
from snnconv.data.datasets import load_part  # noqa: E402
from snnconv.passes import PassContext, Pipeline  # noqa: E402

#: the candidates: the pass defaults, the defaults without the SynOps term, and the narrowed boxes that
#: were adopted earlier (with and without the SynOps term)
CANDIDATES = {
    "defaults": {"threshold_bounds": [0.4, 1.6], "v_init_bounds": [0.0, 1.0], "sigma0": 0.2, "synops_weight": 0.02},
    "defaults_acc_only": {"threshold_bounds": [0.4, 1.6], "v_init_bounds": [0.0, 1.0], "sigma0": 0.2,
                          "synops_weight": 0.0},
    "narrow": {"threshold_bounds": [0.8, 1.25], "v_init_bounds": [0.35, 0.65], "sigma0": 0.15, "synops_weight": 0.02},
    "narrow_acc_only": {"threshold_bounds": [0.8, 1.25], "v_init_bounds": [0.35, 0.65], "sigma0": 0.15,
                        "synops_weight": 0.0},
}
SETUPS = {  # name -> (model, dataset, checkpoint, conversion): checkpoints trained without the validation split
    "mnist_cnn_l2_55k": ("mnist_cnn", "mnist", "snnconv/assets/mnist_cnn_qcfs2-mnist-55k.pt",
                         {"method": "qcfs", "signed": True}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--setup", default="mnist_cnn_l2_55k", choices=sorted(SETUPS))
    ap.add_argument("--timesteps", type=int, default=2)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--samples", type=int, default=2048, help="search samples (training part)")
    ap.add_argument("--selection-samples", type=int, default=2048, help="re-scoring samples (training part)")
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "hseo_settings"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_name, dataset, ckpt, conv = SETUPS[args.setup]
    model, shape, _ = resolve_model(RunConfig(model=model_name, dataset=dataset, data_dir=args.data_dir,
                                              weights=str(REPO / ckpt)), log_fn=lambda _: None)
    graph, _ = ingest(model, shape)
    calib = [x for x, _ in load_part(dataset, args.data_dir, "train").subset(args.calib_samples, 1).batches(256)]
    held = held_out_split(dataset, args.data_dir, args.calib_samples, 1, size=args.samples + args.selection_samples)
    val = load_part(dataset, args.data_dir, "val")
    base, _ = convert_graph(graph, calib, conversion_pipeline(ConversionConfig(**conv)))
    T = args.timesteps
    start = simulate(base, val, T, 250, layer_error=False)
    rows = [{"setup": args.setup, "timesteps": T, "candidate": "(no search)", "settings": None,
             "val_accuracy": start.accuracy()[-1], "synops": start.synops_per_sample()[-1], "seconds": 0.0,
             "checkpoint": ckpt, "checkpoint_sha256": sha256(ckpt), "val_samples": len(val)}]
    for name in args.candidates.split(","):
        spec = {"name": "hseo", "timesteps": T, "population": args.population, "generations": args.generations,
                "seed": 0, "samples": args.samples, "selection_samples": args.selection_samples,
                **CANDIDATES[name]}
        t0 = time.time()
        tuned = Pipeline.from_config([spec]).run(base, PassContext(calibration=calib,
                                                                   labelled=list(held.batches(256))))
        st = simulate(tuned, val, T, 250, layer_error=False)
        rows.append({"setup": args.setup, "timesteps": T, "candidate": name, "settings": spec,
                     "val_accuracy": st.accuracy()[-1], "synops": st.synops_per_sample()[-1],
                     "seconds": round(time.time() - t0, 1), "checkpoint": ckpt, "checkpoint_sha256": sha256(ckpt),
                     "val_samples": len(val)})
        print(f"[{name}] validation {rows[-1]['val_accuracy']:.2f}% ({rows[-1]['seconds']} s)", flush=True)
    searched = [r for r in rows if r["settings"] is not None]
    best = max(searched, key=lambda r: (r["val_accuracy"], -r["synops"]))
    for r in rows:
        r["chosen"] = r is best
    save(args.out, rows, key=lambda r: (r["setup"], r["timesteps"], r["candidate"]), markdown=markdown,
         script="choose_hseo_settings.py", data_dir=args.data_dir)


def chosen_settings(path: str | Path, checkpoint: str, timesteps: int) -> dict | None:
    """The HSEO pass spec chosen on validation for the checkpoint file named ``checkpoint`` at ``timesteps``
    (None if no choice was recorded)."""
    import json

    p = Path(path)
    if not p.is_file():
        return None
    for r in json.loads(p.read_text())["rows"]:
        if Path(r["checkpoint"]).name == Path(checkpoint).name and r["timesteps"] == timesteps and r.get("chosen"):
            return r["settings"]
    return None


def markdown(data: dict) -> str:
    lines = ["# HSEO settings chosen on the validation split", "",
             f"Command: `{data['command']}`", "",
             "Every candidate searches from the same starting conversion on labelled samples of the training part "
             "(`snnconv.api.held_out_split`, disjoint from the calibration images); each searched network is "
             "scored on the validation split (never searched or trained on). The chosen row (highest validation "
             "accuracy, ties: fewer SynOps) is what `scripts/bench_accuracy.py` uses for its `_hseo<T>` rows. "
             "The test set is not read here.", "",
             "| setup | T | candidate | threshold box | v_init box | sigma0 | SynOps weight | validation % | "
             "SynOps/sample | seconds | chosen |", "|---|---:|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in data["rows"]:
        s = r["settings"] or {}
        lines.append(f"| {r['setup']} | {r['timesteps']} | {r['candidate']} | {s.get('threshold_bounds', '-')} | "
                     f"{s.get('v_init_bounds', '-')} | {s.get('sigma0', '-')} | {s.get('synops_weight', '-')} | "
                     f"{r['val_accuracy']:.2f} | {r['synops']:.4g} | {r['seconds']} | "
                     f"{'**yes**' if r.get('chosen') else ''} |")
    return "\n".join(lines + footer(data))


if __name__ == "__main__":
    main()
