r"""Layer-wise SNN calibration: bias calibration and potential calibration.

Li, Deng, Dong, Gong, Gu, "A Free Lunch From ANN: Towards Efficient, Accurate Spiking Neural
Networks Calibration", ICML 2021 (code: github.com/yhhhli/SNN_Calibration). After threshold
balancing, the converted network is simulated for the *target* ``T`` on a few calibration images
(about 1k) and corrected layer by layer, in topological order, so that each layer's correction
sees the already-corrected layers before it:

* **bias calibration** (their "light pipeline", BC): the expected error of layer :math:`l`,
  :math:`e_l = \mathbb{E}[a_l^{ANN}] - \mathbb{E}[\bar s_l^{SNN}]` (mean over samples and, for conv
  maps, positions: one value per channel) is added to the bias feeding the neuron, so the
  layer's mean SNN output matches the ANN. Here :math:`\bar s_l` is the neuron's output averaged
  over the T steps, measured with the simulator.
* **potential calibration** (their "advanced pipeline" for CIFAR, PC): instead of the bias, the
  initial membrane potential of every neuron is offset by :math:`T\cdot e_l` (mean over samples
  only, one value per neuron position), which injects the same total charge once.

The ANN reference :math:`a_l` is the source network's activation (``target: relu``, as in Li et
al.: the unclipped ReLU output, so the calibration also compensates the mean clipping error), or
the clipped rate-equivalent activation of the converted graph (``target: clip``: only the
flooring/unevenness error is compensated). Calibration is specific to its ``timesteps``;
accuracy at other T is reported but not what it was tuned for.

**Cost** (``method``): ``sweep`` (default) runs the network once, layer by layer in topological
order over all ``T`` steps and all calibration images at once, caching each layer's output train
until its last consumer has read it: a neuron layer is simulated twice (to measure its error, then
with the correction added to its cached input current), every other layer once, so the pass costs
about two simulations of the network instead of one per neuron layer. ``resimulate`` is the
original procedure (the sub-network up to each neuron layer simulated again), kept for graphs the
sweep does not handle (max-pool gates, operator nodes, other neuron models) and as its reference:
both give the same corrections up to float rounding (tests/test_conversion_methods.py). The sweep
holds the live layers' trains for all calibration images in memory (``T x samples x`` layer size).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Clip, Graph, Scale
from snnconv.passes.contracts import HAS_NEURONS
from snnconv.passes.base import Pass, PassContext, register_pass, check_config
from snnconv.progress import progress
from snnconv.runtime.neurons import NEURON_DYNAMICS
from snnconv.runtime.interpreter import _consumer_counts, run_ann
from snnconv.runtime.kernels import KERNELS


def _reduce(t: torch.Tensor, per_element: bool) -> torch.Tensor:
    """Sum over the batch (and, per channel, over positions): ``[C, ...]`` or ``[C]``."""
    if per_element or t.dim() == 2:
        return t.sum(0)
    return t.transpose(0, 1).reshape(t.shape[1], -1).sum(1)


def _count(t: torch.Tensor, per_element: bool) -> int:
    return t.shape[0] if (per_element or t.dim() == 2) else t.shape[0] * t[0, 0].numel()


def ancestors_subgraph(graph: Graph, node: str) -> Graph:
    """The part of ``graph`` that ``node`` depends on, with ``node`` as its only output."""
    keep, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n not in keep:
            keep.add(n)
            stack.extend(graph.edges[n])
    sub = Graph()
    for name, n in graph.nodes.items():
        if name in keep:
            sub.nodes[name] = n
            sub.edges[name] = list(graph.edges[name])
            if n.kind == "input":
                sub.inputs.append(name)
    sub.outputs = [node]
    return sub


def insert_before(graph: Graph, dst: str, src: str, name: str, node) -> None:
    """Put ``node`` on the edge ``src -> dst`` only (other consumers of ``src`` are untouched)."""
    order = list(graph.nodes)
    pos = order.index(dst)
    graph.nodes = {k: graph.nodes[k] for k in order[:pos]} | {name: node} | {k: graph.nodes[k] for k in order[pos:]}
    graph.edges[name] = [src]
    graph.edges[dst] = [name if s == src else s for s in graph.edges[dst]]
    node.shape = graph.nodes[src].shape


@register_pass
class Calibration(Pass):
    name = "calibration"
    requires = (HAS_NEURONS,)

    @dataclass
    class Config:
        mode: str = "bias"  # "bias" (BC) or "potential" (PC)
        timesteps: int = 4  # the T the SNN is calibrated for
        samples: int = 1024  # calibration images used (from the calibration batches)
        target: str = "relu"  # "relu": source ANN activation (Li et al.); "clip": clipped rate response
        batch_size: int = 128
        method: str = "sweep"  # "sweep": one layer-by-layer pass; "resimulate": re-run the ancestors per layer

        def validate(self, where: str) -> None:
            checks = [(self.mode in ("bias", "potential"), "mode must be 'bias' or 'potential'"),
                      (self.method in ("sweep", "resimulate"), "method must be 'sweep' or 'resimulate'"),
                      (self.target in ("relu", "clip"), "target must be 'relu' or 'clip'"),
                      (isinstance(self.timesteps, int) and self.timesteps >= 1, "timesteps must be a positive integer"),
                      (isinstance(self.samples, int) and self.samples >= 1, "samples must be a positive integer"),
                      (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be positive")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        neurons = [n for n, node in graph.nodes.items() if node.kind == "neuron"]
        if not neurons:
            raise SnnconvError("calibration runs after the conversion to neurons (put it after threshold_balance)")
        batches = self._batches(ctx)
        per_element = c.mode == "potential"
        ref_graph = graph.copy()
        if c.target == "relu":
            for n in neurons:
                ref_graph.replace(n, Clip(0.0, float("inf"), "relu"))
        # ANN reference means, one pass over the calibration images
        ref_sum: dict[str, torch.Tensor] = {}
        ref_cnt: dict[str, int] = {}
        wanted = set(neurons)

        def record(name, t):
            if name in wanted:
                ref_sum[name] = ref_sum.get(name, 0) + _reduce(t, per_element)
                ref_cnt[name] = ref_cnt.get(name, 0) + _count(t, per_element)

        dev = ctx.device
        ref_run = ref_graph if dev is None else ref_graph.to(dev)
        for x in batches:
            run_ann(ref_run, x if dev is None else x.to(dev), record=record)
        ref_mean = {n: ref_sum[n] / ref_cnt[n] for n in neurons}
        method = c.method if c.method == "resimulate" or self._sweepable(graph) else "resimulate"
        if method == "sweep":
            before = self._sweep(graph, batches, ref_mean, per_element, set(neurons), dev)
        else:
            before = {}
            for name in progress(neurons, desc=f"calibration ({c.mode}, T={c.timesteps})"):
                err = (ref_mean[name] - self._snn_mean(graph, name, batches, per_element, ctx).to(ref_mean[name])).cpu()
                before[name] = float(err.abs().mean())
                self._correct(graph, name, err)
        ctx.log(self.name, f"{c.mode} calibration of {len(neurons)} neuron layer(s) for T={c.timesteps} on "
                           f"{sum(len(x) for x in batches)} samples (target {c.target}, {method})",
                mean_abs_error_before=before)
        return graph

    def _correct(self, graph: Graph, name: str, err: torch.Tensor) -> None:
        node = graph.nodes[name]
        if self.config.mode == "potential":
            off = err * self.config.timesteps
            if node.v_offset is not None:
                off = off + node.v_offset
            graph.replace(name, node.replace(v_offset=off.float()))
        else:
            self._add_bias(graph, name, err.float())

    @staticmethod
    def _sweepable(graph: Graph) -> bool:
        return all(not n.spiking or n.kind == "neuron" for n in graph.nodes.values()) and \
            all(n.kind != "maxpool2d" and not getattr(n, "operator", False) for n in graph.nodes.values()) and \
            len(graph.inputs) == 1

    def _sweep(self, graph: Graph, batches, ref_mean: dict, per_element: bool, neurons: set, device=None) -> dict:
        """One layer-by-layer pass (see the module doc); corrects ``graph`` in place, returns the errors.
        Runs on ``device`` (default: the CPU); the corrections are written to ``graph`` on the CPU."""
        T = self.config.timesteps
        run_graph = graph if device is None else graph.to(device)
        order, edges, nodes = list(graph.nodes), {k: list(v) for k, v in graph.edges.items()}, dict(run_graph.nodes)
        if device is not None:
            batches = [x.to(device) for x in batches]
        remaining = _consumer_counts(graph)
        # per batch: node -> (tensor, static); static tensors are [B, ...], time-varying ones [T*B, ...]
        # the simulator's layout (channels-last activations and conv weights), so both methods round alike
        cl = lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t  # noqa: E731
        fast = {k: n.replace(weight=cl(n.weight)) for k, n in nodes.items() if n.kind == "conv2d" and n.weight.dim() == 4}
        values = [{graph.inputs[0]: (cl(x), True)} for x in batches]
        before = {}
        for name in progress(order, desc=f"calibration sweep ({self.config.mode}, T={T})"):
            node = nodes[name]
            if node.kind == "input":
                continue
            srcs = edges[name]
            if name in neurons:
                currents = []
                for vals, x in zip(values, batches):
                    v, static = vals[srcs[0]]
                    currents.append(v.unsqueeze(0).expand(T, *v.shape) if static else v.view(T, x.shape[0], *v.shape[1:]))
                total, count = 0, 0
                for cur in currents:
                    y, _, _ = NEURON_DYNAMICS[node.kind](node, cur, None)
                    mean = y.sum(0) / T
                    total = total + _reduce(mean, per_element)
                    count += _count(mean, per_element)
                err = ref_mean[name] - total / count
                before[name] = float(err.abs().mean())
                self._correct(graph, name, err.cpu())
                if self.config.mode == "potential":
                    node = graph.nodes[name] if device is None else graph.nodes[name].to(device)
                else:  # the corrected bias adds err to this neuron's input current (per channel)
                    shape = (1, 1, -1) + (1,) * (currents[0].dim() - 3)
                    currents = [cur + err.float().view(shape) for cur in currents]
                for vals, cur in zip(values, currents):
                    y, _, _ = NEURON_DYNAMICS[node.kind](node, cur, None)
                    vals[name] = (y.reshape(-1, *y.shape[2:]), False)
            else:
                for vals in values:
                    ins = [vals[s] for s in srcs]
                    static = all(st for _, st in ins)
                    tensors = [v if (st == static or not st) else v.repeat(T, *([1] * (v.dim() - 1))) for v, st in ins]
                    vals[name] = (KERNELS[node.kind](fast.get(name, node), tensors), static)
            for s in srcs:
                remaining[s] -= 1
                if remaining[s] == 0:
                    for vals in values:
                        vals.pop(s, None)
        return before

    def _batches(self, ctx: PassContext) -> list[torch.Tensor]:
        out, n = [], 0
        for x in ctx.calibration_batches():
            take = min(len(x), self.config.samples - n)
            for i in range(0, take, self.config.batch_size):
                out.append(x[i:min(take, i + self.config.batch_size)])
            n += take
            if n >= self.config.samples:
                break
        return out

    def _snn_mean(self, graph: Graph, name: str, batches, per_element: bool, ctx: PassContext) -> torch.Tensor:
        sub = ancestors_subgraph(graph, name)
        sim = ctx.make_simulator(sub, self.config.timesteps, collect_stats=False)
        total, count = 0, 0
        for x in batches:
            out = sim.mean_outputs(x)[name]
            total = total + _reduce(out, per_element)
            count += _count(out, per_element)
        return total / count

    @staticmethod
    def _add_bias(graph: Graph, name: str, delta: torch.Tensor) -> None:
        (src,) = graph.preds(name)
        prod = graph.nodes[src]
        if prod.kind in ("conv2d", "linear") and len(graph.succs(src)) == 1 and getattr(prod, "weight_int", None) is None:
            bias = prod.bias if prod.bias is not None else torch.zeros(prod.weight.shape[0])
            graph.replace(src, prod.replace(bias=bias + delta))
            return
        offset = delta.view(-1, *([1] * (len(graph.nodes[name].shape) - 1)))
        if prod.kind == "scale" and prod.offset is not None and src.endswith(".calib") and len(graph.succs(src)) == 1:
            graph.replace(src, prod.replace(offset=prod.offset + offset))
            return
        insert_before(graph, name, src, graph.unique_name(f"{name}.calib"), Scale(torch.tensor(1.0), offset))
