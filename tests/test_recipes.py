"""Conversion methods are registered recipes that own their pass lists and check their input."""
from __future__ import annotations

import pytest

from snnconv.config import ConversionConfig, RunConfig
from snnconv.errors import SnnconvError
from snnconv.recipes import RECIPES, Recipe, describe, get_recipe, register_recipe


def test_every_method_is_a_recipe_with_its_pipeline():
    assert set(RECIPES) == {"max", "percentile", "calibration", "qcfs", "sfn", "spiking_transformer"}
    for r in describe(ConversionConfig()):
        assert r["summary"] and r["requires"]
        assert r["pipeline"][:2] == (["fold_batchnorm", "remove_identity"] if r["name"] != "spiking_transformer"
                                     else ["remove_identity", "spiking_transformer"])
    spec = RunConfig(conversion=ConversionConfig(method="calibration", signed=True)).pipeline_spec()
    assert [p if isinstance(p, str) else p["name"] for p in spec] == \
        ["fold_batchnorm", "remove_identity", "threshold_balance", "signed_neurons", "calibration"]


def test_qcfs_refuses_a_plain_relu_network(tmp_path, monkeypatch, capsys):
    from test_cli import run_main

    monkeypatch.chdir(tmp_path)
    proc = run_main("convert", "--model", "mnist_cnn", "--dataset", "mnist-bundled", "--method", "qcfs",
                    "--output-dir", tmp_path / "o", monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 2 and "trained with QCFS activations" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_new_recipe_is_selectable_by_name():
    @register_recipe
    class Half(Recipe):
        name = "half_v0"
        summary = "percentile with v_init 0 (test recipe)"

        def neuron_pass(self, c):
            return {**super().neuron_pass(c), "v_init": 0.0}

    try:
        from snnconv.config import load_config

        cfg = load_config(None, {}, values={"conversion": {"method": "half_v0"}})
        assert cfg.pipeline_spec()[2]["v_init"] == 0.0
    finally:
        RECIPES.pop("half_v0")
    with pytest.raises(SnnconvError, match="unknown conversion method"):
        get_recipe("half_v0")


def test_one_run_convert_picks_the_task_and_its_recipe():
    """hf: models and image classifiers go through the same run_convert; the task decides data, metric
    and (for hf:) the recipe, so the pipeline a run reports is the one it ran."""
    from snnconv.tasks import task_for

    hf = RunConfig(model="hf:some/folder", dataset="sentences")
    cnn = RunConfig(model="mnist_cnn", dataset="mnist-bundled")
    assert task_for(hf).name == "embedding" and not task_for(hf).exportable
    assert task_for(cnn).name == "classification" and task_for(cnn).exportable
    assert hf.pipeline_spec(task_for(hf).recipe(hf)) == ["remove_identity", "spiking_transformer"]
    assert cnn.pipeline_spec(task_for(cnn).recipe(cnn)) == cnn.pipeline_spec()


def test_a_new_frontend_is_one_registration(monkeypatch):
    """Model references are resolved through the frontend registry: a registered frontend is picked for
    the references it matches, loads the model and ingests it, with no change to the API."""
    import torch
    from torch import nn

    from snnconv import frontends
    from snnconv.api import ingest, resolve_model
    from snnconv.frontends import FRONTENDS, Frontend, frontend_for, register_frontend

    assert {"hf", "onnx", "torch", "zoo", "checkpoint"} <= set(frontends._registered())
    assert frontend_for("resnet20").name == "zoo" and frontend_for("x.onnx").name == "onnx"
    assert frontend_for("hf:folder").name == "hf" and frontend_for("c.pt").name == "checkpoint"

    @register_frontend
    class Tiny(Frontend):
        name = "tiny_test"

        def matches(self, ref):
            return ref.startswith("tiny:")

        def load(self, cfg, shape, log_fn):
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval(), shape, {"weights": cfg.model}

    try:
        model, shape, source = resolve_model(RunConfig(model="tiny:net", dataset="mnist-bundled"))
        graph, _ = ingest(model, shape)  # a plain nn.Module: the torch frontend ingests it
        assert shape == (1, 28, 28) and source["weights"] == "tiny:net" and graph.kinds()["linear"] == 1
    finally:
        FRONTENDS.pop("tiny_test")
    with pytest.raises(SnnconvError, match="unknown model 'tiny:net'"):
        resolve_model(RunConfig(model="tiny:net", dataset="mnist-bundled"))
