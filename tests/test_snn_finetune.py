"""Hybrid fine-tuning (snnconv.training.snn_finetune): the unrolled network is the simulator's network, and
training through time with surrogate gradients raises low-T accuracy on real data."""
from __future__ import annotations

import math

import pytest
import torch

from snnconv.api import conversion_pipeline, convert_graph, ingest, resolve_model
from snnconv.checkpoints import BUNDLED_DIR
from snnconv.config import ConversionConfig, RunConfig
from snnconv.data.datasets import load_dataset, split_validation
from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.runtime.simulator import Simulator
from snnconv.training.snn_finetune import DiffSNN, finetune


def _mnist_snn(**conv):
    m, shape, _ = resolve_model(RunConfig(model=str(BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"), dataset="mnist-bundled"))
    g, _ = ingest(m, shape)
    calib = [x for x, _ in load_dataset("mnist-bundled", None, train=True).batches(128)]
    return convert_graph(g, calib, conversion_pipeline(ConversionConfig(method="qcfs", **conv)))[0]


@pytest.mark.parametrize("conv", [{}, {"signed": True}, {"calibrate": True, "calibration_timesteps": 2}])
def test_unrolled_network_equals_the_simulator(conv):
    snn = _mnist_snn(**conv)
    x = load_dataset("mnist-bundled", None, train=False).images[:32].float() / 255
    with torch.no_grad():
        for t in (1, 3):
            assert torch.allclose(DiffSNN(snn)(x, t), Simulator(snn, t, collect_stats=False).run(x)[-1], atol=1e-5)


def test_round_trip_to_graph_is_exact():
    snn = _mnist_snn()
    back = DiffSNN(snn).to_graph()
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(Simulator(back, 4, collect_stats=False).run(x), Simulator(snn, 4, collect_stats=False).run(x))


def test_finetuning_raises_t1_accuracy_on_validation_and_test():
    snn = _mnist_snn()
    tr, val = split_validation(load_dataset("mnist-bundled", None, train=True), "mnist-bundled")
    res = finetune(snn, tr, val, timesteps=1, epochs=3, lr=1e-3, batch_size=32, augment=False, log=lambda *_: None)
    assert res["best_epoch"] > 0 and res["val_accuracy"] > res["history"][0]["val_acc"] + 5
    test = load_dataset("mnist-bundled", None, train=False)
    x, y = next(iter(test.batches(len(test))))
    acc = lambda g: float((Simulator(g, 1, collect_stats=False).run(x)[-1].argmax(-1) == y).float().mean())  # noqa: E731
    assert acc(res["graph"]) > acc(snn) + 0.05  # the kept graph, simulated, is better on unseen test images


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    """State every batch: a run stopped mid-epoch and resumed ends where the uninterrupted run ends."""
    snn = _mnist_snn()
    tr, val = split_validation(load_dataset("mnist-bundled", None, train=True), "mnist-bundled")
    kw = dict(timesteps=1, epochs=2, lr=1e-3, batch_size=32, augment=False, log=lambda *_: None, max_batches=6)
    whole = finetune(snn, tr, val, **kw)

    class Killed(Exception):
        pass

    calls = []

    def dying_log(msg):
        calls.append(msg)
        if "validation" in msg and "epoch 1/2" in msg:  # killed right after epoch 1 was scored and saved
            raise Killed

    state = tmp_path / "run.state.pt"
    with pytest.raises(Killed):
        finetune(snn, tr, val, **{**kw, "log": dying_log}, state_path=state, state_every=0.0)
    assert state.is_file()
    resumed = finetune(snn, tr, val, **kw, state_path=state, state_every=0.0)
    assert [h["val_acc"] for h in resumed["history"]] == [h["val_acc"] for h in whole["history"]]
    x = torch.rand(8, 1, 28, 28)
    run = lambda g: Simulator(g, 1, collect_stats=False).run(x)  # noqa: E731
    assert torch.allclose(run(resumed["graph"]), run(whole["graph"]), atol=1e-6)
    with pytest.raises(SnnconvError, match="other settings"):
        finetune(snn, tr, val, **{**kw, "lr": 5e-4}, state_path=state)


def test_unsupported_graphs_are_refused_in_one_line():
    g = _mnist_snn()
    bad = g.copy()
    name = next(k for k, n in bad.nodes.items() if n.kind == "neuron")
    bad.nodes[name] = bad.nodes[name].replace(levels=3)
    with pytest.raises(SnnconvError, match="graded"):
        DiffSNN(bad)


def test_cli_writes_the_tuned_graph_and_refuses_existing_out(tmp_path, monkeypatch, capsys):
    from test_cli import run_main

    snn = _mnist_snn()
    snn.save(tmp_path / "snn.pt")
    args = ("finetune-snn", "--snn", tmp_path / "snn.pt", "--dataset", "mnist-bundled", "--timesteps", "1",
            "--epochs", "1", "--lr", "1e-3", "--out", tmp_path / "tuned.pt")
    proc = run_main(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stderr and Graph.load(tmp_path / "tuned.pt").nodes
    proc = run_main(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_label_smoothing_mixes_the_uniform_target_into_the_cross_entropy():
    """Label smoothing eps (Szegedy et al. 2016): (1 - eps) * CE(y) + eps * mean over classes of -log p."""
    from snnconv.training.ann import distillation_loss

    g = torch.Generator().manual_seed(1)
    s, y = torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    logp = torch.log_softmax(s, 1)
    want = (0.9 * -logp[torch.arange(8), y] + 0.1 * -logp.mean(1)).mean()
    assert torch.allclose(distillation_loss(s, y, smoothing=0.1), want, atol=1e-6)
    assert not torch.allclose(distillation_loss(s, y), want, atol=1e-3)


def test_distillation_loss_is_cross_entropy_plus_the_softened_kl():
    from snnconv.training.ann import distillation_loss

    torch.manual_seed(0)
    s, a, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.equal(distillation_loss(s, y), ce) and torch.equal(distillation_loss(s, y, a, 0.0), ce)
    p, q = torch.softmax(a / 3, 1), torch.softmax(s / 3, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    assert torch.allclose(distillation_loss(s, y, a, 0.25, 3.0), 0.75 * ce + 0.25 * 9 * kl, atol=1e-6)
    assert distillation_loss(a, y, a, 1.0).abs() < 1e-6  # a student equal to its teacher: nothing to learn


def _ann_teacher():
    from snnconv.runtime.interpreter import run_ann

    m, shape, _ = resolve_model(RunConfig(model=str(BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt"), dataset="mnist-bundled"))
    g, _ = ingest(m, shape)
    return lambda x: run_ann(g, x)


def test_distillation_alone_teaches_the_snn():
    """With weight 1 the labels are never used: the T=1 network learns from the ANN's soft targets only."""
    snn = _mnist_snn()
    tr, val = split_validation(load_dataset("mnist-bundled", None, train=True), "mnist-bundled")
    res = finetune(snn, tr, val, timesteps=1, epochs=2, lr=1e-3, batch_size=32, augment=False, log=lambda *_: None,
                   teacher=_ann_teacher(), distill=1.0, temperature=2.0)
    assert res["best_epoch"] > 0 and res["val_accuracy"] > res["history"][0]["val_acc"] + 5
    teacher = _ann_teacher()  # a teacher that names the next class: the SNN follows it, not the labels
    wrong = finetune(snn, tr, val, timesteps=2, epochs=3, lr=3e-3, batch_size=32, augment=False, log=lambda *_: None,
                     teacher=lambda x: teacher(x).roll(1, dims=1), distill=1.0, temperature=2.0)
    assert wrong["best_epoch"] == 0 and wrong["history"][-1]["val_acc"] < wrong["history"][0]["val_acc"] - 20
    with pytest.raises(SnnconvError, match="same classes"):
        finetune(snn, tr, val, timesteps=1, epochs=1, batch_size=32, augment=False, log=lambda *_: None,
                 teacher=lambda x: torch.zeros(len(x), 3), distill=0.5, max_batches=1)
    for bad in ({"distill": 1.5, "teacher": _ann_teacher()}, {"distill": 0.5}):
        with pytest.raises(SnnconvError, match="distillation|teacher"):
            finetune(snn, tr, val, timesteps=1, log=lambda *_: None, **bad)


def test_cli_distils_from_a_teacher_checkpoint(tmp_path, monkeypatch, capsys):
    from test_cli import run_main

    _mnist_snn().save(tmp_path / "snn.pt")
    args = ["finetune-snn", "--snn", tmp_path / "snn.pt", "--dataset", "mnist-bundled", "--timesteps", "1",
            "--epochs", "1", "--lr", "1e-3", "--out", tmp_path / "tuned.pt"]
    proc = run_main(*args, "--teacher", BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt", monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert "distilling from" in proc.stderr and Graph.load(tmp_path / "tuned.pt").nodes
    proc = run_main(*args[:-1], tmp_path / "t2.pt", "--teacher", tmp_path / "nope.pt", monkeypatch=monkeypatch,
                    capsys=capsys)
    assert proc.returncode == 2 and "nope.pt" in proc.stderr and not (tmp_path / "t2.pt").exists()
    proc = run_main(*args[:-1], tmp_path / "t3.pt", "--teacher", BUNDLED_DIR / "mnist_cnn_qcfs4-mnist.pt",
                    "--distill", "2", monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 2 and "--distill" in proc.stderr and not (tmp_path / "t3.pt").exists()


@pytest.fixture(scope="module")
def tuned_mnist():
    """A T=1 MNIST SNN after a short BPTT fine-tuning (its thresholds, initial membranes and weights moved)."""
    snn = _mnist_snn()
    tr, val = split_validation(load_dataset("mnist-bundled", None, train=True), "mnist-bundled")
    res = finetune(snn, tr, val, timesteps=1, epochs=1, lr=1e-3, batch_size=32, augment=False, log=lambda *_: None)
    assert res["best_epoch"] == 1
    return snn, res["graph"]


def test_the_finetuned_network_leaves_snnconv_spike_for_spike(tuned_mnist, target, tmp_path):
    """The network finetune-snn hands back exports to NIR like any conversion and runs in every peer with
    snnconv's spikes and readout (the deliverable is the fine-tuned network, not only its reported accuracy)."""
    from snnconv.backends.nir import export_nir, import_nir
    from snnconv.backends.verify import reference_run
    from snnconv.interop.base import load

    snn, tuned = tuned_mnist
    moved = [k for k, n in tuned.nodes.items() if n.kind == "neuron"
             and not torch.equal(n.threshold, snn.nodes[k].threshold)]
    assert moved  # fine-tuning changed thresholds: the export carries the tuned ones
    export_nir(tuned, tmp_path / "tuned.nir")
    x = load_dataset("mnist-bundled", None, train=False).images[:16].float() / 255
    ref = reference_run(import_nir(tmp_path / "tuned.nir"), x, 4)
    got = load(tmp_path / "tuned.nir", target).run(x, 4, record=True)
    for k, r in ref["spikes"].items():
        assert torch.equal(torch.sign(got["spikes"][k].reshape(r.shape).float()).to(torch.int8), r), k
    ours = Simulator(tuned, 4, collect_stats=False).run(x)
    assert torch.allclose(got["outputs"].cumsum(0) / torch.arange(1, 5).view(-1, 1, 1), ours, atol=1e-4)


def _saved_bytes(fn) -> int:
    """Bytes autograd keeps for the backward pass while ``fn`` builds its graph (outside checkpointed regions)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


@pytest.mark.parametrize("signed", [True, False])
def test_checkpointing_each_step_keeps_less_and_gives_the_same_gradients(signed):
    """Activation checkpointing per time step (Chen et al. 2016): identical loss and gradients; what autograd
    keeps, plus the membrane state the checkpoints hold, is a fraction of plain BPTT's."""
    snn = _mnist_snn(signed=signed)
    x = load_dataset("mnist-bundled", None, train=False).images[:16].float() / 255
    y = load_dataset("mnist-bundled", None, train=False).labels[:16]
    grads, kept = {}, {}
    for ck in (False, True):
        net = DiffSNN(snn)
        out, kept[ck] = _saved_bytes(lambda: net(x, 6, checkpoint_steps=ck))
        torch.nn.functional.cross_entropy(out, y).backward()
        grads[ck] = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 4
    for k in grads[True]:
        assert torch.allclose(grads[True][k], grads[False][k], atol=1e-6), k
    state = 6 * sum(2 * 4 * 16 * math.prod(n.shape) for n in snn.nodes.values() if n.kind == "neuron")
    assert kept[True] + state < 0.5 * kept[False], (kept, state)
    # the estimate finetune-snn prints: the distinct saved activations (no parameters, no duplicates)
    from snnconv.training.snn_finetune import activation_memory_mb

    assert 0.6 * kept[False] < activation_memory_mb(snn, 6, 16) * 2 ** 20 <= kept[False]


def test_finetune_checkpoints_steps_when_bptt_memory_is_large(monkeypatch):
    import snnconv.training.snn_finetune as ft

    snn = _mnist_snn()
    tr, val = split_validation(load_dataset("mnist-bundled", None, train=True), "mnist-bundled")
    logs = []
    kw = dict(timesteps=2, epochs=1, batch_size=32, augment=False, max_batches=1, log=logs.append)
    finetune(snn, tr, val, **kw)
    assert not any("checkpointing" in m for m in logs)
    monkeypatch.setattr(ft, "CHECKPOINT_ABOVE_MB", 0.0)  # (default: a quarter of the memory)
    finetune(snn, tr, val, **kw)
    assert any("activation checkpointing per time step" in m for m in logs)
