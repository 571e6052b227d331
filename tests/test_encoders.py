"""Input encoders: statistics, determinism, and how the first layer's operations are counted."""
import math

import pytest
import torch

from snnconv.encoders import Encoder
from snnconv.errors import SnnconvError
from snnconv.ir import Graph, Input, Linear
from snnconv.runtime.simulator import Simulator


def test_rate_counts_match_requested_rate_within_confidence_bound():
    p = torch.tensor([0.05, 0.2, 0.5, 0.9])
    x = p.repeat(50, 1)  # 50 samples x 4 rates
    enc = Encoder("rate", x_max=1.0, seed=3)
    T = 400
    spikes = enc.encode(x, 0, T, enc.start(x))
    counts = spikes.sum(0)  # [50, 4]
    n = T * 50
    emp = counts.sum(0) / n
    bound = 4 * torch.sqrt(p * (1 - p) / n)  # 4 sigma binomial bound
    assert torch.all((emp - p).abs() <= bound), (emp, p, bound)


def test_rate_expected_input_equals_signed_analog_input():
    x = torch.tensor([[-1.5, -0.3, 0.0, 0.7, 2.0]])
    enc = Encoder("rate", x_max=2.0, seed=0)
    s = enc.encode(x, 0, 20000, enc.start(x))
    assert set(torch.unique(s).tolist()) <= {-2.0, 0.0, 2.0}
    assert torch.allclose(s.mean(0), x, atol=0.05)


def test_encoders_are_seeded_and_deterministic():
    x = torch.rand(4, 10)
    a = Encoder("rate", x_max=1.0, seed=1)
    b = Encoder("rate", x_max=1.0, seed=1)
    c = Encoder("rate", x_max=1.0, seed=2)
    sa, sb, sc = (e.encode(x, 0, 16, e.start(x)) for e in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)


def test_latency_fires_once_earlier_for_stronger_input():
    x = torch.tensor([[1.0, 0.5, 0.1, 0.0]])
    enc = Encoder("latency", x_max=1.0, window=8)
    s = enc.encode(x, 0, 8, enc.start(x))
    assert s.sum(0).tolist() == [[1.0, 1.0, 1.0, 0.0]]
    first = [int(torch.nonzero(s[:, 0, i])[0]) for i in range(3)]
    assert first == sorted(first) and first[0] == 0 and first[2] == round(0.9 * 7)


def test_delta_reconstruction_tracks_input_then_goes_silent():
    x = torch.tensor([[0.55, -0.33]])
    enc = Encoder("delta", delta=0.1, levels=2)
    st = enc.start(x)
    s = enc.encode(x, 0, 6, st)
    assert torch.all(s.abs() <= 0.2 + 1e-6)  # at most `levels` deltas per step
    assert torch.allclose(s.sum(0), torch.tensor([[0.5, -0.3]]), atol=1e-6)
    assert torch.all(s[-1] == 0)


def test_unknown_encoding_rejected():
    with pytest.raises(SnnconvError, match="unknown encoding"):
        Encoder("morse")


def _one_layer():
    g = Graph()
    g.add("in", Input(shape=(3,)))
    g.add("fc", Linear(torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0]]), None), ["in"])
    g.outputs = ["fc"]
    return g.infer_shapes()


def test_first_layer_counts_macs_for_direct_and_acs_for_spikes():
    g = _one_layer()
    x = torch.tensor([[1.0, 1.0, 0.0]])
    direct = Simulator(g, 4, encoder=Encoder("direct"))
    direct.run(x)
    assert direct.stats.macs_per_sample()[-1] == 4 * 6 and direct.stats.synops_per_sample()[-1] == 0
    rate = Simulator(g, 4, encoder=Encoder("rate", x_max=1.0))
    rate.run(x)  # inputs 0 and 1 spike every step (p = 1); fan-out 2 and 1 nonzero weights
    assert rate.stats.macs_per_sample()[-1] == 0 and rate.stats.synops_per_sample()[-1] == 4 * (2 + 1)


def test_rate_coded_simulation_converges_to_direct():
    g = _one_layer()
    x = torch.tensor([[0.2, 0.7, 0.4]])
    sim = Simulator(g, 4000, chunk=500, encoder=Encoder("rate", x_max=1.0, seed=5))
    out = sim.run(x)[-1]
    ref = g.nodes["fc"].weight @ x[0]
    assert torch.allclose(out[0], ref, atol=3 * math.sqrt(1.0 / 4000) * 3)


def test_delta_modulation_of_a_sequence_tracks_the_signal():
    from snnconv.encoders import delta_modulate

    t = torch.linspace(0, 2 * math.pi, 200)
    seq = torch.sin(t).view(200, 1, 1)  # moves < 0.05 per step
    spikes, _ = delta_modulate(seq, delta=0.05, levels=1)
    recon = spikes.cumsum(0)
    assert torch.all((recon - seq).abs() < 0.05 + 1e-6)
    assert 0 < spikes.ne(0).sum() < 200  # sparse: only changes produce events
