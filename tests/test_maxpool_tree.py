"""Max pooling built from signed IF neurons (``--maxpool tree``, snnconv.passes.maxpool_tree): the tree computes
the count mode spike for spike, exports to NIR, and runs in the peer simulators with the same spikes."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from snnconv.backends.nir import export_nir, import_nir
from snnconv.backends.verify import reference_run
from snnconv.config import ConversionConfig
from snnconv.errors import SnnconvError
from snnconv.interop.base import load
from snnconv.ir import Graph, Input, MaxPool2d
from snnconv.passes.maxpool_tree import lower_maxpool, max_tree_layers
from snnconv.runtime.simulator import Simulator
from test_nir import SmallCNN, _convert, _x


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 9])
def test_the_layers_of_relus_compute_the_maximum(k):
    layers = max_tree_layers(k)
    assert layers[-1].shape[0] == 1 and layers[0].shape[1] == k
    for taps in itertools.islice(itertools.product([0.0, 1.0, 2.5, 4.0], repeat=k), 300):
        v = torch.tensor(taps)
        for a in layers:
            v = torch.relu(a @ v)
        assert float(v) == max(taps)


class PoolNet(nn.Module):
    """A conv, its neurons and a max pool with odd windows (3x3, stride 2, padding 1: nine inputs, padded
    edges), then a classifier."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Flatten(),
                               nn.Linear(5 * 4 * 4, 3))

    def forward(self, x):
        return self.f(x)


def _pools(g: Graph) -> list[str]:
    return [k for k, n in g.nodes.items() if n.kind == "maxpool2d"]


@pytest.mark.parametrize("net,shape", [(SmallCNN(nn.MaxPool2d), (1, 12, 12)), (PoolNet(), (2, 8, 8))])
@pytest.mark.parametrize("cfg", [ConversionConfig(), ConversionConfig(signed=True),
                                 ConversionConfig(method="sfn", levels=3)], ids=["binary", "signed", "graded"])
def test_tree_emits_the_count_mode_spike_for_spike(net, shape, cfg):
    count = _convert(net, shape, cfg)
    tree = _convert(net, shape, ConversionConfig(**{**cfg.__dict__, "maxpool": "tree"}))
    pools = _pools(count)
    assert pools and not _pools(tree) and all(tree.nodes[p].kind == "neuron" for p in pools)
    x = _x(shape, n=6) * 3
    a, b = Simulator(count, 12, record=tuple(pools), chunk=5), Simulator(tree, 12, record=tuple(pools))
    out_a, out_b = a.run(x), b.run(x)
    for p in pools:  # the pooled spike trains (values theta * spikes) agree at every step
        assert torch.allclose(a.recorded[p], b.recorded[p], atol=1e-5), p
        assert a.recorded[p].abs().sum() > 0
    assert torch.allclose(out_a, out_b, atol=1e-4)


@pytest.mark.parametrize("levels,signed", [(1, False), (1, True), (2, True), (3, False)])
def test_tree_matches_the_count_mode_under_busy_signed_input(levels, signed):
    """Random +-1 input spikes every step (rate coding of values in [-1, 1]) drive a neuron whose spikes go up
    and down, so a window's inputs often move in opposite directions in one step (the case that needs 2L-level
    tree units); the tree's pooled train equals the count mode's at every step."""
    from snnconv.encoders import Encoder
    from snnconv.ir import Conv2d, SpikingNeuron

    g = Graph()
    theta = torch.tensor([1.0, 2.0, 0.7])
    g.add("input", Input(shape=(2, 6, 6)))  # channel 0 fires +1 spikes, channel 1 fires -1 spikes
    g.add("syn", Conv2d(weight=theta.view(3, 1, 1, 1).repeat(1, 2, 1, 1)), ["input"])  # +-theta or 0 each step
    g.add("n", SpikingNeuron(threshold=theta, v_init=0.5, levels=levels, signed=signed),
          ["syn"])
    g.add("pool", MaxPool2d((2, 2), (2, 2)), ["n"])
    g.outputs = ["pool"]
    g.infer_shapes()
    tree = g.copy()
    lower_maxpool(tree, "pool")
    x = torch.rand(16, 2, 6, 6, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    runs = []
    for graph in (g, tree):
        sim = Simulator(graph, 40, encoder=Encoder("rate", x_max=1.0), record=("n", "pool"), collect_stats=False)
        sim.run(x)
        runs.append(sim.recorded)
    n = runs[0]["n"]
    assert torch.equal(n, runs[1]["n"])
    if signed:  # opposite moves inside one window happened
        win = torch.nn.functional.unfold(n.flatten(0, 2).unsqueeze(1), 2, stride=2)  # [T*B*C, 4, windows]
        assert bool(((win.amax(1) > 0) & (win.amin(1) < 0)).any())
    assert torch.allclose(runs[0]["pool"], runs[1]["pool"], atol=1e-5)
    assert runs[0]["pool"].abs().sum() > 0


def test_tree_needs_a_spiking_input_and_says_which_pool():
    g = Graph()
    g.add("input", Input(shape=(2, 4, 4)))
    g.add("pool", MaxPool2d((2, 2), (2, 2)), ["input"])
    g.outputs = ["pool"]
    g.infer_shapes()
    with pytest.raises(SnnconvError, match="max pool 'pool'.*reads 'input'"):
        lower_maxpool(g, "pool")


def test_max_pool_net_exports_and_runs_in_every_peer(target, tmp_path):
    """A max-pool CNN with binary spikes leaves snnconv: NIR file, then each peer's own neurons, spike for spike
    with snnconv, and the outputs of the count mode it replaces."""
    torch.manual_seed(3)
    net = SmallCNN(nn.MaxPool2d)
    count = _convert(net, (1, 12, 12), ConversionConfig())
    tree = _convert(net, (1, 12, 12), ConversionConfig(maxpool="tree"))
    with pytest.raises(SnnconvError):
        export_nir(count, tmp_path / "count.nir")  # the operator form cannot be written
    export_nir(tree, tmp_path / "tree.nir")
    x = _x((1, 12, 12), n=8) * 3
    ref = reference_run(import_nir(tmp_path / "tree.nir"), x, 16)
    got = load(tmp_path / "tree.nir", target).run(x, 16, record=True)
    for k, r in ref["spikes"].items():
        assert torch.equal(torch.sign(got["spikes"][k].reshape(r.shape).float()).to(torch.int8), r), k
    assert any(bool((r < 0).any()) for r in ref["spikes"].values())  # the tree's negative spikes ran
    assert torch.allclose(got["outputs"], ref["outputs"], atol=1e-5)
    ours = Simulator(count, 16).run(x)  # the count mode in snnconv's simulator: the same readout
    assert torch.allclose(got["outputs"].cumsum(0) / torch.arange(1, 17).view(-1, 1, 1), ours, atol=1e-4)
