"""Noise models inject what they claim; robust evaluation and fine-tuning run on a tiny model."""
from __future__ import annotations

import pytest
import torch

from snnconv.api import conversion_pipeline, convert_graph
from snnconv.data.datasets import load_dataset
from snnconv.errors import SnnconvError
from snnconv.frontends.torch import from_torch
from snnconv.models.zoo import build_model
from snnconv.passes import PassContext, Pipeline
from snnconv.passes.robustness import NearestClassMean, measured_flip_rate, noise_curves
from snnconv.runtime.noise import NoisyRateEncoder, flip_events, gaussian_input, threshold_jitter, weight_noise


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.2, 0.45])
def test_flip_events_inject_the_requested_rate(rate):
    gen = torch.Generator().manual_seed(0)
    events = torch.rand(200_000, generator=gen) < 0.3
    for mode in ("drop", "spurious", "flip"):
        out = flip_events(events, rate, mode, torch.Generator().manual_seed(1))
        m = measured_flip_rate(events, out)
        assert m[mode] == pytest.approx(rate, abs=0.006), (mode, m)
        if mode == "drop":
            assert m["spurious"] == 0
        if mode == "spurious":
            assert m["drop"] == 0
    with pytest.raises(SnnconvError):
        flip_events(events, 1.5, "flip", gen)


def test_noisy_rate_encoder_flips_input_spikes_at_the_rate():
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    clean, noisy = NoisyRateEncoder(x_max=1.0, seed=3), NoisyRateEncoder(x_max=1.0, flip_rate=0.2, seed=3)
    s0 = clean.encode(x, 0, 8, clean.start(x, 0))
    s1 = noisy.encode(x, 0, 8, noisy.start(x, 0))
    assert torch.equal(s0, NoisyRateEncoder(x_max=1.0, seed=3).encode(x, 0, 8, clean.start(x, 0)))
    assert measured_flip_rate(s0 != 0, s1 != 0)["flip"] == pytest.approx(0.2, abs=0.005)
    assert set(s1.unique().tolist()) <= {0.0, 1.0}


def test_gaussian_weight_and_threshold_noise_levels():
    x = torch.zeros(100_000)
    n = gaussian_input(x, 0.3, 2.0, torch.Generator().manual_seed(0))
    assert float(n.std()) == pytest.approx(0.6, rel=0.02)
    model = build_model("mnist_cnn", 10, 1).eval()
    g, _ = from_torch(model, (1, 28, 28))
    snn, _ = convert_graph(g, [torch.rand(16, 1, 28, 28)], conversion_pipeline())
    noisy = weight_noise(snn, 0.1, seed=0)
    rel = torch.cat([(noisy.nodes[k].weight / snn.nodes[k].weight - 1).flatten()
                     for k, v in snn.nodes.items() if v.kind in ("conv2d", "linear")])
    rel = rel[rel.isfinite()]
    assert float(rel.std()) == pytest.approx(0.1, rel=0.05) and abs(float(rel.mean())) < 0.005
    jit = threshold_jitter(snn, 0.2, seed=0)
    for k, v in snn.nodes.items():
        if v.kind == "neuron":
            assert jit.nodes[k].threshold.numel() == v.shape[0] and torch.all(jit.nodes[k].threshold > 0)
            assert not torch.equal(jit.nodes[k].threshold, v.threshold.expand(v.shape[0]))
    # the device_noise pass applies both, deterministically
    a = Pipeline.from_config([{"name": "device_noise", "weight_sigma": 0.1, "threshold_sigma": 0.1}]).run(snn, PassContext())
    b = Pipeline.from_config([{"name": "device_noise", "weight_sigma": 0.1, "threshold_sigma": 0.1}]).run(snn, PassContext())
    assert torch.equal(a.nodes["fc2"].weight, b.nodes["fc2"].weight)


def test_robust_eval_and_finetune_run_on_a_tiny_model():
    from snnconv.checkpoints import apply_state_dict, bundled_checkpoint, load_checkpoint
    from snnconv.training.robust import robust_finetune

    model = build_model("mnist_cnn", 10, 1)
    apply_state_dict(model, load_checkpoint(bundled_checkpoint("mnist_cnn", "mnist")), "bundled")
    train = load_dataset("mnist-bundled", train=True)
    test = load_dataset("mnist-bundled", train=False).subset(60)
    g, _ = from_torch(model.eval(), (1, 28, 28))
    snn, _ = convert_graph(g, [x for x, _ in train.batches(256)], conversion_pipeline())
    ncm = NearestClassMean(train)
    curves = {k: noise_curves(snn, test, k, [0.0, 0.45], 8, ncm, x_max=1.0, batch_size=60)
              for k in ("gaussian", "flip", "weight", "threshold")}
    for k, rows in curves.items():
        assert [r["level"] for r in rows] == [0.0, 0.45]
        assert rows[0]["snn"] > 60  # a trained net on clean input
        assert (rows[0]["ncm"] is None) == (k == "threshold")
    assert curves["flip"][1]["snn"] < curves["flip"][0]["snn"]  # 45% bit flips hurt
    assert curves["gaussian"][0]["ncm"] > 50  # NCM is a real (if weak) classifier on MNIST
    # the same call again gives the same numbers (seeded noise)
    assert noise_curves(snn, test, "flip", [0.45], 8, ncm, x_max=1.0, batch_size=60) == curves["flip"][1:]
    w0 = model.fc2.weight.detach().clone()
    model, hist = robust_finetune(model, train.subset(128), epochs=1, batch_size=64, log=lambda *_: None)
    assert len(hist) == 1 and hist[0]["final_level"] > 0.3 and not torch.equal(w0, model.fc2.weight)


def test_robust_finetune_bf16_keeps_fp32_weights():
    from snnconv.training.robust import robust_finetune

    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10, 1).eval()
    w0 = model.fc2.weight.detach().clone()
    train = load_dataset("mnist-bundled", train=True).subset(128)
    model, hist = robust_finetune(model, train, epochs=1, batch_size=64, bf16=True, log=lambda *_: None)
    assert model.fc2.weight.dtype == torch.float32 and hist[0]["loss"] > 0
    assert not torch.equal(w0, model.fc2.weight)
