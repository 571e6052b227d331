"""int8 kernels for spike-driven layers (runtime.lowp, Simulator(kernels="int8")): exact where they apply,
skipped with a reason where they do not."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.frontends.torch import from_torch
from snnconv.passes import PassContext, Pipeline
from snnconv.runtime.lowp import int8_plan
from snnconv.runtime.simulator import Simulator


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(8 * 2 * 2, 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        c = torch.relu(self.c3(b))
        d = torch.relu(self.c4(c) + c)
        e = torch.relu(self.fc1(torch.flatten(self.pool(d), 1)))
        return self.fc2(e)


def converted(granularity="layer", seed=0):
    torch.manual_seed(seed)
    g, _ = from_torch(Net().eval(), (2, 8, 8))
    return Pipeline.from_config(["fold_batchnorm", {"name": "threshold_balance", "granularity": granularity}]).run(
        g, PassContext(calibration=[torch.randn(16, 2, 8, 8, generator=torch.Generator().manual_seed(seed + 1))]))


def dyadic(snn, signed=()):
    """int8 codes with power-of-two scales and thresholds: every product and sum is exact in fp32 too."""
    for i, (name, node) in enumerate(list(snn.nodes.items())):
        if node.kind in ("conv2d", "linear"):
            scale = torch.tensor([2.0 ** -(4 + (o % 3)) for o in range(node.weight.shape[0])])
            view = scale.view(-1, *([1] * (node.weight.dim() - 1)))
            codes = torch.round(node.weight / view).clamp(-127, 127).to(torch.int8)
            snn.nodes[name] = node.replace(weight=codes.float() * view, weight_int=codes, weight_scale=view, bits=8,
                                           bias=torch.round(node.bias * 64) / 64)
        elif node.kind == "neuron":
            snn.nodes[name] = node.replace(threshold=torch.tensor(2.0 ** -(i % 3)), signed=name in signed)
    return snn


def run(snn, x, T, kernels):
    sim = Simulator(snn, T, kernels=kernels)
    return sim, sim.run(x)


@pytest.mark.parametrize("signed", [False, True])
def test_int8_kernels_agree_with_fp32_to_the_bit_where_fp32_is_exact(signed):
    snn = converted()
    neurons = [n for n, nd in snn.nodes.items() if nd.kind == "neuron"]
    snn = dyadic(snn, signed=set(neurons[1:3]) if signed else set())
    x = torch.randn(6, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    ref_sim, ref = run(snn, x, 6, "fp32")
    sim, out = run(snn, x, 6, "int8")
    # every layer fed by spikes runs int8, fc1 through average pooling and flattening (pooled window sums);
    # only c1, which takes the analog input, does not
    assert sorted(sim._int8) == ["c2", "c3", "c4", "fc1", "fc2"], sim.int8_skipped
    assert list(sim.int8_skipped) == ["c1"] and "not by spikes" in sim.int8_skipped["c1"]
    assert [n.kind for n, _ in sim._int8["fc1"].chain] == ["avgpool2d", "flatten"]
    assert sum(v.sum() for v in ref_sim.stats.spikes.values()) > 0
    assert torch.equal(out, ref)
    for k in ref_sim.stats.spikes:
        assert torch.equal(sim.stats.spikes[k], ref_sim.stats.spikes[k]), k
    for k in ref_sim.stats.synops:
        assert torch.equal(sim.stats.synops[k], ref_sim.stats.synops[k]), k


def test_int8_kernels_use_the_weight_codes_not_the_float_weights():
    """A code that disagrees with the float weight changes the int8 result (the kernel is really used)."""
    snn = dyadic(converted())
    x = torch.randn(6, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    _, before = run(snn, x, 4, "int8")
    node = snn.nodes["c2"]
    snn.nodes["c2"] = node.replace(weight_int=(node.weight_int.int() * 0).to(torch.int8))  # float weight unchanged
    _, after = run(snn, x, 4, "int8")
    _, fp32 = run(snn, x, 4, "fp32")
    assert not torch.equal(before, after)
    assert torch.equal(before, fp32)


def test_int8_kernels_on_a_quantized_network_match_fp32_up_to_rounding():
    """Real scales (the quantize pass, per output channel): the sums are exact in int32 and rounded once; the
    fp32 path rounds every product, so the two agree up to float rounding of the membrane input."""
    snn = converted()
    snn = Pipeline.from_config([{"name": "quantize", "bits": 8}]).run(snn, PassContext())
    x = torch.randn(32, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    _, ref = run(snn, x, 8, "fp32")
    sim, out = run(snn, x, 8, "int8")
    assert sorted(sim._int8) == ["c2", "c3", "c4", "fc1", "fc2"]
    scale = ref.abs().max()
    assert (out - ref).abs().max() <= 1e-3 * scale
    assert (out[-1].argmax(-1) == ref[-1].argmax(-1)).float().mean() >= 0.95


def test_int8_kernels_are_skipped_where_they_would_not_be_exact():
    snn = converted(granularity="channel")  # per-channel thresholds, float weights
    kernels, skipped = int8_plan(snn)
    assert not kernels
    assert "int8 grid" in skipped["c2"]
    snn = Pipeline.from_config([{"name": "quantize", "bits": 8}]).run(snn, PassContext())
    kernels, skipped = int8_plan(snn)
    assert not kernels and "per-channel thresholds" in skipped["c2"]
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run(snn, x, 4, "int8")[1], run(snn, x, 4, "fp32")[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="kernels must be"):
        Simulator(snn, 4, kernels="bf16")


@pytest.mark.parametrize("signed,levels", [(False, 1), (True, 1), (False, 3), (True, 2)])
def test_int8_synapse_is_the_exact_integer_sum(signed, levels):
    """u8 spike codes (shifted by the zero point for signed counts) x s8 weights: conv (padded, strided) and
    linear against the float64 sum of counts * theta * weight."""
    from snnconv.ir import Conv2d, IFNeuron, Linear
    from snnconv.runtime.lowp import int8_synapse
    g = torch.Generator().manual_seed(7)
    lo = -levels if signed else 0
    src = IFNeuron(shape=(5, 7, 7), threshold=torch.tensor(0.37)).replace(levels=levels, signed=signed)
    codes = torch.randint(-127, 128, (4, 5, 3, 3), generator=g, dtype=torch.int8)
    scale = torch.rand(4, 1, 1, 1, generator=g) * 0.01 + 1e-3
    conv = Conv2d(shape=(4, 4, 4), weight=codes.float() * scale, bias=torch.randn(4, generator=g), stride=(2, 2),
                  padding=(1, 1), weight_int=codes, weight_scale=scale, bits=8)
    k, why = int8_synapse(conv, src)
    assert k is not None, why
    counts = torch.randint(lo, levels + 1, (3, 5, 7, 7), generator=g).float()
    assert (counts < 0).any() == signed
    exact = torch.nn.functional.conv2d(counts.double() * 0.37, codes.double() * scale.double(), conv.bias.double(),
                                       2, 1)
    assert (k(counts).double() - exact).abs().max() <= 4e-6 * exact.abs().max()
    lsrc = IFNeuron(shape=(20,), threshold=torch.tensor(0.37)).replace(levels=levels, signed=signed)
    lcodes = torch.randint(-127, 128, (6, 20), generator=g, dtype=torch.int8)
    lscale = torch.rand(6, 1, generator=g) * 0.01 + 1e-3
    lin = Linear(shape=(6,), weight=lcodes.float() * lscale, bias=None, weight_int=lcodes, weight_scale=lscale,
                 bits=8)
    k, why = int8_synapse(lin, lsrc)
    assert k is not None, why
    counts = torch.randint(lo, levels + 1, (2, 3, 20), generator=g).float()
    exact = (counts.double() * 0.37) @ (lcodes.double() * lscale.double()).T
    assert (k(counts).double() - exact).abs().max() <= 4e-6 * exact.abs().max()


def test_int8_plan_reaches_the_classifier_through_global_average_pooling():
    """ResNet-20: every conv fed by spikes and the classifier (after global average pooling: window sums of up
    to 64 binary spikes, in 8 bits) run int8; only the first conv, on the analog input, does not."""
    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.config import ConversionConfig
    from snnconv.models.zoo import build_model
    torch.manual_seed(0)
    g, _ = from_torch(build_model("resnet20", 10, 3).eval(), (3, 32, 32))
    snn, _ = convert_graph(g, [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))],
                           conversion_pipeline(ConversionConfig(granularity="layer")))
    snn = Pipeline.from_config([{"name": "quantize", "bits": 8}]).run(snn, PassContext())
    kernels, skipped = int8_plan(snn)
    assert list(skipped) == ["conv1"], skipped
    assert len(kernels) == 18 + 2 + 1  # 18 3x3 convs in the 9 blocks, 2 shortcut 1x1 convs, the classifier
    assert [(n.kind, w) for n, w in kernels["fc"].chain] == [("adaptive_avgpool2d", 64), ("flatten", 1)]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a, b = Simulator(snn, 3, kernels="int8").run(x), Simulator(snn, 3).run(x)
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
