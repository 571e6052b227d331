"""Quantized and pruned SNNs: accuracy at T=4 and T=8, bits, sparsity, size and SynOps.

    python scripts/bench_quantize.py --model mnist_cnn --dataset mnist --data-dir ../shared/datasets --eval-samples 2000
    python scripts/bench_quantize.py --model resnet20 --dataset cifar10 --weights resnet20_qcfs4_cifar10.pt \
        --eval-samples 2000 --qat-samples 5000 --bf16

Rows: fp32; post-training int8 / int4 / ternary (per-channel, `quantize` pass); quantization-aware
fine-tuned int4 / ternary (`snnconv.training.qat`, STE, then the same pass); the Loihi fixed-point
profile; 50% pruning (magnitude and activity, unstructured, global). Every row is the same
converted pipeline (``--method``: the conversion method of ``snnconv.config.ConversionConfig``;
by default ``qcfs`` for QCFS-trained checkpoints, the trained thresholds, else ``percentile``)
plus the row's pass, simulated on the same test samples. Writes docs/benchmarks/quantize.{json,md},
one section per model/dataset (``--rows`` merges rows into an existing section).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_model_args, load_model_and_data  # noqa: E402

from snnconv.api import ann_accuracy, conversion_pipeline, convert_graph, simulate
from snnconv.config import ConversionConfig, RunConfig
from snnconv.frontends.torch import from_torch
from snnconv.passes import PassContext, Pipeline
from snnconv.passes.quantize import model_size_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    add_model_args(ap)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the QAT fine-tuning")
    ap.add_argument("--eval-samples", type=int, default=2000)
    ap.add_argument("--calib-samples", type=int, default=1024)
    ap.add_argument("--qat-samples", type=int, default=20000, help="training samples for the QAT epoch")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat-lr", type=float, default=0.01)
    ap.add_argument("--timesteps", default="4,8")
    ap.add_argument("--rows", default="all", help="comma-separated row names or 'all'")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ts = [int(t) for t in args.timesteps.split(",")]
    model, shape, source, method, train, test, batches = load_model_and_data(args, args.eval_samples)
    conversion = ConversionConfig(method=method)
    graph, _ = from_torch(model, shape)
    ann, _ = ann_accuracy(graph, test)
    base, _ = convert_graph(graph, batches, conversion_pipeline(conversion))
    print(f"ANN {ann:.2f}% on {len(test)} samples; conversion {method}", flush=True)

    def qat_graph(scheme: str, amount: int, keep_first_last: bool = False, train_bn: bool = False):
        """``scheme`` int/ternary: QAT with ``amount`` bits; ``prune``: magnitude pruning to ``amount`` % sparsity
        + fine-tuning (Han et al. 2015)."""
        from snnconv.training.qat import qat_finetune
        from snnconv.training.sparse import prune_finetune

        m = copy.deepcopy(model)
        kw = dict(epochs=args.qat_epochs, lr=args.qat_lr, augment=not args.dataset.startswith("mnist"),
                  bf16=args.bf16, train_bn=train_bn)
        data = train.subset(args.qat_samples, seed=2)
        m, hist = (prune_finetune(m, data, amount / 100, **kw) if scheme == "prune"
                   else qat_finetune(m, data, scheme, amount, keep_first_last=keep_first_last, **kw))
        g, _ = from_torch(m.eval(), shape)
        hist[-1]["ann_accuracy"] = ann_accuracy(g, test)[0]  # the fine-tuned, quantized ANN on the same samples
        return convert_graph(g, batches, conversion_pipeline(conversion))[0], hist

    rows_spec = [
        ("fp32", None, None), ("int8", {"name": "quantize", "scheme": "int", "bits": 8}, None),
        ("int4", {"name": "quantize", "scheme": "int", "bits": 4}, None),
        ("ternary", {"name": "quantize", "scheme": "ternary"}, None),
        ("int4 QAT", {"name": "quantize", "scheme": "int", "bits": 4}, ("int", 4)),
        ("ternary QAT", {"name": "quantize", "scheme": "ternary"}, ("ternary", 2)),
        # BitNet-style: first and last layer in float, BN statistics re-estimated during QAT
        ("ternary QAT first/last fp32 + BN", {"name": "quantize", "scheme": "ternary", "keep_first_last": True},
         ("ternary", 2, True, True)),
        ("int4 QAT + BN", {"name": "quantize", "scheme": "int", "bits": 4}, ("int", 4, False, True)),
        ("loihi profile", {"name": "quantize", "profile": "loihi", "timesteps": max(ts)}, None),
        ("prune 50% magnitude", {"name": "prune", "sparsity": 0.5, "method": "magnitude"}, None),
        ("prune 50% activity", {"name": "prune", "sparsity": 0.5, "method": "activity"}, None),
        ("prune 50% magnitude + fine-tune", {"name": "prune", "sparsity": 0.5, "method": "magnitude"},
         ("prune", 50, False, True)),
        ("prune 50% magnitude channel", {"name": "prune", "sparsity": 0.5, "method": "magnitude",
                                         "structure": "channel"}, None),
    ]
    wanted = None if args.rows == "all" else set(args.rows.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "quantize.json"
    key = f"{args.model}/{args.dataset}"
    command = "python " + " ".join(sys.argv)

    def save(new_rows: list) -> None:
        """Write the section now (after every row, so an interrupted run keeps the rows it measured)."""
        data = json.loads(jpath.read_text()) if jpath.is_file() else {}
        rows, commands = list(new_rows), [command]
        old = data.get(key)
        if wanted and old and old["samples"] == len(test) and old["timesteps"] == ts:  # merge rows into the section
            rows = [r for r in old["rows"] if r["row"] not in {r2["row"] for r2 in rows}] + rows
            order = [r[0] for r in rows_spec]
            rows.sort(key=lambda r: order.index(r["row"]) if r["row"] in order else 99)
            commands = [c for c in old.get("commands", [old.get("command")]) if c and c != command] + commands
        data[key] = {"ann_accuracy": ann, "samples": len(test), "timesteps": ts, "weights": source.get("weights"),
                     "conversion": {"method": method, "pipeline": RunConfig(conversion=conversion).pipeline_spec()},
                     "rows": rows, "commands": commands, "date": time.strftime("%Y-%m-%d")}
        jpath.write_text(json.dumps(data, indent=2))
        render(data, out / "quantize.md")

    rows = []
    for label, spec, qat in rows_spec:
        if wanted and label not in wanted:
            continue
        t0 = time.time()
        src, hist = (qat_graph(*qat) if qat else (base, None))
        ctx = PassContext(calibration=batches)
        snn = Pipeline.from_config([spec]).run(src, ctx) if spec else src
        st = simulate(snn, test, max(ts), 250, layer_error=False)
        acc, syn = st.accuracy(), st.synops_per_sample()
        q = snn.meta.get("quantization", {})
        size = model_size_bytes(snn)
        row = {"row": label, "pass": spec, "accuracy": {str(t): acc[t - 1] for t in ts},
               "synops": {str(t): syn[t - 1] for t in ts}, "bits": q.get("bits", 32),
               "sparsity": 1 - size["nonzero_weights"] / size["weights"], "size_kib": size["bytes"] / 1024,
               "seconds": round(time.time() - t0, 1)}
        if hist:
            row["qat"] = hist
        if "fixed_point" in q:
            row["fixed_point"] = q["fixed_point"]
        if "pruning" in snn.meta:
            row["achieved_sparsity"] = snn.meta["pruning"]["achieved"]
        rows.append(row)
        print(label, " ".join(f"T{t}={acc[t - 1]:.2f}" for t in ts), f"size {row['size_kib']:.1f} KiB",
              f"sparsity {row['sparsity']:.3f}", flush=True)
        save(rows)


def render(data: dict, path: Path) -> None:
    lines = ["# Quantized and pruned SNNs", "",
             "Each row: the section's conversion (BN folding, IF neurons, v_init = theta/2, direct input; thresholds "
             "at the 99.9th percentile per channel for `percentile`, the trained clip levels for `qcfs`) followed by "
             "the row's pass; simulated on the same test samples. `bits` is the stored "
             "weight width (ternary = 1.58 bits of information, stored in 2); size counts weights at their bits plus "
             "fp32 scales and biases. QAT rows fine-tune the ANN with a straight-through estimator first "
             "(`snnconv.training.qat`, BN statistics frozen). SynOps per sample at the largest T. Size counts pruned "
             "weights densely (no sparse format). Pruning is applied to the converted SNN without fine-tuning. "
             "Test samples: the seeded subset named in each section (the full 10k test sets were not run: the "
             "benchmarks share a 2-core machine with training jobs). "
             "Percentages in parentheses: difference to fp32 on the same samples.", ""]
    for key, d in data.items():
        ts = d["timesteps"]
        conv = d.get("conversion", {"method": "percentile"})
        cmds = d.get("commands") or [d["command"]]
        lines += [f"## {key}", "", "Command(s): " + "; ".join(f"`{c}`" for c in cmds) +
                  f" ({d['samples']} test samples, {d['date']}); weights `{Path(d['weights'] or '-').name}`, "
                  f"conversion `{conv['method']}`; ANN accuracy **{d['ann_accuracy']:.2f}%** on the same samples.", "",
                  "| row | bits | sparsity | size KiB | " + " | ".join(f"SNN T={t}" for t in ts) +
                  f" | SynOps T={ts[-1]} |", "|---|---:|---:|---:|" + "---:|" * len(ts) + "---:|"]
        fp = next((r for r in d["rows"] if r["row"] == "fp32"), None)
        for r in d["rows"]:
            accs = []
            for t in ts:
                a = r["accuracy"][str(t)]
                delta = f" ({a - fp['accuracy'][str(t)]:+.2f})" if fp and r is not fp else ""
                accs.append(f"{a:.2f}{delta}")
            lines.append(f"| {r['row']} | {r['bits']} | {r['sparsity']:.3f} | {r['size_kib']:.1f} | "
                         + " | ".join(accs) + f" | {r['synops'][str(ts[-1])]:.3g} |")
        fx = next((r for r in d["rows"] if "fixed_point" in r), None)
        if fx:
            lines += ["", "Loihi profile, per neuron layer: threshold bits (max 17) and membrane bits needed over "
                      f"T={ts[-1]} by the static bound (max 24): " +
                      ", ".join(f"{k}: {v.get('threshold_bits')}/{v.get('state_bits_needed')}"
                                for k, v in fx["fixed_point"].items() if v.get("snapped")) + "."]
        qat = [r for r in d["rows"] if "qat" in r]
        if qat:
            lines += ["", "QAT fine-tuning: " + "; ".join(
                f"{r['row']}: " + ", ".join(f"epoch {h['epoch']} loss {h['loss']:.3f} ({h['seconds']} s"
                                            + (f"; fine-tuned ANN {h['ann_accuracy']:.2f}%" if "ann_accuracy" in h else "")
                                            + ")" for h in r["qat"]) for r in qat) + "."]
        lines += [""] + checks(d) + [""]
    path.write_text("\n".join(lines) + "\n")


def checks(d: dict) -> list[str]:
    """Issue 5's checks under the table: int8 within 0.3 points of fp32; the cost of the other rows."""
    rows = {r["row"]: r for r in d["rows"]}
    fp = rows.get("fp32")
    if not fp:
        return []
    out = []
    for label, tol in (("int8", 0.3), ("int4", None), ("ternary", None), ("int4 QAT", None), ("ternary QAT", None),
                       ("prune 50% magnitude", None), ("prune 50% activity", None)):
        r = rows.get(label)
        if not r:
            continue
        gaps = {t: r["accuracy"][str(t)] - fp["accuracy"][str(t)] for t in d["timesteps"]}
        text = ", ".join(f"{g:+.2f} at T={t}" for t, g in gaps.items())
        verdict = "" if tol is None else (f" -> within {tol}: met" if all(g >= -tol for g in gaps.values())
                                          else f" -> within {tol}: NOT met")
        out.append(f"- {label}: {text}{verdict}")
    return ["Accuracy vs the fp32 SNN (points, same samples):", ""] + out if out else []


if __name__ == "__main__":
    main()
