"""Smooth activations (SiLU, GELU, hardswish, sigmoid, tanh) convert to spiking function neurons
(expectation compensation, Huang et al. 2024) on both frontends, and the SNN reaches its ANN."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.api import ann_accuracy, check_spiking, conversion_pipeline, convert_graph, simulate
from snnconv.config import ConversionConfig
from snnconv.data.datasets import load_dataset
from snnconv.errors import SnnconvError
from snnconv.frontends.torch import from_torch
from snnconv.ir import FunctionNeuron
from snnconv.runtime.neurons.function_neuron import FUNCTIONS, run_function_neuron
from snnconv.passes.spiking_transformer import spiking_census


@pytest.mark.parametrize("fn", sorted(FUNCTIONS))
@pytest.mark.parametrize("levels", [1, 3])
def test_running_mean_tracks_f_of_the_input_mean(fn, levels):
    """theta * n_t / t stays within theta / (2t) of f(mean input) at every t when L * theta covers |f|."""
    x = torch.linspace(-3, 3, 61)
    f = FUNCTIONS[fn]
    theta = f(x).abs().max() / levels  # one step can carry the largest |f(x)|: the cap never binds
    T = 64
    current = x.expand(T, 1, 61)  # the same current every step: the mean input is x
    out, counts, _ = run_function_neuron(FunctionNeuron(fn, theta, levels), current.clone(), None)
    t = torch.arange(1, T + 1).view(T, 1, 1)
    err = (out.cumsum(0) / t - f(x)).abs()
    assert torch.all(err <= theta / (2 * t) + 1e-5)
    # and a varying input: the output mean follows f of the input mean
    torch.manual_seed(0)
    noisy = x + torch.randn(T, 1, 61) * 0.5
    out, _, _ = run_function_neuron(FunctionNeuron(fn, theta * 2, levels), noisy.clone(), None)
    ref = f(noisy.cumsum(0) / t)
    assert torch.all((out.cumsum(0) / t - ref).abs()[8:] <= theta * 2 / (2 * t[8:]) + 1e-5)
    assert set(counts.unique().tolist()) <= set(range(-levels, levels + 1))


def _silu_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.AvgPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.Hardswish(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 49, 32), nn.GELU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def trained():
    """A small SiLU / hardswish / GELU CNN trained on the bundled MNIST subset (seconds on a CPU)."""
    tr, te = load_dataset("mnist-bundled", train=True), load_dataset("mnist-bundled", train=False)
    m = _silu_cnn()
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(12):
        for x, y in tr.batches(64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    m.eval()
    return m, tr, te


@pytest.mark.parametrize("method,T,tol", [("percentile", 32, 2.0), ("sfn", 4, 2.0)])
def test_silu_cnn_converts_to_a_spiking_network_near_its_ann(trained, method, T, tol):
    m, tr, te = trained
    g, _ = from_torch(m, (1, 28, 28))
    calib = [x for x, _ in tr.batches(128)]
    snn, records = convert_graph(g, calib, conversion_pipeline(ConversionConfig(method=method)))
    check_spiking(snn)
    kinds = [n.kind for n in snn.nodes.values()]
    assert kinds.count("function_neuron") == 3 and "activation" not in kinds
    roles = {r["role"] for r in spiking_census(snn)}
    assert "operator" not in roles  # every nonlinearity is a neuron, none is a real-valued operator
    ann = ann_accuracy(g, te)[0]
    acc = simulate(snn, te, T, layer_error=False).accuracy()
    assert ann > 60  # it learned something: the comparison means something
    assert acc[T - 1] >= ann - tol, (acc, ann)
    assert acc[0] < acc[T - 1] or method == "sfn"  # binary spikes need time: T=1 is coarse


def test_onnx_silu_hardswish_match_the_torch_path(trained, tmp_path):
    """Same input, same decision on both frontends: ONNX's x * Sigmoid(x) (SiLU), HardSwish and the Erf
    decomposition of GELU become the same activations as the PyTorch path, and the graph computes the module."""
    pytest.importorskip("onnx")
    from snnconv.frontends.onnx import from_onnx
    from snnconv.runtime.interpreter import run_ann

    m = trained[0]  # SiLU (exported as x * Sigmoid(x)), HardSwish, GELU (exported through Erf at opset 17)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, torch.randn(1, 1, 28, 28), str(path), dynamo=False, opset_version=17)
    g_onnx, _ = from_onnx(str(path))
    g_torch, _ = from_torch(m, (1, 28, 28))
    fns = lambda g: [n.fn for n in g.nodes.values() if n.kind == "activation"]  # noqa: E731
    assert fns(g_onnx) == fns(g_torch) == ["silu", "hardswish", "gelu"]
    x = torch.cat([b for b, _ in trained[2].batches(100)][:2])
    assert torch.allclose(run_ann(g_onnx, x), m(x), atol=1e-4)


def test_function_neurons_are_refused_by_nir_in_one_line(trained):
    pytest.importorskip("nir")
    from snnconv.backends.nir import check_export

    m, tr, _ = trained
    g, _ = from_torch(m, (1, 28, 28))
    snn, _ = convert_graph(g, [x for x, _ in tr.batches(128)], conversion_pipeline(ConversionConfig()))
    with pytest.raises(SnnconvError, match="function_neuron") as e:
        check_export(snn)
    assert "\n" not in str(e.value)


def test_mobilenet_silu_with_squeeze_excitation_ingests_and_converts():
    """The zoo's MobileNet-style SiLU net: SE gates become product operator nodes (mul), every SiLU and
    sigmoid a function neuron; the SNN's output approaches the ANN's as T grows."""
    from helpers import randomize_batchnorm
    from snnconv.models.zoo import build_model
    from snnconv.passes.spiking_transformer import census_counts
    from snnconv.runtime.interpreter import run_ann
    from snnconv.runtime.simulator import Simulator

    m = randomize_batchnorm(build_model("mobilenet_silu")).eval()
    g, _ = from_torch(m, (3, 32, 32))
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(run_ann(g, x), m(x), atol=1e-4)
    assert g.kinds()["mul"] == 6
    torch.manual_seed(1)
    snn, _ = convert_graph(g, [torch.randn(64, 3, 32, 32)], conversion_pipeline(ConversionConfig(method="sfn")))
    counts = census_counts(spiking_census(snn))
    assert counts["spiking"] == 26 and counts["operator"] == 6  # 20 SiLU + 6 sigmoid neurons; 6 SE products
    out = Simulator(snn, 64, collect_stats=False).run(x)
    ref = run_ann(g, x)
    err = lambda t: float((out[t - 1] - ref).norm() / ref.norm())  # noqa: E731
    assert err(64) < 0.5 * err(4) and err(64) < 0.2, (err(4), err(64))
