#!/usr/bin/env python
"""Generality (issue 18): the networks people bring, in one page with its verdicts.

Measures the op round trips here (every op network of ``tests/helpers.OP_NETS``: exported to ONNX, ingested
through both frontends, compared with the module and ONNX Runtime, converted and simulated), and gathers the
trained-network results that other benches measured, each with its own command:

- the decoder LM (``docs/benchmarks/decoder_lm.json``, ``scripts/bench_decoder_lm.py``),
- the SiLU CNN (``docs/benchmarks/silu.json``, ``scripts/bench_variants.py``),
- the max-pool VGG-11 (``docs/benchmarks/maxpool.json``, ``scripts/bench_variants.py``).

    python scripts/bench_generality.py

writes docs/benchmarks/generality.json and .md. Where a choice is needed (the conversion variant and the T
reported for the CNNs) it is made on the validation columns of those pages; the test column is then read.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from benchlib import REPO, environment_block, save  # noqa: E402
from helpers import OP_NETS, torch_to_onnx  # noqa: E402

from snnconv.api import conversion_pipeline, convert_graph  # noqa: E402
from snnconv.frontends.onnx import from_onnx, onnxruntime_run  # noqa: E402
from snnconv.frontends.torch import from_torch  # noqa: E402
from snnconv.runtime.interpreter import run_ann  # noqa: E402
from snnconv.runtime.simulator import Simulator  # noqa: E402

BENCH = REPO / "docs" / "benchmarks"


def op_row(name: str, make, shape: tuple, timesteps: int, folder: Path) -> dict:
    """One op network through both frontends, ONNX Runtime and the SNN (random weights, seeded inputs)."""
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(8, *shape)
    with torch.no_grad():
        want = m(x)
    path = torch_to_onnx(m, shape, folder / f"{name.replace('+', '_')}.onnx")
    import onnx

    ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
    graphs = {"pytorch": from_torch(m, shape)[0], "onnx": from_onnx(path, shape)[0]}
    calib = [torch.randn(128, *shape, generator=torch.Generator().manual_seed(1))]
    row = {"network": name, "onnx_ops": ops, "timesteps": timesteps,
           "onnxruntime_vs_module": float(np.abs(onnxruntime_run(path, x)[0] - want.numpy()).max())}
    outs = {}
    for path_name, g in graphs.items():
        row[f"{path_name}_ann_vs_module"] = float((run_ann(g, x) - want).abs().max())
        snn, _ = convert_graph(g, calib, conversion_pipeline())
        outs[path_name] = Simulator(snn, timesteps, collect_stats=False).run(x)[-1]
        row[f"{path_name}_snn_rel_error"] = float((outs[path_name] - want).abs().max() / want.abs().max())
        row[f"{path_name}_kinds"] = snn.kinds()
    row["snn_paths_max_diff"] = float((outs["pytorch"] - outs["onnx"]).abs().max())
    row["ok"] = (row["onnxruntime_vs_module"] < 1e-4 and row["pytorch_ann_vs_module"] < 1e-4
                 and row["onnx_ann_vs_module"] < 1e-4 and row["pytorch_snn_rel_error"] < 0.05)
    return row


def read(name: str) -> dict | None:
    path = BENCH / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def decoder_section(d: dict | None) -> list[str]:
    if not d:
        return ["## Decoder LM", "", "Not measured yet (`python scripts/bench_decoder_lm.py`).", ""]
    r = d["rows"][0]
    lines = ["## Decoder LM (GPT-2 trained here on offline English text)", "",
             f"From [decoder_lm.md](decoder_lm.md), command `{d['command']}`: {r['model']}, validation loss "
             f"{r['val_loss']:.3f} (checkpoint chosen on it), {r['test_windows']} test windows; ANN perplexity "
             f"{r['ann_perplexity']:.3f}, ANN energy {r.get('ann_energy_uj', float('nan')):.3g} uJ / sequence "
             "(the SNN's attention matmuls, operator nodes, priced as MACs at every step; elementwise operators unpriced "
             "on both sides: see that page).", "",
             "| T | agreement (%) | SNN perplexity | perplexity vs ANN | energy (uJ) | agreement >= 95 and perplexity within 5 % |",
             "|---:|---:|---:|---:|---:|---|"]
    met = []
    for t, p in sorted(r["per_t"].items(), key=lambda kv: int(kv[0])):
        rel = p["perplexity"] / r["ann_perplexity"] - 1
        ok = p["next_token_agreement"] >= 95 and abs(rel) <= 0.05
        met += [int(t)] if ok and int(t) <= 16 else []
        lines.append(f"| {t} | {p['next_token_agreement']:.2f} | {p['perplexity']:.3f} | {100 * rel:+.2f} % | "
                     f"{p['energy_uj']:.3g} | {'yes' if ok else 'no'} |")
    lines += ["", "Target (agreement >= 95 %, perplexity within 5 % at some T <= 16): "
              + (f"met at T = {', '.join(map(str, met))} (every T is reported; none is chosen)" if met else "NOT met"), ""]
    return lines


def chosen_on_validation(rows: list[dict], tol: float, fixed_t: int | None = None) -> tuple[dict, str, float] | None:
    """On the validation columns: at ``fixed_t``, the variant closest to its ANN; otherwise the smallest T
    (then the best variant) within ``tol`` of its ANN. Returns (row, T, test gap) or None."""
    cands = []
    for r in rows:
        for t, p in r["per_t"].items():
            if p.get("val") is None or r.get("ann_val") is None:
                continue
            if fixed_t is not None and int(t) == fixed_t:
                cands.append((0, r["ann_val"] - p["val"], r["variant"], r, t))
            elif fixed_t is None and p["val"] >= r["ann_val"] - tol:
                cands.append((int(t), -p["val"], r["variant"], r, t))
    if not cands:
        return None
    *_, r, t = min(cands, key=lambda c: c[:3])
    return r, t, r["per_t"][t]["test"] - r["ann_test"]


def cnn_section(title: str, page: str, d: dict | None, tol: float, t_max: int, what: str,
                fixed_t: int | None = None, judged: set[str] | None = None) -> list[str]:
    """One trained-network section; only rows of the ``judged`` networks (default: all) can meet the target
    (the max-pool target is judged on max-pool networks, the average-pool rows are its baseline)."""
    lines = [f"## {title}", ""]
    if not d:
        return lines + [f"Not measured yet (see `scripts/bench_variants.py`; page {page}.md).", ""]
    cmds = list(dict.fromkeys(r.get("command", d["command"]) for r in d["rows"]))
    ts = sorted({int(t) for r in d["rows"] for t in r["per_t"]})
    lines += [f"From [{page}.md]({page}.md), command(s): {'; '.join(f'`{c}`' for c in cmds)}.", "",
              "| network | variant | conversion | ANN val / test | " + " | ".join(f"T={t}" for t in ts) + " | census |",
              "|---|---|---|---|" + "---:|" * len(ts) + "---|"]
    for r in d["rows"]:
        cells = [f"{r['per_t'][str(t)]['val']:.2f} / {r['per_t'][str(t)]['test']:.2f}" if str(t) in r["per_t"] else "-"
                 for t in ts]
        lines.append(f"| {r['network']} | {r['variant']} | `{r['conversion']}` | {r['ann_val']:.2f} / {r['ann_test']:.2f} | "
                     + " | ".join(cells) + f" | {r.get('census', '')} |")
    rows = [r for r in d["rows"] if judged is None or r["network"] in judged]
    pick = chosen_on_validation(rows, tol, fixed_t) if rows else None
    lines.append("")
    if not rows:
        lines.append(f"Target ({what}): not measured yet: no row of {', '.join(sorted(judged))} (the rows above are "
                     "the baseline).")
    elif pick is None or int(pick[1]) > t_max:
        lines.append(f"Target ({what}): NOT met: no variant is within {tol} point of its ANN on validation at "
                     f"T <= {t_max}." if fixed_t is None else f"Target ({what}): not measured at T={fixed_t} yet.")
    else:
        r, t, gap = pick
        lines.append(f"Target ({what}): chosen on validation: `{r['variant']}` at T={t} (validation "
                     f"{r['per_t'][t]['val']:.2f} vs ANN {r['ann_val']:.2f}); test {r['per_t'][t]['test']:.2f} vs ANN "
                     f"{r['ann_test']:.2f}: gap {gap:+.2f} -> " + ("met" if gap >= -tol else "NOT met"))
    return lines + [""]


def markdown(data: dict) -> str:
    lines = ["# Generality: decoder LMs, SiLU CNNs, max-pool nets and the ops around them", "",
             f"Command: `{data['command']}` (op round trips measured by it; the trained-network sections read the "
             "pages named in them, each with its own command).", ""]
    lines += decoder_section(read("decoder_lm"))
    lines += cnn_section("SiLU CNN (MobileNet-style: depthwise conv, SiLU, squeeze-excitation), CIFAR-10", "silu",
                         read("silu"), 1.0, 16, "SNN within 1 point of its ANN at some T <= 16")
    lines += cnn_section("Max-pool VGG-11, CIFAR-10: max-pool conversion methods and average pooling", "maxpool",
                         read("maxpool"), 1.0, 16, "SNN within 1 point of its ANN at T = 16 with the best max-pool method",
                         fixed_t=16, judged={"vgg11_maxpool_L16", "vgg11_maxpool_L4"})
    lines += ["## Ops through both frontends (random weights: parity, not accuracy)", "",
              "Each network is exported with `torch.onnx.export` (opset 17), ingested by the PyTorch and the ONNX "
              "frontend, run as an ANN and compared with the module (max abs difference) and with ONNX Runtime; then "
              "converted by the default pipeline (128 random calibration inputs) and simulated for T steps: relative "
              "error of the SNN readout to the module (max abs / max |ANN|), and the largest difference between the "
              "SNNs of the two paths.", "",
              "| network | ONNX ops | ORT vs module | PyTorch IR vs module | ONNX IR vs module | SNN rel. error (T) | "
              "SNN PyTorch vs ONNX path | ok |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['network']} | {', '.join(r['onnx_ops'])} | {r['onnxruntime_vs_module']:.1e} | "
                     f"{r['pytorch_ann_vs_module']:.1e} | {r['onnx_ann_vs_module']:.1e} | "
                     f"{r['pytorch_snn_rel_error']:.3f} ({r['timesteps']}) | {r['snn_paths_max_diff']:.1e} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    lines += ["", "Target (every op round-trips through both frontends and matches the ANN): "
              + ("met" if data["rows"] and all(r["ok"] for r in data["rows"]) else "NOT met"), ""]
    return "\n".join(lines + environment_block(data["environment"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=64, help="T of the op networks' SNNs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(BENCH / "generality"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [op_row(name, make, shape, args.timesteps, Path(tmp)) for name, (make, shape) in OP_NETS.items()]
    save(args.out, rows, key=lambda r: r["network"], markdown=markdown, script="bench_generality.py", data_dir=None)


if __name__ == "__main__":
    main()
