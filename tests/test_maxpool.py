"""Max pooling in the SNN: the count mode is exact (pooled spike total = max of the input totals at every
step, binary in, binary out) and converts a trained max-pool CNN with less error than the gating scheme."""
from __future__ import annotations

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from snnconv.api import ann_accuracy, conversion_pipeline, conversion_warnings, convert_graph, simulate
from snnconv.config import ConversionConfig
from snnconv.data.datasets import load_dataset
from snnconv.frontends.torch import from_torch
from snnconv.ir import Graph, Input, MaxPool2d
from snnconv.runtime.simulator import Simulator


def _pool_graph(mode: str) -> Graph:
    g = Graph()
    g.add("input", Input(shape=(3, 6, 6)))
    g.add("pool", MaxPool2d((2, 2), (2, 2), spike_mode=mode), ["input"])
    g.outputs = ["pool"]
    return g.infer_shapes()


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_count_mode_total_is_the_max_of_the_input_totals(chunk):
    torch.manual_seed(0)
    T, theta = 16, torch.tensor([0.5, 1.0, 2.0]).view(1, 1, 3, 1, 1)
    spikes = (torch.rand(T, 4, 3, 6, 6) < 0.4).float() * theta  # binary trains, one threshold per channel
    sim = Simulator(_pool_graph("count"), T, chunk=chunk, collect_stats=False)
    state = {}
    out = sim._count_maxpool("pool", sim.graph.nodes["pool"], spikes, state) if chunk == 16 else torch.cat([
        sim._count_maxpool("pool", sim.graph.nodes["pool"], spikes[i:i + chunk], state) for i in range(0, T, chunk)])
    want = F.max_pool2d(spikes.cumsum(0).flatten(0, 1), 2).view(T, 4, 3, 3, 3)
    assert torch.allclose(out.cumsum(0), want)
    assert torch.all((out == 0) | (out == theta.view(1, 1, 3, 1, 1).expand_as(out)))  # binary in, binary out


def test_wta_mode_passes_only_the_first_input_to_fire():
    """Window [a, b, c, d]: b fires first (step 0), a fires more often later; the pool keeps passing b."""
    T = 6
    x = torch.zeros(T, 1, 1, 2, 2)
    x[0, 0, 0, 0, 1] = 1.0  # b fires at step 0
    x[1:, 0, 0, 0, 0] = 1.0  # a fires at every later step
    x[3, 0, 0, 0, 1] = 1.0  # b fires again at step 3
    x[0, 0, 0, 1, 0] = 0.5  # c fires at step 0 with a smaller input: the tie goes to b
    g = Graph()
    g.add("input", Input(shape=(1, 2, 2)))
    g.add("pool", MaxPool2d((2, 2), (2, 2), spike_mode="wta"), ["input"])
    g.outputs = ["pool"]
    sim = Simulator(g.infer_shapes(), T, collect_stats=False)
    state = {}
    out = torch.cat([sim._wta_maxpool("pool", sim.graph.nodes["pool"], x[i:i + 2], state) for i in range(0, T, 2)])
    assert out.flatten().tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # b's train, across chunks
    count = sim._count_maxpool("pool", sim.graph.nodes["pool"], x, {})
    assert count.sum() == 5.0  # the exact max (a's total) which wta misses


@pytest.fixture(scope="module")
def maxpool_cnn():
    torch.manual_seed(0)
    tr, te = load_dataset("mnist-bundled", train=True), load_dataset("mnist-bundled", train=False)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 49, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(12):
        for x, y in tr.batches(64):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    g, _ = from_torch(m.eval(), (1, 28, 28))
    return g, [x for x, _ in tr.batches(128)], te


def test_count_mode_converts_a_maxpool_cnn_better_than_the_gate(maxpool_cnn):
    g, calib, te = maxpool_cnn
    res = {}
    for mode in ("count", "gate", "wta"):
        snn, _ = convert_graph(g, calib, conversion_pipeline(ConversionConfig(maxpool=mode)))
        assert {n.spike_mode for n in snn.nodes.values() if n.kind == "maxpool2d"} == {mode}
        st = simulate(snn, te, 32, layer_error=True)
        res[mode] = (st.accuracy(), st.layer_errors(), conversion_warnings(snn))
    ann = ann_accuracy(g, te)[0]
    (acc_c, err_c, warn_c), (acc_g, err_g, warn_g) = res["count"], res["gate"]
    last = list(err_c)[-1]  # the network's last spiking layer: the error the pools pass on
    assert err_c[last] < err_g[last] / 2, (err_c, err_g)
    assert acc_c[31] >= ann - 1.5, (acc_c, ann)
    assert not warn_c and warn_g and "gate" not in warn_c  # only the lossy modes are flagged in the report
    from snnconv.passes.spiking_transformer import spiking_census
    roles = [r["role"] for r in spiking_census(snn) if r["kind"] in ("conv2d", "linear", "maxpool2d")]
    assert roles == ["synaptic_analog", "operator", "synaptic_spikes", "operator", "synaptic_spikes",
                     "synaptic_spikes"]  # only the first conv reads analog input; the pools send spikes
    acc_w, err_w, warn_w = res["wta"]
    assert err_c[last] < err_w[last] / 2, (err_c, err_w)
    assert warn_w and "winner-take-all" in warn_w[0]
