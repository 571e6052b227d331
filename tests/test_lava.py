"""Lava export: the accurate converted network (subtractive reset, initial membrane, signed and graded
spikes, per-channel thresholds) becomes one integer network of Lava processes (Conv / Dense synapses,
RingBuffer input, snnconv's neuron process) that streams any input at run time; run in Lava (lava-nc
0.9.0, Python 3.9 side venv from scripts/setup_lava.sh, Loihi2SimCfg fixed_pt) it gives the readout of
snnconv's integer reference exactly, and the integer network agrees with snnconv's float simulation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from snnconv.api import convert_module
from snnconv.backends import lava
from snnconv.config import ConversionConfig
from snnconv.errors import SnnconvError
from snnconv.runtime.simulator import Simulator


def _net(cfg=ConversionConfig(), pool=nn.AvgPool2d):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), pool(2), nn.Conv2d(3, 4, 3, padding=1),
                      nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    return convert_module(m, (1, 6, 6), [torch.rand(32, 1, 6, 6)], cfg)


class _Res(nn.Module):
    """conv -> relu -> [conv -> relu -> conv] + identity -> relu -> pool -> linear: one residual block."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.c2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 3 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        h = torch.relu(self.c2(torch.relu(self.c1(h))) + h)
        return self.fc(torch.flatten(nn.functional.avg_pool2d(h, 2), 1))


def _res(cfg=ConversionConfig()):
    torch.manual_seed(1)
    return convert_module(_Res().eval(), (1, 6, 6), [torch.rand(32, 1, 6, 6)], cfg)


CALIB = torch.rand(32, 1, 6, 6, generator=torch.Generator().manual_seed(5))


def test_convolutions_stay_convolutions_and_no_image_is_in_the_network(tmp_path):
    net = lava.build_network(_net(), CALIB, timesteps=6)
    l0, l1, l2 = net["layers"]
    (c0,), (c1,), (c2,) = l0["conns"], l1["conns"], l2["conns"]
    assert (c0["kind"], c0["src"], c0["weight"].shape, c0["bits"]) == ("conv", -1, (3, 1, 3, 3), 8)
    # sum pool 2x2 then conv 3x3 (pad 1) is one 6x6 stride-2 kernel (pad 2), not a flattened matrix
    assert (c1["kind"], c1["weight"].shape, c1["stride"], c1["padding"]) == ("conv", (4, 3, 6, 6), (2, 2), (2, 2))
    assert c2["kind"] == "dense" and c2["weight"].shape == (10, 36)
    for c in (c0, c1, c2):
        assert c["weight"].min() >= -256 and c["weight"].max() <= 254 and (c["weight"] % 2 == 0).all()
    assert all((L["vth"] % 2 == 0).all() and (L["v_init"] * 2 == L["vth"]).all() for L in net["layers"])
    lava.write_network(net, tmp_path / "n.npz")
    # the same network for any inputs: nothing in the file depends on the images that are run
    assert not any(k.startswith("x") or "sample" in k for k in np.load(tmp_path / "n.npz").files)
    hw = lava.hardware_report(net)
    assert hw["limits"]["synaptic_memory_per_core_bytes"] == 128 * 1024 and hw["fits_one_chip"]
    assert [r["binding"] for r in hw["layers"]] == ["neurons per core"] * 4


def test_integer_network_agrees_with_the_float_simulation():
    g = _net()
    x = torch.rand(64, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    T = 16
    net = lava.build_network(g, CALIB, T)
    ref = lava.reference_run(net, lava.quantize_input(net, x))
    want = Simulator(g, T).run(x)[-1].argmax(1).numpy()
    agree = (lava.logits(net, ref["readout"]).argmax(1) == want).mean()
    assert agree >= 0.9, agree  # 8-bit weights and input: a few borderline samples may flip


def test_residual_delay_and_refusals():
    net = lava.build_network(_res(), CALIB, 5)
    fan_in = [[(c["src"], c["delay"]) for c in L["conns"]] for L in net["layers"]]
    assert fan_in == [[(-1, 0)], [(0, 0)], [(0, 1), (1, 0)]]  # the identity path waits one step
    assert [L["offset"] for L in net["layers"]] == [1, 2, 3] and net["readout"]["offset"] == 4
    from snnconv.ir import CubaLIF

    g = _net()
    name = next(n for n, node in g.nodes.items() if node.spiking)
    shape = g.nodes[name].shape
    g.nodes[name] = CubaLIF()
    g.nodes[name].shape = shape
    with pytest.raises(SnnconvError, match="IF and LIF neurons.*cuba_lif"):
        lava.check_lava(g)


def test_missing_lava_venv_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNCONV_LAVA_VENV", str(tmp_path / "none"))
    with pytest.raises(SnnconvError, match="setup_lava.sh"):
        lava.lava_python()


CASES = {
    "chain": lambda: _net(),
    "residual": lambda: _res(),
    "lif": lambda: _net(ConversionConfig(neuron="lif", leak=0.9)),
    "residual-signed": lambda: _res(ConversionConfig(signed=True)),
    "graded-sfn": lambda: _net(ConversionConfig(method="sfn")),
    "reset-zero": lambda: _net(ConversionConfig(reset="zero", v_init=0.0)),
    # max pooling as the signed-neuron tree (snnconv.passes.maxpool_tree): one source per population
    "maxpool-tree": lambda: _net(ConversionConfig(maxpool="tree"), nn.MaxPool2d),
    "maxpool-tree-signed": lambda: _net(ConversionConfig(maxpool="tree", signed=True), nn.MaxPool2d),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lava_run_equals_the_integer_reference(case, tmp_path):
    """One Lava network streams several inputs; readout and per-neuron spike counts equal snnconv's integer
    run (skipped, with the reason, when the Lava venv is absent; CI makes that skip a failure)."""
    try:
        lava.lava_python()
    except SnnconvError as e:
        pytest.skip(f"Lava venv absent: {e}")
    g = CASES[case]()
    if case == "graded-sfn":
        assert any(n.spiking and n.levels > 1 for n in g.nodes.values())
    if case == "residual-signed":
        assert any(n.spiking and n.signed for n in g.nodes.values())
    if case.startswith("maxpool"):
        assert not any(n.kind == "maxpool2d" for n in g.nodes.values()) and "2.tree0" in g.nodes
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    rep = lava.export_lava(g, tmp_path / "out", x=x, calib_x=CALIB, timesteps=6, log_fn=lambda *_: None)
    comp = rep["comparison"]
    assert comp["readout_identical"] and comp["spike_count_mismatch_rate"] == 0, comp
    assert all(v["reference_spikes"] > 0 for v in comp["layers"].values())  # not vacuous
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["comparison"]["readout_identical"]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"network.npz", "lava_runner.py", "README.md",
                                                                "hardware.md", "hardware.json"}


def test_sigma_delta_route_settles_to_the_rate_limit_ann():
    """The Sigma-Delta network (Lava's SigmaDelta in pairs: relu(z) - relu(z - L) = clip) streamed over several
    images gives, at the end of each image's window, the clip(0, L) ANN of the same weights up to 8-bit
    quantization; its messages are counted."""
    g = _res()
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(7))
    net = lava.build(g, CALIB, 0, route="sdn")
    assert net["window"] == net["readout"]["offset"] + 1 and all(L["state_exp"] >= 0 for L in net["layers"])
    ref = lava.sdn_stream_reference(net, lava.quantize_input(net, x))
    want = lava.rate_limit_ann(g, x)
    got = lava.logits(net, ref["readout"])
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max(), (got, want)
    assert ref["messages"] > 0
    with pytest.raises(SnnconvError, match="unknown Lava route"):
        lava.build(g, CALIB, 4, route="rate")


@pytest.mark.parametrize("case", ["chain", "residual", "graded-sfn"])
def test_sigma_delta_lava_run_equals_the_stream_reference(case, tmp_path):
    try:
        lava.lava_python()
    except SnnconvError as e:
        pytest.skip(f"Lava venv absent: {e}")
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    rep = lava.export_lava(CASES[case](), tmp_path / "sdn", x=x, calib_x=CALIB, log_fn=lambda *_: None, route="sdn")
    assert rep["route"] == "sdn" and rep["comparison"]["readout_identical"], rep["comparison"]
    assert rep["hardware"]["total_neurons"] > 0


def test_verify_gate_runs_lava_as_a_target(tmp_path):
    """`snnconv verify --targets lava`: the NIR file's network exported to Lava and run there agrees with
    snnconv's float simulation, and Lava's spike counts equal the integer reference."""
    try:
        lava.lava_python()
    except SnnconvError as e:
        pytest.skip(f"Lava venv absent: {e}")
    from snnconv.backends.nir import export_nir
    from snnconv.backends.verify import gate, verify_targets

    export_nir(_res(ConversionConfig(signed=True)), tmp_path / "r.nir")
    x = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    rep = verify_targets(tmp_path / "r.nir", x, 8, ["lava"])
    e = rep["targets"]["lava"]
    assert e["status"] == "ran" and e["readout_equals_integer_reference"] and e["spike_mismatches"] == 0, e
    assert not gate(rep, min_agreement=80.0), gate(rep)


class _Skip(nn.Module):
    """The readout reads a spiking layer and the (analog) input: a layout Lava's synapse processes cannot map."""

    def __init__(self):
        super().__init__()
        self.c, self.fc, self.skip = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2 * 36, 3), nn.Linear(36, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.c(x)), 1)) + self.skip(torch.flatten(x, 1))


def test_target_lava_checks_the_neurons_and_the_layout():
    """Lava is a deployment target (`convert --target lava`): it runs graded, signed, subtract-reset neurons
    (framework_fit), and target_refusal adds the Lava export's own check of the layout."""
    from snnconv.api import framework_fit, target_refusal
    from snnconv.backends.exports import check_deployment_target, deployment_export

    check_deployment_target("lava")
    assert deployment_export("lava") == "lava" and deployment_export("sinabs") == "nir"
    graded = _net(ConversionConfig(method="sfn", levels=4))
    fit = framework_fit(graded)
    assert fit["lava"] == [] and fit["spikingjelly"] == ["graded"]
    assert target_refusal(graded, "lava") is None and "graded" in target_refusal(graded, "spikingjelly")
    torch.manual_seed(2)
    skip = convert_module(_Skip().eval(), (1, 6, 6), [CALIB], ConversionConfig())
    assert framework_fit(skip)["lava"] == []  # its neurons are fine; the layout is not
    assert "readout must read one spiking layer" in target_refusal(skip, "lava")
    with pytest.raises(SnnconvError, match="unknown target 'loihi3'.*lava"):
        check_deployment_target("loihi3")


def test_target_refusals_checks_each_carrying_export_once(monkeypatch):
    """target_refusals (a recipe card's runs_in) answers as target_refusal does for every target, and runs the
    NIR check once for the five frameworks it carries, Lava's once."""
    from snnconv.api import target_refusal, target_refusals
    from snnconv.backends.exports import EXPORT_TARGETS

    torch.manual_seed(2)
    skip = convert_module(_Skip().eval(), (1, 6, 6), [CALIB], ConversionConfig())
    calls = []
    for name in ("nir", "lava"):
        backend = EXPORT_TARGETS[name].backend()
        monkeypatch.setattr(backend, "check_network",
                            lambda g, _f=backend.check_network, _n=name: (calls.append(_n), _f(g))[1])
    every = target_refusals(skip)
    assert sorted(calls) == ["lava", "nir"]
    assert every == {t: target_refusal(skip, t) for t in every} and "lava" in every and "sinabs" in every
    assert "readout must read one spiking layer" in every["lava"]


def test_target_refusal_is_about_the_network_not_this_machine(monkeypatch, tmp_path):
    """Without the Lava venv, Lava still runs a mappable network (runs_in is a property of the network); only
    --export lava needs the venv."""
    from snnconv.api import target_refusal

    monkeypatch.setenv("SNNCONV_LAVA_VENV", str(tmp_path / "none"))
    g = _net()
    assert target_refusal(g, "lava") is None
    with pytest.raises(SnnconvError, match="setup_lava.sh"):
        lava.check_export(g)

