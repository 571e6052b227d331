"""ANN training: the validation split, exact mid-epoch resume, and progress lines off-terminal."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from snnconv.data.datasets import Split, load_dataset, load_part, split_validation, validation_size
from snnconv.training.ann import TrainConfig, train_ann


def test_validation_split_is_fixed_disjoint_and_covers_the_training_split():
    full = load_dataset("mnist-bundled", None, train=True)
    tr, val = split_validation(full, "mnist-bundled")
    assert len(val) == validation_size("mnist-bundled", len(full)) and len(tr) + len(val) == len(full)
    rows = lambda s: {bytes(x.numpy().tobytes()) for x in s.images}  # noqa: E731
    assert not rows(tr) & rows(val) and rows(tr) | rows(val) == rows(full)
    tr2, val2 = split_validation(full, "mnist-bundled")
    assert torch.equal(val.images, val2.images) and torch.equal(tr.labels, tr2.labels)
    assert torch.equal(load_part("mnist-bundled", None, "val").images, val.images)


def test_validation_split_of_real_cifar10(data_dir):
    tr = load_part("cifar10", data_dir, "train")
    val = load_part("cifar10", data_dir, "val")
    assert (len(tr), len(val)) == (45000, 5000)
    assert torch.bincount(val.labels, minlength=10).min() > 400  # every class is there


class Interrupt(Exception):
    pass


class StopsAfter(Split):
    """A split whose batch stream raises after ``n`` batches in total (a killed run)."""

    def __init__(self, base: Split, n: int):
        super().__init__(base.images, base.labels, base.mean, base.std, base.num_classes)
        self.left = n

    def batches(self, *a, **k):
        for b in super().batches(*a, **k):
            if self.left == 0:
                raise Interrupt
            self.left -= 1
            yield b


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 13 * 13, 10))


def test_killed_run_resumes_mid_epoch_to_the_same_weights(tmp_path):
    full = load_dataset("mnist-bundled", None, train=True)
    tr, val = split_validation(full, "mnist-bundled")  # 192 train images: 6 batches of 32 per epoch
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=True)
    ref = train_ann(_model(), tr, val, None, cfg, tmp_path / "ref.pt", {}, log=lambda *_: None)
    out = tmp_path / "run.pt"
    with pytest.raises(Interrupt):  # killed in epoch 2, batch 3; state saved after every batch
        train_ann(_model(), StopsAfter(tr, 8), val, None, cfg, out, {}, log=lambda *_: None, state_every=0)
    assert not out.exists() and out.with_name("run.state.pt").is_file()
    st = torch.load(out.with_name("run.state.pt"), weights_only=True)
    assert (st["epoch"], st["batch"]) == (1, 2)
    lines = []
    res = train_ann(_model(), tr, val, None, cfg, out, {}, log=lines.append)
    assert any("resuming from epoch 1/2, batch 2/6" in ln for ln in lines)
    for k, v in ref["state_dict"].items():
        assert torch.allclose(v.float(), res["state_dict"][k].float(), atol=1e-6), k
    assert res["history"][-1]["loss"] == pytest.approx(ref["history"][-1]["loss"], rel=1e-5)
    assert res["val_accuracy"] == ref["val_accuracy"]


def test_a_parked_state_resumes_close_to_the_uninterrupted_run(tmp_path):
    """scripts/compact_checkpoint.py on a training state (float16 weights, bfloat16 momentum: how an unfinished
    run is carried to another machine in the repository) resumes where it stopped, in float32, and ends close to
    the run that was never interrupted."""
    import subprocess
    import sys
    full = load_dataset("mnist-bundled", None, train=True)
    tr, val = split_validation(full, "mnist-bundled")
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=True)
    ref = train_ann(_model(), tr, val, None, cfg, tmp_path / "ref.pt", {}, log=lambda *_: None)
    out = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        train_ann(_model(), StopsAfter(tr, 8), val, None, cfg, out, {}, log=lambda *_: None, state_every=0)
    state = out.with_name("run.state.pt")
    parked = tmp_path / "parked.state.pt"
    script = Path(__file__).resolve().parent.parent / "scripts" / "compact_checkpoint.py"
    proc = subprocess.run([sys.executable, str(script), str(state), str(parked)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    st = torch.load(parked, weights_only=True)
    assert {v.dtype for v in st["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    momentum = [b["momentum_buffer"] for b in st["optimizer"]["state"].values()]
    assert momentum and {m.dtype for m in momentum} == {torch.bfloat16}
    assert parked.stat().st_size < 0.6 * state.stat().st_size
    state.unlink()
    parked.rename(state)  # carried next to --out on the new machine
    lines = []
    res = train_ann(_model(), tr, val, None, cfg, out, {}, log=lines.append)
    assert any("resuming from epoch 1/2, batch 2/6" in ln for ln in lines)
    assert all(v.dtype == torch.float32 for v in res["state_dict"].values() if v.is_floating_point())
    for k, v in ref["state_dict"].items():
        if v.is_floating_point():
            assert torch.allclose(v, res["state_dict"][k], rtol=2e-2, atol=2e-3), k
    assert abs(res["val_accuracy"] - ref["val_accuracy"]) <= 2.0


def test_progress_lines_when_not_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("SNNCONV_NO_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    full = load_dataset("mnist-bundled", None, train=True)
    tr, val = split_validation(full, "mnist-bundled")
    test = load_dataset("mnist-bundled", None, train=False)
    lines = []
    res = train_ann(_model(), tr, val, test, TrainConfig(epochs=1, batch_size=16, lr=0.05, augment=False),
                    tmp_path / "m.pt", {}, log=lines.append)
    eta = [ln for ln in lines if "ETA" in ln]
    assert len(eta) >= 5 and eta[-1].startswith("epoch 1/1: 100% (12/12 batches)")
    assert any("final test accuracy" in ln for ln in lines)
    h = res["history"][0]
    assert h["images_per_second"] > 0 and h["val_acc"] is not None and res["accuracy"] is not None
    assert res["train_samples"] == len(tr) and res["val_samples"] == len(val)


def test_simulation_progress_lines_only_for_long_runs(monkeypatch):
    """simulate() with a log: off a terminal, long runs print batches done and ETA (no loss); runs shorter than
    the quiet period print nothing, so short commands keep their output."""
    from snnconv import api
    from snnconv import progress as prog
    from snnconv.api import conversion_pipeline, convert_graph, ingest, resolve_model, simulate
    from snnconv.checkpoints import BUNDLED_DIR
    from snnconv.config import ConversionConfig, RunConfig

    monkeypatch.delenv("SNNCONV_NO_PROGRESS", raising=False)
    monkeypatch.setattr(prog.sys.stderr, "isatty", lambda: False)
    m, shape, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled",
                                          weights=str(BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt")), log_fn=lambda _: None)
    snn, _ = convert_graph(ingest(m, shape)[0], [], conversion_pipeline(ConversionConfig(method="qcfs")))
    test = load_dataset("mnist-bundled", None, train=False).subset(64)
    quiet = []
    simulate(snn, test, 2, batch_size=16, log_fn=quiet.append)
    assert quiet == []  # well under 30 s
    lines = []
    monkeypatch.setattr(api, "SIM_QUIET_SECONDS", 0.0)  # as if the run had been long
    simulate(snn, test, 2, batch_size=16, log_fn=lines.append)
    assert lines and lines[-1].startswith("SNN T=2: 100% (4/4 batches)") and "loss" not in lines[-1]
