"""LIF conversion: the leak_compensation pass restores the IF rate response."""
import torch

from snnconv.ir import Graph, Input, Linear, SpikingNeuron
from snnconv.passes import PassContext, Pipeline
from snnconv.runtime.simulator import Simulator


def _lif_graph(leak):
    g = Graph()
    g.add("in", Input(shape=(5,)))
    g.add("fc", Linear(torch.eye(5), torch.zeros(5)), ["in"])
    g.add("lif", SpikingNeuron(torch.tensor(1.0), model="lif", leak=leak), ["fc"])
    g.add("out", Linear(torch.eye(5), None), ["lif"])
    g.outputs = ["out"]
    return g.infer_shapes()


def _rates(g, x, T=2000):
    return Simulator(g, T, chunk=250).run(x)[-1][0]


def test_leak_compensation_brings_lif_rate_back_to_if_rate():
    x = torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.9]])
    leak = 0.9
    g = _lif_graph(leak)
    raw = _rates(g, x)
    comp = Pipeline.from_config(["leak_compensation"]).run(g, PassContext())
    fixed = _rates(comp, x)
    err_raw = (raw - x[0]).abs().mean()
    err_fixed = (fixed - x[0]).abs().mean()
    assert err_fixed < err_raw / 3, (raw, fixed)
    assert err_fixed < 0.03
    # folded into the feeding layer's bias: (1 - beta) * theta / 2
    assert torch.allclose(comp.nodes["fc"].bias, torch.full((5,), (1 - leak) * 0.5))


def test_if_neurons_untouched_and_residual_feed_gets_scale_node():
    g = _lif_graph(1.0)
    out = Pipeline.from_config(["leak_compensation"]).run(g, PassContext())
    assert torch.equal(out.nodes["fc"].bias, torch.zeros(5))
    # a LIF fed by a node that is not a private conv/linear gets an explicit offset node
    g2 = Graph()
    g2.add("in", Input(shape=(2,)))
    g2.add("lif", SpikingNeuron(torch.tensor([1.0, 2.0]), model="lif", leak=0.8), ["in"])
    g2.outputs = ["lif"]
    g2.infer_shapes()
    out2 = Pipeline.from_config(["leak_compensation"]).run(g2, PassContext())
    (src,) = out2.preds("lif")
    assert out2.nodes[src].kind == "scale"
    assert torch.allclose(out2.nodes[src].offset, torch.tensor([0.1, 0.2]))
