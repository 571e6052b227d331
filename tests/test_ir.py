"""The IR: hand-built graphs, validation, shape inference, printing, (de)serialisation, copies."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from snnconv.errors import SnnconvError
from snnconv.ir import (AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, Clip, Concat, Conv2d, Flatten, Graph, Input,
                        Linear, MaxPool2d, SpikingNeuron)
from snnconv.runtime.interpreter import run_ann


def build_graph(seed: int = 0) -> Graph:
    """input -> conv -> bn -> relu -> (conv + relu) -> concat(add, relu) -> avgpool -> maxpool -> gap
    -> flatten -> linear -> IF neuron -> linear."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    g = Graph()
    g.add("input", Input(shape=(3, 8, 8)))
    g.add("conv1", Conv2d(r(4, 3, 3, 3), r(4), padding=(1, 1)), ["input"])
    g.add("bn", BatchNorm(r(4).abs() + 0.5, r(4), r(4), r(4).abs() + 0.5), ["conv1"])
    g.add("relu", Clip(0.0, math.inf, "relu"), ["bn"])
    g.add("conv2", Conv2d(r(4, 4, 3, 3) * 0.3, None, padding=(1, 1)), ["relu"])
    g.add("add", Add(), ["relu", "conv2"])
    g.add("cat", Concat(1), ["add", "relu"])
    g.add("avg", AvgPool2d((2, 2), (2, 2)), ["cat"])
    g.add("max", MaxPool2d((2, 2), (2, 2)), ["avg"])
    g.add("gap", AdaptiveAvgPool2d((1, 1)), ["max"])
    g.add("flat", Flatten(1), ["gap"])
    g.add("fc1", Linear(r(6, 8), r(6)), ["flat"])
    g.add("sn", SpikingNeuron(torch.tensor(0.7)), ["fc1"])
    g.add("fc2", Linear(r(3, 6), r(3)), ["sn"])
    g.outputs = ["fc2"]
    return g


def reference_forward(g: Graph, x: torch.Tensor) -> torch.Tensor:
    """The same network written directly with torch.nn.functional."""
    n = g.nodes
    y = F.conv2d(x, n["conv1"].weight, n["conv1"].bias, padding=1)
    bn = n["bn"]
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    a = F.relu(y)
    y = a + F.conv2d(a, n["conv2"].weight, None, padding=1)
    y = torch.cat([y, a], 1)
    y = F.max_pool2d(F.avg_pool2d(y, 2), 2)
    y = F.adaptive_avg_pool2d(y, 1).flatten(1)
    y = F.linear(y, n["fc1"].weight, n["fc1"].bias)
    y = torch.clamp(y, 0.0, 0.7)  # IF neuron in ANN mode: its rate response clip(x, 0, theta)
    return F.linear(y, n["fc2"].weight, n["fc2"].bias)


def test_hand_built_graph_validates_and_runs_like_functional_reference():
    g = build_graph()
    g.validate()
    assert g.kinds() == {"input": 1, "conv2d": 2, "batchnorm": 1, "clip": 1, "add": 1, "concat": 1, "avgpool2d": 1,
                         "maxpool2d": 1, "adaptive_avgpool2d": 1, "flatten": 1, "linear": 2, "neuron": 1}
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = run_ann(g, x)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, reference_forward(g, x), rtol=1e-5, atol=1e-5)


def test_graph_structure_queries():
    g = build_graph()
    assert g.preds("cat") == ["add", "relu"]  # order of concat inputs is kept
    assert sorted(g.succs("relu")) == ["add", "cat", "conv2"]
    assert ("relu", "add") in g.edge_list() and ("conv2", "add") in g.edge_list()
    assert g.inputs == ["input"]
    assert g.unique_name("relu") == "relu_1" and g.unique_name("fresh") == "fresh"


def test_add_rejects_duplicate_and_unknown_source():
    g = build_graph()
    with pytest.raises(ValueError, match="duplicate"):
        g.add("relu", Clip(), ["bn"])
    with pytest.raises(ValueError, match="unknown node"):
        g.add("new", Clip(), ["nope"])


def test_validate_catches_dangling_edge():
    g = build_graph()
    g.edges["fc2"] = ["ghost"]
    with pytest.raises(SnnconvError, match="ghost"):
        g.validate()


def test_validate_catches_out_of_order_edge():
    g = build_graph()
    g.edges["conv1"] = ["relu"]  # reads a node computed later: a cycle conv1 -> bn -> relu -> conv1
    with pytest.raises(SnnconvError, match="before it is computed"):
        g.validate()


@pytest.mark.parametrize("node, srcs", [("add", ["relu"]), ("conv2", ["relu", "bn"]), ("cat", [])])
def test_validate_catches_wrong_arity(node, srcs):
    g = build_graph()
    g.edges[node] = srcs
    with pytest.raises(SnnconvError, match=rf"'{node}'.*has {len(srcs)} inputs"):
        g.validate()


def test_validate_accepts_multi_input_add():
    g = build_graph()
    g.edges["add"] = ["relu", "conv2", "relu"]
    g.validate()
    x = torch.randn(2, 3, 8, 8)
    vals = {}
    run_ann(g, x, record=lambda n, t: vals.__setitem__(n, t))
    torch.testing.assert_close(vals["add"], 2 * vals["relu"] + vals["conv2"])


def test_validate_catches_missing_output():
    g = build_graph()
    g.outputs = []
    with pytest.raises(SnnconvError, match="output"):
        g.validate()
    g.outputs = ["nowhere"]
    with pytest.raises(SnnconvError, match="nowhere"):
        g.validate()


def test_validate_catches_missing_input():
    g = Graph()
    g.add("fc", Linear(torch.ones(2, 2)))  # no input node at all
    g.outputs = ["fc"]
    with pytest.raises(SnnconvError):
        g.validate()


def test_infer_shapes_fills_every_node():
    g = build_graph()
    assert all(n.shape == () for k, n in g.nodes.items() if k != "input")
    g.infer_shapes()
    expected = {"input": (3, 8, 8), "conv1": (4, 8, 8), "bn": (4, 8, 8), "relu": (4, 8, 8), "conv2": (4, 8, 8),
                "add": (4, 8, 8), "cat": (8, 8, 8), "avg": (8, 4, 4), "max": (8, 2, 2), "gap": (8, 1, 1),
                "flat": (8,), "fc1": (6,), "sn": (6,), "fc2": (3,)}
    assert {k: n.shape for k, n in g.nodes.items()} == expected


def test_summary_lists_every_node():
    g = build_graph().infer_shapes()
    text = g.summary()
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["name", "op", "inputs", "out"]
    body = lines[1:-1]
    assert len(body) == len(g.nodes)
    for (name, node), line in zip(g.nodes.items(), body):
        cols = line.split()
        assert cols[0] == name and cols[1] == node.kind
    assert "add" in text and "relu,conv2" in text  # the inputs column of the add node
    total = sum(n.num_params() for n in g.nodes.values())
    assert f"{len(g.nodes)} nodes, 1 spiking, {total:,} parameters; outputs: fc2" == lines[-1]


def test_save_load_round_trip_is_exact(tmp_path):
    g = build_graph().infer_shapes()
    g.meta["note"] = "round trip"
    path = tmp_path / "g.pt"
    g.save(path)
    raw = torch.load(path, weights_only=True)  # only tensors and plain containers were stored
    assert raw["format"] == "snnconv-ir"
    h = Graph.load(path)
    assert list(h.nodes) == list(g.nodes)
    assert h.edges == g.edges and h.outputs == g.outputs and h.inputs == g.inputs and h.meta == g.meta
    for name, node in g.nodes.items():
        other = h.nodes[name]
        assert type(other) is type(node) and other.shape == node.shape and other.attrs() == node.attrs()
        for k, t in node.tensors().items():
            assert torch.equal(other.tensors()[k], t)
    assert h.nodes["relu"].hi == math.inf
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(run_ann(g, x), run_ann(h, x))


def test_copy_does_not_alias_tensors():
    g = build_graph()
    c = g.copy()
    for name, node in g.nodes.items():
        for k, t in node.tensors().items():
            ct = c.nodes[name].tensors()[k]
            assert torch.equal(ct, t) and ct.data_ptr() != t.data_ptr()
    x = torch.randn(2, 3, 8, 8)
    before = run_ann(g, x)
    c.nodes["conv1"].weight.mul_(-2.0)
    c.nodes["sn"].threshold.fill_(5.0)
    c.edges["add"].append("relu")
    c.outputs.append("fc1")
    c.meta["x"] = 1
    assert torch.equal(run_ann(g, x), before)
    assert g.edges["add"] == ["relu", "conv2"] and g.outputs == ["fc2"] and "x" not in g.meta
    assert not torch.equal(run_ann(c, x)[0], before)


@pytest.mark.parametrize("kwargs, match", [
    ({"reset": "hard"}, "reset"),
    ({"levels": 0}, "levels"),
    ({"levels": -2}, "levels"),
    ({"model": "hh"}, "model"),
    ({"leak": 0.0}, "leak"),
    ({"leak": 1.5}, "leak"),
])
def test_spiking_neuron_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpikingNeuron(torch.tensor(1.0), **kwargs)


@pytest.mark.parametrize("threshold", [torch.tensor(0.0), torch.tensor(-1.0), torch.tensor([1.0, 0.0, 2.0]),
                                       torch.tensor([0.5, -0.1])])
def test_spiking_neuron_rejects_non_positive_threshold(threshold):
    with pytest.raises(ValueError, match="positive"):
        SpikingNeuron(threshold)


@pytest.mark.parametrize("kwargs, cls, own", [
    ({}, "IFNeuron", set()),
    ({"model": "lif", "leak": 0.9}, "LIFNeuron", {"leak"}),
    ({"levels": 3}, "MultiLevelIFNeuron", {"levels"}),
    ({"model": "lif", "leak": 0.9, "levels": 3}, "MultiLevelLIFNeuron", {"leak", "levels"}),
    ({"signed": True}, "SignedIFNeuron", {"levels"}),
    ({"model": "lif", "leak": 0.8, "signed": True, "levels": 2}, "SignedLIFNeuron", {"leak", "levels"}),
])
def test_each_neuron_model_is_its_own_class_with_only_its_parameters(kwargs, cls, own):
    import dataclasses

    from snnconv import ir
    from snnconv.ir.node import Node

    n = SpikingNeuron(torch.tensor([0.5, 1.0]), v_init=0.5, **kwargs)
    assert type(n).__name__ == cls and isinstance(n, SpikingNeuron) and n.kind == "neuron"
    common = {"shape", "threshold", "reset", "v_init", "v_reset", "refractory", "presim", "v_offset"}
    assert {f.name for f in dataclasses.fields(n)} == common | own
    for k, v in kwargs.items():
        assert getattr(n, k) == v
    assert "math::" in type(n).__doc__  # its equations
    back = Node.from_dict(n.to_dict())  # the IR file keeps the model
    assert type(back) is type(n) and back.parameters().keys() == n.parameters().keys()
    assert getattr(ir, cls) is type(n)


def test_replace_moves_a_neuron_to_the_model_its_parameters_name():
    n = SpikingNeuron(torch.tensor(1.0), v_init=0.5)
    signed = n.replace(signed=True)
    assert type(signed).__name__ == "SignedIFNeuron" and signed.v_init == 0.5 and signed.signed
    assert type(signed.replace(signed=False, levels=4)).__name__ == "MultiLevelIFNeuron"
    assert type(n.replace(model="lif", leak=0.9)).__name__ == "LIFNeuron"
    with pytest.raises(ValueError, match="only the 'lif' model leaks"):
        n.replace(leak=0.9)
    from snnconv.ir import MultiLevelIFNeuron
    with pytest.raises(ValueError, match="IFNeuron"):
        MultiLevelIFNeuron(torch.tensor(1.0), levels=1)


def test_spiking_neuron_accepts_valid_settings():
    n = SpikingNeuron(torch.tensor([0.5, 1.0]), model="lif", leak=0.9, reset="zero", levels=3, v_init=0.5)
    assert n.spiking and n.levels == 3
    assert "LIF" in n.describe() and "2 ch" in n.describe()


def test_layer_nodes_check_parameter_shapes():
    with pytest.raises(ValueError):
        Conv2d(torch.ones(3, 3))
    with pytest.raises(ValueError):
        Conv2d(torch.ones(4, 3, 3, 3), torch.ones(3))
    with pytest.raises(ValueError):
        Linear(torch.ones(2, 3, 4))
    with pytest.raises(ValueError):
        Linear(torch.ones(2, 3), torch.ones(3))


def test_load_rejects_non_ir_files(tmp_path):
    not_ir = tmp_path / "state.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, not_ir)
    with pytest.raises(SnnconvError, match="not an snnconv IR file"):
        Graph.load(not_ir)

    a_list = tmp_path / "list.pt"
    torch.save([torch.ones(1)], a_list)
    with pytest.raises(SnnconvError):
        Graph.load(a_list)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(SnnconvError, match="cannot read IR file"):
        Graph.load(garbage)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SnnconvError):
        Graph.load(text)

    with pytest.raises(SnnconvError, match="not found"):
        Graph.load(tmp_path / "missing.pt")


def test_load_rejects_ir_file_with_broken_wiring(tmp_path):
    d = build_graph().to_dict()
    d["edges"]["fc2"] = ["ghost"]
    path = tmp_path / "broken.pt"
    torch.save(d, path)
    with pytest.raises(SnnconvError, match="ghost"):
        Graph.load(path)


@pytest.mark.parametrize("damage", ["unknown-kind", "bad-threshold", "no-edges"])
def test_load_rejects_malformed_ir_with_snnconv_error(damage, tmp_path):
    d = build_graph().to_dict()
    if damage == "unknown-kind":
        d["nodes"]["relu"]["kind"] = "gelu"
    elif damage == "bad-threshold":
        d["nodes"]["sn"]["threshold"] = torch.tensor(-1.0)
    else:
        del d["edges"]
    path = tmp_path / "damaged.pt"
    torch.save(d, path)
    with pytest.raises(SnnconvError):
        Graph.load(path)
