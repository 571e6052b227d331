"""Conversion passes: BN folding, identity removal, threshold balancing, pass framework."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import randomize_batchnorm
from snnconv.errors import SnnconvError, UnsupportedOpError
from snnconv.frontends.torch import from_torch
from snnconv.models.zoo import build_model
from snnconv.passes import PASSES, PassContext, Pipeline, make_pass
from snnconv.passes.activation_stats import activation_scales
from snnconv.runtime.interpreter import run_ann
from snnconv.runtime.simulator import Simulator


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def run_pass(graph, spec, calibration=None):
    ctx = PassContext(calibration=calibration)
    out = Pipeline.from_config([spec]).run(graph, ctx)
    return out, ctx


# -- fold_batchnorm ----------------------------------------------------------------------------

def test_fold_batchnorm_preserves_resnet20_outputs():
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("resnet20"), seed=7)
    g, _ = from_torch(model, (3, 32, 32))
    assert g.kinds()["batchnorm"] == 21
    folded, ctx = run_pass(g, "fold_batchnorm")
    assert "batchnorm" not in folded.kinds()
    assert folded.kinds()["conv2d"] == 21 and folded.kinds()["add"] == 9
    # the residual blocks' convs (main path and projection shortcut) received the BN
    assert folded.nodes["layers.3.conv2"].bias is not None
    assert folded.nodes["layers.3.shortcut.0"].bias is not None
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = run_ann(g, x)
    assert rel_err(run_ann(folded, x), ref) < 1e-5
    with torch.no_grad():
        assert rel_err(run_ann(folded, x), model(x)) < 1e-4
    # the input graph is untouched (the pipeline works on a copy)
    assert g.kinds()["batchnorm"] == 21
    assert ctx.records[0]["pass"] == "fold_batchnorm" and len(ctx.records[0]["folded"]) == 21


class BNEdgeCases(nn.Module):
    """A BN with no producer (on the input), a conv read by two consumers, a linear + BN1d."""

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(2)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn_shared = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 5, bias=False)
        self.bn_fc = nn.BatchNorm1d(5)

    def forward(self, x):
        y = self.conv(self.bn_in(x))
        y = torch.relu(self.bn_shared(y)) + y  # conv output used twice: BN must not be folded
        return self.bn_fc(self.fc(y.flatten(1)))


def test_fold_batchnorm_only_folds_single_consumer_producers():
    torch.manual_seed(2)
    model = randomize_batchnorm(BNEdgeCases(), seed=3)
    g, _ = from_torch(model, (2, 4, 4))
    folded, ctx = run_pass(g, "fold_batchnorm")
    remaining = sorted(n for n, node in folded.nodes.items() if node.kind == "batchnorm")
    assert remaining == ["bn_in", "bn_shared"]
    assert ctx.records[0]["folded"] == ["bn_fc->fc"]
    assert folded.nodes["fc"].bias is not None  # bias created from the BN shift
    x = torch.randn(6, 2, 4, 4)
    assert rel_err(run_ann(folded, x), run_ann(g, x)) < 1e-5


def test_remove_identity_keeps_outputs():
    torch.manual_seed(3)
    model = build_model("vgg16")
    g, _ = from_torch(model, (3, 32, 32))
    assert g.kinds()["identity"] == 1
    (ident,) = [n for n, node in g.nodes.items() if node.kind == "identity"]
    (src,) = g.preds(ident)
    (dst,) = g.succs(ident)
    out, ctx = run_pass(g, "remove_identity")
    assert "identity" not in out.kinds() and ident not in out.nodes
    assert out.preds(dst) == [src]
    assert ctx.records[0]["removed"] == [ident]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(run_ann(out, x), run_ann(g, x))


# -- threshold_balance ------------------------------------------------------------------------

def two_layer(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].bias.add_(0.3)  # most units active on positive inputs
    g, _ = from_torch(model, (8,))
    (relu,) = [n for n, node in g.nodes.items() if node.kind == "clip"]
    return model, g, relu


def neuron_readout_graph(snn, neuron):
    """The SNN cut after ``neuron``: its readout is the mean of the neuron's output (rate * theta)."""
    cut = snn.copy()
    for n in list(cut.nodes)[list(cut.nodes).index(neuron) + 1:]:
        del cut.nodes[n], cut.edges[n]
    cut.outputs = [neuron]
    cut.validate()
    return cut


def test_threshold_balance_max_rate_matches_clipped_activation():
    model, g, relu = two_layer()
    gen = torch.Generator().manual_seed(0)
    calib = [torch.rand(64, 8, generator=gen) for _ in range(2)]
    spec = {"name": "threshold_balance", "method": "max", "granularity": "layer", "v_init": 0.0}
    snn, ctx = run_pass(g, spec, calib)
    node = snn.nodes[relu]
    assert node.kind == "neuron" and node.reset == "subtract" and node.v_init == 0.0
    theta = float(node.threshold)
    # threshold = max ReLU activation over the calibration data
    with torch.no_grad():
        expected = max(float(torch.relu(model[0](c)).max()) for c in calib)
    assert theta == pytest.approx(expected, rel=1e-6)
    (tb,) = [r for r in ctx.records if "thresholds" in r]
    assert tb["pass"] == "threshold_balance" and tb["thresholds"] == {relu: pytest.approx(theta)}

    T = 256
    x = torch.rand(32, 8, generator=gen) * 2.5  # some activations exceed theta: the neuron must saturate
    with torch.no_grad():
        pre = model[0](x)
    target = pre.clamp(0, theta)
    assert (pre > theta).any() and (pre < 0).any()
    rate_out = Simulator(neuron_readout_graph(snn, relu), T).run(x)[-1]
    assert (rate_out - target).abs().max() <= theta / T + 1e-5

    # the whole network: logits at T converge to the ANN-mode output of the SNN graph
    logits = Simulator(snn, T).run(x)
    bound = model[2].weight.abs().sum(1).max().item() * theta / T + 1e-4
    assert (logits[-1] - run_ann(snn, x)).abs().max() <= bound
    assert (logits[-1] - run_ann(snn, x)).abs().max() < (logits[3] - run_ann(snn, x)).abs().max()


def test_percentile_thresholds_below_max_and_are_quantiles():
    model, g, relu = two_layer(1)
    gen = torch.Generator().manual_seed(1)
    calib = [torch.rand(200, 8, generator=gen)]
    for gran in ("layer", "channel"):
        mx, _ = run_pass(g, {"name": "threshold_balance", "method": "max", "granularity": gran}, calib)
        pc, _ = run_pass(g, {"name": "threshold_balance", "method": "percentile", "percentile": 90.0,
                             "granularity": gran}, calib)
        th_max, th_pc = mx.nodes[relu].threshold, pc.nodes[relu].threshold
        assert th_max.shape == th_pc.shape
        assert torch.all(th_pc <= th_max) and torch.any(th_pc < th_max)
    # layer-wise percentile: about 90% of the positive activations lie at or below it
    pc, _ = run_pass(g, {"name": "threshold_balance", "method": "percentile", "percentile": 90.0,
                         "granularity": "layer"}, calib)
    with torch.no_grad():
        act = torch.relu(model[0](calib[0])).flatten()
    pos = act[act > 0]
    th = pc.nodes[relu].threshold
    assert torch.isclose(pos, th).any()  # an actual activation value
    assert abs(float((pos <= th).float().mean()) - 0.9) <= 1.0 / pos.numel() + 1e-6


def test_per_channel_thresholds_have_one_entry_per_channel():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 3, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 2))
    g, _ = from_torch(model, (2, 6, 6))
    calib = [torch.randn(16, 2, 6, 6)]
    snn, _ = run_pass(g, {"name": "threshold_balance", "method": "max", "granularity": "channel"}, calib)
    neurons = [n for n, node in snn.nodes.items() if node.kind == "neuron"]
    assert [snn.nodes[n].threshold.shape for n in neurons] == [torch.Size([5]), torch.Size([3])]
    with torch.no_grad():
        ref = torch.relu(model[0](calib[0])).amax(dim=(0, 2, 3))
    torch.testing.assert_close(snn.nodes[neurons[0]].threshold, ref)
    layer, _ = run_pass(g, {"name": "threshold_balance", "method": "max", "granularity": "layer"}, calib)
    assert layer.nodes[neurons[0]].threshold.shape == torch.Size([])
    assert float(layer.nodes[neurons[0]].threshold) == pytest.approx(float(ref.max()))
    # a per-channel network simulates and its rates track the per-channel clip
    Simulator(snn, 4).run(calib[0][:2])


def test_dead_channel_gets_a_valid_threshold():
    model, g, relu = two_layer(2)
    with torch.no_grad():
        for n in g.nodes.values():
            if n.kind == "linear" and n.weight.shape[0] == 16:
                n.weight[3].zero_()
                n.bias[3] = -1.0  # unit 3 never fires
    calib = [torch.rand(32, 8)]
    snn, _ = run_pass(g, {"name": "threshold_balance", "method": "percentile", "granularity": "channel"}, calib)
    th = snn.nodes[relu].threshold
    assert th.shape == (16,) and torch.all(th > 0)


def test_clip_upper_bound_caps_threshold():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU6(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].weight.mul_(20)
    g, _ = from_torch(model, (4,))
    snn, _ = run_pass(g, {"name": "threshold_balance", "method": "max", "granularity": "channel"},
                      [torch.rand(32, 4)])
    (n,) = [k for k, node in snn.nodes.items() if node.kind == "neuron"]
    th = snn.nodes[n].threshold
    assert th.max() == 6.0 and th.min() > 0


def simulate_two_layer(spec_overrides, x, T=16, cut=False):
    model, g, relu = two_layer(6)
    calib = [torch.rand(64, 8, generator=torch.Generator().manual_seed(6))]
    spec = {"name": "threshold_balance", "method": "max", "granularity": "layer", **spec_overrides}
    snn, _ = run_pass(g, spec, calib)
    return snn.nodes[relu], Simulator(neuron_readout_graph(snn, relu) if cut else snn, T).run(x)


def test_reset_zero_and_subtract_differ():
    x = torch.rand(16, 8, generator=torch.Generator().manual_seed(7))
    n_sub, sub = simulate_two_layer({"reset": "subtract"}, x)
    n_zero, zero = simulate_two_layer({"reset": "zero"}, x)
    assert n_sub.reset == "subtract" and n_zero.reset == "zero"
    assert torch.equal(n_sub.threshold, n_zero.threshold)
    assert not torch.allclose(sub, zero)
    # for constant input, reset to zero drops the residue: it never fires more than reset by subtraction
    _, rate_sub = simulate_two_layer({"reset": "subtract"}, x, cut=True)
    _, rate_zero = simulate_two_layer({"reset": "zero"}, x, cut=True)
    assert torch.all(rate_zero[-1] <= rate_sub[-1] + 1e-6) and torch.any(rate_zero[-1] < rate_sub[-1])


def test_v_init_changes_results():
    x = torch.rand(16, 8, generator=torch.Generator().manual_seed(8))
    n0, a = simulate_two_layer({"v_init": 0.0}, x, T=4)
    n1, b = simulate_two_layer({"v_init": 0.5}, x, T=4)
    assert n0.v_init == 0.0 and n1.v_init == 0.5
    assert not torch.allclose(a, b)


def test_hardtanh_is_refused_with_node_name():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Hardtanh(), nn.Linear(4, 2))
    g, _ = from_torch(model, (4,))
    (ht,) = [n for n, node in g.nodes.items() if node.kind == "clip" and node.lo == -1.0]
    with pytest.raises(UnsupportedOpError) as info:
        run_pass(g, "threshold_balance", [torch.rand(8, 4)])
    assert f"node '{ht}'" in str(info.value) and "hardtanh" in str(info.value)
    assert len(info.value.ops) == 1  # the ReLU is fine


def test_threshold_balance_needs_calibration():
    _, g, _ = two_layer()
    with pytest.raises(SnnconvError, match="calibration"):
        run_pass(g, "threshold_balance", None)


def test_calibration_may_be_a_callable():
    _, g, relu = two_layer()
    calls = []

    def batches():
        calls.append(1)
        return iter([torch.rand(8, 8)])

    snn, _ = run_pass(g, {"name": "threshold_balance", "method": "max"}, batches)
    assert calls == [1] and snn.nodes[relu].kind == "neuron"


def test_activation_scales_layer_max_matches_recorded_max():
    _, g, relu = two_layer(10)
    xs = [torch.rand(10, 8), torch.rand(10, 8) * 2]
    scales = activation_scales(g, xs, [relu], method="max")
    seen = []
    for x in xs:
        run_ann(g, x, record=lambda n, t: seen.append(t.max()) if n == relu else None)
    assert float(scales[relu]) == pytest.approx(float(max(seen)))


# -- pass framework ---------------------------------------------------------------------------

def test_builtin_passes_are_registered():
    """Every built-in pass is registered under its own name, and the registry holds nothing else."""
    expected = {"calibration", "dequantize_clips", "device_noise", "fold_batchnorm", "hseo", "leak_compensation",
                "maxpool_mode", "maxpool_tree", "prune", "quantize", "remove_identity", "sfn", "signed_neurons", "spiking_activations",
                "spiking_transformer", "srp",
                "threshold_balance"}
    assert set(PASSES) == expected
    for name, cls in PASSES.items():
        assert cls.name == name, (name, cls)
        import sys

        doc = (cls.__doc__ or "") + (sys.modules[cls.__module__].__doc__ or "")
        assert len(doc.strip()) > 80, f"pass {name} has no docstring stating its method"


def test_unknown_pass_name_raises():
    with pytest.raises(SnnconvError, match="unknown pass 'no_such_pass'"):
        make_pass("no_such_pass")
    with pytest.raises(SnnconvError, match="unknown pass"):
        Pipeline.from_config(["fold_batchnorm", {"name": "nope"}])
    with pytest.raises(SnnconvError, match="unknown pass"):
        make_pass({"method": "max"})  # no name at all


def test_unknown_or_bad_pass_config_raises():
    with pytest.raises(SnnconvError, match="threshold_balance.*unknown key.*bogus"):
        make_pass({"name": "threshold_balance", "bogus": 1})
    with pytest.raises(SnnconvError, match="unknown key"):
        make_pass({"name": "fold_batchnorm", "method": "max"})
    with pytest.raises(SnnconvError, match="method"):
        make_pass({"name": "threshold_balance", "method": "median"})
    with pytest.raises(SnnconvError, match="percentile"):
        make_pass({"name": "threshold_balance", "percentile": 150.0})
    with pytest.raises(SnnconvError, match="granularity"):
        make_pass({"name": "threshold_balance", "granularity": "neuron"})
    with pytest.raises(SnnconvError, match="reset"):
        make_pass({"name": "threshold_balance", "reset": "hard"})
    p = make_pass({"name": "threshold_balance", "method": "max", "percentile": 99.0})
    assert p.config.method == "max" and p.config.percentile == 99.0


def test_pipeline_logs_records():
    torch.manual_seed(11)
    model = randomize_batchnorm(build_model("mnist_cnn", 10, 1), seed=11)
    g, _ = from_torch(model, (1, 28, 28))
    ctx = PassContext(calibration=[torch.rand(8, 1, 28, 28)])
    snn = Pipeline.from_config(["fold_batchnorm", "remove_identity",
                                {"name": "threshold_balance", "method": "max"}]).run(g, ctx)
    by_pass = {}
    for r in ctx.records:
        by_pass.setdefault(r["pass"], []).append(r["message"])
    assert set(by_pass) == {"fold_batchnorm", "remove_identity", "threshold_balance"}
    assert "folded 3 batch norm(s)" in by_pass["fold_batchnorm"]
    assert any("batchnorm: 3->0" in m for m in by_pass["fold_batchnorm"])  # the pipeline's kind-change log
    assert "removed 0 identity node(s)" in by_pass["remove_identity"]
    assert any("clip: 4->0" in m and "neuron: 0->4" in m for m in by_pass["threshold_balance"])
    thresholds = next(r["thresholds"] for r in ctx.records if "thresholds" in r)
    assert set(thresholds) == {n for n, node in snn.nodes.items() if node.kind == "neuron"}
    assert len(thresholds) == 4
    assert g.kinds()["clip"] == 4  # input graph unchanged


def test_pipeline_reports_the_first_violated_contract():
    """Ordering rules are declared (Pass.requires/ensures) and checked by the pipeline, in one line."""
    _, g, _ = two_layer()
    calib = PassContext(calibration=[torch.rand(8, 8)])
    with pytest.raises(SnnconvError, match=r"pass 'calibration' \(step 2 of the pipeline\) requires spiking neurons.*"
                                           r"after threshold_balance"):
        Pipeline.from_config(["remove_identity", "calibration", "threshold_balance"]).run(g, calib)
    with pytest.raises(SnnconvError, match=r"pass 'threshold_balance' \(step 2.*not yet converted"):
        Pipeline.from_config(["threshold_balance", "threshold_balance"]).run(g, calib)
    Pipeline.from_config(["threshold_balance", "signed_neurons"]).run(g, calib)  # the right order runs
