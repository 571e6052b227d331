"""Multi-step simulator and IF dynamics: rates, graded spikes, readout, chunking, SynOps/MACs, max-pool
gating and an end-to-end conversion of the bundled MNIST CNN."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import reference_if
from snnconv.api import conversion_pipeline, convert_graph, resolve_model, simulate
from snnconv.config import RunConfig
from snnconv.data.datasets import load_dataset
from snnconv.frontends.torch import from_torch
from snnconv.ir import Conv2d, Flatten, Graph, Input, Linear, MaxPool2d, SpikingNeuron
from snnconv.runtime.neurons.integrate_fire import integrate_fire
from snnconv.passes import PassContext, Pipeline
from snnconv.runtime.simulator import E_AC_PJ, E_MAC_PJ, Simulator


def neuron_only_graph(shape, threshold, **kw) -> Graph:
    """input -> neuron, read out directly: logits are the running mean of the neuron's output."""
    g = Graph()
    g.add("input", Input(shape=shape))
    g.add("sn", SpikingNeuron(torch.as_tensor(threshold, dtype=torch.float32), **kw), ["input"])
    g.outputs = ["sn"]
    g.validate()
    return g.infer_shapes()


# -- neuron dynamics ----------------------------------------------------------------------------

def test_if_rate_equals_input_over_threshold():
    T = 100
    cur = torch.full((T, 1, 1), 0.3)
    y, counts, v = integrate_fire(cur, torch.zeros(1, 1), torch.tensor(1.0), reset="subtract")
    assert abs(int(counts.sum()) - 30) <= 1
    assert set(counts.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(y, counts * 1.0)
    # membrane keeps the residue: v_T = T * I - spikes * theta
    assert float(v) == pytest.approx(T * 0.3 - float(counts.sum()), abs=1e-4)

    inputs = torch.tensor([0.05, 0.3, 0.77, 1.4, 1.99])
    theta = 2.0
    counts = integrate_fire(inputs.expand(T, 1, 5).clone(), torch.zeros(1, 5), torch.tensor(theta))[1]
    assert torch.all((counts.sum(0)[0] - inputs / theta * T).abs() <= 1.0 + 1e-4)


def test_if_matches_reference_for_all_reset_modes():
    gen = torch.Generator().manual_seed(0)
    cur = torch.rand(40, 3, 7, generator=gen) * 1.5 - 0.2  # time-varying, partly negative
    for reset in ("subtract", "zero"):
        for levels in (1, 3):
            _, counts, _ = integrate_fire(cur, torch.zeros(3, 7), torch.tensor(0.6), reset=reset, levels=levels)
            ref = reference_if(cur, 0.6, reset=reset, levels=levels)
            assert torch.equal(counts, ref), (reset, levels)


def test_if_per_channel_threshold_and_leak():
    T = 64
    th = torch.tensor([0.5, 1.0, 2.0])
    cur = torch.full((T, 1, 3, 2, 2), 0.4)
    counts = integrate_fire(cur, torch.zeros(1, 3, 2, 2), th)[1]
    per_ch = counts.sum(0)[0].mean(dim=(1, 2))
    assert torch.all((per_ch - torch.clamp(0.4 / th, max=1.0) * T).abs() <= 1.0 + 1e-4)
    leaky = integrate_fire(cur, torch.zeros(1, 3, 2, 2), th, leak=0.5)[1].sum(0)[0].mean(dim=(1, 2))
    # leak 0.5: v converges to 0.8 < 1.0, so the channels with theta >= 1 never fire
    assert leaky[1] == 0 and leaky[2] == 0 and 0 < leaky[0] <= per_ch[0]


def test_multilevel_neuron_emits_graded_counts():
    T, theta, levels = 50, 0.5, 3
    inputs = torch.tensor([0.4, 1.2, 2.0, -0.3])  # 2.0 exceeds levels * theta = 1.5
    g = neuron_only_graph((4,), theta, levels=levels, v_init=0.0)
    sim = Simulator(g, T)
    logits = sim.run(inputs.view(1, 4))
    per_step = torch.diff(logits[:, 0] * torch.arange(1, T + 1).view(T, 1), dim=0, prepend=torch.zeros(1, 4))
    counts = per_step / theta
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    counts = counts.round()
    assert counts.min() >= 0 and counts.max() <= levels
    assert counts[:, 1].max() > 1  # graded: more than one spike in a step
    assert torch.equal(counts[:, 2], torch.full((T,), float(levels)))  # saturated at `levels`
    assert counts[:, 3].sum() == 0
    expected = torch.clamp(inputs, 0, levels * theta) / theta * T
    assert torch.all((counts.sum(0) - expected).abs() <= 1.0 + 1e-4)
    assert torch.equal(counts, reference_if(inputs.expand(T, 4), theta, levels=levels))


# -- readout -------------------------------------------------------------------------------------

def tiny_net(seed=0, theta=0.4, v_init=0.5, zero_weights=True) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    w2 = torch.randn(3, 4, generator=gen)
    if zero_weights:
        w2[0, 1] = 0.0
        w2[2, 1] = 0.0
        w2[1, 3] = 0.0
    g = Graph()
    g.add("input", Input(shape=(5,)))
    g.add("fc1", Linear(torch.randn(4, 5, generator=gen), torch.rand(4, generator=gen) * 0.2), ["input"])
    g.add("sn", SpikingNeuron(torch.tensor(theta), v_init=v_init), ["fc1"])
    g.add("fc2", Linear(w2, torch.randn(3, generator=gen)), ["sn"])
    g.outputs = ["fc2"]
    g.validate()
    return g.infer_shapes()


def test_logits_are_cumulative_mean_of_output_layer():
    T, theta = 20, 0.4
    g = tiny_net(theta=theta)
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(1))
    logits = Simulator(g, T, chunk=6).run(x)
    assert logits.shape == (T, 6, 3)
    cur = F.linear(x, g.nodes["fc1"].weight, g.nodes["fc1"].bias).expand(T, 6, 4)
    spikes = reference_if(cur, theta, v_init=0.5)
    assert spikes.sum() > 0
    out = F.linear(spikes * theta, g.nodes["fc2"].weight, g.nodes["fc2"].bias)  # [T, B, 3]
    expected = out.cumsum(0) / torch.arange(1, T + 1).view(T, 1, 1)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_accuracy_counts_correct_predictions_per_t():
    T = 10
    g = tiny_net()
    x = torch.rand(8, 5, generator=torch.Generator().manual_seed(2))
    sim = Simulator(g, T)
    labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(3))
    logits = sim.run(x, labels)
    expected = [(logits[t].argmax(-1) == labels).float().mean().item() * 100 for t in range(T)]
    assert sim.stats.accuracy() == pytest.approx(expected)
    assert sim.stats.samples == 8


def small_converted_net(seed=0):
    """conv -> BN -> ReLU -> maxpool -> (conv -> ReLU) + residual -> avgpool -> linear, converted."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.avg = nn.AvgPool2d(2)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn(self.conv1(x))))
            x = torch.relu(self.conv2(x)) + x
            return self.fc(self.avg(x).flatten(1))

    torch.manual_seed(seed)
    g, _ = from_torch(Net().eval(), (2, 8, 8))
    ctx = PassContext(calibration=[torch.randn(16, 2, 8, 8)])
    return Pipeline.from_config(["fold_batchnorm", {"name": "threshold_balance", "method": "percentile",
                                                    "percentile": 99.0}]).run(g, ctx)


def test_chunk_size_does_not_change_results():
    T = 12
    snn = small_converted_net()
    assert {"neuron", "maxpool2d", "add"} <= set(snn.kinds())
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    runs = {}
    for chunk in (1, 5, 8, T):
        sim = Simulator(snn, T, chunk=chunk)
        runs[chunk] = (sim.run(x), sim.stats)
    ref_logits, ref_stats = runs[1]
    assert sum(v.sum() for v in ref_stats.spikes.values()) > 0
    for chunk, (logits, stats) in runs.items():
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        for k in ref_stats.spikes:
            assert torch.equal(stats.spikes[k], ref_stats.spikes[k]), (chunk, k)
        for k in ref_stats.synops:
            torch.testing.assert_close(stats.synops[k], ref_stats.synops[k])
        for k in ref_stats.macs:
            torch.testing.assert_close(stats.macs[k], ref_stats.macs[k])


def test_state_is_carried_across_batches_independently():
    """Two batches simulated one after the other give the same logits as each batch alone."""
    T = 6
    snn = small_converted_net(1)
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    sim = Simulator(snn, T)
    a, b = sim.run(x[:2]), sim.run(x[2:])
    torch.testing.assert_close(torch.cat([a, b], 1), Simulator(snn, T).run(x), rtol=1e-5, atol=1e-5)
    assert sim.stats.samples == 4


# -- statistics ------------------------------------------------------------------------------------

def test_synops_and_macs_counted_exactly_on_linear_layers():
    T, theta, B = 15, 0.4, 5
    g = tiny_net(theta=theta)
    x = torch.rand(B, 5, generator=torch.Generator().manual_seed(6))
    sim = Simulator(g, T, chunk=4)
    sim.run(x)
    st = sim.stats
    cur = F.linear(x, g.nodes["fc1"].weight, g.nodes["fc1"].bias).expand(T, B, 4)
    spikes = reference_if(cur, theta, v_init=0.5)  # [T, B, 4]
    fanout = torch.tensor([3.0, 1.0, 3.0, 2.0])  # nonzero entries per column of fc2's weight
    expected_synops = (spikes * fanout).sum(dim=(1, 2))
    assert expected_synops.sum() > 0
    assert torch.equal(st.synops["fc2"], expected_synops)
    assert torch.equal(st.spikes["sn"], spikes.sum(dim=(1, 2)))
    # fc1 reads the analog input: dense MACs (4 x 5 per sample) at every step, no SynOps
    assert torch.equal(st.macs["fc1"], torch.full((T,), 20.0 * B))
    assert "fc1" not in st.synops and "fc2" not in st.macs
    assert st.neurons == {"sn": 4}
    assert st.firing_rates()["sn"] == pytest.approx(float(spikes.mean()))
    assert st.synops_per_sample() == pytest.approx((expected_synops.cumsum(0) / B).tolist())
    assert st.macs_per_sample() == pytest.approx([20.0 * t for t in range(1, T + 1)])
    energy = [(E_AC_PJ * s + E_MAC_PJ * 20.0 * t) * 1e-6
              for t, s in zip(range(1, T + 1), (expected_synops.cumsum(0) / B).tolist())]
    assert st.energy_uj() == pytest.approx(energy)


def test_synops_counted_exactly_on_conv_with_padding_and_zero_weights():
    T, B, H = 8, 2, 4
    gen = torch.Generator().manual_seed(7)
    w1 = torch.randn(3, 2, 3, 3, generator=gen)
    w2 = torch.randn(3, 3, 3, 3, generator=gen)
    w2[w2.abs() < 0.5] = 0.0  # a sparse weight pattern
    g = Graph()
    g.add("input", Input(shape=(2, H, H)))
    g.add("conv1", Conv2d(w1, torch.full((3,), 0.3), padding=(1, 1)), ["input"])
    g.add("sn", SpikingNeuron(torch.tensor([0.5, 1.0, 1.5]), v_init=0.5), ["conv1"])
    g.add("conv2", Conv2d(w2, None, padding=(1, 1)), ["sn"])
    g.add("flat", Flatten(1), ["conv2"])
    g.outputs = ["flat"]
    g.validate()
    g.infer_shapes()
    x = torch.rand(B, 2, H, H, generator=gen)
    sim = Simulator(g, T)
    sim.run(x)
    # fan-out of input element (c, i, j): outputs (o, i', j') inside the map with a nonzero tap
    fan = torch.zeros(3, H, H)
    for c in range(3):
        for i in range(H):
            for j in range(H):
                for o in range(3):
                    for oi in range(H):
                        for oj in range(H):
                            di, dj = i - oi + 1, j - oj + 1
                            if 0 <= di < 3 and 0 <= dj < 3 and w2[o, c, di, dj] != 0:
                                fan[c, i, j] += 1
    assert fan[:, 0, 0].sum() < fan[:, 1, 1].sum()  # border elements have fewer synapses
    cur = F.conv2d(x, w1, torch.full((3,), 0.3), padding=1)
    spikes = torch.stack([reference_if(cur[:, c].expand(T, B, H, H), th, v_init=0.5)
                          for c, th in enumerate([0.5, 1.0, 1.5])], dim=2)  # [T, B, C, H, W]
    expected = (spikes * fan).sum(dim=(1, 2, 3, 4))
    assert expected.sum() > 0
    assert torch.equal(sim.stats.synops["conv2"], expected)
    # first layer reads the analog input: Cout * H * W * (Cin * 3 * 3) MACs per sample and step
    assert torch.equal(sim.stats.macs["conv1"], torch.full((T,), float(3 * H * H * 2 * 9 * B)))


@pytest.mark.parametrize("mode", ["gate", "count"])
def test_spiking_maxpool_converges_to_max_input_rate(mode):
    T = 200
    gen = torch.Generator().manual_seed(8)
    rates = torch.rand(2, 1, 4, 4, generator=gen) * 0.9 + 0.05
    g = Graph()
    g.add("input", Input(shape=(1, 4, 4)))
    g.add("sn", SpikingNeuron(torch.tensor(1.0)), ["input"])
    g.add("pool", MaxPool2d((2, 2), (2, 2), spike_mode=mode), ["sn"])
    g.add("flat", Flatten(1), ["pool"])
    g.outputs = ["flat"]
    g.validate()
    g.infer_shapes()
    logits = Simulator(g, T, chunk=7).run(rates)
    expected = F.max_pool2d(rates, 2).flatten(1)
    assert (logits[-1] - expected).abs().max() <= 2.0 / T
    # each step passes one input's spikes: outputs are binary, never the OR of the window
    steps = torch.arange(1, T + 1).view(T, 1, 1)
    per_step = torch.diff(logits * steps, dim=0, prepend=torch.zeros(1, *logits.shape[1:]))
    assert torch.allclose(per_step, per_step.round(), atol=1e-4)
    assert set(per_step.round().unique().tolist()) <= {0.0, 1.0}
    spikes = reference_if(rates.expand(T, *rates.shape), 1.0)  # [T, B, 1, 4, 4]
    or_rate = F.max_pool2d(spikes.flatten(0, 1), 2).view(T, 2, -1).mean(0)
    assert (or_rate - expected).abs().max() > 4.0 / T  # the gate matters on this input


def test_simulator_rejects_multi_output_graphs():
    g = tiny_net()
    g.outputs = ["fc2", "sn"]
    with pytest.raises(ValueError):
        Simulator(g, 4)


# -- end to end ----------------------------------------------------------------------------------

def test_bundled_mnist_cnn_end_to_end():
    model, shape, source = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled"), lambda *_: None)
    assert shape == (1, 28, 28) and source["weights"].endswith("mnist_cnn-mnist.pt")
    graph, _ = from_torch(model, shape)
    calib = load_dataset("mnist-bundled", train=True)
    test = load_dataset("mnist-bundled", train=False).subset(200)
    assert len(test) == 200 and len(calib) == 256
    snn, records = convert_graph(graph, [x for x, _ in calib.batches(128)], conversion_pipeline())
    assert snn.kinds()["neuron"] == 4 and "batchnorm" not in snn.kinds() and "clip" not in snn.kinds()
    assert any(r["pass"] == "threshold_balance" for r in records)
    stats = simulate(snn, test, 32, batch_size=100)
    acc = stats.accuracy()
    assert len(acc) == 32
    assert acc[31] >= 97.0
    assert acc[31] >= acc[1]
    rates = stats.firing_rates()
    assert set(rates) == {n for n, node in snn.nodes.items() if node.kind == "neuron"}
    assert all(0 < r < 1 for r in rates.values())
    # the conversion error per layer shrinks with T
    short = simulate(snn, test.subset(100), 4, batch_size=100).layer_errors()
    long = simulate(snn, test.subset(100), 32, batch_size=100).layer_errors()
    assert set(short) == set(rates)
    assert sum(long.values()) < sum(short.values())
    assert all(math.isfinite(v) for v in long.values())


def test_a_killed_simulation_resumes_from_its_state_with_the_same_totals(tmp_path, monkeypatch):
    """simulate(state=F) keeps its totals after the batches done; a run killed part-way and started again
    continues after them and ends with exactly the totals of one uninterrupted run (rate coding: the encoder's
    per-batch seeds continue too). The file is removed at the end; one written for another graph is refused."""
    from snnconv.encoders import Encoder
    from snnconv.errors import SnnconvError

    model, shape, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled"), lambda *_: None)
    graph, _ = from_torch(model, shape)
    calib = [x for x, _ in load_dataset("mnist-bundled", train=True).batches(128)]
    snn = convert_graph(graph, calib, conversion_pipeline())[0]
    test = load_dataset("mnist-bundled", train=False).subset(120)
    enc = Encoder("rate", seed=3)
    whole = simulate(snn, test, 6, batch_size=20, encoder=enc)
    state = tmp_path / "sim" / "state.pt"
    real_run, calls = Simulator.run, []

    def killed_after_4(self, *a, **kw):
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process dies here
        calls.append(1)
        return real_run(self, *a, **kw)

    monkeypatch.setattr(Simulator, "run", killed_after_4)
    with pytest.raises(KeyboardInterrupt):
        simulate(snn, test, 6, batch_size=20, encoder=enc, state=state, save_seconds=0)
    assert state.is_file()
    monkeypatch.setattr(Simulator, "run", real_run)
    said = []
    resumed = simulate(snn, test, 6, batch_size=20, encoder=enc, state=state, log_fn=said.append)
    assert any("after 4 batches" in m for m in said) and not state.exists()
    assert resumed.samples == whole.samples == 120 and torch.equal(resumed.correct, whole.correct)
    assert all(torch.equal(resumed.spikes[k], whole.spikes[k]) for k in whole.spikes)
    assert all(torch.equal(resumed.synops[k], whole.synops[k]) for k in whole.synops)
    monkeypatch.setattr(Simulator, "run", killed_after_4)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        simulate(snn, test, 6, batch_size=20, encoder=enc, state=state, save_seconds=0)
    monkeypatch.setattr(Simulator, "run", real_run)
    with pytest.raises(SnnconvError, match="written for another graph"):  # other data: refused, file kept
        simulate(snn, test.subset(100), 6, batch_size=20, encoder=enc, state=state)
    assert state.is_file()


def test_running_sum_does_not_depend_on_the_chunking():
    """Max pooling (count mode) and spiking operators difference running totals: equal totals must stay
    bit-equal whatever the chunk size, or an ulp becomes an output event (torch.cumsum rounds differently)."""
    from snnconv.runtime.operators import running_sum
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(12, 3, 4, 4, 4, generator=g) < 0.6).float() * 1.6341  # spikes of one height
    whole = running_sum(x)
    for cut in (1, 5, 8):
        parts, acc = [], None
        for t0 in range(0, 12, cut):
            part = running_sum(x[t0:t0 + cut], acc)
            parts.append(part)
            acc = part[-1]
        assert torch.equal(torch.cat(parts), whole), cut
    steps = [x[0]]
    for t in range(1, 12):
        steps.append(steps[-1] + x[t])
    assert torch.equal(whole, torch.stack(steps))
