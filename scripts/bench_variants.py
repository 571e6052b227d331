#!/usr/bin/env python
"""Conversion variants of one trained network, scored on validation and test: which variant to use is
chosen on the validation split, the test set is read once per reported row.

Each ``--variant NAME=KEY:VALUE,...`` is a ``ConversionConfig`` (e.g. ``count=method:percentile,maxpool:count``);
every variant converts the same checkpoint with the same calibration images (training part), then the SNN is
simulated on the validation split and on the test set up to the largest T. The page lists per variant the
validation and test accuracy at every T, SynOps/energy, the spiking census (which nodes are neurons and which
operators) and the variant chosen on validation at each T.

    python scripts/bench_variants.py --model vgg11 --dataset cifar10 --weights <vgg11.pt> \\
        --variant count=maxpool:count --variant gate=maxpool:gate --out docs/benchmarks/maxpool
    python scripts/bench_variants.py --model mobilenet_silu --dataset cifar10 --weights <mobilenet.pt> \\
        --variant binary=method:percentile --variant graded=method:sfn --out docs/benchmarks/silu
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, command, footer, save, sha256  # noqa: E402

from snnconv.api import ann_accuracy, conversion_pipeline, conversion_warnings, convert_graph, ingest, resolve_model, \
    simulate  # noqa: E402
from snnconv.config import ConversionConfig, RunConfig, parse_timesteps  # noqa: E402
from snnconv.data.datasets import load_dataset, load_part  # noqa: E402
from snnconv.errors import SnnconvError  # noqa: E402
from snnconv.passes.spiking_transformer import census_counts, spiking_census  # noqa: E402
from snnconv.runtime.simulator import E_MAC_PJ  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition("=")
    fields = {f.name: f.type for f in ConversionConfig.__dataclass_fields__.values()}
    out = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        if key not in fields:
            raise SnnconvError(f"--variant {text!r}: unknown conversion key '{key}' (known: {', '.join(fields)})")
        default = getattr(ConversionConfig(), key)
        out[key] = (value.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(value)
    if not name:
        raise SnnconvError(f"--variant {text!r}: expected NAME=KEY:VALUE,...")
    return name, out


def census_only(args, graph, calib, variants: dict) -> None:
    """Recompute the census and warnings of existing rows (they depend on the converted graph only)."""
    import json

    data = json.loads(Path(args.out).with_suffix(".json").read_text())
    network = args.network or args.model
    rows = [r for r in data["rows"] if r["network"] == network and r["variant"] in variants]
    for r in rows:
        snn, _ = convert_graph(graph, calib, conversion_pipeline(ConversionConfig(**variants[r["variant"]])))
        r["census"], r["warnings"] = census_counts(spiking_census(snn)), conversion_warnings(snn)
    save(args.out, rows, key=lambda r: (r["network"], r["variant"]), markdown=markdown, script="bench_variants.py",
         data_dir=args.data_dir)


def qcfs_at_levels(model: torch.nn.Module, shape, ts: list[int], parts: dict) -> dict:
    """Accuracy of the QCFS ANN with its quantizers set to ``L = T`` levels, per T and part.

    A QCFS neuron with shift 1/2 simulated for T steps computes the QCFS function with T levels (Bu et al.,
    ICLR 2022, Theorem 2), so this is the function the SNN approximates at T: when it moves away from the
    trained L, the SNN follows it. Empty when the model has no QCFS quantizers."""
    import copy

    from snnconv.models.qcfs import set_levels

    probe = copy.deepcopy(model).eval()
    out: dict = {}
    for t in ts:
        if not set_levels(probe, t):
            return out
        graph, _ = ingest(probe, shape)
        out[str(t)] = {name: ann_accuracy(graph, part)[0] for name, part in parts.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--network", default=None, help="the rows' network label (default: --model); rows of one "
                    "label share one ANN, so give each checkpoint its own")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=KEY:VALUE,...")
    ap.add_argument("--timesteps", default="1,2,4,8,16,32")
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--val-samples", type=int, default=None, help="default: the whole validation split")
    ap.add_argument("--test-samples", type=int, default=None, help="default: the whole test set")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="docs/benchmarks/<name> (writes .json and .md)")
    ap.add_argument("--census-only", action="store_true",
                    help="re-derive the census and warnings of the existing rows of --network for the given "
                         "variants from their conversion (no simulation; accuracies kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in args.variant]
    ts = parse_timesteps(args.timesteps)
    model, shape, source = resolve_model(RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                                                   weights=args.weights), log_fn=lambda _: None)
    graph, _ = ingest(model, shape)
    calib = [x for x, _ in load_part(args.dataset, args.data_dir, "train").subset(args.calib_samples, 1).batches(256)]
    if args.census_only:
        return census_only(args, graph, calib, dict(variants))
    val = load_part(args.dataset, args.data_dir, "val").subset(args.val_samples, 0)
    test = load_dataset(args.dataset, args.data_dir, train=False).subset(args.test_samples, 0)
    ann_val, ann_test = ann_accuracy(graph, val)[0], ann_accuracy(graph, test)
    at_levels = qcfs_at_levels(model, shape, ts, {"val": val, "test": test})
    weights = str(Path(args.weights).resolve().relative_to(REPO)) if Path(args.weights).resolve().is_relative_to(REPO) \
        else Path(args.weights).name
    rows = []
    for name, conv in variants:
        t0 = time.time()
        snn, _ = convert_graph(graph, calib, conversion_pipeline(ConversionConfig(**conv)))
        v = simulate(snn, val, max(ts), args.batch_size, layer_error=False).accuracy()
        st = simulate(snn, test, max(ts), args.batch_size, layer_error=False)
        acc, energy = st.accuracy(), st.energy_uj()
        rows.append({"network": args.network or args.model, "model": args.model, "variant": name, "conversion": conv,
                     "checkpoint": weights,
                     "checkpoint_sha256": sha256(args.weights), "ann_val": ann_val, "ann_test": ann_test[0],
                     "ann_energy_uj": ann_test[1] * E_MAC_PJ * 1e-6, "val_samples": len(val), "test_samples": len(test),
                     "ann_levels_t": at_levels,
                     "per_t": {str(t): {"val": v[t - 1], "test": acc[t - 1], "energy_uj": energy[t - 1]} for t in ts},
                     "census": census_counts(spiking_census(snn)), "warnings": conversion_warnings(snn),
                     "seconds": round(time.time() - t0, 1), "command": command("bench_variants.py", args.data_dir)})
        print(f"[{name}] val " + " ".join(f"T{t}={v[t - 1]:.2f}" for t in ts) + " | test " +
              " ".join(f"T{t}={acc[t - 1]:.2f}" for t in ts), flush=True)
    save(args.out, rows, key=lambda r: (r["network"], r["variant"]), markdown=markdown, script="bench_variants.py",
         data_dir=args.data_dir)


def markdown(data: dict) -> str:
    lines = ["# Conversion variants (`scripts/bench_variants.py`)", "", f"Last command: `{data['command']}` (rows of "
             "other runs are kept; each row records its conversion settings)", "",
             "Each variant converts the same checkpoint with the same 1,024 calibration images of the training part. "
             "Cells: validation % / test % (the variant is chosen on validation at each T; the test column is "
             "read once per row). The census counts the converted graph's nodes by role: spiking neurons, "
             "synaptic layers driven by spikes or by analog values, operator nodes (real-valued functions).", ""]
    for net in dict.fromkeys(r["network"] for r in data["rows"]):
        rows = [r for r in data["rows"] if r["network"] == net]
        ts = sorted({int(t) for r in rows for t in r["per_t"]})
        cmds = list(dict.fromkeys(r["command"] for r in rows if "command" in r))
        lines += [f"## {net}", ""] + ([f"Command: {'; '.join(f'`{c}`' for c in cmds)}", ""] if cmds else []) + [
                  f"ANN: validation {rows[0]['ann_val']:.2f}%, test {rows[0]['ann_test']:.2f}% "
                  f"({rows[0]['test_samples']} test images), {rows[0]['ann_energy_uj']:.3g} uJ/sample", "",
                  "| variant | conversion | test images | ANN test | " + " | ".join(f"T={t}" for t in ts) + " | census | warnings |",
                  "|---|---|---:|---:|" + "---:|" * len(ts) + "---|---|"]
        for r in rows:
            cells = [f"{r['per_t'][str(t)]['val']:.2f} / {r['per_t'][str(t)]['test']:.2f}" if str(t) in r["per_t"]
                     else "-" for t in ts]
            lines.append(f"| {r['variant']} | `{r['conversion']}` | {r['test_samples']} | {r['ann_test']:.2f} | " + " | ".join(cells) +
                         f" | {r['census']} | {'; '.join(r['warnings']) or '-'} |")
        src = next((r for r in reversed(rows) if r.get("ann_levels_t")), None)
        if src:
            levels = src["ann_levels_t"]
            lines += ["", "The QCFS ANN with its quantizers set to L = T levels (the function a QCFS SNN approximates "
                      f"at T; Bu et al. 2022): validation % / test % ({src['val_samples']} validation, "
                      f"{src['test_samples']} test images)", "",
                      "| " + " | ".join(f"T={t}" for t in ts) + " |", "|" + "---:|" * len(ts),
                      "| " + " | ".join(f"{levels[str(t)]['val']:.2f} / {levels[str(t)]['test']:.2f}"
                                        if str(t) in levels else "-" for t in ts) + " |"]
        lines += ["", "Chosen on validation at each T (test % read after the choice, energy per sample):", "",
                  "| T | variant | validation % | test % | energy (uJ) |", "|---:|---|---:|---:|---:|"]
        for t in ts:
            best = max((r for r in rows if str(t) in r["per_t"]), key=lambda r: r["per_t"][str(t)]["val"])
            p = best["per_t"][str(t)]
            lines.append(f"| {t} | {best['variant']} | {p['val']:.2f} | {p['test']:.2f} | {p['energy_uj']:.3g} |")
        lines.append("")
    return "\n".join(lines + footer(data))


if __name__ == "__main__":
    main()
