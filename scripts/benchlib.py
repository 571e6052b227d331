"""The bench harness shared by ``scripts/bench_*.py``: common arguments, checkpoint content hashes, the
exact command, and the JSON + markdown results with rows of earlier runs kept (merged by a key).

A bench script measures, builds its rows (dicts) and a ``markdown(data) -> str``; :func:`save` does the rest:

    data = save(out, rows, key=lambda r: (r["network"], r["method"]), markdown=markdown,
                script="bench_x.py", data_dir=args.data_dir, checkpoints={...})
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


def sha256(path: str | Path) -> str:
    """Content hash of a checkpoint (relative paths are taken from the repository root)."""
    p = Path(path)
    return hashlib.sha256((p if p.is_absolute() else REPO / p).read_bytes()).hexdigest()


def add_model_args(ap: argparse.ArgumentParser, model: str = "mnist_cnn", dataset: str = "mnist") -> None:
    """The model-selection arguments of the single-model benches (quantize, robustness, HSEO, ONNX)."""
    ap.add_argument("--model", default=model)
    ap.add_argument("--dataset", default=dataset)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights", default=None, help="checkpoint file (default: the cached/bundled one)")
    ap.add_argument("--method", default=None, help="conversion method (default: qcfs for QCFS checkpoints, "
                                                    "else percentile)")


def load_model_and_data(args, eval_samples: int) -> tuple:
    """For :func:`add_model_args` benches: ``(model, input_shape, source, method, train, test, calib_batches)``:
    the resolved model and where it came from, the conversion method (``--method``, else qcfs for QCFS checkpoints, else percentile),
    the training split, a seeded test subset of ``eval_samples`` and ``--calib-samples`` training images
    (seed 1) in batches of 256."""
    from snnconv.api import resolve_model
    from snnconv.config import RunConfig
    from snnconv.data.datasets import load_dataset

    model, shape, source = resolve_model(RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                                                   weights=args.weights))
    method = args.method or ("qcfs" if source.get("activation") == "qcfs" else "percentile")
    train = load_dataset(args.dataset, args.data_dir, train=True)
    test = load_dataset(args.dataset, args.data_dir, train=False).subset(eval_samples)
    batches = [x for x, _ in train.subset(args.calib_samples, seed=1).batches(256)]
    return model, shape, source, method, train, test, batches


def command(script: str, data_dir: str | None, hide: dict[str, str | None] | None = None) -> str:
    """The command that was run, with the machine's data folder written as ``../shared/datasets`` and each
    path of ``hide`` (e.g. a run folder) as its placeholder: no machine paths in committed files."""
    argv = " ".join(sys.argv[1:])
    if data_dir:
        argv = argv.replace(data_dir, "../shared/datasets")
    for placeholder, path in (hide or {}).items():
        if path:
            argv = argv.replace(path, placeholder)
    return f"python scripts/{script} {argv}".strip()


def shown_path(path: str | Path) -> str:
    """A path as committed pages show it: relative to the repository when inside it, else ``<runs>/<name>``
    (no machine paths in committed files)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else f"<runs>/{p.name}"


def checkpoints_line(checkpoints: dict[str, str]) -> str:
    """``Checkpoints: `path` sha256 `...`; ...`` for a markdown header."""
    return "Checkpoints: " + "; ".join(f"`{c}` sha256 `{h[:16]}...`" for c, h in sorted(checkpoints.items()))


def footer(data: dict) -> list[str]:
    """The markdown tail of a page whose rows carry ``checkpoint`` / ``checkpoint_sha256``: the checkpoints
    with their hashes, then the environment."""
    return ["", checkpoints_line(row_checkpoints(data["rows"])), *environment_block(data["environment"])]


def row_checkpoints(rows: list[dict]) -> dict[str, str]:
    """``{checkpoint: sha256}`` of rows that carry ``checkpoint`` / ``checkpoint_sha256`` (rows of earlier runs
    kept in the file included)."""
    return {r["checkpoint"]: r["checkpoint_sha256"] for r in rows}


def environment_block(env: dict) -> list[str]:
    """The ``## Environment`` section (markdown lines)."""
    return ["", "## Environment", "", "```", json.dumps(env, indent=1), "```", ""]


def save(out: str | Path, rows: list[dict], key: Callable[[dict], tuple], markdown: Callable[[dict], str],
         script: str, data_dir: str | None, keep: Callable[[dict], bool] = lambda r: True,
         hide: dict[str, str | None] | None = None, **fields) -> dict:
    """Write ``out``.json and ``out``.md: the new ``rows`` merged over the rows of earlier runs (same ``key``
    replaced; old rows kept when ``keep(row)``), the command, the environment and ``fields``; prints the
    markdown. Returns the data written."""
    from snnconv.report import environment

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    js = out.with_suffix(".json")
    old = json.loads(js.read_text()) if js.is_file() else {}
    merged = {key(r): r for r in old.get("rows", []) if keep(r)}
    merged.update({key(r): r for r in rows})
    data = {"command": command(script, data_dir, hide), "rows": list(merged.values()), **fields,
            "environment": environment()}
    js.write_text(json.dumps(data, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    text = markdown(data)
    out.with_suffix(".md").write_text(text)
    print(text)
    return data
