"""Issue-3 conversion methods, each on a tiny net showing its documented property: QCFS (exact at
T = L), scale-and-fire neurons (exact at T = 1), layer-wise calibration (reduces the per-layer
error), signed neurons (cancel over-firing), SRP, and method selection through the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from helpers import randomize_batchnorm
from snnconv.api import resolve_model
from snnconv.config import ConversionConfig, RunConfig
from snnconv.errors import SnnconvError
from snnconv.data.datasets import load_dataset
from snnconv.frontends.torch import from_torch
from snnconv.ir import SpikingNeuron
from snnconv.models.qcfs import QCFS
from snnconv.runtime.neurons.integrate_fire import run_spiking_neuron
from snnconv.passes import PassContext, Pipeline
from snnconv.runtime.interpreter import run_ann
from snnconv.runtime.simulator import Simulator


def convert(graph, spec, calibration=None):
    ctx = PassContext(calibration=calibration)
    return Pipeline.from_config(spec).run(graph, ctx), ctx


def away_from_steps(q: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mask of quantizer arguments not within eps of a rounding step (float summation order differs)."""
    frac = q - q.floor()
    return (frac > eps) & (frac < 1 - eps)


# -- QCFS: exact at T = L for one layer with constant input (Bu et al. 2022) ---------------------

def test_collapsed_qcfs_threshold_is_named_not_called_unsupported():
    model = nn.Sequential(nn.Linear(6, 8), QCFS(4, 1.0), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[1].threshold.fill_(-0.25)
    with pytest.raises(SnnconvError, match=r"QCFS threshold lambda = -0.25 at node .* is not positive"):
        from_torch(model, (6,))


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_qcfs_snn_equals_quantized_ann_at_T_equals_L(levels):
    torch.manual_seed(levels)
    lam = 1.7
    model = nn.Sequential(nn.Linear(6, 32), QCFS(levels, lam), nn.Linear(32, 3)).eval()
    graph, _ = from_torch(model, (6,))
    act = [n for n, node in graph.nodes.items() if node.kind == "clip"][0]
    assert graph.nodes[act].levels == levels and graph.nodes[act].hi == pytest.approx(lam)
    snn, _ = convert(graph, RunConfig(conversion=ConversionConfig(method="qcfs")).pipeline_spec())
    neuron = snn.nodes[act]
    assert neuron.kind == "neuron" and float(neuron.threshold) == pytest.approx(lam) and neuron.v_init == 0.5
    x = torch.randn(64, 6) * 2
    ann = {}
    run_ann(graph, x, record=lambda n, t: ann.__setitem__(n, t))
    z = model[0](x).detach()
    ok = away_from_steps(z * levels / lam + 0.5)
    assert ok.float().mean() > 0.95
    rate = Simulator(snn, levels, collect_stats=False).mean_outputs(x)[act]
    # the same integer spike count / quantization level for every neuron (exact, not approximately)
    assert torch.equal(torch.round(rate[ok] * levels / lam), torch.round(ann[act][ok] * levels / lam))
    assert torch.allclose(rate[ok], ann[act][ok], atol=1e-5)  # and the rates themselves, where the ANN is off a step edge
    assert torch.allclose(ann[act], model[1](z).detach(), atol=1e-6)


# -- SFN: exact at T = 1 for a multi-layer QCFS net ----------------------------------------------

class SmallQCFSNet(nn.Module):
    def __init__(self, levels=4):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), QCFS(levels, 1.3)
        self.conv2, self.act2 = nn.Conv2d(8, 8, 3, padding=1), QCFS(levels, 0.9)
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.act3 = nn.Linear(8 * 4 * 4, 16), QCFS(levels, 1.1)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.conv2(x)))
        return self.fc2(self.act3(self.fc1(x.flatten(1))))


def test_sfn_at_T1_equals_quantized_ann_exactly():
    torch.manual_seed(0)
    model = randomize_batchnorm(SmallQCFSNet(), seed=3)
    with torch.no_grad():
        model.fc1.weight.mul_(4)  # so that every QCFS layer uses all its levels
    graph, _ = from_torch(model, (2, 8, 8))
    x = torch.randn(32, 2, 8, 8) * 3
    levels_used = {}
    run_ann(graph, x, record=lambda n, t: levels_used.__setitem__(n, torch.unique(torch.round(t * 4 / 1.3)).numel()))
    assert all(levels_used[n] >= 4 for n in ("act1", "act2", "act3"))
    snn, ctx = convert(graph, RunConfig(conversion=ConversionConfig(method="sfn")).pipeline_spec(), [x])
    neurons = {n: node for n, node in snn.nodes.items() if node.kind == "neuron"}
    assert len(neurons) == 3 and all(n.levels == 4 for n in neurons.values())
    assert float(neurons["act1"].threshold) == pytest.approx(1.3 / 4)
    with torch.no_grad():
        ref = model(x)
    logits = Simulator(snn, 1, collect_stats=False).run(x)[0]
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.allclose(run_ann(graph, x), ref, atol=1e-5)
    # T = 1 with binary IF neurons (method qcfs) is far from the ANN: the levels matter
    binary, _ = convert(graph, RunConfig(conversion=ConversionConfig(method="qcfs")).pipeline_spec(), [x])
    assert (Simulator(binary, 1, collect_stats=False).run(x)[0] - ref).abs().max() > 0.2
    assert any("graded spikes up to 4" in r["message"] for r in ctx.records)


def test_sfn_on_relu_net_uses_levels_and_percentile_scale():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4)).eval()
    graph, _ = from_torch(model, (10,))
    x = torch.randn(256, 10)
    snn, _ = convert(graph, [{"name": "sfn", "levels": 8, "method": "max", "granularity": "layer"}], [x])
    (name,) = [n for n, node in snn.nodes.items() if node.kind == "neuron"]
    z = torch.relu(model[0](x)).detach()
    assert float(snn.nodes[name].threshold) == pytest.approx(float(z.max()) / 8, rel=1e-5)
    assert snn.nodes[name].levels == 8
    # with L = 8 levels at T = 1 the output is within half a step (theta/2) of the ReLU
    rate = Simulator(snn, 1, collect_stats=False).mean_outputs(x)[name]
    assert (rate - z).abs().max() <= float(snn.nodes[name].threshold) / 2 + 1e-5


# -- calibration (Li et al. 2021) reduces the per-layer error ------------------------------------

def _layer_mean_errors(snn, ref_graph, neurons, x, T):
    """|E[ANN activation] - E[SNN mean output]| per channel, averaged, for every neuron layer."""
    ann = {}
    run_ann(ref_graph, x, record=lambda n, t: ann.__setitem__(n, t) if n in neurons else None)
    out = Simulator(snn, T, collect_stats=False).mean_outputs(x)

    def cmean(t):
        return t.transpose(0, 1).reshape(t.shape[1], -1).mean(1) if t.dim() == 4 else t.mean(0)
    return {n: float((cmean(ann[n]) - cmean(out[n])).abs().mean()) for n in neurons}


@pytest.mark.parametrize("mode", ["bias", "potential"])
def test_calibration_reduces_per_layer_error(mode):
    torch.manual_seed(0)
    model, shape, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled"))
    graph, _ = from_torch(model, shape)
    train = load_dataset("mnist-bundled", None, train=True)
    test = load_dataset("mnist-bundled", None, train=False).subset(200, 0)
    calib = [x for x, _ in train.batches(128)]
    T = 4
    base = RunConfig(conversion=ConversionConfig(method="percentile")).pipeline_spec()
    plain, _ = convert(graph, base, calib)
    calibrated, ctx = convert(graph, base + [{"name": "calibration", "mode": mode, "timesteps": T}], calib)
    neurons = [n for n, node in plain.nodes.items() if node.kind == "neuron"]
    # reference: the ANN (ReLU) activations, i.e. the source graph
    x = torch.cat([x for x, _ in test.batches(200)])
    before = _layer_mean_errors(plain, graph, neurons, x, T)
    after = _layer_mean_errors(calibrated, graph, neurons, x, T)
    assert sum(after.values()) < 0.5 * sum(before.values()), (before, after)
    # On held-out images every layer fed by spikes is closer to the ANN than before. (The first layer,
    # fed by the analog image, can get worse: MNIST's constant background puts a point mass on one conv
    # value per channel, so the one-shot mean correction moves many positions across a step at once.)
    for n in neurons[1:]:
        assert after[n] < before[n], (n, before, after)
    if mode == "bias":
        assert all(calibrated.nodes[n].v_offset is None for n in neurons)
    else:
        assert all(calibrated.nodes[n].v_offset is not None for n in neurons)
    assert any("calibration of 4 neuron layer(s) for T=4" in r["message"] for r in ctx.records)


def test_bias_calibration_inserts_offset_when_the_producer_is_shared():
    """A neuron fed by a residual add (no own bias) gets a scale node with the correction."""
    torch.manual_seed(2)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.relu1, self.relu2 = nn.Linear(6, 6), nn.Linear(6, 6), nn.ReLU(), nn.ReLU()
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            return self.out(self.relu2(self.fc2(self.relu1(self.fc1(x))) + x))

    graph, _ = from_torch(Res().eval(), (6,))
    x = torch.randn(128, 6)
    snn, _ = convert(graph, ["fold_batchnorm", {"name": "threshold_balance", "method": "max"},
                             {"name": "calibration", "timesteps": 2, "samples": 128}], [x])
    assert any(node.kind == "scale" for node in snn.nodes.values())
    assert snn.kinds()["neuron"] == 2


# -- signed neurons cancel over-firing -----------------------------------------------------------

def test_signed_neuron_cancels_early_spikes():
    cur = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.3, 0.3, 0.3, -0.9]).view(8, 1, 1)
    out = {}
    for signed in (False, True):
        n = SpikingNeuron(torch.tensor(1.0), v_init=0.5, signed=signed)
        _, counts, _ = run_spiking_neuron(n, cur, None)
        out[signed] = counts.flatten()
    assert out[False].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert out[True].tolist() == [1, -1, 0, 0, 0, 1, 0, -1]
    # the net count is round(cumulative input), never negative
    cum = cur.flatten().cumsum(0)
    assert torch.equal(out[True].cumsum(0), torch.floor(cum + 0.5).clamp(min=0))


def test_signed_neurons_reduce_error_on_fluctuating_input():
    """IF layers fed by spikes of a previous layer see fluctuating input; negative spikes reduce
    the error of the mean output against the ANN in a two-hidden-layer net."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 5)).eval()
    graph, _ = from_torch(model, (20,))
    x = torch.randn(512, 20)
    spec = [{"name": "threshold_balance", "method": "max", "granularity": "layer"}]
    plain, _ = convert(graph, spec, [x])
    signed, ctx = convert(graph, spec + ["signed_neurons"], [x])
    assert all(n.signed for n in signed.nodes.values() if n.kind == "neuron")
    neurons = [n for n, node in plain.nodes.items() if node.kind == "neuron"]
    ann = {}
    run_ann(plain, x, record=lambda n, t: ann.__setitem__(n, t))
    for T in (4, 16):
        e_plain = Simulator(plain, T, collect_stats=False).mean_outputs(x)
        e_signed = Simulator(signed, T, collect_stats=False).mean_outputs(x)
        err = {k: sum(float((e[n] - ann[n]).norm() / ann[n].norm()) for n in neurons[1:])
               for k, e in (("plain", e_plain), ("signed", e_signed))}
        assert err["signed"] < err["plain"], (T, err)


def test_srp_silences_neurons_without_residual_potential():
    from snnconv.passes.srp import presim_steps

    n = SpikingNeuron(torch.tensor(1.0), v_init=0.5, presim=2)
    # neuron 0: input 0.2 -> v after 2 steps 0.9 > 0 keeps firing; neuron 1: -0.4 then +0.6 (ANN ~0)
    cur = torch.tensor([[0.2, -0.6], [0.2, -0.6], [0.6, 0.3], [0.6, 0.3], [0.6, 0.3]]).view(5, 1, 2)
    _, counts, state = run_spiking_neuron(n, cur, None)
    assert state["mask"].flatten().tolist() == [1.0, 0.0]
    assert counts[2:, 0, 1].abs().sum() == 0  # silenced after the pre-run
    assert counts[2:, 0, 0].sum() >= 1
    g, _ = from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval(), (3,))
    snn, _ = convert(g, [{"name": "threshold_balance", "method": "max"}, {"name": "srp", "presim": 3}],
                     [torch.randn(16, 3)])
    assert presim_steps(snn) == 3



def test_srp_reduces_conversion_error_at_T_equals_L():
    """SRP's documented effect (Hao et al. AAAI 2023): on a QCFS net at T = L, silencing the neurons
    whose residual potential after the pre-run is not positive (ANN output 0, SNN fires) brings the
    readout over the T steps after the pre-run closer to the ANN than the plain SNN's T steps."""
    torch.manual_seed(0)
    L, tau = 4, 4
    model = nn.Sequential(nn.Linear(16, 64), QCFS(L, 1.0), nn.Linear(64, 64), QCFS(L, 1.0), nn.Linear(64, 64),
                          QCFS(L, 1.0), nn.Linear(64, 5)).eval()
    graph, _ = from_torch(model, (16,))
    x = torch.randn(256, 16)
    with torch.no_grad():
        ref = model(x)
    spec = RunConfig(conversion=ConversionConfig(method="qcfs")).pipeline_spec()
    plain, _ = convert(graph, spec, [x])
    srp, ctx = convert(graph, spec + [{"name": "srp", "presim": tau}], [x])
    assert any("SRP pre-run of 4 steps on 3 neuron layer(s)" in r["message"] for r in ctx.records)
    out_plain = Simulator(plain, L, collect_stats=False).run(x)[L - 1]
    running = Simulator(srp, tau + L, collect_stats=False).run(x)  # running means over steps 1..s
    csum = running * torch.arange(1, tau + L + 1, dtype=running.dtype).view(-1, 1, 1)
    out_srp = (csum[tau + L - 1] - csum[tau - 1]) / L  # readout over steps tau+1 .. tau+L
    err = {k: float((o - ref).norm() / ref.norm()) for k, o in (("plain", out_plain), ("srp", out_srp))}
    assert err["srp"] < 0.7 * err["plain"], err
    agree = {k: float((o.argmax(1) == ref.argmax(1)).float().mean()) for k, o in (("plain", out_plain), ("srp", out_srp))}
    assert agree["srp"] > agree["plain"], agree


# -- method selection ----------------------------------------------------------------------------

def test_method_pipelines():
    spec = lambda **kw: RunConfig(conversion=ConversionConfig(**kw)).pipeline_spec()  # noqa: E731
    names = lambda s: [p if isinstance(p, str) else p["name"] for p in s]  # noqa: E731
    assert names(spec(method="max")) == ["fold_batchnorm", "remove_identity", "threshold_balance"]
    assert names(spec(method="calibration")) == ["fold_batchnorm", "remove_identity", "threshold_balance",
                                                 "calibration"]
    assert names(spec(method="sfn", levels=8))[-1] == "sfn" and spec(method="sfn", levels=8)[-1]["levels"] == 8
    assert names(spec(method="percentile", qcfs_as_clip=True, signed=True)) == [
        "fold_batchnorm", "remove_identity", "dequantize_clips", "threshold_balance", "signed_neurons"]
    assert names(spec(method="qcfs", qcfs_as_clip=True)) == ["fold_batchnorm", "remove_identity", "threshold_balance"]
    # --calibrate: after signed_neurons (it must measure the neurons that will run), towards the clip on QCFS nets
    qcal = spec(method="qcfs", signed=True, calibrate=True, calibration_timesteps=8)
    assert names(qcal)[-2:] == ["signed_neurons", "calibration"]
    assert qcal[-1]["timesteps"] == 8 and qcal[-1]["target"] == "clip"
    assert spec(method="percentile", calibrate=True)[-1]["target"] == "relu"
    with pytest.raises(SnnconvError, match="calibrate"):
        spec(method="sfn", calibrate=True)


@pytest.mark.parametrize("method,extra,graded", [("sfn", ["--levels", "4"], True),
                                                 ("calibration", ["--calib-timesteps", "2"], False),
                                                 ("max", ["--signed"], False),
                                                 ("percentile", ["--calibrate", "--calib-timesteps", "2"], False)])
def test_cli_method_selection(snnconv_cli_factory, tmp_path, method, extra, graded):
    out = tmp_path / f"run-{method}"
    r = snnconv_cli_factory("convert", "--dataset", "mnist-bundled", "--model", "mnist_cnn", "--method", method,
                            *extra, "--timesteps", "1,2", "--eval-samples", "64", "--calib-samples", "128",
                            "--output-dir", out)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    names = [p if isinstance(p, str) else p["name"] for p in rep["conversion"]["pipeline"]]
    assert rep["conversion"]["method"] == method
    expected = {"sfn": "sfn", "calibration": "calibration", "max": "signed_neurons", "percentile": "calibration"}[method]
    assert expected in names
    assert rep["spikes"]["graded"] is graded and rep["spikes"]["signed"] is (method == "max")
    md = (out / "report.md").read_text()
    assert ("graded spikes: yes, max 4 levels per step" in md) is graded
    # which deployment targets run the neurons as converted (their declared capabilities): graded spikes only
    # sinabs (measured in docs/benchmarks/deploy.md), binary and signed ones all four; said in the log too
    fit = rep["spikes"]["frameworks"]
    assert set(fit) >= {"spikingjelly", "snntorch", "norse", "sinabs"} and fit["sinabs"] == []
    assert all(fit[k] == (["graded"] if graded else []) for k in ("spikingjelly", "snntorch", "norse"))
    assert ("not: spikingjelly (no graded)" in md) is graded and ("not: spikingjelly (no graded)" in r.stdout + r.stderr) is graded
    assert ("--target <framework>" in md) is graded  # how to get a network the others run


def test_framework_fit_names_what_no_target_provides():
    """Refractory periods and non-IF spiking nodes are needs no registered target's neurons provide."""
    from snnconv.api import framework_fit
    from snnconv.ir import Graph, Input, SpikingNeuron

    g = Graph()
    g.add("x", Input(shape=(4,)))
    g.add("n", SpikingNeuron(torch.ones(1), reset="subtract", refractory=2), ["x"])
    g.outputs = ["n"]
    assert all(missing == ["refractory"] for missing in framework_fit(g).values())
    g.replace("n", g.nodes["n"].replace(refractory=0, levels=3))
    assert framework_fit(g)["sinabs"] == [] and framework_fit(g)["norse"] == ["graded"]


def test_cli_unknown_method_is_one_line_error(snnconv_cli_factory):
    r = snnconv_cli_factory("convert", "--dataset", "mnist-bundled", "--method", "magic", "--eval-samples", "8")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "magic" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.fixture
def snnconv_cli_factory(monkeypatch, capsys, tmp_path):
    from test_cli import run_main

    monkeypatch.chdir(tmp_path)
    return lambda *args: run_main(*args, monkeypatch=monkeypatch, capsys=capsys)


def test_calibration_on_qcfs_weights_targets_the_clipped_function():
    # A QCFS-trained net computes clip(0, lambda); an unclipped ReLU reference would add wrong biases.
    from snnconv.config import ConversionConfig, RunConfig

    spec = RunConfig(conversion=ConversionConfig(method="calibration", qcfs_as_clip=True)).pipeline_spec()
    assert [p for p in spec if isinstance(p, dict) and p["name"] == "calibration"][0]["target"] == "clip"
    spec = RunConfig(conversion=ConversionConfig(method="calibration")).pipeline_spec()
    assert [p for p in spec if isinstance(p, dict) and p["name"] == "calibration"][0]["target"] == "relu"


@pytest.mark.parametrize("mode", ["bias", "potential"])
def test_calibration_sweep_equals_resimulation(mode):
    """The one-pass layer-by-layer calibration (default) gives exactly the corrections of re-simulating the
    ancestors of every neuron layer (Li et al.'s procedure), on a residual network."""
    from helpers import randomize_batchnorm
    from snnconv.frontends.torch import from_torch
    from snnconv.passes import PassContext, Pipeline
    from test_nir import SmallResNet

    torch.manual_seed(0)
    g, _ = from_torch(randomize_batchnorm(SmallResNet()), (3, 8, 8))
    calib = [torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))]
    out = {}
    for method in ("sweep", "resimulate"):
        spec = ["fold_batchnorm", "remove_identity", {"name": "threshold_balance", "method": "percentile"},
                {"name": "calibration", "mode": mode, "timesteps": 4, "samples": 64, "batch_size": 32,
                 "method": method}]
        ctx = PassContext(calibration=calib)
        out[method] = (Pipeline.from_config(spec).run(g, ctx),
                       next(r for r in ctx.records if "mean_abs_error_before" in r))
    a, b = out["sweep"][0], out["resimulate"][0]
    assert list(a.nodes) == list(b.nodes)
    changed = 0
    for k in a.nodes:
        for f in ("bias", "offset", "v_offset"):
            va, vb = getattr(a.nodes[k], f, None), getattr(b.nodes[k], f, None)
            assert (va is None) == (vb is None), (k, f)
            if va is not None:
                assert torch.equal(va, vb), (k, f)
                changed += 1
    assert changed > 0 and out["sweep"][1]["mean_abs_error_before"] == out["resimulate"][1]["mean_abs_error_before"]


def test_census_counts_a_layer_after_an_average_pool_of_spikes_as_spike_driven():
    """Average pooling of spikes folds into the next layer's weights: only the first conv reads analog input."""
    from snnconv.passes.spiking_transformer import spiking_census
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    graph, _ = from_torch(model, (3, 8, 8))
    snn, _ = convert(graph, [{"name": "threshold_balance"}], [torch.randn(16, 3, 8, 8)])
    roles = {r["node"]: r["role"] for r in spiking_census(snn) if snn.nodes[r["node"]].kind in ("conv2d", "linear")}
    assert sorted(roles.values()) == ["synaptic_analog", "synaptic_spikes", "synaptic_spikes"]
    first = next(n for n, node in snn.nodes.items() if node.kind == "conv2d")
    assert roles[first] == "synaptic_analog"
