"""Stochastic weight averaging (snnconv.training.swa, `snnconv swa`) on the bundled MNIST CNN checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.checkpoints import BUNDLED_DIR, load_checkpoint
from snnconv.data.datasets import load_dataset
from snnconv.errors import SnnconvError
from snnconv.training.swa import average_state_dicts, swa_model


def test_average_is_elementwise_mean_and_keeps_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}
    avg = average_state_dicts([a, b], ["a", "b"])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0]))
    assert avg["n"].item() == 7 and avg["n"].dtype == a["n"].dtype
    with pytest.raises(SnnconvError, match="at least two"):
        average_state_dicts([a], ["a"])
    with pytest.raises(SnnconvError, match="b: w has shape"):
        average_state_dicts([a, {"w": torch.zeros(3), "n": b["n"]}], ["a", "b"])


def test_batchnorm_statistics_are_re_estimated_on_the_data():
    """After averaging, each BN layer's running mean/var are those of its input over the training batches
    (cumulative, not the averaged runs' statistics, which need not belong to the mean weights)."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()) for _ in range(2)]
    for n in nets:
        n[1].running_mean.fill_(5.0)  # deliberately wrong statistics in both runs
    train = load_dataset("mnist-bundled", None, train=True).subset(512)
    batches = list(train.batches(128))
    model = swa_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
                      [n.state_dict() for n in nets], ["a", "b"], batches)
    assert torch.allclose(model[0].weight, (nets[0][0].weight + nets[1][0].weight) / 2)
    with torch.no_grad():
        z = torch.cat([model[0](x) for x, _ in batches])
    assert torch.allclose(model[1].running_mean, z.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, z.var((0, 2, 3)), rtol=1e-2)
    assert not model.training


def test_swa_of_a_checkpoint_with_itself_keeps_its_accuracy(tmp_path):
    """Averaging a QCFS checkpoint with itself leaves the weights; only BN statistics are re-estimated,
    so the averaged net must classify the bundled test split about as well as the original."""
    from snnconv.api import RunConfig, average_weights, resolve_model
    from snnconv.training.ann import evaluate_ann

    src = BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"
    out = tmp_path / "swa.pt"
    res = average_weights("mnist_cnn", "mnist-bundled", None, [str(src), str(src)], str(out), log_fn=lambda m: None)
    ck = load_checkpoint(out)
    assert ck["activation"] == "qcfs" and ck["levels"] == 4 and ck["averaged_from"] == [str(src)] * 2
    test = load_dataset("mnist-bundled", None, train=False)
    orig, _, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled", weights=str(src)))
    swa, _, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled", weights=str(out)))
    assert abs(res["accuracy"] - evaluate_ann(swa, test)) < 1e-9
    assert abs(res["accuracy"] - evaluate_ann(orig, test)) <= 2.0


def test_swa_cli_rejects_checkpoints_of_different_kinds(tmp_path, monkeypatch, capsys):
    from test_cli import run_main

    out = tmp_path / "swa.pt"
    proc = run_main("swa", "--model", "mnist_cnn", "--dataset", "mnist-bundled",
                    "--weights", BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt", "--weights",
                    BUNDLED_DIR / "mnist_cnn_qcfs2-mnist.pt", "--out", out, monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "levels" in proc.stderr
    assert not out.exists()


def test_swa_rejects_checkpoints_of_another_model(tmp_path):
    from snnconv.api import average_weights

    src = str(BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt")
    with pytest.raises(SnnconvError, match="for model 'mnist_cnn', not 'resnet20'"):
        average_weights("resnet20", "mnist-bundled", None, [src, src], str(tmp_path / "swa.pt"), log_fn=lambda m: None)
