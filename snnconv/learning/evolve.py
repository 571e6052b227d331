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

With ``layers="readout+hidden"`` (learners ``rstdp+hidden``, ``ed+hidden``) the last hidden layer
(the linear layer feeding the readout's presynaptic spiking layer) adapts too, with the same rule
in its local form (:class:`HiddenAdapted`): no gradient flows through the network or through
time; each hidden synapse sees only its own pre/post activity and one of the readout's
per-output neuromodulatory signals, routed to hidden unit ``h`` through the sign of its readout
synapse ``W_out[k, h]`` (``h`` excites or inhibits output ``k``, its ED "type" for that output).

Only the readout changes, so the penultimate spikes do not depend on the learner: one
simulation per batch (with the simulator's ``record`` hook) serves the frozen baseline and
every learner, and the readout logits ``W mean_t(s) + b`` equal the simulator's output
(checked and reported as ``readout_check_max_abs``). A learner that adapts the hidden layer
re-runs only that layer's spiking neurons on the recorded input of the hidden layer (which does
not depend on the learner); with the converted weights this reproduces the simulator's
penultimate spikes (``hidden_check_max_abs``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.learning.ed import EDReadout, ei_split
from snnconv.learning.rstdp import RewardSTDP
from snnconv.runtime.neurons import NEURON_DYNAMICS
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


def hidden_of(graph: Graph) -> tuple[str, str, str]:
    """(hidden linear layer, the node it reads, the spiking layer it drives): the chain
    ``src -> linear -> spiking neuron -> readout`` that ``readout+hidden`` adapts."""
    out, pen = readout_of(graph)
    consumers = [n for n, srcs in graph.edges.items() if pen in srcs]
    pnode = graph.nodes[pen]
    lin = graph.edges[pen][0] if len(graph.edges.get(pen, [])) == 1 else None
    if pnode.kind not in NEURON_DYNAMICS or consumers != [out] or lin is None or graph.nodes[lin].kind != "linear" \
            or [n for n, srcs in graph.edges.items() if lin in srcs] != [pen]:
        raise SnnconvError(f"readout+hidden needs linear -> spiking neuron -> readout '{out}' (got '{pen}', a "
                           f"{pnode.kind}, fed by {graph.edges.get(pen)})")
    return lin, graph.edges[lin][0], pen


def hidden_input(sim: Simulator, src: str | None, x: torch.Tensor) -> torch.Tensor | None:
    """The hidden layer's input ``[T, B, J]`` of the last ``sim.run(x)`` (the graph input itself
    when the hidden layer reads it: direct encoding, the same ``x`` every step)."""
    if src is None:
        return None
    if src in sim.graph.inputs:
        return x.flatten(1).unsqueeze(0).expand(sim.T, -1, -1)
    return sim.recorded[src].flatten(2)


def _recorder(graph: Graph, timesteps: int, chunk: int, learners: dict) -> tuple[Simulator, str, str | None]:
    _, pen = readout_of(graph)
    src = hidden_of(graph)[1] if any(lrn.hidden for lrn in learners.values()) else None
    rec = (pen,) if src is None or src in graph.inputs else (pen, src)
    return Simulator(graph, timesteps, chunk=chunk, collect_stats=False, record=rec), pen, src


class FrozenReadout:
    """No plasticity: the converted readout as is."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight.clone()
        self.bias = torch.zeros(weight.shape[0]) if bias is None else bias.clone()

    hidden = None  # a HiddenAdapted learner also adapts the hidden layer

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

    def rewards(self, pre, labels) -> torch.Tensor:
        """Per-output reward ``[B, K]``: -1 to a wrong winner, +1 to the lost target, ``reward_correct``."""
        pred = self.logits(pre).argmax(1)
        K = self.weight.shape[0]
        wrong = (pred != labels).to(pre.dtype).unsqueeze(1)
        r = (F.one_hot(labels, K) - F.one_hot(pred, K)).to(pre.dtype) * wrong  # +1 target, -1 wrong winner
        return r + self.reward_correct * (1 - wrong) * F.one_hot(pred, K).to(pre.dtype)

    def update(self, pre, labels):
        r = self.rewards(pre, labels)
        post = self.post_spikes(pre)
        self.rule.reset()
        self.rule.run((pre != 0).to(pre.dtype), post)
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


class HiddenAdapted:
    """A readout learner (:class:`RSTDPReadout` or :class:`EDReadoutLearner`) plus the local form of
    its rule on the last hidden layer ``W_h`` (``[H, J]``, input ``a``, spiking outputs ``s_h``).

    Both rules reach hidden unit ``h`` through the per-output signals of the readout, routed by the
    sign ``τ_hk = sign(W_out[k, h])`` of h's readout synapse onto output ``k`` (read before the
    readout update of the same batch). Nothing is propagated through weights magnitudes or time.

    * ``ed`` (Kaneko 1999; Fujita, arXiv:2504.14814): the output errors ``e_k = onehot_k -
      softmax_k(z)`` split into ``δ+_k = max(e_k, 0)``, ``δ-_k = max(-e_k, 0)``. For output ``k``
      a hidden unit with ``τ_hk = +1`` is an E unit (raising it raises ``z_k``), with ``τ_hk = -1``
      an I unit. Each hidden weight is an E/I synapse pair, ``W_h = W+ + W-`` with
      ``W+ = max(W_h, 0)``, ``W- = min(W_h, 0)`` at conversion (E and I copies of the
      presynaptic unit, as in :class:`EDReadout`); ED's update ``Δw = η a f'(u) τ_post τ_pre
      δ^(τ_pre)``, summed over the outputs sharing the hidden layer (Kaneko uses one network per
      output; here the layer is shared), gives::

          ΔW+_hj = η_h a_j f'_h Σ_k ([τ_hk>0] δ+_k + [τ_hk<0] δ-_k)      (only grows)
          ΔW-_hj = -η_h a_j f'_h Σ_k ([τ_hk>0] δ-_k + [τ_hk<0] δ+_k)     (only grows in magnitude)

      so no sub-synapse ever changes sign (Dale's principle per E/I copy). ``a_j`` is the mean
      input of the hidden layer over the window, ``f'_h = 1`` while the IF unit's rate is
      strictly between 0 and 1 spike/step (the rate-coded IF unit is a clipped ReLU), else 0;
      the bias is a pair fed by a constant 1.
    * ``rstdp`` (Izhikevich 2007; Florian 2007; per-neuron reward as in Mozafari et al., IEEE
      TNNLS 2018): eligibility traces ``c_hj`` from the hidden layer's own spikes (post: the
      binary spikes of the spiking layer; pre: input events ``a_j(t) != 0``) with the same
      ``τc``, ``A±``, ``τ±`` as the readout, and the hidden reward ``r_h = Σ_k τ_hk r_k`` from the
      readout's per-output rewards ``r_k`` (+1 to the lost target, -1 to the wrong winner):
      ``ΔW_h = η_h Σ_b r_h c_hj``.
    """

    def __init__(self, rule: str, graph: Graph, lr_hidden: float = 1e-4, **readout_params):
        out, _ = readout_of(graph)
        lin, self.src, self.pen = hidden_of(graph)
        ro, hl = graph.nodes[out], graph.nodes[lin]
        self.rule, self.readout = rule, LEARNERS[rule](ro.weight, ro.bias, **readout_params)
        self.neuron, self.lr_hidden = graph.nodes[self.pen], lr_hidden
        # E/I sub-synapses (ED keeps their signs)
        self.w_pos, self.w_neg, self.b_pos, self.b_neg = ei_split(hl.weight, hl.bias)
        if rule == "rstdp":
            r = self.readout.rule
            self.stdp = RewardSTDP(lr=lr_hidden, tau_c=-1.0 / math.log(r.dec_c), a_plus=r.stdp.a_plus,
                                   a_minus=r.stdp.a_minus, tau_plus=-1.0 / math.log(r.stdp.dec_plus),
                                   tau_minus=-1.0 / math.log(r.stdp.dec_minus))
        self._counts = None

    hidden = True

    @property
    def weight(self) -> torch.Tensor:
        return self.readout.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.readout.bias

    @property
    def hidden_weight(self) -> torch.Tensor:
        return self.w_pos + self.w_neg

    @property
    def hidden_bias(self) -> torch.Tensor:
        return self.b_pos + self.b_neg

    def penultimate(self, src: torch.Tensor) -> torch.Tensor:
        """The spiking layer's output ``[T, B, H]`` for the hidden layer's input ``src`` ``[T, B, J]``."""
        cur = src @ self.hidden_weight.T + self.hidden_bias
        y, counts, _ = NEURON_DYNAMICS[self.neuron.kind](self.neuron, cur, None)
        self._counts = counts
        return y

    def logits(self, pre):
        return self.readout.logits(pre)

    def update(self, pre, labels, src=None):
        tau = torch.sign(self.readout.weight)  # [K, H]: h excites (+1) or inhibits (-1) output k
        if self.rule == "ed":
            z = self.readout.logits(pre)
            err = F.one_hot(labels, z.shape[1]).to(z.dtype) - z.softmax(1)
            dp, dm = err.clamp_min(0), (-err).clamp_min(0)
            ex, inh = (tau > 0).to(z.dtype), (tau < 0).to(z.dtype)
            rate = self._counts.mean(0)
            fp = ((rate > 0) & (rate < 1)).to(z.dtype)
            up, down = fp * (dp @ ex + dm @ inh), fp * (dm @ ex + dp @ inh)  # [B, H]
            a = src.mean(0)
            self.w_pos += self.lr_hidden * up.T @ a
            self.w_neg -= self.lr_hidden * down.T @ a
            self.b_pos += self.lr_hidden * up.sum(0)
            self.b_neg -= self.lr_hidden * down.sum(0)
        else:
            r_h = self.readout.rewards(pre, labels) @ tau  # [B, H]
            self.stdp.reset()
            self.stdp.run((src != 0).to(src.dtype), self._counts)
            dw = self.stdp.reward(r_h)
            self.w_pos += dw.clamp_min(0)  # R-STDP does not constrain signs: W+ / W- only bookkeeping
            self.w_neg += dw.clamp_max(0)
        self.readout.update(pre, labels)


def make_learners(graph: Graph, rules: list[str], params: dict | None = None,
                  layers: tuple[str, ...] = ("readout",)) -> dict:
    """Learners ``frozen``, then per rule ``<rule>`` (readout only, ``"readout"`` in ``layers``)
    and ``<rule>+hidden`` (readout and last hidden layer, ``"readout+hidden"`` in ``layers``);
    ``params[name]`` are the learner's keyword arguments (``lr_hidden`` for ``+hidden``)."""
    out, _ = readout_of(graph)
    node = graph.nodes[out]
    params = params or {}
    bad = [x for x in layers if x not in LAYERS]
    if bad or not layers:
        raise SnnconvError(f"unknown layers {bad or layers} (known: {', '.join(LAYERS)})")
    learners = {}
    for r in ["frozen", *[r for r in rules if r != "frozen"]]:
        if r not in LEARNERS:
            raise SnnconvError(f"unknown plasticity rule '{r}' (known: rstdp, ed)")
        if r == "frozen" or "readout" in layers:
            learners[r] = LEARNERS[r](node.weight, node.bias, **params.get(r, {}))
    for r in rules:
        if r != "frozen" and "readout+hidden" in layers:
            learners[f"{r}+hidden"] = HiddenAdapted(r, graph, **params.get(f"{r}+hidden", {}))
    return learners


LAYERS = ("readout", "readout+hidden")


@torch.no_grad()
def evolve_stream(graph: Graph, batches, timesteps: int, learners: dict, chunk: int = 8,
                  progress_fn=None) -> dict:
    """Prequential run over ``batches`` of ``(x, y)``: per learner, per sample 0/1 correctness."""
    sim, pen, src = _recorder(graph, timesteps, chunk, learners)
    correct = {k: [] for k in learners}
    check, hcheck = 0.0, None
    for i, (x, y) in enumerate(batches):
        logits_sim = sim.run(x)[-1]
        pre = sim.recorded[pen].flatten(2)
        check = max(check, float((learners["frozen"].logits(pre) - logits_sim).abs().max()))
        h_in = hidden_input(sim, src, x)
        for name, lrn in learners.items():
            if lrn.hidden:
                p = lrn.penultimate(h_in)
                if i == 0:  # the learner's hidden layer before any update == the simulator's
                    hcheck = max(hcheck or 0.0, float((p - pre).abs().max()))
                correct[name].append((lrn.logits(p).argmax(1) == y).to(torch.int8))
                lrn.update(p, y, h_in)
            else:
                correct[name].append((lrn.logits(pre).argmax(1) == y).to(torch.int8))  # predict ...
                lrn.update(pre, y)  # ... then learn
        if progress_fn:
            progress_fn(i, x.shape[0])
    return {"correct": {k: torch.cat(v) for k, v in correct.items()}, "readout_check_max_abs": check,
            "hidden_check_max_abs": hcheck}


@torch.no_grad()
def evaluate_learners(graph: Graph, batches, timesteps: int, learners: dict, chunk: int = 8) -> dict[str, float]:
    """Accuracy (%) of each learner's current readout on ``batches`` (no learning)."""
    sim, pen, src = _recorder(graph, timesteps, chunk, learners)
    hits, n = {k: 0 for k in learners}, 0
    for x, y in batches:
        sim.run(x)
        pre = sim.recorded[pen].flatten(2)
        for k, lrn in learners.items():
            p = lrn.penultimate(hidden_input(sim, src, x)) if lrn.hidden else pre
            hits[k] += int((lrn.logits(p).argmax(1) == y).sum())
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
    if learner.hidden:
        lin = hidden_of(g)[0]
        h = g.nodes[lin]
        g.nodes[lin] = h.replace(weight=learner.hidden_weight.clone(), bias=learner.hidden_bias.clone())
        g.nodes[lin].shape = h.shape
    return g


DEFAULT_PARAMS = {"rstdp": {"lr": 1e-4, "a_minus": 0.5, "theta_quantile": 0.5}, "ed": {"lr": 1e-2}}
DEFAULT_HIDDEN_LR = {"rstdp": 1e-5, "ed": 1e-3}


def learner_params(rules, layers=("readout",), params: dict | None = None) -> dict:
    """Per learner name: the defaults, overridden by ``params[rule]`` (readout) and
    ``params[rule + "+hidden"]`` (``+hidden`` learners: readout settings and ``lr_hidden``)."""
    params = params or {}
    out = {}
    for r in rules:
        base = {**DEFAULT_PARAMS.get(r, {}), **params.get(r, {})}
        if "readout" in layers:
            out[r] = base
        if "readout+hidden" in layers:
            out[f"{r}+hidden"] = {**base, "lr_hidden": DEFAULT_HIDDEN_LR.get(r, 1e-4), **params.get(f"{r}+hidden", {})}
    return out


def run_evolve(model: str = "mnist_cnn", dataset: str = "mnist", data_dir: str | None = None,
               weights: str | None = None, shift: str = "rotate:45", rules: tuple[str, ...] = ("rstdp", "ed"),
               timesteps: int = 32, n_clean: int = 1000, n_shift: int = 4000, window: int = 500,
               batch_size: int = 20, calib_samples: int = 1024, heldout: int = 1000, seed: int = 0,
               params: dict | None = None, log_fn=print, layers: tuple[str, ...] = ("readout",)) -> dict:
    """Convert ``model`` on clean ``dataset``, stream ``n_clean`` clean then ``n_shift`` shifted test
    images (prequential), adapting the readout with each rule; then score every readout on
    ``heldout`` other test images, clean and shifted. Returns the report (and the graphs)."""
    import time

    from snnconv.api import conversion_pipeline, convert_graph, environment, resolve_model
    from snnconv.config import RunConfig
    from snnconv.data.datasets import Split, load_dataset
    from snnconv.frontends.torch import from_torch

    t_start = time.time()
    kind, amount = parse_shift(shift)
    params = learner_params(rules, layers, params)
    net, shape, source = resolve_model(RunConfig(model=model, dataset=dataset, data_dir=data_dir, weights=weights),
                                       log_fn)
    graph, _ = from_torch(net, shape)
    calib = load_dataset(dataset, data_dir, train=True).subset(calib_samples, seed + 1)
    snn, _ = convert_graph(graph, [x for x, _ in calib.batches(256)], conversion_pipeline())
    test = load_dataset(dataset, data_dir, train=False)
    if n_clean + n_shift + heldout > len(test):
        raise SnnconvError(f"stream ({n_clean}+{n_shift}) and held-out ({heldout}) need more than the "
                           f"{len(test)} test samples")
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))

    def part(a, b):
        idx = perm[a:b]
        return Split(test.images[idx], test.labels[idx], test.mean, test.std, test.num_classes)

    clean_part, shift_part = part(0, n_clean), part(n_clean, n_clean + n_shift)
    held = part(n_clean + n_shift, n_clean + n_shift + heldout)
    learners = make_learners(snn, list(rules), params, layers)
    n_total = n_clean + n_shift
    done = [0]

    def prog(i, b):
        done[0] += b
        if done[0] % (10 * batch_size) < b:
            log_fn(f"  stream {done[0]}/{n_total}")

    def stream():
        yield from shifted_batches(clean_part, "none", 0.0, batch_size)
        yield from shifted_batches(shift_part, kind, amount, batch_size, seed)

    log_fn(f"streaming {n_clean} clean + {n_shift} '{shift}' samples, T={timesteps}, learners: {', '.join(learners)}")
    res = evolve_stream(snn, stream(), timesteps, learners, progress_fn=prog)
    corr = res["correct"]
    log_fn(f"held-out evaluation on {heldout} other test samples (clean and shifted)")
    held_clean = evaluate_learners(snn, shifted_batches(held, "none", 0.0, 100), timesteps, learners)
    held_shift = evaluate_learners(snn, shifted_batches(held, kind, amount, 100, seed + 10**6), timesteps, learners)
    report = {
        "model": model, "dataset": dataset, "weights": source, "shift": shift, "timesteps": timesteps,
        "stream": {"clean": n_clean, "shifted": n_shift, "batch_size": batch_size, "order": f"test split, seed {seed}"},
        "calib_samples": calib_samples, "window": window, "rules": {k: params.get(k, {}) for k in learners},
        "readout_check_max_abs": res["readout_check_max_abs"], "layers": list(layers),
        "hidden_check_max_abs": res["hidden_check_max_abs"],
        "prequential_accuracy": {
            k: {"clean_part": 100.0 * float(c[:n_clean].double().mean()) if n_clean else None,
                "shifted_part": 100.0 * float(c[n_clean:].double().mean()) if n_shift else None,
                "last_window": 100.0 * float(c[-window:].double().mean())} for k, c in corr.items()},
        "heldout": {"samples": heldout, "clean": held_clean, "shifted": held_shift},
        "sliding_accuracy": {k: sliding_accuracy(c, window) for k, c in corr.items()},
        "environment": environment(), "seconds": None,
    }
    report["seconds"] = round(time.time() - t_start, 1)
    return {"report": report, "snn": snn, "learners": learners}


def plot_evolve(report: dict, path) -> None:
    from snnconv.report import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4))
    names = {"frozen": "converted SNN, frozen", "rstdp": "+ R-STDP readout", "ed": "+ ED readout (E/I, Dale)",
             "rstdp+hidden": "+ R-STDP readout and hidden", "ed+hidden": "+ ED readout and hidden (E/I, Dale)"}
    for k, curve in report["sliding_accuracy"].items():
        ax.plot(range(1, len(curve) + 1), curve, label=names.get(k, k))
    n_clean = report["stream"]["clean"]
    if n_clean:
        ax.axvline(n_clean, color="gray", ls="--", lw=1)
        ax.text(n_clean, 2, f"  shift: {report['shift']}", color="gray")
    ax.set_xlabel("stream sample (prequential: predict, then update)")
    ax.set_ylabel(f"accuracy over last {report['window']} samples (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['model']} SNN (T={report['timesteps']}) on {report['dataset']} with a distribution shift")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evolve_run(output_dir, model, dataset, data_dir, weights, shift, rules, timesteps, clean, shifted, window,
               batch_size, heldout=1000, seed=0, lr=None, overwrite=False, log_fn=print, layers=("readout",)) -> dict:
    """The ``snnconv evolve`` job: checks ``output_dir`` first, runs :func:`run_evolve` and writes the run folder
    (evolve.json, evolve.png, snn_frozen.pt, snn_<rule>.pt) atomically. Returns the report."""
    import json

    from snnconv.output import atomic_dir, check_output_dir

    check_output_dir(output_dir, overwrite)  # before the stream runs
    bad = [r for r in rules if r not in ("rstdp", "ed")]
    if bad or not rules:
        raise SnnconvError(f"unknown rule(s) {bad or list(rules)!r} (known: rstdp, ed)")
    params = {r: {"lr": lr} for r in rules} if lr is not None else None
    res = run_evolve(model, dataset, data_dir, weights, shift, tuple(rules), timesteps, clean, shifted, window,
                     batch_size, heldout=heldout, seed=seed, params=params, log_fn=log_fn, layers=layers)
    rep = res["report"]
    with atomic_dir(output_dir, overwrite) as out:
        (out / "evolve.json").write_text(json.dumps(rep, indent=1))
        plot_evolve(rep, out / "evolve.png")
        res["snn"].save(out / "snn_frozen.pt")
        for r, lrn in res["learners"].items():
            if r != "frozen":
                apply_readout(res["snn"], lrn).save(out / f"snn_{r}.pt")
    return rep
