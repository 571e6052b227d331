"""Run reports: ``report.json`` (machine-readable source), ``report.md``, ``accuracy_vs_T.png`` and a
self-contained ``report.html`` (every plot embedded as a base64 PNG, no external files or scripts).

Everything shown is rendered from the report dict, so ``report.html`` can be rebuilt from a saved
``report.json`` with :func:`write_html`. :func:`comparison_html` renders one page across the items
of a batch (``snnconv batch``).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


def write_report(out: Path, report: dict, html_page: bool = True) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_accuracy(out / "accuracy_vs_T.png", report)
    (out / "report.md").write_text(markdown(report))
    if html_page:
        write_html(out / "report.html", report)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers and CI), imported on first use
    so that commands without plots do not pay for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    """A figure as a base64 PNG ``<img>`` tag (closes the figure)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    pyplot().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def metric_curve(r: dict) -> tuple[str, dict, list | None]:
    """The per-T score of a report, whatever its task: ``(metric, {T: value}, value at every t or None)``.
    Classification reports top-1 accuracy; embedding (hf:) runs the cosine of ANN and SNN embeddings."""
    if r.get("snn_accuracy") is not None:
        return "accuracy (%)", r["snn_accuracy"], r.get("snn_accuracy_all_t")
    if r.get("cosine") is not None:
        return "cosine", r["cosine"], r.get("cosine_all_t")
    return "-", {}, None


def _accuracy_axes(ax, report: dict, label: str = "SNN", with_ann: bool = True) -> None:
    metric, curve, all_t = metric_curve(report)
    ts = [int(t) for t in curve]
    if all_t:
        ax.plot(range(1, len(all_t) + 1), all_t, "-", lw=1.2, alpha=0.6,
                label=None if label != "SNN" else "SNN (every t)")
    line = ax.plot(ts, [curve[str(t)] for t in ts], "o", label=label)[0]
    if with_ann and report.get("ann_accuracy") is not None:
        ax.axhline(report["ann_accuracy"], color=line.get_color() if label != "SNN" else "gray", ls="--", lw=0.9,
                   label=f"ANN {report['ann_accuracy']:.2f}%" if label == "SNN" else None)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("top-1 accuracy (%)" if metric.startswith("acc") else "cosine(ANN, SNN)")
    ax.grid(alpha=0.3)


def plot_accuracy(path: Path, report: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _accuracy_axes(ax, report)
    ax.set_title(f"{report['model']} on {report['dataset']} ({report.get('conversion', {}).get('method', '')})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _layer_bars(values: dict[str, float], xlabel: str, log: bool = False):
    plt = pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(6.5, max(2.0, 0.28 * len(names) + 0.8)))
    ax.barh(range(len(names)), [values[n] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    if log and any(v > 0 for v in values.values()):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    return fig


def _energy_plot(r: dict):
    plt = pyplot()
    ts = [int(t) for t in r["energy"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ts, [r["energy"][str(t)]["synops"] for t in ts], "o-", label="SynOps")
    a1.plot(ts, [r["energy"][str(t)]["macs"] for t in ts], "s-", label="MACs (analog-input layers)")
    if r.get("ann_macs"):
        a1.axhline(r["ann_macs"], color="gray", ls="--", label="ANN MACs")
    a1.set_ylabel("operations / sample")
    a2.plot(ts, [r["energy"][str(t)]["energy_uj"] for t in ts], "o-", color="tab:green", label="SNN")
    if r.get("ann_energy_uj"):
        a2.axhline(r["ann_energy_uj"], color="gray", ls="--", label="ANN")
    a2.set_ylabel("energy (uJ / sample)")
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xticks(ts, [str(t) for t in ts])
        a.set_xlabel("timesteps T")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return fig


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;
font-size:.8em}img{max-width:100%}.fail{color:#b00}.ok{color:#070}"""


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    def cell(tag, i, v):
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{v if isinstance(v, str) and v.startswith('<') else html.escape(str(v))}</{tag}>"
    out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows]
    return "\n".join(out) + "</table>"


def html_report(r: dict) -> str:
    """The per-run page: accuracy vs T, per-layer firing rates and ANN-vs-SNN error, SynOps/energy per T,
    passes, op coverage, config and environment."""
    plt = pyplot()
    title = f"snnconv report: {r['model']} on {r['dataset']}"
    ann = r.get("ann_accuracy")
    ann_text = f"ANN accuracy <b>{ann:.2f}%</b>" if ann is not None else f"metric: {html.escape(r.get('metric', ''))}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{r['samples']} test samples, {r['calib_samples']} calibration samples; input encoding "
            f"{html.escape(str(r.get('encoding', 'direct')))}; {ann_text}; "
            f"max T = {r['max_T']}; run time {r.get('seconds')} s.</p>"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _accuracy_axes(ax, r)
    ax.legend()
    header, rows = _per_t_rows(r, ".4g")
    body += [f"<h2>{'Accuracy' if ann is not None else 'Cosine(ANN, SNN)'} vs T</h2>", _png(fig), _table(header, rows)]
    ann_ops = (f"ANN: {r['ann_macs']:.4g} MACs/sample, {r['ann_energy_uj']:.4g} uJ/sample at 4.6 pJ/MAC; "
               if r.get("ann_macs") else "")
    body += ["<h2>SynOps and energy per T</h2>", _png(_energy_plot(r)),
             f"<p>{ann_ops}SNN: 0.9 pJ per SynOp (accumulate), 4.6 pJ per MAC of layers fed by the analog input "
             "(45 nm CMOS, Horowitz ISSCC 2014).</p>"]
    rates, errs = r.get("firing_rates", {}), r.get("layer_error", {})
    body.append(f"<h2>Per-layer statistics at T={r['max_T']}</h2>")
    if rates:
        body += ["<h3>Firing rate (spikes / neuron / step)</h3>", _png(_layer_bars(rates, "firing rate"))]
    if errs:
        body += ["<h3>Relative L2 error of the SNN rate vs the ANN activation</h3>",
                 _png(_layer_bars(errs, "relative error (log scale)", log=True))]
    body.append(_table(["layer", "firing rate", "rel. error vs ANN"],
                       [[n, f"{rates[n]:.4f}", f"{errs[n]:.4f}" if n in errs else "-"] for n in rates]))
    if r.get("spiking_census"):
        body += ["<h2>Spiking census</h2>", _table(["node", "kind", "role"], [
            [html.escape(c["node"]), html.escape(str(c.get("kind", ""))), html.escape(c["role"])]
            for c in r["spiking_census"]], left=3)]
    body += ["<h2>Passes</h2>", "<ul>" + "".join(
        f"<li><b>{html.escape(p['pass'])}</b>: {html.escape(p['message'])}</li>" for p in r.get("passes", [])) + "</ul>"]
    if r.get("coverage"):
        body += ["<h2>Op coverage</h2>", f"<pre>{html.escape(r['coverage'])}</pre>"]
    body += ["<h2>Config</h2>", f"<pre>{html.escape(json.dumps(r.get('config', {}), indent=2))}</pre>",
             "<h2>Environment</h2>", f"<pre>{html.escape(json.dumps(r.get('environment', {}), indent=2))}</pre>"]
    return _page(title, body)


def write_html(path: Path, report: dict) -> None:
    Path(path).write_text(html_report(report))


def comparison_html(summary: dict) -> str:
    """One page across the items of a batch: status table, metric-vs-T overlay, energy at max T.

    Items are batch summaries (``snnconv.batch``): ``report`` holds ``metric`` (accuracy or, for
    transformer runs, cosine), ``curve`` {T: value} and ``curve_all_t``."""
    plt = pyplot()
    items = summary["items"]
    done = [it for it in items if it.get("report") and it["report"].get("curve")]
    ts = sorted({int(t) for it in done for t in it["report"]["curve"]})
    title = f"snnconv batch: {len(items)} item(s)"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{summary.get('ok', 0)} finished, {summary.get('failed', 0)} failed, "
            f"{summary.get('skipped', 0)} skipped (resumed).</p>"]
    fmt = lambda v, spec=".2f": "-" if v is None else format(v, spec)  # noqa: E731
    rows = []
    for it in items:
        r = it.get("report")
        status = f'<span class="{"fail" if it["status"] == "failed" else "ok"}">{html.escape(it["status"])}</span>'
        link = f'<a href="{html.escape(it["name"])}/report.html">{html.escape(it["name"])}</a>' if r else html.escape(it["name"])
        if r:
            curve, spec = r.get("curve") or {}, ".2f" if str(r.get("metric", "")).startswith("acc") else ".4f"
            e = ((r.get("energy") or {}).get(str(r.get("max_T"))) or {}).get("energy_uj")
            rows.append([link, status, str(r.get("model")), str(r.get("dataset")), str(r.get("metric", "-")),
                         fmt(r.get("ann_accuracy")), *[fmt(curve.get(str(t)), spec) for t in ts], fmt(e, ".4g"),
                         str(r.get("seconds", "-"))])
        else:
            rows.append([link, status, "-", "-", "-", "-", *(["-"] * len(ts)), "-",
                         html.escape(it.get("error", ""))[:300]])
    body.append(_table(["item", "status", "model", "dataset", "metric", "ANN acc", *[f"T={t}" for t in ts],
                        "energy uJ @ max T", "seconds / error"], rows, left=5))
    for metric in dict.fromkeys(it["report"].get("metric") for it in done):
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for it in done:
            r = it["report"]
            if r.get("metric") != metric:
                continue
            tt = sorted(int(t) for t in r["curve"])
            line = ax.plot(tt, [r["curve"][str(t)] for t in tt], "o", label=it["name"])[0]
            if r.get("curve_all_t"):
                ax.plot(range(1, len(r["curve_all_t"]) + 1), r["curve_all_t"], "-", lw=1, alpha=0.6,
                        color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.set_xlabel("timesteps T")
        ax.set_ylabel(str(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        body += [f"<h2>{html.escape(str(metric))} vs T</h2>", _png(fig)]
    failed = [it for it in items if it["status"] == "failed"]
    if failed:
        body += ["<h2>Failures</h2>", "<ul>" + "".join(
            f"<li><b>{html.escape(it['name'])}</b> ({html.escape(it.get('config_file', ''))}): "
            f"<code>{html.escape(it.get('error', ''))}</code></li>" for it in failed) + "</ul>"]
    return _page(title, body)


def _per_t_rows(r: dict, spec: str = ".3g") -> tuple[list[str], list[list[str]]]:
    """The per-T table of a report (any task): header and rows of score, gap, SynOps, MACs and energy."""
    metric, curve, _ = metric_curve(r)
    ann = r.get("ann_accuracy")
    header = (["T", "SNN acc (%)", "gap to ANN"] if metric.startswith("acc") else ["T", "cosine(ANN, SNN)"]) + [
        "SynOps/sample", "MACs/sample", "energy (uJ/sample)"]
    rows = []
    for t, v in curve.items():
        e = (r.get("energy") or {}).get(t, {})
        score = [f"{v:.2f}", f"{v - ann:+.2f}"] if metric.startswith("acc") else [f"{v:.4f}"]
        rows.append([t, *score, *(format(e[k], spec) if k in e else "-" for k in ("synops", "macs", "energy_uj"))])
    return header, rows


def markdown(r: dict) -> str:
    header, rows = _per_t_rows(r)
    ann = r.get("ann_accuracy")
    lines = [f"# snnconv report: {r['model']} on {r['dataset']}", "",
             f"- samples evaluated: {r['samples']}; calibration samples: {r['calib_samples']}"
             + (f"; padded length {r['seq_len']} tokens" if r.get("seq_len") else ""),
             f"- conversion: {json.dumps(r['conversion'])}",
             f"- input encoding: {r.get('encoding', 'direct')} (first layer counted as {r.get('first_layer_ops', 'MAC')})",
             f"- ANN accuracy: {ann:.2f}%" if ann is not None else f"- metric: {r.get('metric', '-')}",
             *_spike_lines(r.get("spikes")),
             *[f"- **warning**: {w}" for w in r.get("warnings", [])], "",
             "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    ann_energy = (f"ANN energy estimate: {r['ann_energy_uj']:.3g} uJ/sample ({r['ann_macs']:.3g} MACs at 4.6 pJ); "
                  if r.get("ann_macs") else "")
    lines += ["", ann_energy + "SNN: 0.9 pJ per SynOp, 4.6 pJ per MAC of layers fed by the analog input.", "",
              f"## Per-layer statistics at T={r['max_T']}", "",
              "| layer | firing rate (spikes/neuron/step) | rel. error vs ANN |", "|---|---:|---:|"]
    errors = r.get("layer_error") or {}
    for name, rate in r["firing_rates"].items():
        lines.append(f"| {name} | {rate:.4f} | {errors.get(name, float('nan')):.4f} |")
    if r.get("spiking_census"):
        from snnconv.passes.spiking_transformer import census_markdown

        lines += ["", "## Spiking census", "", "Which nodes are spiking neurons and which are operator nodes "
                  "(real-valued functions of accumulated inputs, accumulate-and-difference coding):", "",
                  census_markdown(r["spiking_census"])]
    lines += ["", "## Passes", ""] + [f"- **{p['pass']}**: {p['message']}" for p in r["passes"]]
    lines += ["", "## Op coverage", "", r.get("coverage", ""), "", "## Environment", "",
              "```", json.dumps(r["environment"], indent=2), "```", ""]
    return "\n".join(lines)


def _spike_lines(spikes: dict | None) -> list[str]:
    """Mark graphs whose spikes are graded (multi-level) or signed, and what hardware must support."""
    if not spikes:
        return []
    graded = f"yes, max {spikes['max_levels']} levels per step" if spikes["graded"] else "no (binary)"
    lines = [f"- graded spikes: {graded}; signed spikes: {'yes' if spikes['signed'] else 'no'}; "
             f"hardware must support: {spikes['hardware']}"]
    if spikes.get("frameworks"):
        lines.append("- " + framework_line(spikes["frameworks"]))
    return lines


def framework_line(fit: dict[str, list[str]]) -> str:
    """One line from :func:`snnconv.api.framework_fit`: which deployment targets run the neurons as converted."""
    runs = [k for k, missing in fit.items() if not missing]
    refused = [f"{k} (no {', '.join(missing)})" for k, missing in fit.items() if missing]
    return (f"frameworks whose own neurons run these neurons as converted: {', '.join(runs) or 'none'}"
            + (f"; not: {'; '.join(refused)}" if refused else "") + " (check the exported file with `snnconv verify`"
            + ("; --target <framework> converts with the best recipe it runs" if refused else "") + ")")


def environment() -> dict:
    """Versions and machine of a run (recorded in every report and benchmark row)."""
    import platform
    import sys

    import numpy
    import torch

    from snnconv import __version__
    return {"snnconv": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "threads": torch.get_num_threads()}
