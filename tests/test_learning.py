"""Plasticity rules (snnconv.learning): each rule's documented property, measured on small inputs."""
from __future__ import annotations

import math

import pytest
import torch

from snnconv.learning import (EDNetwork, RewardSTDP, TraceSTDP, TripletSTDP, WeightDependence, ed_delta,
                              pair_stdp_dw)


def trains(T, times, n=1):
    s = torch.zeros(T, 1, n)
    for t, i in times:
        s[t, 0, i] = 1.0
    return s


@pytest.mark.parametrize("dt", [1, 3, 7, 15])
def test_pair_stdp_sign_and_exponential_window(dt):
    rule = dict(a_plus=0.01, a_minus=0.012, tau_plus=10.0, tau_minus=20.0)
    T, w0 = 40, torch.full((1, 1), 0.5)
    free = WeightDependence(mu=0, w_min=None, w_max=None)
    # pre before post (Δt = +dt) potentiates by A+ e^{-dt/τ+}
    ltp = TraceSTDP(**rule, bounds=free).run(trains(T, [(5, 0)]), trains(T, [(5 + dt, 0)]), w0) - w0
    # post before pre (Δt = -dt) depresses by A- e^{-dt/τ-}
    ltd = TraceSTDP(**rule, bounds=free).run(trains(T, [(5 + dt, 0)]), trains(T, [(5, 0)]), w0) - w0
    assert ltp.item() == pytest.approx(0.01 * math.exp(-dt / 10.0), rel=1e-5)
    assert ltd.item() == pytest.approx(-0.012 * math.exp(-dt / 20.0), rel=1e-5)


def test_online_traces_equal_all_to_all_pair_sum():
    g = torch.Generator().manual_seed(0)
    pre = (torch.rand(60, 3, 5, generator=g) < 0.15).float()
    post = (torch.rand(60, 3, 4, generator=g) < 0.15).float()
    free = WeightDependence(mu=0, w_min=None, w_max=None)
    w0 = torch.zeros(4, 5)
    online = TraceSTDP(bounds=free).run(pre, post, w0)
    assert torch.allclose(online, pair_stdp_dw(pre, post), atol=1e-6)
    # nearest-spike interaction differs from all-to-all once spikes cluster
    near = TraceSTDP(bounds=free, interaction="nearest").run(pre, post, w0)
    assert not torch.allclose(near, online)


def test_soft_bounds_keep_weights_inside_and_off_the_bounds():
    g = torch.Generator().manual_seed(1)
    pre = (torch.rand(300, 2, 20, generator=g) < 0.3).float()
    post = (torch.rand(300, 2, 10, generator=g) < 0.3).float()
    # multiplicative (μ = 1): w + A+(1-w)x - A- w y stays in [0, 1] by itself while A·trace <= 1
    rule = TraceSTDP(a_plus=0.05, a_minus=0.05, bounds=WeightDependence(mu=1.0, w_min=0.0, w_max=1.0))
    w = torch.full((10, 20), 0.5)
    for t in range(300):
        w = w + rule.step(pre[t], post[t], w)  # no clipping
        assert w.min() >= 0 and w.max() <= 1
    # the additive rule (μ = 0, hard clip) with the same drive piles weights at the bounds; soft ones do not
    add = TraceSTDP(a_plus=0.05, a_minus=0.05, bounds=WeightDependence(mu=0)).run(pre, post, torch.full((10, 20), 0.5))
    half = TraceSTDP(a_plus=0.05, a_minus=0.05, bounds=WeightDependence(mu=0.5)).run(pre, post, torch.full((10, 20), 0.5))
    frac = {k: ((v <= 1e-6) | (v >= 1 - 1e-6)).float().mean().item() for k, v in (("add", add), ("half", half), ("mult", w))}
    assert frac["add"] > 0.25 and frac["mult"] == 0 and frac["half"] < frac["add"]
    assert 0 <= half.min() and half.max() <= 1


def test_triplet_adds_post_post_term_exactly():
    T, tp, tx, tm, ty = 40, 16.8, 101.0, 33.7, 125.0
    pre, post = trains(T, [(0, 0)]), trains(T, [(5, 0), (10, 0)])
    free = WeightDependence(mu=0, w_min=None, w_max=None)
    w0 = torch.zeros(1, 1)
    pair = TripletSTDP(a2_plus=0.01, a3_plus=0.0, a2_minus=0.0, a3_minus=0.0, bounds=free).run(pre, post, w0)
    trip = TripletSTDP(a2_plus=0.01, a3_plus=0.02, a2_minus=0.0, a3_minus=0.0, bounds=free).run(pre, post, w0)
    assert pair.item() == pytest.approx(0.01 * (math.exp(-5 / tp) + math.exp(-10 / tp)), rel=1e-5)
    # extra potentiation at the second post spike: A3+ r1(10) o2(10-ε) = A3+ e^{-10/τ+} e^{-5/τy}
    assert (trip - pair).item() == pytest.approx(0.02 * math.exp(-10 / tp) * math.exp(-5 / ty), rel=1e-5)
    # frequency dependence: more post spikes after one pre spike -> more potentiation per post spike
    slow = TripletSTDP(a2_minus=0, a3_minus=0, bounds=free).run(pre, trains(T, [(5, 0), (30, 0)]), w0)
    fast = TripletSTDP(a2_minus=0, a3_minus=0, bounds=free).run(trains(T, [(25, 0)]), trains(T, [(26, 0), (30, 0)]), w0)
    assert fast.item() > slow.item()


def test_rstdp_zero_reward_changes_nothing_positive_reward_follows_eligibility():
    g = torch.Generator().manual_seed(2)
    pre = (torch.rand(50, 2, 6, generator=g) < 0.2).float()
    post = (torch.rand(50, 2, 3, generator=g) < 0.2).float()
    rule = RewardSTDP(lr=0.5, tau_c=1e9)  # τc -> ∞: eligibility = the plain STDP pair sum
    c = rule.run(pre, post)
    assert torch.equal(rule.reward(0.0), torch.zeros(3, 6))
    w = torch.rand(3, 6, generator=g)
    assert torch.equal(rule.apply(w, 0.0), w)
    ref = pair_stdp_dw(pre, post, a_plus=1.0, a_minus=1.0)
    assert torch.allclose(c.sum(0), ref, atol=1e-5)
    assert torch.allclose(rule.reward(2.0), 0.5 * 2.0 * ref, atol=1e-5)
    assert torch.allclose(rule.reward(-1.0), -0.5 * ref, atol=1e-5)
    # per-sample rewards act on that sample's eligibility only
    assert torch.allclose(rule.reward(torch.tensor([1.0, 0.0])), 0.5 * c[0], atol=1e-6)
    # eligibility decays: a reward given 100 steps of silence later acts on e^{-100/τc} of it
    r2 = RewardSTDP(lr=1.0, tau_c=50.0)
    r2.run(pre, post)
    before = r2.reward(1.0)
    r2.run(torch.zeros(100, 2, 6), torch.zeros(100, 2, 3))
    assert torch.allclose(r2.reward(1.0), before * math.exp(-100 / 50.0), atol=1e-6)


def test_ed_delta_signs_follow_unit_types():
    a, fp = torch.ones(1, 4), torch.ones(1, 2)
    pre_t, post_t = torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.tensor([1.0, -1.0])
    up = ed_delta(a, fp, torch.tensor([0.5]), pre_t, post_t, 1.0)  # output should rise: only E pre synapses
    assert torch.equal(up[:, 1::2], torch.zeros(2, 2)) and up[0, 0] > 0 and up[1, 0] < 0
    down = ed_delta(a, fp, torch.tensor([-0.5]), pre_t, post_t, 1.0)  # output should fall: only I pre synapses
    assert torch.equal(down[:, 0::2], torch.zeros(2, 2)) and down[0, 1] < 0 and down[1, 1] > 0


def test_ed_network_learns_xor_and_respects_dale():
    net = EDNetwork(2, hidden=(8,), outputs=1, lr=0.5, seed=0)
    signs = [torch.sign(w).clone() for w in net.weights]
    X = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]])
    Y = torch.tensor([0.0, 1, 1, 0])
    err0 = ((net.predict(X).squeeze(1) - Y) ** 2).mean()
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        for i in torch.randperm(4, generator=g):
            net.learn(X[i:i + 1], Y[i:i + 1])
    err1 = ((net.predict(X).squeeze(1) - Y) ** 2).mean()
    assert err1 < 0.1 * err0
    assert ((net.predict(X).squeeze(1) > 0.5).float() == Y).all()
    for w, s in zip(net.weights, signs):  # no synapse changed sign (τ_post τ_pre)
        assert (torch.sign(w) * s >= 0).all()
    # E->E and I->I synapses non-negative, E->I and I->E non-positive, in the hidden layer
    w = net.weights[0][0]
    pre_t, post_t = net.types[0], net.types[1]
    assert (w[post_t > 0][:, pre_t > 0] >= 0).all() and (w[post_t > 0][:, pre_t < 0] <= 0).all()
    assert (w[post_t < 0][:, pre_t > 0] <= 0).all() and (w[post_t < 0][:, pre_t < 0] >= 0).all()


def _toy_snn(seed=0):
    """A small MLP on 4 Gaussian classes in 16-D, trained briefly and converted."""
    from snnconv.api import convert_module

    g = torch.Generator().manual_seed(seed)
    means = torch.randn(4, 16, generator=g) * 1.5

    def sample(n, offset=0.0):
        y = torch.randint(0, 4, (n,), generator=g)
        return (means[y] + torch.randn(n, 16, generator=g) + offset).clamp_min(0), y

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        x, y = sample(64)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    snn = convert_module(net.eval(), (16,), [sample(256)[0]])
    return snn, sample


def test_evolve_readout_recovers_from_a_synthetic_shift():
    from snnconv.learning.evolve import evolve_stream, make_learners

    snn, sample = _toy_snn()
    # the shift: input features arrive rolled by 4 places (a fixed rewiring of the sensor)
    batches = [(x.roll(4, 1), y) for x, y in (sample(20) for _ in range(40))]
    learners = make_learners(snn, ["rstdp", "ed"], {"ed": {"lr": 0.02}, "rstdp": {"lr": 1e-3}})
    res = evolve_stream(snn, batches, 16, learners)
    assert res["readout_check_max_abs"] < 1e-4  # learner logits == simulator readout for the frozen weights
    late = {k: c[-400:].float().mean().item() for k, c in res["correct"].items()}
    clean = make_learners(snn, [])
    acc_clean = evolve_stream(snn, [sample(100) for _ in range(2)], 16, clean)["correct"]["frozen"].float().mean()
    assert late["frozen"] < acc_clean - 0.1  # the shift hurts the converted SNN ...
    assert late["ed"] > late["frozen"] + 0.2  # ... and online ED on the readout recovers much of it
    assert late["rstdp"] >= late["frozen"] - 0.05  # R-STDP (weak here) must not make it worse


def test_evolve_hidden_layer_adapts_locally_and_keeps_the_readout():
    from snnconv.learning.evolve import apply_readout, evolve_stream, learner_params, make_learners
    from snnconv.runtime.simulator import Simulator

    snn, sample = _toy_snn()
    batches = [(x.roll(4, 1), y) for x, y in (sample(20) for _ in range(40))]
    params = learner_params(["rstdp", "ed"], ("readout", "readout+hidden"),
                            {"ed": {"lr": 0.02}, "rstdp": {"lr": 1e-3}, "ed+hidden": {"lr_hidden": 2e-3}})
    learners = make_learners(snn, ["rstdp", "ed"], params, ("readout", "readout+hidden"))
    assert set(learners) == {"frozen", "rstdp", "ed", "rstdp+hidden", "ed+hidden"}
    w0 = snn.nodes[snn.edges[snn.edges[snn.outputs[0]][0]][0]].weight.clone()  # the hidden linear layer
    res = evolve_stream(snn, batches, 16, learners)
    assert res["hidden_check_max_abs"] < 1e-5  # re-run hidden neurons == the simulator's, before updates
    late = {k: c[-400:].float().mean().item() for k, c in res["correct"].items()}
    edh, rh = learners["ed+hidden"], learners["rstdp+hidden"]
    assert (edh.hidden_weight - w0).abs().max() > 1e-3 and (rh.hidden_weight - w0).abs().max() > 0
    # ED keeps every E/I sub-synapse's sign and only grows magnitudes
    assert (edh.w_pos >= w0.clamp_min(0) - 1e-7).all() and (edh.w_neg <= w0.clamp_max(0) + 1e-7).all()
    assert late["ed+hidden"] >= late["ed"] - 0.05 and late["ed+hidden"] > late["frozen"] + 0.2  # readout not broken
    assert late["rstdp+hidden"] >= late["frozen"] - 0.05
    # the adapted graph (hidden and readout weights) simulates to the learner's own prediction
    x, y = sample(50)
    g = apply_readout(snn, edh)
    sim = Simulator(g, 16, collect_stats=False, record=(g.edges[g.outputs[0]][0],))
    logits = sim.run(x.roll(4, 1))[-1]
    assert torch.allclose(logits, edh.logits(edh.penultimate(x.roll(4, 1).unsqueeze(0).expand(16, -1, -1))), atol=1e-4)


def test_simulator_record_hook_and_evolve_cli(data_dir, tmp_path):
    from typer.testing import CliRunner

    from snnconv.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["evolve", "--rule", "hebb", "--data-dir", str(data_dir)])
    assert bad.exit_code != 0 and "unknown rule" in str(bad.exception)
    out = tmp_path / "ev"
    r = runner.invoke(app, ["evolve", "--data-dir", str(data_dir), "--clean", "20", "--shifted", "40", "--heldout", "20",
                            "--timesteps", "8", "--window", "10", "--rule", "ed", "--output-dir", str(out)])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((out / "evolve.json").read_text())
    assert set(rep["prequential_accuracy"]) == {"frozen", "ed"} and rep["readout_check_max_abs"] < 1e-4
    assert (out / "evolve.png").stat().st_size > 0 and (out / "snn_ed.pt").is_file()
    out2 = tmp_path / "ev2"
    r = runner.invoke(app, ["evolve", "--data-dir", str(data_dir), "--clean", "0", "--shifted", "20", "--heldout", "20",
                            "--timesteps", "4", "--window", "10", "--rule", "ed", "--layers", "readout+hidden",
                            "--output-dir", str(out2)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out2 / "evolve.json").read_text())
    assert set(rep["prequential_accuracy"]) == {"frozen", "ed+hidden"} and rep["hidden_check_max_abs"] < 1e-5
    assert (out2 / "snn_ed+hidden.pt").is_file()
