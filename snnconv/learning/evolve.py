"""Online evolution of a converted SNN's readout on a data stream (``snnconv evolve``).

Prequential protocol (predict, then update): each batch of the stream is simulated with the
current weights, its predictions are scored, and only then are the labels used to adapt the
readout with a local plasticity rule:

* ``rstdp``: reward-modulated STDP with eligibility traces (:mod:`snnconv.learning.rstdp`).
  The readout of a converted network is a non-spiking integrator, so its postsynaptic spikes
  come from an IF "mirror" of each output unit driven by the same current ``W s(t) + b`` (the
  threshold is the 99th percentile of the positive currents of the first batch, then fixed).
  Eligibility pairs the binary presynaptic spikes of the penultimate layer with these output
  spikes; at the end of each sample a per-output reward is delivered (Mozafari et al. 2018
  style): ``-1`` to a wrongly winning output, ``+1`` to the correct output when it lost,
  ``reward_correct`` (default 0) to a correct winner.
* ``ed``: error diffusion with E/I synapse pairs and sign constraints (:class:`EDReadout`).

Only the readout changes, so the penultimate spikes do not depend on the learner: one
simulation per batch (with the simulator's ``record`` hook) serves the frozen baseline and
every learner, and the readout logits ``W mean_t(s) + b`` equal the simulator's output
(checked and reported as ``readout_check_max_abs``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.learning.ed import EDReadout
from snnconv.learning.rstdp import RewardSTDP
from snnconv.runtime.simulator import Simulator

SHIFTS = ("none", "rotate", "invert", "noise", "contrast")


def parse_shift(spec: str) -> tuple[str, float]:
    """``rotate:45`` | ``invert`` | ``noise:0.3`` | ``contrast:0.3`` | ``none`` -> (kind, amount)."""
    kind, _, amount = spec.partition(":")
    if kind not in SHIFTS:
        raise SnnconvError(f"unknown shift '{spec}' (known: rotate:DEG, invert, noise:STD, contrast:FACTOR, none)")
    try:
        value = float(amount) if amount else {"rotate": 45.0, "noise": 0.3, "contrast": 0.3}.get(kind, 0.0)
    except ValueError:
        raise SnnconvError(f"shift '{spec}': amount '{amount}' is not a number") from None
    return kind, value


def apply_shift(x01: torch.Tensor, kind: str, amount: float, seed: int = 0) -> torch.Tensor:
    """Shift images in [0, 1] ``[B, C, H, W]``: rotation by ``amount`` degrees (bilinear, zero fill),
    contrast inversion ``1 - x``, additive Gaussian noise (std ``amount``, clipped), contrast scaling."""
    if kind == "none":
        return x01
    if kind == "rotate":
        a = math.radians(amount)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x01.dtype)
        grid = F.affine_grid(theta.expand(x01.shape[0], 2, 3), list(x01.shape), align_corners=False)
        return F.grid_sample(x01, grid, align_corners=False)
    if kind == "invert":
        return 1.0 - x01
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return (x01 + amount * torch.randn(x01.shape, generator=g)).clamp(0, 1)
    if kind == "contrast":
        return x01 * amount
    raise SnnconvError(f"unknown shift '{kind}'")


def shifted_batches(split, kind: str, amount: float, batch_size: int, seed: int = 0):
    """Normalised ``(x, y)`` batches of ``split`` with the shift applied in [0, 1] pixel space."""
    m = torch.tensor(split.mean).view(1, -1, 1, 1)
    s = torch.tensor(split.std).view(1, -1, 1, 1)
    for i in range(0, len(split), batch_size):
        x01 = split.images[i:i + batch_size].float() / 255.0
        yield (apply_shift(x01, kind, amount, seed + i) - m) / s, split.labels[i:i + batch_size]


def readout_of(graph: Graph) -> tuple[str, str]:
    """(readout node, the node it reads): the graph output must be a linear layer."""
    out = graph.outputs[0]
    node = graph.nodes[out]
    if node.kind != "linear":
        raise SnnconvError(f"evolve adapts a linear readout, but the graph output '{out}' is a {node.kind}")
    return out, graph.edges[out][0]


class FrozenReadout:
    """No plasticity: the converted readout as is."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight.clone()
        self.bias = torch.zeros(weight.shape[0]) if bias is None else bias.clone()

    def logits(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.mean(0) @ self.weight.T + self.bias

    def update(self, pre: torch.Tensor, labels: torch.Tensor) -> None:
        pass


class RSTDPReadout(FrozenReadout):
    """Readout adapted by R-STDP with eligibility traces (see the module docstring)."""

    def __init__(self, weight, bias, lr: float = 1e-3, tau_c: float = 200.0, tau: float = 20.0,
                 a_minus: float = 1.0, reward_correct: float = 0.0, theta_quantile: float = 0.99):
        super().__init__(weight, bias)
        self.rule = RewardSTDP(lr=lr, tau_c=tau_c, a_plus=1.0, a_minus=a_minus, tau_plus=tau, tau_minus=tau)
        self.reward_correct, self.theta, self.q = reward_correct, None, theta_quantile

    def post_spikes(self, pre: torch.Tensor) -> torch.Tensor:
        current = pre @ self.weight.T + self.bias  # [T, B, K]: what the readout integrates
        if self.theta is None:
            pos = current[current > 0]
            self.theta = float(torch.quantile(pos[:100000], self.q)) if pos.numel() else 1.0
        v, out = torch.zeros_like(current[0]), []
        for t in range(current.shape[0]):
            v = v + current[t]
            s = (v >= self.theta).to(v.dtype)
            v = v - s * self.theta
            out.append(s)
        return torch.stack(out)

    def update(self, pre, labels):
        pred = self.logits(pre).argmax(1)
        post = self.post_spikes(pre)
        self.rule.reset()
        self.rule.run((pre != 0).to(pre.dtype), post)
        K = self.weight.shape[0]
        wrong = (pred != labels).to(pre.dtype).unsqueeze(1)
        r = (F.one_hot(labels, K) - F.one_hot(pred, K)).to(pre.dtype) * wrong  # +1 target, -1 wrong winner
        r = r + self.reward_correct * (1 - wrong) * F.one_hot(pred, K).to(pre.dtype)
        self.weight += self.rule.reward(r)


class EDReadoutLearner(FrozenReadout):
    """Readout adapted by error diffusion with E/I synapse pairs (:class:`EDReadout`)."""

    def __init__(self, weight, bias, lr: float = 1e-3):
        super().__init__(weight, bias)
        self.ed = EDReadout(weight, bias, lr)

    def logits(self, pre):
        return self.ed.logits(pre.mean(0))

    def update(self, pre, labels):
        self.ed.update(pre.mean(0), labels)
        self.weight, self.bias = self.ed.weight, self.ed.bias


LEARNERS = {"frozen": FrozenReadout, "rstdp": RSTDPReadout, "ed": EDReadoutLearner}


def make_learners(graph: Graph, rules: list[str], params: dict | None = None) -> dict:
    out, _ = readout_of(graph)
    node = graph.nodes[out]
    params = params or {}
    learners = {}
    for r in ["frozen", *[r for r in rules if r != "frozen"]]:
        if r not in LEARNERS:
            raise SnnconvError(f"unknown plasticity rule '{r}' (known: rstdp, ed)")
        learners[r] = LEARNERS[r](node.weight, node.bias, **params.get(r, {}))
    return learners


@torch.no_grad()
def evolve_stream(graph: Graph, batches, timesteps: int, learners: dict, chunk: int = 8,
                  progress_fn=None) -> dict:
    """Prequential run over ``batches`` of ``(x, y)``: per learner, per sample 0/1 correctness."""
    out, pen = readout_of(graph)
    sim = Simulator(graph, timesteps, chunk=chunk, collect_stats=False, record=(pen,))
    correct = {k: [] for k in learners}
    check = 0.0
    for i, (x, y) in enumerate(batches):
        logits_sim = sim.run(x)[-1]
        pre = sim.recorded[pen].flatten(2)
        check = max(check, float((learners["frozen"].logits(pre) - logits_sim).abs().max()))
        for name, lrn in learners.items():
            correct[name].append((lrn.logits(pre).argmax(1) == y).to(torch.int8))  # predict ...
            lrn.update(pre, y)  # ... then learn
        if progress_fn:
            progress_fn(i, x.shape[0])
    return {"correct": {k: torch.cat(v) for k, v in correct.items()}, "readout_check_max_abs": check}


@torch.no_grad()
def evaluate_learners(graph: Graph, batches, timesteps: int, learners: dict, chunk: int = 8) -> dict[str, float]:
    """Accuracy (%) of each learner's current readout on ``batches`` (no learning)."""
    _, pen = readout_of(graph)
    sim = Simulator(graph, timesteps, chunk=chunk, collect_stats=False, record=(pen,))
    hits, n = {k: 0 for k in learners}, 0
    for x, y in batches:
        sim.run(x)
        pre = sim.recorded[pen].flatten(2)
        for k, lrn in learners.items():
            hits[k] += int((lrn.logits(pre).argmax(1) == y).sum())
        n += len(y)
    return {k: 100.0 * v / max(n, 1) for k, v in hits.items()}


def sliding_accuracy(correct: torch.Tensor, window: int) -> list[float]:
    """Accuracy (%) over the last ``window`` samples at every position (shorter at the start)."""
    c = torch.cat([torch.zeros(1), correct.double().cumsum(0)])
    idx = torch.arange(1, len(correct) + 1)
    lo = (idx - window).clamp_min(0)
    return (100.0 * (c[idx] - c[lo]) / (idx - lo)).tolist()


def apply_readout(graph: Graph, learner) -> Graph:
    """A copy of ``graph`` whose readout carries the learner's weights."""
    import copy

    g = copy.deepcopy(graph)
    out, _ = readout_of(g)
    node = g.nodes[out]
    g.nodes[out] = node.replace(weight=learner.weight.clone(), bias=learner.bias.clone())
    g.nodes[out].shape = node.shape
    return g
