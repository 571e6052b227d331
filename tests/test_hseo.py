"""HSEO: the CMA-ES core on toy objectives, and the pass on a tiny converted network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from snnconv.api import conversion_pipeline, convert_graph
from snnconv.data.datasets import load_dataset
from snnconv.errors import SnnconvError
from snnconv.frontends.torch import from_torch
from snnconv.models.zoo import build_model
from snnconv.passes import PassContext, Pipeline
from snnconv.passes.hseo import cma_es, score


def test_cma_es_improves_a_toy_objective_and_is_deterministic():
    target = np.array([0.3, -0.2, 0.7, 0.1, -0.5])

    def f(x):  # shifted, badly scaled ellipsoid with correlated coordinates
        d = x - target
        return float(np.sum((np.arange(1, 6) * d) ** 2) + 3 * d[0] * d[1])

    x0 = np.zeros(5)
    r1 = cma_es(f, x0, [-1] * 5, [1] * 5, sigma0=0.3, popsize=10, generations=60, seed=3)
    r2 = cma_es(f, x0, [-1] * 5, [1] * 5, sigma0=0.3, popsize=10, generations=60, seed=3)
    assert r1.f < 1e-4 * r1.f0  # converges close to the optimum
    assert np.abs(r1.x - target).max() < 0.02
    assert np.array_equal(r1.x, r2.x) and r1.history == r2.history  # same seed, same run
    r3 = cma_es(f, x0, [-1] * 5, [1] * 5, sigma0=0.3, popsize=10, generations=5, seed=4)
    assert not np.array_equal(r3.x, r1.x)
    assert all(a >= b for a, b in zip(r1.history, r1.history[1:]))  # best-so-far never gets worse
    assert r1.evaluations == 1 + 60 * 10


def test_cma_es_respects_bounds():
    r = cma_es(lambda x: float(np.sum((x - 5.0) ** 2)), [0.5, 0.5], [0, 0], [1, 1], popsize=8, generations=30, seed=0)
    assert np.all(r.x <= 1.0) and np.all(r.x >= 0.0) and np.allclose(r.x, 1.0, atol=1e-3)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10, 1)
    from snnconv.checkpoints import apply_state_dict, bundled_checkpoint, load_checkpoint
    apply_state_dict(model, load_checkpoint(bundled_checkpoint("mnist_cnn", "mnist")), "bundled")
    g, _ = from_torch(model.eval(), (1, 28, 28))
    calib = load_dataset("mnist-bundled", train=True)
    snn, _ = convert_graph(g, [x for x, _ in calib.batches(256)], conversion_pipeline())
    labelled = [(x, y) for x, y in calib.subset(64, seed=5).batches(64)]
    return snn, labelled


def test_hseo_pass_is_deterministic_and_never_worse_on_calibration(tiny):
    snn, labelled = tiny
    spec = {"name": "hseo", "timesteps": 2, "population": 3, "generations": 2, "seed": 1, "samples": 64,
            "synops_weight": 0.05}
    outs = []
    for _ in range(2):
        ctx = PassContext(labelled=labelled)
        outs.append((Pipeline.from_config([spec]).run(snn, ctx), ctx.records[-1]))
    (g1, r1), (g2, r2) = outs
    assert r1["evaluations"] == 1 + 2 * 3
    assert r1["params"] == r2["params"] and r1["fitness_best"] == r2["fitness_best"]
    for name, node in g1.nodes.items():
        if node.kind == "neuron":
            assert torch.equal(node.threshold, g2.nodes[name].threshold) and node.v_init == g2.nodes[name].v_init
    assert r1["fitness_best"] >= r1["fitness_start"]
    # the reported calibration numbers are those of the returned graph
    acc, syn = score(g1, labelled, 2)
    assert (acc, syn) == (r1["calibration_accuracy"][1], r1["calibration_synops"][1])
    w = spec["synops_weight"]
    fit = acc - w * 100 * syn / r1["calibration_synops"][0]
    assert fit == pytest.approx(r1["fitness_best"])
    assert g1.meta["hseo"]["timesteps"] == 2


def test_hseo_needs_labels_and_valid_bounds(tiny):
    snn, _ = tiny
    with pytest.raises(SnnconvError, match="labelled"):
        Pipeline.from_config([{"name": "hseo", "generations": 1}]).run(snn, PassContext())
    with pytest.raises(SnnconvError, match="threshold_bounds"):
        Pipeline.from_config([{"name": "hseo", "threshold_bounds": [2, 1]}])


def test_held_out_split_is_disjoint_from_calibration(data_dir):
    from snnconv.api import held_out_split

    train = load_dataset("mnist", data_dir, train=True)
    calib = train.subset(300, seed=1)
    held = held_out_split("mnist", data_dir, 300, 1)
    assert len(held) == 300
    a = {bytes(x.numpy()) for x in calib.images}
    b = {bytes(x.numpy()) for x in held.images}
    assert len(a & b) <= 2  # MNIST holds a few duplicate images; the index sets are disjoint by construction


def test_hseo_reselection_never_loses_to_the_start_on_unseen_samples(tiny):
    snn, _ = tiny
    calib = load_dataset("mnist-bundled", train=True)
    labelled = [(x, y) for x, y in calib.subset(128, seed=7).batches(32)]  # batches straddle the 64/64 cut
    spec = {"name": "hseo", "timesteps": 2, "population": 4, "generations": 2, "seed": 0, "samples": 64,
            "selection_samples": 64, "reselect": 3}
    ctx = PassContext(labelled=labelled)
    out = Pipeline.from_config([spec]).run(snn, ctx)
    sel = ctx.records[-1]["selection"]
    assert sel["samples"] == 64 and sel["candidates"] == 4
    assert sel["fitness"][1] >= sel["fitness"][0] == sel["candidate_fitness"][0]
    # the reported selection accuracy is that of the returned graph, on the 64 samples after the search ones
    x = torch.cat([b[0] for b in labelled])[64:]
    y = torch.cat([b[1] for b in labelled])[64:]
    acc, _ = score(out, [(x, y)], 2)
    assert acc == sel["accuracy"][1]
    # fitness_best is the search-split fitness of the returned point, whichever candidate was chosen
    rec = ctx.records[-1]
    acc_s, syn_s = rec["calibration_accuracy"][1], rec["calibration_synops"][1]
    assert rec["fitness_best"] == pytest.approx(acc_s - 0.02 * 100 * syn_s / rec["calibration_synops"][0])
    with pytest.raises(SnnconvError, match="selection_samples=100"):
        Pipeline.from_config([{**spec, "selection_samples": 100}]).run(snn, PassContext(labelled=labelled))
