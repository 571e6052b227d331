"""QCFS activation (Bu et al., ICLR 2022): the custom op's straight-through gradients, its exact
mapping by the torch frontend, and conversion-aware training through the API."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.checkpoints import load_checkpoint
from snnconv.frontends.torch import from_torch
from snnconv.models.qcfs import QCFS, init_thresholds, qcfs, to_qcfs
from snnconv.models.zoo import build_model
from snnconv.runtime.interpreter import run_ann


def reference_qcfs(x, lam, levels, shift):
    """The same function written with a detached floor (straight-through estimator by construction)."""
    u = torch.clamp(x / lam, 0.0, 1.0)
    q = torch.floor(u * levels + shift) / levels
    return lam * (u + (q - u).detach())


LAYOUTS = {"flat": lambda t: t.reshape(-1), "nchw": lambda t: t,
           "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
           "strided": lambda t: t.transpose(1, 3)}


@pytest.mark.parametrize("levels", [1, 4, 8])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_qcfs_forward_and_ste_gradients(levels, layout):
    """Forward and straight-through gradients of the op on every memory layout training meets (the backward
    takes a product-free path for contiguous and channels-last tensors)."""
    torch.manual_seed(levels)
    x = LAYOUTS[layout](torch.randn(4, 5, 5, 5) * 2).requires_grad_()
    lam = torch.tensor(1.3, requires_grad=True)
    y = qcfs(x, lam, levels, 0.5)
    # forward: lambda/L * clip(floor(xL/lambda + 1/2), 0, L)
    expect = lam.detach() / levels * torch.clamp(torch.floor(x.detach() * levels / lam.detach() + 0.5), 0, levels)
    assert torch.allclose(y.detach(), expect, atol=1e-6)
    g = LAYOUTS[layout](torch.randn(4, 5, 5, 5))
    gx, glam = torch.autograd.grad(y, (x, lam), g)
    # the formula: dy/dx = 1 inside [0, lambda], 0 outside; dy/dlambda = q(u) - u inside, q(u) = 1 above
    u = x.detach() / lam.detach()
    inside = ((u >= 0) & (u <= 1)).float()
    q = expect / lam.detach()
    assert torch.allclose(gx, g * inside)
    assert torch.allclose(glam, (g * (q - u * inside)).sum(), rtol=1e-5, atol=1e-5)
    # and the same as autograd through the detached-floor reference
    x2, lam2 = x.detach().clone().requires_grad_(), lam.detach().clone().requires_grad_()
    rx, rlam = torch.autograd.grad(reference_qcfs(x2, lam2, levels, 0.5), (x2, lam2), g)
    assert torch.allclose(gx, rx) and torch.allclose(glam, rlam, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("compiled", [True, False])
def test_qcfs_backward_on_training_sized_activations(dtype, compiled, monkeypatch):
    """Activations of 2**16+ elements take the fused (torch.compile) backward, or the eager one when compiling is
    off or fails: both give the reference gradients, in fp32 and bf16 (autocast), channels-last."""
    import snnconv.models.qcfs as q
    if compiled:
        monkeypatch.setitem(q._FUSED, "fn", torch.compile(q._backward_terms, dynamic=True))
    else:
        monkeypatch.setitem(q._FUSED, "fn", None)
    torch.manual_seed(1)
    x = (torch.randn(8, 32, 16, 16) * 2).to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(8, 32, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    lam = torch.tensor(1.3, requires_grad=True)
    gx, glam = torch.autograd.grad(qcfs(x, lam, 4, 0.5), (x, lam), g)
    x2, lam2 = x.detach().float().requires_grad_(), lam.detach().clone().requires_grad_()
    rx, rlam = torch.autograd.grad(reference_qcfs(x2, lam2, 4, 0.5), (x2, lam2), g.float())
    xd = x.detach()
    assert gx.dtype == dtype and torch.equal(gx, torch.where((xd >= 0) & (xd <= lam.detach()), g, 0.0))
    assert torch.allclose(gx.float(), rx, rtol=1e-5, atol=1e-6)  # the reference's lambda * (1 / lambda) rounds
    if dtype == torch.float32:
        assert torch.allclose(glam, rlam, rtol=1e-5, atol=1e-4)
    # the formula on the op's own (bf16-rounded) output, in float64
    y = qcfs(xd, lam.detach(), 4, 0.5).double()
    expect = ((g.double() * y).sum() - (gx.double() * xd.double()).sum()) / lam.detach().double()
    assert torch.allclose(glam.double(), expect, rtol=5e-3 if dtype == torch.bfloat16 else 1e-5)
    assert (q._FUSED["fn"] is not None) == compiled  # the compiled path ran without falling back


def test_qcfs_gradients_with_a_negative_threshold_follow_the_reference():
    """A threshold driven below 0 takes the general backward: still autograd through the reference."""
    torch.manual_seed(0)
    g = torch.randn(300)
    x = (torch.randn(300) * 2).requires_grad_()
    lam = torch.tensor(-0.7, requires_grad=True)
    gx, glam = torch.autograd.grad(qcfs(x, lam, 4, 0.5), (x, lam), g)
    x2, lam2 = x.detach().clone().requires_grad_(), lam.detach().clone().requires_grad_()
    rx, rlam = torch.autograd.grad(reference_qcfs(x2, lam2, 4, 0.5), (x2, lam2), g)
    assert gx.abs().sum() > 0 and torch.allclose(gx, rx) and torch.allclose(glam, rlam, rtol=1e-5, atol=1e-5)


def test_qcfs_module_threshold_is_learnable():
    m = QCFS(levels=4, threshold=2.0)
    y = m(torch.linspace(-1, 5, 50)).sum()
    y.backward()
    assert m.threshold.grad is not None and m.threshold.grad.abs() > 0
    with pytest.raises(ValueError):
        QCFS(levels=0)


def test_to_qcfs_replaces_relus_and_maxpool():
    model = to_qcfs(build_model("vgg16"), levels=4)
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in model.modules())
    assert sum(isinstance(m, QCFS) for m in model.modules()) == 14
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 5


def test_frontend_maps_qcfs_exactly():
    torch.manual_seed(0)
    model = to_qcfs(build_model("mnist_cnn", in_channels=1), levels=4).eval()
    batches = [torch.randn(64, 1, 28, 28)]
    init_thresholds(model, batches)
    lams = [float(m.threshold.detach()) for m in model.modules() if isinstance(m, QCFS)]
    assert len(lams) == 4 and all(v > 0 for v in lams) and len(set(lams)) > 1
    graph, _ = from_torch(model, (1, 28, 28))
    clips = [n for n in graph.nodes.values() if n.kind == "clip"]
    assert [c.levels for c in clips] == [4] * 4 and [c.source for c in clips] == ["qcfs"] * 4
    assert sorted(c.hi for c in clips) == pytest.approx(sorted(lams))
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(run_ann(graph, x), model(x), atol=1e-5)


def test_train_qcfs_one_epoch_via_api(tmp_path):
    from snnconv.api import RunConfig, resolve_model, train

    out = tmp_path / "qcfs.pt"
    res = train("mnist_cnn", "mnist-bundled", None, epochs=1, batch_size=64, lr=0.05, out=str(out), log_fn=lambda m: None,
                activation="qcfs", levels=4)
    ckpt = load_checkpoint(out)
    assert ckpt["activation"] == "qcfs" and ckpt["levels"] == 4 and res["accuracy"] == ckpt["accuracy"]
    assert any(k.endswith("threshold") for k in ckpt["state_dict"])
    model, shape, source = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled", weights=str(out)))
    assert source["activation"] == "qcfs" and sum(isinstance(m, QCFS) for m in model.modules()) == 4
    # fine-tuning a ReLU checkpoint into QCFS form starts from percentile thresholds
    relu = tmp_path / "relu.pt"
    train("mnist_cnn", "mnist-bundled", None, epochs=1, batch_size=64, out=str(relu), log_fn=lambda m: None)
    ft = tmp_path / "ft.pt"
    train("mnist_cnn", "mnist-bundled", None, epochs=1, batch_size=64, lr=0.01, out=str(ft), log_fn=lambda m: None,
          activation="qcfs", levels=2, init_from=str(relu))
    assert load_checkpoint(ft)["levels"] == 2


def test_finetune_qcfs_checkpoint_to_other_levels(tmp_path):
    """Re-training a QCFS L=4 net for L=2 trains (and evaluates) the L=2 net, not the L=4 one
    under an L=2 label: the accuracy train() measured equals the L=2 checkpoint's own."""
    from snnconv.api import RunConfig, resolve_model, train
    from snnconv.checkpoints import BUNDLED_DIR
    from snnconv.data.datasets import load_dataset
    from snnconv.training.ann import evaluate_ann

    src = BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"
    out = tmp_path / "qcfs2.pt"
    res = train("mnist_cnn", "mnist-bundled", None, epochs=1, batch_size=64, lr=1e-6, out=str(out),
                log_fn=lambda m: None, activation="qcfs", levels=2, init_from=str(src))
    model, _, source = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled", weights=str(out)))
    assert source["levels"] == 2 and all(m.levels == 2 for m in model.modules() if isinstance(m, QCFS))
    thresholds = [float(v) for k, v in load_checkpoint(src)["state_dict"].items() if k.endswith("threshold")]
    assert [float(m.threshold.detach()) for m in model.modules() if isinstance(m, QCFS)] == pytest.approx(thresholds, rel=1e-3)
    test = load_dataset("mnist-bundled", None, train=False)
    assert res["accuracy"] == pytest.approx(evaluate_ann(model, test))
    l4, _, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled", weights=str(src)))
    assert evaluate_ann(l4, test) != pytest.approx(res["accuracy"])  # the test can tell L=2 from L=4


@pytest.mark.parametrize("to_avg", [None, True, False])
def test_qcfs_checkpoints_load_with_the_pooling_they_were_trained_with(tmp_path, to_avg):
    """QCFS training replaces max pooling by average pooling unless --keep-maxpool; the checkpoint records
    which (maxpool_to_avgpool, absent in older checkpoints = replaced), and loading builds that network."""
    from snnconv.api import ingest, resolve_model
    from snnconv.checkpoints import save_checkpoint
    from snnconv.config import RunConfig

    net = to_qcfs(build_model("vgg11"), levels=4, avgpool=to_avg is not False)
    ck = {"model": "vgg11", "dataset": "cifar10", "activation": "qcfs", "levels": 4, "state_dict": net.state_dict()}
    if to_avg is not None:
        ck["maxpool_to_avgpool"] = to_avg
    save_checkpoint(tmp_path / "v.pt", ck)
    m, shape, _ = resolve_model(RunConfig(model="vgg11", dataset="cifar10", weights=str(tmp_path / "v.pt")),
                                log_fn=lambda _: None)
    kinds = ingest(m, shape)[0].kinds()
    assert (kinds.get("maxpool2d", 0), kinds.get("avgpool2d", 0)) == ((0, 5) if to_avg is not False else (5, 0))


@pytest.mark.parametrize("keep", [False, True])
def test_finetune_keep_maxpool_from_an_average_pool_qcfs_checkpoint(tmp_path, monkeypatch, keep):
    """``finetune --keep-maxpool`` from a QCFS checkpoint trained with average pooling fine-tunes the max-pool
    network (the pools hold no weights); without the flag the checkpoint's average pooling is kept."""
    import snnconv.training.ann as ann
    from snnconv.api import ingest, train
    from snnconv.checkpoints import save_checkpoint

    net = to_qcfs(build_model("vgg11", in_channels=1), levels=4, avgpool=True)
    save_checkpoint(tmp_path / "v.pt", {"model": "vgg11", "dataset": "mnist", "activation": "qcfs", "levels": 4,
                                         "maxpool_to_avgpool": True, "state_dict": net.state_dict()})
    seen = {}

    def fake_train(model, train_split, val_split, test_split, cfg, path, meta, log, **kw):  # records, trains nothing
        seen.update(meta=meta, kinds=ingest(model.eval(), (1, 32, 32))[0].kinds())
        return {"accuracy": 0.0, "val_accuracy": 0.0}

    monkeypatch.setattr(ann, "train_ann", fake_train)
    train("vgg11", "mnist-bundled", None, epochs=1, out=str(tmp_path / "ft.pt"), log_fn=lambda m: None,
          activation="qcfs", levels=4, init_from=str(tmp_path / "v.pt"), keep_maxpool=keep)
    pools = (seen["kinds"].get("maxpool2d", 0), seen["kinds"].get("avgpool2d", 0))
    assert pools == ((5, 0) if keep else (0, 5))
    assert seen["meta"]["maxpool_to_avgpool"] is (not keep)


def test_finetune_to_fewer_levels_distils_from_a_teacher(tmp_path):
    """``finetune --teacher``: the loss follows the teacher's soft targets. With weight 1 the labels are unused,
    so a teacher that names the next class drives the L=2 student's accuracy down, while the true L=4 parent
    keeps it where the labels would; the checkpoint records the distillation."""
    from snnconv.api import RunConfig, load_teacher, resolve_model, train
    from snnconv.checkpoints import BUNDLED_DIR
    from snnconv.data.datasets import load_dataset, split_validation
    from snnconv.training.ann import TrainConfig, evaluate_ann, train_ann

    src = BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"
    out = tmp_path / "kd.pt"
    res = train("mnist_cnn", "mnist-bundled", None, epochs=1, batch_size=64, lr=0.01, out=str(out),
                log_fn=lambda m: None, activation="qcfs", levels=2, init_from=str(src), teacher=str(src), distill=1.0)
    ck = load_checkpoint(out)
    assert ck["distilled_from"] == {"teacher": src.name, "distill": 1.0, "temperature": 4.0}
    assert ck["train_config"]["distill"] == 1.0 and res["accuracy"] > 90
    tr, val = split_validation(load_dataset("mnist-bundled", None, train=True), "mnist-bundled")
    teacher = load_teacher(str(src), "mnist-bundled", None)
    student, _, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled", weights=str(out)))
    before = evaluate_ann(student, val)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01, augment=False, distill=1.0, temperature=2.0)
    wrong = train_ann(student, tr, val, None, cfg, tmp_path / "wrong.pt", {}, log=lambda m: None,
                      teacher=lambda x: teacher(x).roll(1, dims=1))
    assert wrong["val_accuracy"] < before - 30
    with pytest.raises(ValueError, match="teacher"):
        train_ann(student, tr, val, None, cfg, tmp_path / "none.pt", {}, log=lambda m: None)


def test_a_teacher_for_other_classes_is_refused_before_any_data(monkeypatch):
    import snnconv.api as api

    three = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))
    monkeypatch.setattr(api, "resolve_model", lambda cfg, log_fn=print: (three, (1, 28, 28), {}))
    monkeypatch.setattr(api, "load_train_val", lambda *a: pytest.fail("data read before the teacher was checked"))
    with pytest.raises(api.SnnconvError, match="same classes"):
        api.load_teacher("three.pt", "mnist-bundled", None)


def test_finetune_refuses_bad_distillation_or_regularisation_before_any_work(tmp_path, monkeypatch, capsys):
    from test_cli import run_main

    from snnconv.checkpoints import BUNDLED_DIR

    src = BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"
    base = ["finetune", "--model", "mnist_cnn", "--dataset", "mnist-bundled", "--weights", src, "--levels", "2",
            "--epochs", "1"]
    for extra, word in ((["--teacher", src, "--distill", "0"], "--distill"),
                        (["--teacher", tmp_path / "nope.pt"], "nope.pt"),
                        (["--label-smoothing", "1"], "--label-smoothing"),
                        (["--cutout", "8"], "--cutout")):  # MNIST trains without augmentation
        out = tmp_path / "never.pt"
        proc = run_main(*base, "--out", out, *extra, monkeypatch=monkeypatch, capsys=capsys)
        assert proc.returncode == 2 and word in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_train_from_scratch_distils_from_a_teacher(tmp_path, monkeypatch, capsys):
    """``train --teacher`` (a ReLU MNIST CNN from scratch, taught by the bundled QCFS net): the checkpoint records
    the teacher; a bad --distill is refused in one line before any work, with nothing written."""
    from test_cli import run_main

    from snnconv.checkpoints import BUNDLED_DIR, load_checkpoint

    src = BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"
    base = ["train", "--model", "mnist_cnn", "--dataset", "mnist-bundled", "--epochs", "1", "--batch-size", "64"]
    bad = tmp_path / "never.pt"
    proc = run_main(*base, "--out", bad, "--teacher", src, "--distill", "1.5", monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 2 and "--distill" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not bad.exists()
    out = tmp_path / "student.pt"
    proc = run_main(*base, "--out", out, "--teacher", src, "--distill", "0.5", monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    ck = load_checkpoint(out)
    assert ck["distilled_from"] == {"teacher": src.name, "distill": 0.5, "temperature": 4.0}
    assert len(ck["history"]) == 1
