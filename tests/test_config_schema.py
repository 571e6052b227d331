"""Run-config schema: every key documented in base_config.yaml, templates validate, and errors name
the file, the (dotted) key and what was expected."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from snnconv.config import ConversionConfig, OutputConfig, RunConfig, load_config
from snnconv.errors import SnnconvError

TEMPLATES = Path(__file__).resolve().parent.parent / "configs" / "templates"


def test_base_config_documents_every_key_with_its_default():
    base = yaml.safe_load((TEMPLATES / "base_config.yaml").read_text())
    for f in dataclasses.fields(RunConfig):
        assert f.name in base, f"RunConfig key '{f.name}' missing from base_config.yaml"
    for section, cls in (("conversion", ConversionConfig), ("output", OutputConfig)):
        for f in dataclasses.fields(cls):
            assert f.name in base[section], f"key '{section}.{f.name}' missing from base_config.yaml"
    # the documented values are the defaults
    assert load_config(TEMPLATES / "base_config.yaml", {}) == RunConfig()


def test_templates_validate():
    for name in ("base_config", "mnist-cnn", "resnet18-cifar10", "resnet20-cifar10", "minilm-hf", "onnx-file"):
        cfg = load_config(TEMPLATES / f"{name}.yaml", {})
        assert cfg.model
    assert load_config(TEMPLATES / "minilm-hf.yaml", {}).model.startswith("hf:")
    assert load_config(TEMPLATES / "onnx-file.yaml", {}).model.endswith(".onnx")


@pytest.mark.parametrize("text, key, expected", [
    ("conversion:\n  method: bogus\n", "conversion.method", "one of max, percentile"),
    ("conversion:\n  granularity: pixel\n", "conversion.granularity", "one of layer, channel"),
    ("conversion:\n  percentile: high\n", "conversion.percentile", "expects float"),
    ("conversion:\n  nope: 1\n", "conversion.nope", "expected one of: conversion.method"),
    ("encoding: morse\n", "encoding", "one of direct"),
    ("batch_size: 0\n", "batch_size", "positive integer"),
    ("output:\n  html: maybe\n", "output.html", "expects bool"),
    ("output: yes\n", "output", "must be a mapping"),
    ("passes:\n  - fold_batchnorm\n  - no_such_pass\n", "passes[1]", "unknown pass 'no_such_pass'"),
    ("passes:\n  - {name: threshold_balance, method: median}\n", "passes[0]", "method must be"),
    ("passes:\n  - {threshold_balance: {bogus_setting: 1}}\n", "passes[0]", "bogus_setting"),
    ("passes:\n  - 3\n", "passes[0]", "pass name or a mapping"),
    ("model: {name: resnet20, wieghts: x.pt}\n", "model.wieghts", "expected one of: name, weights"),
    ("dataset: {data_dir: /tmp}\n", "dataset.name", "missing"),
])
def test_errors_name_file_key_and_expectation(tmp_path, text, key, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SnnconvError) as info:
        load_config(p, {})
    msg = str(info.value)
    assert str(p) in msg and f"'{key}'" in msg and expected in msg, msg
    assert "\n" not in msg


def test_grouped_keys_and_pass_forms(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("model: {name: resnet20, weights: r20.pt}\n"
                 "dataset: {name: cifar10, eval_samples: 100, calib_samples: 64}\n"
                 "output: {html: false}\n"
                 "passes:\n  - conversion\n  - {remove_identity: {}}\n")
    cfg = load_config(p, {})
    assert (cfg.model, cfg.weights, cfg.dataset, cfg.eval_samples, cfg.calib_samples) == \
        ("resnet20", "r20.pt", "cifar10", 100, 64)
    assert cfg.output == OutputConfig(html=False, graphs=True)
    spec = cfg.pipeline_spec()  # `conversion` expands to the default pipeline; mapping form normalised
    assert spec[:2] == ["fold_batchnorm", "remove_identity"] and spec[2]["name"] == "threshold_balance"
    assert spec[-1] == {"name": "remove_identity"}
