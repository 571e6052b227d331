"""`snnconv batch`: the templates run with tiny settings, a broken item is reported while the rest
finish, sweep grids expand, --resume skips finished items, --jobs runs items in worker processes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnconv import checkpoints
from snnconv.batch import expand, parse_sets, run_batch
from snnconv.errors import SnnconvError
from snnconv.models.zoo import build_model

TEMPLATES = Path(__file__).resolve().parent.parent / "configs" / "templates"
TINY = {"eval_samples": 24, "calib_samples": 24, "timesteps": [1, 2], "batch_size": 24}


def test_sweep_and_set_expand(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("model: mnist_cnn\ndataset: mnist-bundled\n"
                     "sweep:\n  conversion.percentile: [99.9, 99.99]\n  timesteps: [[1, 2], [4]]\n")
    items = expand([sweep], parse_sets(["eval_samples=10", "conversion.reset=zero"]))
    assert [it.error for it in items] == [None] * 4
    assert items[0].name == "s-percentile=99.9-timesteps=1,2" and items[3].name == "s-percentile=99.99-timesteps=4"
    assert items[1].values["conversion"] == {"percentile": 99.9, "reset": "zero"}
    assert items[1].values["timesteps"] == [4] and items[1].values["eval_samples"] == 10
    ex = expand([TEMPLATES / "sweep-example.yaml"])
    assert len(ex) == 4 and all(it.error is None for it in ex) and ex[0].values["model"] == "mnist_cnn"
    bad = tmp_path / "b.yaml"
    bad.write_text("sweep: {conversion.percentile: 99.9}\n")
    assert "sweep.conversion.percentile" in expand([bad])[0].error
    with pytest.raises(SnnconvError, match="KEY=VALUE"):
        parse_sets(["eval_samples"])


def _random_checkpoints(cache: Path) -> None:
    """Untrained (random-init) CIFAR ResNets in the model cache: the batch mechanics do not depend on training."""
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("resnet20", "resnet18"):
        torch.manual_seed(0)
        m = build_model(name, num_classes=10, in_channels=3)
        checkpoints.save_checkpoint(cache / f"{name}-cifar10.pt", {"model": name, "state_dict": m.state_dict()})


@pytest.mark.slow
def test_batch_runs_templates_reports_broken_item_and_resumes(tmp_path, data_dir, monkeypatch):
    if not (data_dir / "cifar-10-batches-py").is_dir():
        pytest.skip("CIFAR-10 not in the data dir")
    monkeypatch.setenv("SNNCONV_CACHE_DIR", str(tmp_path / "cache"))
    _random_checkpoints(tmp_path / "cache")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: mnist_cnn\ndataset: mnist-bundled\nconversion:\n  method: bogus\n")
    files = [TEMPLATES / f"{n}.yaml" for n in ("mnist-cnn", "resnet20-cifar10", "resnet18-cifar10", "minilm-hf",
                                                "onnx-file")] + [broken]
    out = tmp_path / "batch"
    summary = run_batch(files, out, {**TINY, "data_dir": str(data_dir)}, log_fn=lambda *_: None)
    st = {it["name"]: it for it in summary["items"]}
    for name in ("mnist-cnn", "resnet20-cifar10", "resnet18-cifar10"):
        assert st[name]["status"] == "ok", st[name].get("error")
        rep = json.loads((out / name / "report.json").read_text())
        assert rep["timesteps"] == [1, 2] and rep["samples"] == 24
        assert (out / name / "report.html").is_file()
    assert st["broken"]["status"] == "failed" and "'conversion.method'" in st["broken"]["error"]
    assert not (out / "broken").exists()  # nothing half-written
    for name in ("minilm-hf", "onnx-file"):  # their frontends and model files may be absent: reported, not fatal
        assert st[name]["status"] in ("ok", "failed")
        if st[name]["status"] == "failed":
            assert st[name]["error"] and "\n" not in st[name]["error"]
    assert summary["ok"] + summary["failed"] == 6 and summary["failed"] >= 1
    saved = json.loads((out / "summary.json").read_text())
    assert [it["status"] for it in saved["items"]] == [it["status"] for it in summary["items"]]
    md = (out / "summary.md").read_text()
    assert "| mnist-cnn | ok | mnist_cnn | mnist |" in md and "| broken | failed |" in md
    page = (out / "index.html").read_text()
    assert 'href="resnet20-cifar10/report.html"' in page and "data:image/png;base64," in page

    # resume: finished items are skipped (their folders untouched), the broken one is retried
    stamp = (out / "mnist-cnn" / "report.json").stat().st_mtime_ns
    again = run_batch(files, out, {**TINY, "data_dir": str(data_dir)}, resume=True, log_fn=lambda *_: None)
    st2 = {it["name"]: it["status"] for it in again["items"]}
    assert st2["mnist-cnn"] == st2["resnet20-cifar10"] == st2["resnet18-cifar10"] == "skipped"
    assert st2["broken"] == "failed"
    assert (out / "mnist-cnn" / "report.json").stat().st_mtime_ns == stamp
    assert again["items"][0]["report"]["snn_accuracy"] == summary["items"][0]["report"]["snn_accuracy"]
    # a changed config is not "finished": it runs again
    third = run_batch([TEMPLATES / "mnist-cnn.yaml"], out, {**TINY, "data_dir": str(data_dir), "timesteps": [1, 3]},
                      resume=True, log_fn=lambda *_: None)
    assert third["items"][0]["status"] == "ok"


@pytest.mark.slow
def test_batch_cli_parallel_jobs(tmp_path):
    sweep = tmp_path / "grid.yaml"
    sweep.write_text("model: mnist_cnn\ndataset: mnist-bundled\noutput: {graphs: false}\n"
                     "sweep:\n  conversion.granularity: [layer, channel]\n")
    env = {**os.environ, "SNNCONV_NO_PROGRESS": "1"}
    exe = shutil.which("snnconv") or sys.executable
    cmd = [exe] if exe.endswith("snnconv") else [exe, "-m", "snnconv.cli"]
    r = subprocess.run(cmd + ["batch", str(sweep), "--output-dir", str(tmp_path / "b"), "--jobs", "2",
                              "--set", "eval_samples=24", "--set", "calib_samples=24", "--set", "timesteps=[1,2]"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["jobs"] == 2 and [it["status"] for it in s["items"]] == ["ok", "ok"]
    assert not (tmp_path / "b" / "grid-granularity=layer" / "snn.pt").exists()  # output.graphs: false
    r = subprocess.run(cmd + ["batch", str(tmp_path / "missing.yaml")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "missing.yaml" in r.stderr
