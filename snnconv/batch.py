"""``snnconv batch``: many conversion runs from YAML files and sweep grids, one artifacts folder each.

Items
    Every YAML file given is one item (a run config, see ``configs/templates/base_config.yaml``),
    unless it has a top-level ``sweep:`` mapping: then it is a *sweep file* whose other keys (on
    top of ``base_config: <path>``, relative to the file, when given) are the base config and
    ``sweep`` is a grid ``{dotted.key: [values, ...]}``; every combination is one item, named
    ``<file stem>-<key>=<value>-...``. ``--set key=value`` overrides apply to every item last.

Running
    Each item runs :func:`snnconv.api.run_convert` into ``<batch dir>/<item name>/`` (written
    atomically, so an interrupted item leaves no folder). A failing item (bad config, missing
    weights, unsupported op, any exception) is recorded with its one-line error and the batch goes
    on. ``resume=True`` skips items whose folder holds a ``report.json`` made from the same config.
    ``jobs > 1`` runs items in that many worker processes (spawned; torch threads split between them).

Summary
    ``summary.json`` (per item: status, error, key results), ``summary.md`` (the same as a table)
    and ``index.html`` (comparison page: table with links to each ``report.html``, accuracy-vs-T
    overlay, failures) in the batch dir.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import multiprocessing
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from snnconv.config import RunConfig, load_config, read_yaml
from snnconv.errors import SnnconvError
from snnconv.output import prepare_batch_dir, write_text_atomic
from snnconv.progress import progress
from snnconv.report import metric_curve


@dataclass
class BatchItem:
    name: str
    config_file: str
    values: dict = field(default_factory=dict)  # raw config values (sweep point and overrides applied)
    error: str | None = None  # set when the item could not even be expanded / validated


def set_dotted(values: dict, key: str, value, where: str) -> None:
    """``values["a"]["b"] = value`` for ``key="a.b"`` (creating mappings on the way)."""
    parts = key.split(".")
    d = values
    for i, p in enumerate(parts[:-1]):
        nxt = d.get(p)
        if nxt is None:
            nxt = d[p] = {}
        if not isinstance(nxt, dict):
            raise SnnconvError(f"{where}: key '{'.'.join(parts[:i + 1])}' is not a mapping, cannot set '{key}'")
        d = nxt
    d[parts[-1]] = value


def parse_sets(sets: list[str] | None) -> dict[str, object]:
    """``["eval_samples=100", "timesteps=[1,2]"]`` -> ``{"eval_samples": 100, "timesteps": [1, 2]}`` (YAML values)."""
    out = {}
    for s in sets or []:
        if "=" not in s:
            raise SnnconvError(f"--set {s!r}: expected KEY=VALUE (e.g. eval_samples=100 or conversion.percentile=99.99)")
        k, v = s.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise SnnconvError(f"--set {s!r}: the value is not valid YAML") from None
    return out


def _slug(v) -> str:
    s = json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else v
    return re.sub(r"[^A-Za-z0-9.,_+-]+", "_", s).strip("_")[:40]


def expand(paths: list[str | Path], overrides: dict | None = None) -> list[BatchItem]:
    """The batch items of config / sweep files, in order; unreadable or invalid files become failed items."""
    items: list[BatchItem] = []
    for path in paths:
        path = Path(path)
        try:
            data = read_yaml(path)
            if "sweep" not in data:
                points = [(path.stem, dict(data))]
            else:
                points = _sweep_points(path, data)
        except SnnconvError as e:
            items.append(BatchItem(path.stem, str(path), error=str(e)))
            continue
        for name, values in points:
            item = BatchItem(name, str(path), values)
            try:
                for k, v in (overrides or {}).items():
                    set_dotted(item.values, k, v, "--set")
                validate(item)
            except SnnconvError as e:
                item.error = str(e)
            items.append(item)
    seen: dict[str, int] = {}
    for it in items:  # unique folder names
        if it.name in seen:
            seen[it.name] += 1
            it.name = f"{it.name}-{seen[it.name]}"
        else:
            seen[it.name] = 1
    return items


def _sweep_points(path: Path, data: dict) -> list[tuple[str, dict]]:
    grid = data.pop("sweep")
    if not isinstance(grid, dict) or not grid:
        raise SnnconvError(f"{path}: key 'sweep' expects a mapping of keys to lists of values, got {grid!r}")
    base: dict = {}
    if "base_config" in data:
        ref = data.pop("base_config")
        if not isinstance(ref, str):
            raise SnnconvError(f"{path}: key 'base_config' expects a path to a config file, got {ref!r}")
        base = read_yaml((path.parent / ref) if not Path(ref).is_absolute() else ref)
    base = {**base, **data}
    for k, vs in grid.items():
        if not isinstance(vs, list) or not vs:
            raise SnnconvError(f"{path}: key 'sweep.{k}' expects a non-empty list of values, got {vs!r}")
    points = []
    for combo in itertools.product(*grid.values()):
        values = json.loads(json.dumps(base))  # deep copy
        for k, v in zip(grid, combo):
            set_dotted(values, k, v, f"{path}: sweep")
        label = "-".join(f"{k.split('.')[-1]}={_slug(v)}" for k, v in zip(grid, combo))
        points.append((f"{path.stem}-{label}", values))
    return points


def validate(item: BatchItem) -> RunConfig:
    return load_config(item.config_file, {}, values=json.loads(json.dumps(item.values)))


def _same_config(report_path: Path, cfg: RunConfig) -> bool:
    try:
        done = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return False
    def canon(d):  # how the folder may be written does not change what was computed
        d = json.loads(json.dumps(d, default=str))
        if isinstance(d, dict) and isinstance(d.get("output"), dict):
            d["output"].pop("overwrite", None)
        return json.dumps(d, sort_keys=True)
    return canon(done.get("config")) == canon(cfg.to_dict())


def _summary_of(report: dict) -> dict:
    """The key results of a report. Classifier runs report accuracy; transformer (hf:) runs report
    the cosine similarity of ANN and SNN embeddings: both become ``metric`` / ``curve`` / ``curve_all_t``."""
    keep = ("model", "dataset", "samples", "ann_accuracy", "snn_accuracy", "snn_accuracy_all_t", "energy", "max_T",
            "seconds", "ann_energy_uj")
    out = {k: report.get(k) for k in keep}
    metric, curve, all_t = metric_curve(report)
    out.update(metric=metric, curve=curve, curve_all_t=all_t)
    return out


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def run_item(item: BatchItem, out_dir: str, resume: bool = False, threads: int | None = None,
             overwrite: bool = False) -> dict:
    """Run one item; never raises for the item's own failures (they are returned as ``status: failed``)."""
    from snnconv.api import apply_run_defaults, run_convert

    if threads:
        import torch

        torch.set_num_threads(threads)
    res = {"name": item.name, "config_file": item.config_file, "output_dir": out_dir}
    t0 = time.time()
    log = lambda msg: print(f"[{item.name}] {msg}", file=__import__("sys").stderr, flush=True)  # noqa: E731
    try:
        if item.error:
            raise SnnconvError(item.error)
        cfg = validate(item)
        cfg.output_dir = out_dir
        # the defaults `snnconv convert --config` applies: a recipe card beside the weights (or --target's
        # pick from it) when the item sets no conversion, so a batch item converts as that command would
        apply_run_defaults(cfg, log_fn=log)
        cfg.output.overwrite = overwrite or resume  # only ever an snnconv run folder inside this batch folder
        report_path = Path(out_dir) / "report.json"
        if resume and report_path.is_file() and _same_config(report_path, cfg):
            res.update(status="skipped", report=_summary_of(json.loads(report_path.read_text())))
            log("finished before with the same config: skipped (--resume)")
            return res
        report = run_convert(cfg, log_fn=log, coverage_fn=lambda t: None)
        res.update(status="ok", report=_summary_of(report))
    except SnnconvError as e:
        res.update(status="failed", error=str(e))
    except Exception as e:  # noqa: BLE001 - one broken item must not stop the batch
        res.update(status="failed", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=8))
    if res["status"] == "failed":
        log(f"failed: {res['error']}")
    res["wall_seconds"] = round(time.time() - t0, 2)
    return res


def run_batch(paths: list[str | Path], out_dir: str | Path = "artifacts/batch", overrides: dict | None = None,
              resume: bool = False, jobs: int = 1, log_fn=print, overwrite: bool = False) -> dict:
    """Expand and run every item; writes and returns the summary (see the module docstring)."""
    if not paths:
        raise SnnconvError("batch: give at least one config or sweep file")
    for p in paths:
        if not Path(p).is_file():
            raise SnnconvError(f"config file {p} not found")
    jobs = max(1, int(jobs))
    items = expand(paths, overrides)
    out = Path(out_dir)
    prepare_batch_dir(out, reuse=resume or overwrite)  # checked (and created) before any item runs
    log_fn(f"batch: {len(items)} item(s) from {len(paths)} file(s) -> {out}/ (jobs={jobs})")
    t0 = time.time()
    results: dict[str, dict] = {}
    if jobs == 1:
        for it in progress(items, desc="batch"):
            results[it.name] = run_item(it, str(out / it.name), resume, overwrite=overwrite)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futs = {pool.submit(run_item, it, str(out / it.name), resume, threads, overwrite): it for it in items}
            for f in progress(cf.as_completed(futs), total=len(futs), desc="batch"):
                it = futs[f]
                try:
                    results[it.name] = f.result()
                except Exception as e:  # noqa: BLE001 - a worker died (e.g. killed for memory)
                    results[it.name] = {"name": it.name, "config_file": it.config_file, "status": "failed",
                                        "output_dir": str(out / it.name), "error": f"worker died: {e}"}
    ordered = [results[it.name] for it in items]
    summary = {"batch_dir": str(out), "files": [str(p) for p in paths], "overrides": overrides or {},
               "jobs": jobs, "seconds": round(time.time() - t0, 2), "items": ordered,
               **{k: sum(r["status"] == k for r in ordered) for k in ("ok", "failed", "skipped")}}
    write_summary(out, summary)
    log_fn(summary_markdown(summary))
    log_fn(f"batch: {summary['ok']} ok, {summary['failed']} failed, {summary['skipped']} skipped; "
           f"wrote {out}/summary.json, summary.md, index.html")
    return summary


def write_summary(out: Path, summary: dict) -> None:
    from snnconv.report import comparison_html

    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    write_text_atomic(out / "index.html", comparison_html(summary))


def summary_markdown(summary: dict) -> str:
    items = summary["items"]
    ts = sorted({int(t) for r in items if r.get("report") for t in r["report"].get("curve", {})})
    lines = ["| item | status | model | dataset | metric | ANN acc (%) | " + " | ".join(f"T={t}" for t in ts) +
             " | energy uJ @ max T | seconds | error |",
             "|---|---|---|---|---|---:|" + "---:|" * len(ts) + "---:|---:|---|"]
    for r in items:
        rep = r.get("report")
        if rep:
            curve = rep.get("curve", {})
            vals = [_fmt(curve.get(str(t)), ".2f" if rep.get("metric", "").startswith("acc") else ".4f") for t in ts]
            e = ((rep.get("energy") or {}).get(str(rep.get("max_T"))) or {}).get("energy_uj")
            lines.append(f"| {r['name']} | {r['status']} | {rep.get('model')} | {rep.get('dataset')} | "
                         f"{rep.get('metric', '-')} | {_fmt(rep.get('ann_accuracy'))} | " + " | ".join(vals) +
                         f" | {_fmt(e, '.4g')} | {rep.get('seconds')} | |")
        else:
            err = (r.get("error") or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['name']} | {r['status']} | - | - | - | - | " + " | ".join("-" for _ in ts) +
                         f" | - | - | {err} |")
    return "\n".join(lines) + "\n"
