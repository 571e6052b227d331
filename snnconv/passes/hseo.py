r"""HSEO: Hybrid Spike-based Evolutionary Optimisation of the converted SNN's neuron parameters.

*Hybrid*: the analytic conversion (threshold balancing) gives the starting point, and a
population search refines it with fitness measured by *spiking* simulation at the deployment
latency T, where the rate approximation behind the analytic thresholds breaks down.

Search space (all per spiking layer unless said otherwise), in a box given by ``bounds``:

* threshold scale :math:`k_l` (multiplies the balanced thresholds of layer l),
* initial membrane potential :math:`v_{0,l}` (fraction of threshold),
* the LIF leak :math:`\beta` (one value for the whole network; 1 is IF), when ``search_leak``.

Fitness (maximised) on *labelled samples of the training split* that the calibration did not use
(from ``PassContext.labelled``, see ``api.held_out_split``; the test set is never seen)::

    fitness = accuracy_weight * acc%(T) - synops_weight * 100 * SynOps(T) / SynOps_start(T)

so ``synops_weight = 0.02`` trades 0.2 accuracy points for 10% fewer synaptic operations.
Accuracy and SynOps come from the context's simulator (``PassContext.simulator``; by default
:class:`snnconv.runtime.simulator.Simulator`) at fixed ``timesteps``.

Optimiser: CMA-ES, the :math:`(\mu/\mu_w, \lambda)` evolution strategy with covariance matrix
adaptation (Hansen & Ostermeier 2001; default parameters, cumulative step-size adaptation, rank-one
and rank-mu updates, as in Hansen 2016, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772),
implemented here in ~60 lines of numpy. Why CMA-ES rather than a GA/PSO hybrid: the space is
continuous, low-dimensional (2L+1 <= ~40) and its coordinates are strongly correlated (raising one
layer's threshold changes the best threshold of the next), which is exactly what the adapted
covariance learns; it is invariant to monotone rescaling of the fitness and needs no tuning beyond
the population size, while GA/PSO need crossover/inertia settings and typically more evaluations,
and every evaluation here is a full SNN simulation. Coordinates are normalised to [0, 1] inside the
bounds; points outside the box are evaluated at their projection onto it with a quadratic penalty
on the distance (the boundary handling of the tutorial's Appendix). Elitist bookkeeping: the
returned solution is the best point ever evaluated, the unchanged starting point included, so
the search never returns something worse on the calibration split than doing nothing.

Winner's curse: at low T the converted network is nearly chaotic in its parameters (a 5% change of
one layer's threshold flips the class of many borderline samples), so on a few hundred samples the
best of ~50 candidates looks several points better than the start by chance alone. With
``selection_samples > 0`` the ``reselect`` best distinct candidates of the search and the start are
re-scored on *further* held-out labelled samples that the search never saw, and the one with the
best fitness there is returned (the start wins ties), the standard re-evaluation remedy for noisy
evolutionary selection (Jin & Branke 2005, "Evolutionary optimization in uncertain environments -
a survey", IEEE TEVC 9(3)).

Deterministic under ``seed`` (numpy ``default_rng``; direct-coded simulation has no randomness).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.passes.contracts import HAS_NEURONS
from snnconv.passes.base import Pass, PassContext, register_pass, simulator_for, check_config
from snnconv.progress import progress


@dataclass
class CMAResult:
    x: np.ndarray  # best point (in the caller's coordinates)
    f: float  # its objective value (minimised)
    f0: float  # objective at the starting point
    history: list[float]  # best-so-far objective after each generation
    evaluations: int


def cma_es(f: Callable[[np.ndarray], float], x0, lower, upper, sigma0: float = 0.2, popsize: int | None = None,
           generations: int = 20, seed: int = 0, callback: Callable[[int, float], None] | None = None) -> CMAResult:
    """Minimise ``f`` over the box [lower, upper] with (mu/mu_w, lambda)-CMA-ES started at ``x0``.

    ``sigma0`` is in units of the box width. Returns the best point ever evaluated (``x0`` included)."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    width = hi - lo
    if np.any(width <= 0):
        raise SnnconvError("cma_es: every upper bound must exceed its lower bound")
    n = len(lo)
    rng = np.random.default_rng(seed)
    lam = popsize or 4 + int(3 * math.log(n))
    mu = lam // 2
    w = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mueff = 1.0 / np.sum(w ** 2)
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    cs = (mueff + 2) / (n + mueff + 5)
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    chin = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))

    def evaluate(z):  # z in normalised coordinates: (penalised value for ranking, value at the projection, projection)
        zc = np.clip(z, 0.0, 1.0)
        raw = float(f(lo + zc * width))
        return raw + 1e3 * float(np.sum((z - zc) ** 2)), raw, zc

    m = np.clip((np.asarray(x0, float) - lo) / width, 0.0, 1.0)
    sigma, C, pc, ps = sigma0, np.eye(n), np.zeros(n), np.zeros(n)
    B, D = np.eye(n), np.ones(n)
    _, f0, _ = evaluate(m)
    best_z, best_f, evals, history = m.copy(), f0, 1, []
    for gen in range(generations):
        arz = rng.standard_normal((lam, n))
        ary = arz @ np.diag(D) @ B.T
        arx = m + sigma * ary
        fits = []
        for k in range(lam):
            fk, raw, zc = evaluate(arx[k])
            fits.append(fk)
            evals += 1
            if raw < best_f:  # the projected point is what was simulated: keep it with its true value
                best_f, best_z = raw, zc.copy()
        order = np.argsort(fits, kind="stable")
        y_sel = ary[order[:mu]]
        y_w = w @ y_sel
        m = m + sigma * y_w
        invsqrt = B @ np.diag(1 / D) @ B.T
        ps = (1 - cs) * ps + math.sqrt(cs * (2 - cs) * mueff) * (invsqrt @ y_w)
        hsig = np.linalg.norm(ps) / math.sqrt(1 - (1 - cs) ** (2 * (gen + 1))) / chin < 1.4 + 2 / (n + 1)
        pc = (1 - cc) * pc + hsig * math.sqrt(cc * (2 - cc) * mueff) * y_w
        C = ((1 - c1 - cmu) * C + c1 * (np.outer(pc, pc) + (1 - hsig) * cc * (2 - cc) * C)
             + cmu * (y_sel.T * w) @ y_sel)
        sigma *= math.exp((cs / damps) * (np.linalg.norm(ps) / chin - 1))
        C = np.triu(C) + np.triu(C, 1).T
        evals_, B = np.linalg.eigh(C)
        D = np.sqrt(np.maximum(evals_, 1e-20))
        history.append(best_f)
        if callback:
            callback(gen, best_f)
    return CMAResult(lo + best_z * width, best_f, f0, history, evals)


def _apply(graph: Graph, layers: list[str], params: np.ndarray, search_leak: bool) -> Graph:
    g = graph.copy()
    L = len(layers)
    leak = float(params[2 * L]) if search_leak else None
    for i, name in enumerate(layers):
        node = g.nodes[name]
        changes = {"threshold": node.threshold * float(params[i]), "v_init": float(params[L + i])}
        if leak is not None:
            changes["leak"] = min(1.0, leak)
            changes["model"] = "if" if leak >= 1.0 else "lif"
        g.replace(name, node.replace(**changes))
    return g


@torch.no_grad()
def score(graph: Graph, batches: list, timesteps: int, simulator=None) -> tuple[float, float]:
    """(accuracy %, SynOps per sample) at ``timesteps`` on labelled ``batches`` (``simulator``: the context's)."""
    sim = simulator_for(simulator)(graph, timesteps, chunk=timesteps)
    for x, y in batches:
        sim.run(x, y)
    st = sim.stats
    return st.accuracy()[-1], st.synops_per_sample()[-1]


@register_pass
class HSEO(Pass):
    name = "hseo"
    requires = (HAS_NEURONS,)

    @dataclass
    class Config:
        timesteps: int = 2
        population: int = 12
        generations: int = 10
        seed: int = 0
        sigma0: float = 0.2  # initial step size, fraction of each bound's width
        threshold_bounds: list = field(default_factory=lambda: [0.4, 1.6])  # threshold scale
        v_init_bounds: list = field(default_factory=lambda: [0.0, 1.0])
        leak_bounds: list = field(default_factory=lambda: [0.8, 1.0])
        search_leak: bool = True
        accuracy_weight: float = 1.0
        synops_weight: float = 0.02
        samples: int | None = 1000  # labelled calibration samples the search scores on (None: all given)
        selection_samples: int = 0  # further labelled samples to re-score the best candidates on (0: off)
        reselect: int = 4  # candidates (besides the start) re-scored on the selection samples
        batch_size: int = 250

        def validate(self, where: str) -> None:
            for key in ("threshold_bounds", "v_init_bounds", "leak_bounds"):
                b = getattr(self, key)
                if not (isinstance(b, (list, tuple)) and len(b) == 2 and float(b[0]) < float(b[1])):
                    raise SnnconvError(f"{where}: {key} must be [low, high] with low < high")
            checks = [(self.timesteps >= 1, "timesteps must be >= 1"), (self.population >= 2, "population must be >= 2"),
                      (self.generations >= 1, "generations must be >= 1"),
                      (self.selection_samples >= 0 and self.reselect >= 1, "selection_samples must be >= 0 and "
                                                                          "reselect >= 1"),
                      (float(self.threshold_bounds[0]) > 0, "threshold_bounds must be positive"),
                      (0 < float(self.leak_bounds[0]) and float(self.leak_bounds[1]) <= 1, "leak_bounds must lie in (0, 1]")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        layers = [n for n, node in graph.nodes.items() if node.kind == "neuron"]
        if not layers:
            raise SnnconvError("hseo: no spiking neurons to calibrate (put it after threshold_balance)")
        batches, selection = self._split(ctx)
        n = sum(len(y) for _, y in batches)
        L = len(layers)
        start = [1.0] * L + [graph.nodes[k].v_init for k in layers]
        lo = [c.threshold_bounds[0]] * L + [c.v_init_bounds[0]] * L
        hi = [c.threshold_bounds[1]] * L + [c.v_init_bounds[1]] * L
        if c.search_leak:
            start.append(min(graph.nodes[k].leak for k in layers))
            lo.append(c.leak_bounds[0])
            hi.append(c.leak_bounds[1])
        start = np.clip(np.array(start, float), lo, hi)
        acc0, syn0 = score(_apply(graph, layers, start, c.search_leak), batches, c.timesteps, ctx.simulator)
        ref = max(syn0, 1e-9)
        cache: dict[bytes, tuple[float, float, float, np.ndarray]] = {}

        def fitness(acc, syn, reference):
            return c.accuracy_weight * acc - c.synops_weight * 100.0 * syn / reference

        def objective(p):
            acc, syn = score(_apply(graph, layers, p, c.search_leak), batches, c.timesteps, ctx.simulator)
            cache[p.tobytes()] = (acc, syn, fitness(acc, syn, ref), p.copy())
            return -cache[p.tobytes()][2]

        bar = progress(total=c.generations, desc=f"HSEO T={c.timesteps}")

        def cb(gen, best):
            bar.update(1)
            bar.set_postfix(best_fitness=f"{-best:.3f}")

        res = cma_es(objective, start, lo, hi, c.sigma0, c.population, c.generations, c.seed, cb)
        bar.close()
        chosen, sel_info = res.x, None
        if selection:
            chosen, sel_info = self._reselect(graph, layers, start, cache, selection, fitness, ctx.simulator)
        acc1, syn1 = (cache[chosen.tobytes()][:2] if chosen.tobytes() in cache
                      else score(_apply(graph, layers, chosen, c.search_leak), batches, c.timesteps, ctx.simulator))
        res.x = chosen
        out = _apply(graph, layers, res.x, c.search_leak)
        params = {"threshold_scale": dict(zip(layers, map(float, res.x[:L]))),
                  "v_init": dict(zip(layers, map(float, res.x[L:2 * L])))}
        if c.search_leak:
            params["leak"] = float(res.x[2 * L])
        info = {"timesteps": c.timesteps, "calibration_samples": n, "evaluations": res.evaluations,
                "fitness_start": -res.f0, "fitness_best": fitness(acc1, syn1, ref),  # of the returned point
                "best_fitness_per_generation": [-h for h in res.history],
                "calibration_accuracy": [acc0, acc1], "calibration_synops": [syn0, syn1], "params": params}
        if sel_info:
            info["selection"] = sel_info
        out.meta["hseo"] = info
        ctx.log(self.name, f"CMA-ES over {len(start)} parameters, {res.evaluations} evaluations at T={c.timesteps}: "
                           f"calibration accuracy {acc0:.2f}% -> {acc1:.2f}%, SynOps {syn0:.4g} -> {syn1:.4g}"
                           + (f"; selection split {sel_info['accuracy'][0]:.2f}% -> {sel_info['accuracy'][1]:.2f}%"
                              if sel_info else ""), **info)
        return out

    def _split(self, ctx: PassContext) -> tuple[list, list]:
        """The first ``samples`` labelled samples (search) and the next ``selection_samples`` (re-selection)."""
        c = self.config
        need = None if c.samples is None else c.samples + c.selection_samples
        xs, ys, n = [], [], 0
        for x, y in ctx.labelled_batches():
            if need is not None and n >= need:
                break
            xs.append(x)
            ys.append(y)
            n += len(y)
        if not ys:
            raise SnnconvError("hseo: the labelled calibration split is empty (use a larger training set or "
                               "lower calib_samples)")
        x, y = torch.cat(xs), torch.cat(ys)
        cut = len(y) if c.samples is None else min(c.samples, len(y))
        if c.selection_samples and len(y) - cut < c.selection_samples:
            raise SnnconvError(f"hseo: selection_samples={c.selection_samples} but only {len(y) - cut} labelled "
                               f"samples follow the {cut} search samples (snnconv convert holds out calib_samples training "
                               "samples: raise calib_samples)")

        def batched(lo, hi):
            return [(x[i:min(i + c.batch_size, hi)], y[i:min(i + c.batch_size, hi)]) for i in range(lo, hi, c.batch_size)]

        return batched(0, cut), batched(cut, cut + c.selection_samples if c.selection_samples else cut)

    def _reselect(self, graph, layers, start, cache, selection, fitness, simulator=None) -> tuple[np.ndarray, dict]:
        """Re-score the start and the ``reselect`` best search candidates on the selection samples."""
        c = self.config
        ranked = sorted(cache.values(), key=lambda v: -v[2])
        cands = [start] + [v[3] for v in ranked if not np.array_equal(v[3], start)][:c.reselect]
        scored = [score(_apply(graph, layers, p, c.search_leak), selection, c.timesteps, simulator) for p in cands]
        ref = max(scored[0][1], 1e-9)
        fits = [fitness(a, s, ref) for a, s in scored]
        best = max(range(len(cands)), key=lambda i: (fits[i], -i))  # ties go to the earlier: the start first
        info = {"samples": sum(len(y) for _, y in selection), "candidates": len(cands),
                "fitness": [fits[0], fits[best]], "accuracy": [scored[0][0], scored[best][0]],
                "synops": [scored[0][1], scored[best][1]], "chosen_rank": best,
                "candidate_fitness": fits}
        return cands[best], info
