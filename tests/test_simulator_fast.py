"""The optimised simulator (channels-last convolutions, in-place IF update, several timesteps per
layer call, events reused for SynOps) against a plain step-by-step reference implementation: the
same logits at every t and the same spikes, bit for bit. Weights, inputs and thresholds are
multiples of powers of two, so every sum is exact in float32 whatever order a kernel adds in."""
from __future__ import annotations

import torch
from torch import nn

from snnconv.frontends.torch import from_torch
from snnconv.passes import PassContext, Pipeline
from snnconv.runtime.kernels import KERNELS
from snnconv.runtime.simulator import Simulator


class ResBlockNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a) + a)
        return self.fc(torch.flatten(self.pool(b), 1))


def dyadic_snn():
    torch.manual_seed(0)
    g, _ = from_torch(ResBlockNet().eval(), (2, 8, 8))
    snn = Pipeline.from_config(["fold_batchnorm", "threshold_balance"]).run(
        g, PassContext(calibration=[torch.randn(8, 2, 8, 8)]))
    levels = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.5, 0.75])
    for name, node in list(snn.nodes.items()):
        if node.kind in ("conv2d", "linear"):
            snn.nodes[name] = node.replace(weight=torch.round(node.weight * 8) / 8,
                                           bias=torch.round(node.bias * 8) / 8)
        elif node.kind == "neuron":
            snn.nodes[name] = node.replace(threshold=levels[: node.threshold.numel()].clone())
    return snn


def reference(snn, x, T):
    """Per-step simulation with the stateless kernels on NCHW tensors and a textbook IF update."""
    v, logits, spikes, total = {}, [], {}, 0
    for t in range(T):
        vals = {snn.inputs[0]: x}
        for name, node in snn.nodes.items():
            if node.kind == "input":
                continue
            ins = [vals[s] for s in snn.edges[name]]
            if node.kind == "neuron":
                th = node.threshold.view(-1, 1, 1)
                if name not in v:
                    v[name] = torch.zeros_like(ins[0]) + node.v_init * th
                v[name] = v[name] + ins[0]
                s = (v[name] >= th).float()
                v[name] = v[name] - s * th
                spikes.setdefault(name, []).append(s.sum())
                vals[name] = s * th
            else:
                vals[name] = KERNELS[node.kind](node, ins)
        total = total + vals[snn.outputs[0]]
        logits.append(total / (t + 1))
    return torch.stack(logits), {k: torch.stack(s).double() for k, s in spikes.items()}


def test_optimised_simulator_equals_step_by_step_reference():
    T = 12
    snn = dyadic_snn()
    x = torch.round(torch.randn(5, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 4) / 4
    ref_logits, ref_spikes = reference(snn, x, T)
    assert all(s.sum() > 0 for s in ref_spikes.values())
    for kw in ({"chunk": 8}, {"chunk": 12, "channels_last": False}, {"chunk": 1}, {"chunk": 5}):
        sim = Simulator(snn, T, **kw)
        logits = sim.run(x)
        assert torch.equal(logits, ref_logits), kw
        for k, s in ref_spikes.items():
            assert torch.equal(sim.stats.spikes[k], s), (kw, k)
    # SynOps read channels-last (permuted fan-out map) equal SynOps read in NCHW order
    a, b = Simulator(snn, T), Simulator(snn, T, channels_last=False)
    a.run(x)
    b.run(x)
    assert a.stats.synops.keys() == b.stats.synops.keys() and a.stats.synops
    for k in a.stats.synops:
        assert torch.equal(a.stats.synops[k], b.stats.synops[k]), k
