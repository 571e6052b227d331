"""ONNX frontend and ONNX export: small ONNX graphs made in the test (torch.onnx.export or onnx.helper),
ingested into the IR and checked against onnxruntime; unsupported ops, corrupt files, the CLI, and the
torch -> IR -> ONNX -> IR round trip."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from snnconv.backends.onnx_export import export_onnx  # noqa: E402
from snnconv.errors import SnnconvError, UnsupportedOpError  # noqa: E402
from snnconv.frontends.onnx import check_onnx_equivalence, from_onnx, onnxruntime_run  # noqa: E402
from snnconv.frontends.torch import from_torch  # noqa: E402
from snnconv.runtime.interpreter import run_ann  # noqa: E402
from helpers import Decoder, LeakyUp, SplitNet, conv1d_net, randomize_batchnorm, torch_to_onnx  # noqa: E402


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.fc(x.view(x.size(0), -1))  # Shape -> Gather -> Concat -> Reshape in ONNX


class Residual(nn.Module):
    """Residual adds, a concat, a ReLU6 (Clip), max-pooling, global average pooling, a Dropout."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6())
        self.b = nn.Conv2d(8, 4, 1)
        self.mp = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(12, 5))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.a(x)
        x = torch.cat([x, self.b(x)], dim=1)
        return self.head(self.mp(x))


def test_tiny_cnn_from_torch_export(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(TinyCNN())
    path = torch_to_onnx(model, (1, 16, 16), tmp_path / "tiny.onnx")
    graph, table = from_onnx(path)
    assert graph.kinds()["conv2d"] == 2 and graph.kinds()["linear"] == 1
    assert "| Reshape | 1 | yes |" in table and "| Shape | 1 | yes |" in table
    x = torch.randn(5, 1, 16, 16)
    assert check_onnx_equivalence(graph, path, x) <= 1e-4
    assert (run_ann(graph, x) - model(x)).abs().max() <= 1e-4
    assert graph.meta["frontend"] == "onnx" and graph.meta["input_shape"] == [1, 16, 16]


def test_residual_concat_maxpool(tmp_path):
    torch.manual_seed(1)
    model = Residual().eval()
    path = torch_to_onnx(model, (3, 12, 12), tmp_path / "res.onnx")
    graph, _ = from_onnx(path)
    kinds = graph.kinds()
    assert kinds["add"] == 1 and kinds["concat"] == 1 and kinds["maxpool2d"] == 1
    assert kinds["adaptive_avgpool2d"] == 1
    assert any(n.kind == "clip" and n.hi == 6.0 for n in graph.nodes.values())
    x = torch.randn(4, 3, 12, 12)
    assert check_onnx_equivalence(graph, path, x) <= 1e-4
    assert (run_ann(graph, x) - model(x)).abs().max() <= 1e-4


def _helper_model(nodes, inits, in_shape=("N", 2, 6, 6), out_shape=("N", 3), out="y"):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))],
                          initializer=[numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
                                       for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_helper_graph_batchnorm_matmul_add_constant(tmp_path):
    """A graph written with onnx.helper: BatchNormalization, MaxPool, Flatten, MatMul + Add folded into
    one Linear, a Constant node and a Mul by a constant."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 2, 3, 3)), "s": rng.random(4) + 0.5, "b": rng.standard_normal(4),
             "m": rng.standard_normal(4), "v": rng.random(4) + 0.5, "fw": rng.standard_normal((36, 3)),
             "fb": rng.standard_normal(3)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Constant", [], ["half"], name="const",
                              value=numpy_helper.from_array(np.array(0.5, dtype=np.float32))),
             helper.make_node("Mul", ["p", "half"], ["ph"], name="halve"),
             helper.make_node("Flatten", ["ph"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fw"], ["mm"], name="fc_matmul"),
             helper.make_node("Add", ["mm", "fb"], ["y"], name="fc_bias")]
    model = _helper_model(nodes, inits)
    onnx.checker.check_model(model)
    graph, _ = from_onnx(model)
    kinds = graph.kinds()
    assert kinds["batchnorm"] == 1 and kinds["maxpool2d"] == 1 and kinds["scale"] == 1
    (lin,) = [n for n in graph.nodes.values() if n.kind == "linear"]
    assert lin.bias is not None and "add" not in kinds  # bias folded into the MatMul's Linear
    x = torch.randn(3, 2, 6, 6)
    assert check_onnx_equivalence(graph, model, x) <= 1e-4


def test_unsupported_ops_all_named_with_node_names(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Erf", ["c"], ["s"], name="gate_erf"),
             helper.make_node("Flatten", ["s"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fw"], ["mm"], name="fc"),
             helper.make_node("Softmax", ["mm"], ["y"], name="probabilities")]
    model = _helper_model(nodes, {"w": rng.standard_normal((4, 2, 3, 3)), "fw": rng.standard_normal((64, 3))})
    path = tmp_path / "bad_ops.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpError) as e:
        from_onnx(path)
    msg = str(e.value)
    assert "Erf at ONNX node 'gate_erf'" in msg and "Softmax at ONNX node 'probabilities'" in msg
    assert len(e.value.ops) == 2 and "\n" not in msg
    assert "| Erf | 1 | no |" in e.value.coverage and "| Conv | 1 | yes |" in e.value.coverage


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_corrupt_files_are_one_line_errors(tmp_path, damage):
    torch.manual_seed(0)
    good = torch_to_onnx(TinyCNN().eval(), (1, 16, 16), tmp_path / "good.onnx").read_bytes()
    path = tmp_path / "broken.onnx"
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    elif damage == "empty":
        path.write_bytes(b"")
    with pytest.raises(SnnconvError) as e:
        from_onnx(path)
    assert "broken.onnx" in str(e.value) and "\n" not in str(e.value)


def test_export_round_trip(tmp_path):
    """torch -> IR -> export_onnx -> from_onnx: the same outputs; onnxruntime agrees with both."""
    torch.manual_seed(0)
    model = Residual().eval()
    model.stem.insert(1, nn.BatchNorm2d(8))
    randomize_batchnorm(model)
    graph, _ = from_torch(model, (3, 12, 12))
    out = tmp_path / "sub" / "res.onnx"
    info = export_onnx(graph, out, (3, 12, 12))
    assert out.is_file() and info["max_abs_diff"] <= 1e-4
    assert [p.name for p in out.parent.iterdir()] == ["res.onnx"]  # no temp file left
    again, _ = from_onnx(out)
    assert again.kinds() == graph.kinds() and again.kinds()["batchnorm"] == 1
    x = torch.randn(3, 3, 12, 12)
    assert (run_ann(again, x) - run_ann(graph, x)).abs().max() <= 1e-5
    assert np.abs(onnxruntime_run(out, x)[0] - model(x).detach().numpy()).max() <= 1e-4


def test_export_writes_qcfs_and_scale_nodes(tmp_path):
    """Quantized (QCFS) clips and constant Scale nodes are written as plain ONNX ops that match run_ann."""
    from snnconv.ir import Clip, Conv2d, Flatten, Graph, Input, Linear, Scale

    g = Graph()
    g.add("x", Input(shape=(2, 4, 4)))
    g.add("conv", Conv2d(torch.randn(3, 2, 3, 3), torch.randn(3), padding=(1, 1)), ["x"])
    g.add("scale", Scale(torch.rand(3, 1, 1) + 0.5, torch.randn(3, 1, 1)), ["conv"])
    g.add("q", Clip(0.0, 2.0, "qcfs", levels=4, shift=0.5), ["scale"])
    g.add("flat", Flatten(1), ["q"])
    g.add("fc", Linear(torch.randn(5, 48), torch.randn(5)), ["flat"])
    g.outputs = ["fc"]
    g.infer_shapes()
    info = export_onnx(g, tmp_path / "q.onnx")
    assert info["max_abs_diff"] <= 1e-4
    again, _ = from_onnx(tmp_path / "q.onnx")  # the QCFS chain is folded back into one quantized clip
    assert [n.levels for n in again.nodes.values() if n.kind == "clip"] == [4]
    assert again.kinds()["scale"] == 2  # Scale with an offset is written as Mul + Add and read back as two
    x0 = torch.randn(8, 2, 4, 4)
    assert (run_ann(again, x0) - run_ann(g, x0)).abs().max() <= 1e-5
    x = torch.randn(64, 2, 4, 4)
    assert np.abs(onnxruntime_run(tmp_path / "q.onnx", x)[0] - run_ann(g, x).numpy()).max() <= 1e-4


def test_qcfs_model_through_torch_onnx_export(tmp_path):
    """A QCFS activation (custom op) exported by torch.onnx.export as Mul-Add-Floor-Clip-Mul is folded back
    into one quantized clip; a Floor outside that pattern is reported as unsupported."""
    from snnconv.backends.onnx_export import register_torch_qcfs_symbolic
    from snnconv.models.qcfs import to_qcfs

    register_torch_qcfs_symbolic()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(64, 10))
    model = to_qcfs(net, levels=4, threshold=1.5).eval()
    path = torch_to_onnx(model, (1, 16, 16), tmp_path / "qcfs.onnx")
    graph, table = from_onnx(path)
    assert "| Floor | 2 | yes |" in table
    clips = [n for n in graph.nodes.values() if n.kind == "clip"]
    assert len(clips) == 2 and all(c.levels == 4 and abs(c.hi - 1.5) < 1e-6 and c.shift == 0.5 for c in clips)
    assert "scale" not in graph.kinds()
    x = torch.randn(16, 1, 16, 16)
    assert (run_ann(graph, x) - run_ann(from_torch(model, (1, 16, 16))[0], x)).abs().max() <= 1e-5
    nodes = [helper.make_node("Floor", ["x"], ["f"], name="lonely_floor"),
             helper.make_node("Flatten", ["f"], ["y"], name="flat")]
    with pytest.raises(UnsupportedOpError, match="Floor at ONNX node 'lonely_floor'"):
        from_onnx(_helper_model(nodes, {}, out_shape=("N", 72)))


def test_export_refuses_spiking_graph_and_writes_nothing(tmp_path):
    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.models.zoo import build_model

    graph, _ = from_torch(build_model("mnist_cnn", 10, 1), (1, 28, 28))
    snn, _ = convert_graph(graph, [torch.rand(16, 1, 28, 28)], conversion_pipeline())
    out = tmp_path / "snn.onnx"
    with pytest.raises(SnnconvError, match="ANN form only.*spiking neuron"):
        export_onnx(snn, out, (1, 28, 28))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def snnconv_cli(monkeypatch, capsys, tmp_path):
    """``snnconv <args>`` in-process through ``snnconv.cli.main`` (same entry point and exit codes as the
    installed command) with the working directory set to tmp_path; returns (code, stderr)."""
    from snnconv import cli as cli_module

    monkeypatch.chdir(tmp_path)

    def run(*args):
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["snnconv", *map(str, args)])
        try:
            cli_module.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, capsys.readouterr().err
    return run


def test_cli_export_then_convert_onnx(tmp_path, snnconv_cli):
    """`snnconv export --format onnx` on the bundled MNIST CNN, then `snnconv convert --model FILE.onnx`:
    the ONNX path gives the same ANN and SNN accuracies as the PyTorch path on the same samples."""
    import json

    code, err = snnconv_cli("export", "--format", "onnx", "--model", "mnist_cnn", "--dataset", "mnist-bundled",
                            "--out", "cnn.onnx")
    assert code == 0, err
    assert (tmp_path / "cnn.onnx").is_file() and "onnx.checker passed" in err
    common = ["--dataset", "mnist-bundled", "--timesteps", "1,4,8", "--eval-samples", "48", "--calib-samples", "64"]
    code, err = snnconv_cli("convert", "--model", "cnn.onnx", *common, "--output-dir", "onnx_run")
    assert code == 0, err
    assert "| BatchNormalization | 3 | yes |" in err
    rep_onnx = json.loads((tmp_path / "onnx_run" / "report.json").read_text())
    code, err = snnconv_cli("convert", "--model", "mnist_cnn", *common, "--output-dir", "torch_run")
    assert code == 0, err
    rep_torch = json.loads((tmp_path / "torch_run" / "report.json").read_text())
    assert rep_onnx["ann_accuracy"] == rep_torch["ann_accuracy"] > 50
    assert rep_onnx["snn_accuracy"] == rep_torch["snn_accuracy"]
    assert rep_onnx["weights"]["format"] == "onnx"
    code, err = snnconv_cli("convert", "--model", "cnn.onnx", "--dataset", "cifar10", "--output-dir", "wrong")
    assert code == 2 and "takes inputs of shape (1, 28, 28)" in err and not (tmp_path / "wrong").exists()


def test_cli_bad_onnx_one_line_no_output(tmp_path, snnconv_cli):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07\x12\x03abc\xff\xff")
    code, err = snnconv_cli("convert", "--model", "bad.onnx", "--dataset", "mnist-bundled", "--output-dir", "out")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.onnx" in lines[0]
    assert not (tmp_path / "out").exists()
    code, err = snnconv_cli("export", "--format", "onnx", "--model", "mnist_cnn", "--out", "sub/x.onnx",
                            "--weights", "nope.pt")
    assert code == 2 and "nope.pt" in err and not (tmp_path / "sub" / "x.onnx").exists()
    code, err = snnconv_cli("export", "--format", "tflite", "--model", "mnist_cnn", "--out", "x")
    assert code == 2 and "unknown export format 'tflite'" in err


def test_conv1d_through_both_frontends_and_the_snn(tmp_path):
    """Conv1d (strided, padded, dilated, grouped) becomes Reshape -> 1xk Conv2d -> Reshape on both paths,
    matches the module, and converts (the SNN approaches the ANN at large T)."""
    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.frontends.torch import from_torch
    from snnconv.runtime.simulator import Simulator

    torch.manual_seed(0)
    m = conv1d_net().eval()
    x = torch.randn(6, 3, 32)
    with torch.no_grad():
        want = m(x)
    g_t, _ = from_torch(m, (3, 32))
    g_o, table = from_onnx(torch_to_onnx(m, (3, 32), tmp_path / "c1.onnx"), (3, 32))
    for g in (g_t, g_o):
        assert g.kinds()["conv2d"] == 2 and g.kinds()["reshape"] == 4
        assert torch.allclose(run_ann(g, x), want, atol=1e-5)
    snn, _ = convert_graph(g_t, [torch.randn(64, 3, 32)], conversion_pipeline())
    out = Simulator(snn, 64, collect_stats=False).run(x)[-1]
    assert (out - want).abs().max() < 0.05 * want.abs().max()


def test_leaky_relu_and_upsampling_through_both_frontends_and_the_snn(tmp_path):
    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.frontends.torch import from_torch
    from snnconv.runtime.simulator import Simulator

    torch.manual_seed(0)
    m = LeakyUp().eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = m(x)
    g_t, _ = from_torch(m, (3, 8, 8))
    g_o, _ = from_onnx(torch_to_onnx(m, (3, 8, 8), tmp_path / "up.onnx"), (3, 8, 8))
    for g in (g_t, g_o):
        assert g.kinds()["upsample"] == 2 and g.kinds()["clip"] == 2  # LeakyReLU = relu(x) - a relu(-x)
        assert torch.allclose(run_ann(g, x), want, atol=1e-5)
    snn, _ = convert_graph(g_t, [torch.randn(64, 3, 8, 8)], conversion_pipeline())
    assert snn.kinds()["neuron"] == 2  # both halves of the LeakyReLU spike
    out = Simulator(snn, 128, collect_stats=False).run(x)[-1]
    assert (out - want).abs().max() < 0.05 * want.abs().max()


def test_conv_transpose2d_through_both_frontends_onnxruntime_and_the_snn(tmp_path):
    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.frontends.torch import from_torch
    from snnconv.runtime.simulator import Simulator

    torch.manual_seed(0)
    m = Decoder().eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = m(x)
    path = torch_to_onnx(m, (3, 8, 8), tmp_path / "dec.onnx")
    assert np.abs(onnxruntime_run(path, x)[0] - want.numpy()).max() < 1e-4
    g_t, _ = from_torch(m, (3, 8, 8))
    g_o, _ = from_onnx(path, (3, 8, 8))
    for g in (g_t, g_o):
        assert g.kinds()["conv_transpose2d"] == 2
        assert torch.allclose(run_ann(g, x), want, atol=1e-5)
    snn, _ = convert_graph(g_t, [torch.randn(64, 3, 8, 8)], conversion_pipeline())
    assert "batchnorm" not in snn.kinds() and snn.kinds()["neuron"] == 3  # BN folded into the transposed conv
    sim = Simulator(snn, 128)
    out = sim.run(x)[-1]
    assert (out - want).abs().max() < 0.05 * want.abs().max()
    assert sim.stats.synops_per_sample()[-1] > 0  # SynOps counted through the transposed convolutions


def test_split_and_slice_through_both_frontends_onnxruntime_and_the_snn(tmp_path):
    """ONNX Split / Slice (used to be refused) become the same IR Slices the PyTorch frontend makes for
    chunk / split / indexing; both paths match the module and onnxruntime, and convert to the same SNN."""
    from snnconv.api import conversion_pipeline, convert_graph
    from snnconv.frontends.torch import from_torch
    from snnconv.runtime.simulator import Simulator

    torch.manual_seed(0)
    m = SplitNet().eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = m(x)
    path = torch_to_onnx(m, (3, 8, 8), tmp_path / "split.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Split", "Slice"} <= ops
    assert np.abs(onnxruntime_run(path, x)[0] - want.numpy()).max() < 1e-4
    g_t, _ = from_torch(m, (3, 8, 8))
    g_o, table = from_onnx(path, (3, 8, 8))
    assert "Split" in table and "Slice" in table
    for g in (g_t, g_o):
        assert g.kinds()["slice"] >= 7
        assert torch.allclose(run_ann(g, x), want, atol=1e-5)
    calib = [torch.randn(64, 3, 8, 8)]
    outs = [Simulator(convert_graph(g, calib, conversion_pipeline())[0], 64, collect_stats=False).run(x)[-1]
            for g in (g_t, g_o)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert (outs[0] - want).abs().max() < 0.05 * want.abs().max()
