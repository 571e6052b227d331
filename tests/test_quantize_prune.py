"""Quantization and pruning passes, and quantization-aware fine-tuning."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snnconv.api import conversion_pipeline, convert_graph
from snnconv.errors import SnnconvError
from snnconv.frontends.torch import from_torch
from snnconv.ir import Graph
from snnconv.models.zoo import build_model
from snnconv.passes import PassContext, Pipeline
from snnconv.passes.quantize import fake_quantize, model_size_bytes, quantize_weight
from snnconv.runtime.interpreter import run_ann


def _snn(seed=0):
    torch.manual_seed(seed)
    model = build_model("mnist_cnn", 10, 1).eval()
    g, _ = from_torch(model, (1, 28, 28))
    calib = [torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(seed))]
    snn, _ = convert_graph(g, calib, conversion_pipeline())
    return snn, calib


def _run(graph, spec, calib=None):
    ctx = PassContext(calibration=calib)
    return Pipeline.from_config([spec]).run(graph, ctx), ctx


def _strip(graph: Graph) -> Graph:
    g = graph.copy()
    for n, node in g.nodes.items():
        if node.kind in ("conv2d", "linear"):
            g.nodes[n] = node.replace(weight_int=None, weight_scale=None, bits=None)
    return g


@pytest.mark.parametrize("spec", [{"scheme": "int", "bits": 8}, {"scheme": "int", "bits": 4},
                                  {"scheme": "ternary"}, {"scheme": "ternary", "granularity": "layer"},
                                  {"scheme": "int", "bits": 8, "granularity": "layer", "power_of_two": True}])
def test_quantizers_round_trip_and_are_idempotent(spec):
    snn, _ = _snn()
    q, ctx = _run(snn, {"name": "quantize", **spec})
    qmax = 1 if spec["scheme"] == "ternary" else 2 ** (spec["bits"] - 1) - 1
    for name, node in q.nodes.items():
        if node.kind not in ("conv2d", "linear"):
            continue
        assert not node.weight_int.is_floating_point()
        # integer codes times scales reproduce the stored (simulated) weights exactly
        assert torch.equal(node.weight_int.float() * node.weight_scale, node.weight)
        assert int(node.weight_int.abs().max()) <= qmax
        assert not torch.equal(node.weight, snn.nodes[name].weight)  # something was quantized
        if spec["scheme"] == "ternary":
            assert set(node.weight_int.unique().tolist()) <= {-1, 0, 1}
            vals = node.weight.unique() if spec.get("granularity") == "layer" else node.weight[0].unique()
            assert len(vals) <= 3
    # quantizing the dequantized weights again gives the same codes and weights
    q2, _ = _run(_strip(q), {"name": "quantize", **spec})
    for name, node in q2.nodes.items():
        if node.kind in ("conv2d", "linear"):
            assert torch.equal(node.weight_int, q.nodes[name].weight_int)
            torch.testing.assert_close(node.weight, q.nodes[name].weight, rtol=1e-6, atol=0)
    # survives save/load (weights_only) and the graph summary/param count is unchanged
    assert sum(n.num_params() for n in q.nodes.values()) == sum(n.num_params() for n in snn.nodes.values())
    assert q.meta["quantization"]["size"]["bytes"] < model_size_bytes(snn)["bytes"] / 3


def test_quantized_graph_saves_and_loads(tmp_path):
    snn, _ = _snn()
    q, _ = _run(snn, {"name": "quantize", "scheme": "int", "bits": 4})
    q.save(tmp_path / "q.pt")
    back = Graph.load(tmp_path / "q.pt")
    node = back.nodes["fc2"]
    assert node.bits == 4 and node.weight_int.dtype == torch.int8
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(run_ann(back, x), run_ann(q, x))


def test_int8_is_close_and_ternary_three_values():
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    codes, scale, bits = quantize_weight(w, "int", 8)
    assert bits == 8 and float(((codes * scale) - w).abs().max()) <= float(scale.max()) / 2 + 1e-7
    t, s, b = quantize_weight(w, "ternary", granularity="layer")
    assert b == 2 and set(t.unique().tolist()) == {-1, 0, 1} and s.dim() == 0
    # absmean rule: |w| < gamma/2 -> 0, else sign(w)
    gamma = w.abs().mean()
    assert torch.equal(t.float(), torch.where(w.abs() < gamma / 2, torch.zeros_like(w), torch.sign(w)))


def test_quantize_refuses_unfolded_batchnorm_and_bad_config():
    model = build_model("mnist_cnn", 10, 1).eval()
    g, _ = from_torch(model, (1, 28, 28))
    with pytest.raises(SnnconvError, match="fold_batchnorm"):
        _run(g, {"name": "quantize"})
    with pytest.raises(SnnconvError, match="scheme"):
        _run(g, {"name": "quantize", "scheme": "float3"})


def test_loihi_profile_snaps_thresholds_and_checks_state_width():
    snn, calib = _snn()
    q, ctx = _run(snn, {"name": "quantize", "profile": "loihi", "timesteps": 16}, calib)
    fp = q.meta["quantization"]["fixed_point"]
    assert q.meta["quantization"]["granularity"] == "layer"
    for name, info in fp.items():
        node = q.nodes[name]
        prod = q.nodes[q.preds(name)[0]]
        assert prod.weight_scale.dim() == 0
        lsb = float(prod.weight_scale)
        assert lsb == 2.0 ** round(torch.log2(prod.weight_scale).item())  # power-of-two exponent
        codes = node.threshold / lsb
        torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)  # thresholds on the LSB grid
        assert info["state_bits_needed"] > info["threshold_bits"] and isinstance(info["state_fits"], bool)


def test_prune_hits_sparsity_targets():
    snn, calib = _snn()
    layers = [n for n, node in snn.nodes.items() if node.kind in ("conv2d", "linear")]
    total = sum(snn.nodes[n].weight.numel() for n in layers)
    for spec, tol in [({"method": "magnitude"}, 1e-3), ({"method": "magnitude", "scope": "layer"}, 1e-2),
                      ({"method": "activity"}, 1e-3), ({"method": "magnitude", "structure": "channel"}, 0.05),
                      ({"method": "activity", "structure": "channel", "scope": "layer"}, 0.05)]:
        for target in (0.3, 0.7):
            p, ctx = _run(snn, {"name": "prune", "sparsity": target, **spec}, calib)
            zeros = sum(int(p.nodes[n].weight.eq(0).sum()) for n in layers)
            assert zeros / total >= target - 1e-9, spec
            assert zeros / total <= target + tol, spec
            assert p.meta["pruning"]["achieved"] == pytest.approx(zeros / total)
            if spec.get("scope") == "layer":
                for n in layers:
                    assert int(p.nodes[n].weight.eq(0).sum()) >= target * p.nodes[n].weight.numel() - 1e-6
    # magnitude pruning removes the smallest weights
    p, _ = _run(snn, {"name": "prune", "sparsity": 0.5}, calib)
    w0 = torch.cat([snn.nodes[n].weight.flatten().abs() for n in layers])
    kept = torch.cat([p.nodes[n].weight.flatten().abs() for n in layers])
    assert float(w0[kept == 0].max()) <= float(w0[kept != 0].min())


def test_activity_pruning_removes_silent_inputs_first():
    snn, calib = _snn()
    # make one input channel of the second conv silent by killing its presynaptic conv filter
    src = "features.0"
    node = snn.nodes[src]
    w = node.weight.clone()
    w[3] = 0
    snn.nodes[src] = node.replace(weight=w, bias=torch.where(torch.arange(w.shape[0]) == 3, -1.0, node.bias))
    p, _ = _run(snn, {"name": "prune", "sparsity": 0.07, "method": "activity", "structure": "channel",
                      "scope": "layer"}, calib)
    assert torch.all(p.nodes["features.4"].weight[:, 3] == 0)


def test_prune_keeps_quantized_codes_consistent():
    snn, calib = _snn()
    q, _ = _run(snn, {"name": "quantize", "scheme": "int", "bits": 4})
    p, _ = _run(q, {"name": "prune", "sparsity": 0.5}, calib)
    for node in p.nodes.values():
        if node.kind in ("conv2d", "linear"):
            assert torch.equal(node.weight_int.float() * node.weight_scale, node.weight)


@pytest.mark.parametrize("train_bn", [False, True])
def test_qat_codes_survive_bn_folding(train_bn):
    from snnconv.data.datasets import load_dataset
    from snnconv.training.qat import qat_finetune

    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10, 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)  # including negative BN scales
    model.eval()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    var0 = bn.running_var.clone()
    train = load_dataset("mnist-bundled", train=True).subset(128)
    model, hist = qat_finetune(model, train, "ternary", epochs=1, batch_size=64, log=lambda *_: None,
                               train_bn=train_bn)
    assert len(hist) == 1 and hist[0]["loss"] > 0
    assert torch.equal(bn.running_var, var0) != train_bn  # frozen statistics, or re-estimated ones
    conv = model.features[0].weight
    torch.testing.assert_close(conv.detach(), fake_quantize(conv, "ternary"), rtol=1e-6, atol=0)  # baked-in ternary
    assert all(len(conv[o].unique()) <= 3 for o in range(conv.shape[0]))
    g, _ = from_torch(model, (1, 28, 28))
    folded = Pipeline.from_config(["fold_batchnorm"]).run(g, PassContext())
    q, _ = _run(folded, {"name": "quantize", "scheme": "ternary"})
    # fold + quantize reproduces the folded QAT weights (codes up to the BN sign)
    for name, node in q.nodes.items():
        if node.kind in ("conv2d", "linear"):
            torch.testing.assert_close(node.weight, folded.nodes[name].weight, rtol=1e-5, atol=1e-7)


def test_qat_bf16_autocast_keeps_fp32_quantized_weights():
    from snnconv.data.datasets import load_dataset
    from snnconv.training.qat import qat_finetune

    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10, 1).eval()
    w0 = model.features[0].weight.detach().clone()
    train = load_dataset("mnist-bundled", train=True).subset(128)
    model, hist = qat_finetune(model, train, "int", 4, epochs=1, batch_size=64, bf16=True, log=lambda *_: None)
    conv = model.features[0].weight
    assert conv.dtype == torch.float32 and hist[0]["loss"] > 0
    assert not torch.equal(conv.detach(), fake_quantize(w0, "int", 4))  # it trained
    torch.testing.assert_close(conv.detach(), fake_quantize(conv, "int", 4), rtol=1e-6, atol=0)  # int4 baked in


def test_prune_finetune_keeps_its_zeros_and_the_prune_pass_finds_them():
    from snnconv.data.datasets import load_dataset
    from snnconv.training.sparse import magnitude_masks, prune_finetune

    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10, 1).eval()
    masks = magnitude_masks(model, 0.5)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert kept == total - round(0.5 * total)  # the global target, exactly (no ties in random init)
    layer_masks = magnitude_masks(model, 0.3, scope="layer")
    assert all(abs(1 - float(m.mean()) - 0.3) < 0.01 for m in layer_masks.values())
    w0 = model.features[0].weight.detach().clone()
    train = load_dataset("mnist-bundled", train=True).subset(128)
    model, hist = prune_finetune(model, train, 0.5, epochs=1, batch_size=64, log=lambda *_: None)
    zeros = sum(int(m.weight.eq(0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros == round(0.5 * total) and hist[0]["loss"] > 0
    w1 = model.features[0].weight
    assert not torch.equal(w1[w1 != 0], w0[w1 != 0])  # the survivors trained
    g, _ = from_torch(model, (1, 28, 28))
    folded = Pipeline.from_config(["fold_batchnorm"]).run(g, PassContext())
    p, _ = _run(folded, {"name": "prune", "sparsity": 0.5})
    for name, node in p.nodes.items():  # the pass removes exactly the fine-tuned zeros, nothing else
        if node.kind in ("conv2d", "linear"):
            assert torch.equal(node.weight, folded.nodes[name].weight)
