"""Run reports: ``report.json`` (machine-readable source), ``report.md`` and ``accuracy_vs_T.png``."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_accuracy(out / "accuracy_vs_T.png", report)
    (out / "report.md").write_text(markdown(report))


def plot_accuracy(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [int(t) for t in report["snn_accuracy"]]
    accs = [report["snn_accuracy"][str(t)] for t in ts]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(ts, accs, "o-", label="SNN")
    if report.get("ann_accuracy") is not None:
        ax.axhline(report["ann_accuracy"], color="gray", ls="--", label=f"ANN {report['ann_accuracy']:.2f}%")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{report['model']} on {report['dataset']} ({report['conversion']['method']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(r: dict) -> str:
    lines = [f"# snnconv report: {r['model']} on {r['dataset']}", "",
             f"- samples evaluated: {r['samples']}; calibration samples: {r['calib_samples']}",
             f"- conversion: {json.dumps(r['conversion'])}",
             f"- input encoding: {r.get('encoding', 'direct')} (first layer counted as {r.get('first_layer_ops', 'MAC')})",
             f"- ANN accuracy: {r['ann_accuracy']:.2f}%", "",
             "| T | SNN acc (%) | gap to ANN | SynOps/sample | MACs/sample | energy (uJ/sample) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for t, acc in r["snn_accuracy"].items():
        e = r["energy"][t]
        lines.append(f"| {t} | {acc:.2f} | {acc - r['ann_accuracy']:+.2f} | {e['synops']:.3g} | {e['macs']:.3g} | "
                     f"{e['energy_uj']:.3g} |")
    lines += ["", f"ANN energy estimate: {r['ann_energy_uj']:.3g} uJ/sample ({r['ann_macs']:.3g} MACs at 4.6 pJ); "
              "SNN: 0.9 pJ per SynOp, 4.6 pJ per MAC of layers fed by the analog input.", "",
              f"## Per-layer statistics at T={r['max_T']}", "",
              "| layer | firing rate (spikes/neuron/step) | rel. error vs ANN |", "|---|---:|---:|"]
    for name, rate in r["firing_rates"].items():
        lines.append(f"| {name} | {rate:.4f} | {r['layer_error'].get(name, float('nan')):.4f} |")
    lines += ["", "## Passes", ""] + [f"- **{p['pass']}**: {p['message']}" for p in r["passes"]]
    lines += ["", "## Op coverage", "", r.get("coverage", ""), "", "## Environment", "",
              "```", json.dumps(r["environment"], indent=2), "```", ""]
    return "\n".join(lines)
