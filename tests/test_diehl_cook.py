"""Diehl & Cook (2015) unsupervised STDP learner (snnconv.learning.diehl_cook): its documented
mechanisms (normalisation, adaptive threshold, winner-take-all, event-driven = step dynamics) and
a tiny MNIST run that must learn well above chance."""
from __future__ import annotations

import math

import pytest
import torch

from snnconv.data.datasets import load_dataset
from snnconv.learning.diehl_cook import DiehlCookConfig, DiehlCookNetwork, nearest_spike_trace


@pytest.fixture(scope="module")
def mnist(data_dir):
    tr = load_dataset("mnist", data_dir, train=True).subset(700, 1)
    te = load_dataset("mnist", data_dir, train=False).subset(300, 2)
    return tr.images.float().flatten(1) / 255, tr.labels, te.images.float().flatten(1) / 255, te.labels


def test_nearest_spike_trace_matches_step_recursion():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(80, 7, generator=g) < 0.1).float()
    x, ref = torch.zeros(7), []
    for t in range(80):
        x = torch.where(s[t] > 0, torch.ones(7), x * math.exp(-1 / 20.0))
        ref.append(x)
    assert torch.allclose(nearest_spike_trace(s, 20.0), torch.stack(ref), atol=1e-6)
    at = torch.tensor([3, 40, 79])
    assert torch.allclose(nearest_spike_trace(s, 20.0, at=at), torch.stack(ref)[at], atol=1e-6)


@pytest.mark.parametrize("one_spike", [True, False])
def test_event_driven_dynamics_equal_step_loop(one_spike):
    net = DiehlCookNetwork(DiehlCookConfig(n_neurons=30, one_spike=one_spike, seed=1))
    g = torch.Generator().manual_seed(2)
    net.theta = torch.rand(30, generator=g) * 10
    total = 0
    for k in range(6):
        cur = (torch.rand(250, 30, generator=g) < 0.3).float() * torch.rand(30, generator=g) * (2 + k)
        steps = net._dynamics(cur[:, None])[:, 0]
        assert torch.equal(net._dynamics_events(cur), steps)
        total += int(steps.sum())
    assert total > 50  # the comparison covered many spikes, resets and inhibition events


def test_learning_keeps_weight_sums_and_bounds(mnist):
    X = mnist[0]
    net = DiehlCookNetwork(DiehlCookConfig(n_neurons=20))
    before = net.w.clone()
    for i in range(5):
        net.present(X[i:i + 1], learn=True)
    assert not torch.allclose(net.w, before)
    assert torch.allclose(net.w.sum(1), torch.full((20,), 78.4), rtol=1e-4)
    assert float(net.w.min()) >= 0.0


def test_adaptive_threshold_rises_by_theta_plus_per_spike(mnist):
    X = mnist[0]
    cfg = DiehlCookConfig(n_neurons=20, theta_plus=0.5, tau_theta=1e12)
    net = DiehlCookNetwork(cfg)
    counts = net.present(X[:1], learn=True)[0]
    assert counts.sum() >= cfg.min_spikes
    assert torch.allclose(net.theta, cfg.theta_plus * counts, atol=1e-5)
    assert float(net.theta[counts == 0].abs().max()) == 0.0


def test_lateral_inhibition_makes_few_winners(mnist):
    X = mnist[0][:40]
    winners = (DiehlCookNetwork(DiehlCookConfig(n_neurons=50)).responses(X) > 0).sum(1).float()
    no_inh = (DiehlCookNetwork(DiehlCookConfig(n_neurons=50, w_inh=0.0)).responses(X) > 0).sum(1).float()
    assert float(winners.mean()) <= 1.5
    assert float(no_inh.mean()) >= 3 * float(winners.mean())


def test_tiny_run_learns_above_chance(mnist):
    X, y, Xt, yt = mnist
    net = DiehlCookNetwork(DiehlCookConfig(n_neurons=30, steps=150, theta_plus=0.5))
    net.train(X[:400])
    net.assign_labels(X[400:], y[400:])
    acc = float((net.predict(Xt) == yt).float().mean())
    assert (net.labels >= 0).sum() >= 20            # most neurons respond to something
    assert len(set(net.labels.tolist()) - {-1}) >= 6  # and they cover most classes
    assert acc > 0.40, acc  # chance 0.10; the untrained network scores about 0.19
