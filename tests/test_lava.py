"""Lava export: a converted network quantized to Loihi 2 fixed point runs in Lava (lava-nc 0.9.0,
Python 3.9 side venv from scripts/setup_lava.sh, Loihi2SimCfg fixed_pt) and its spike trains equal
snnconv's IF kernel run of the same integer network, layer by layer."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from snnconv.api import convert_module
from snnconv.backends import lava
from snnconv.config import ConversionConfig
from snnconv.errors import SnnconvError


def _net(cfg=ConversionConfig(reset="zero", v_init=0.0)):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                      nn.Linear(3 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    return convert_module(m, (1, 6, 6), [torch.rand(32, 1, 6, 6)], cfg)


def test_quantized_network_and_hardware_report():
    q = lava.quantize(_net(), torch.rand(2, 1, 6, 6))
    l0, l1 = q["layers"]
    assert l0["size"] == 3 * 6 * 6 and l1["size"] == 10 and l1["n_in"] == 108
    assert l1["w_int"].min() >= -256 and l1["w_int"].max() <= 254 and (l1["w_int"] % 2 == 0).all()
    assert abs(l0["bias_mant"]).max() <= 4095 and 0 <= l0["bias_exp"].min() and l0["bias_exp"].max() <= 7
    hw = lava.hardware_report(q)
    assert hw["total_neurons"] == 118 and hw["total_synapses"] == l1["w_int"].size and hw["fits_one_chip"]
    ref = lava.reference_spikes(q, 10)
    assert ref[0].sum() > 0 and ref[1].sum() > 0  # the comparison below is not vacuous


def test_refusals():
    with pytest.raises(SnnconvError, match="Lava/Loihi.*--reset zero"):
        lava.quantize(_net(ConversionConfig()), torch.rand(1, 1, 6, 6))
    with pytest.raises(SnnconvError, match="IF neurons"):
        lava.quantize(_net(ConversionConfig(reset="zero", v_init=0.0, neuron="lif", leak=0.9)),
                      torch.rand(1, 1, 6, 6))


def test_missing_lava_venv_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNCONV_LAVA_VENV", str(tmp_path / "none"))
    with pytest.raises(SnnconvError, match="setup_lava.sh"):
        lava.lava_python()


def test_lava_run_matches_snnconv(tmp_path):
    try:
        lava.lava_python()
    except SnnconvError as e:
        pytest.skip(f"Lava venv absent: {e}")
    rep = lava.export_lava(_net(), tmp_path / "out", x=torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3)),
                           timesteps=10, log_fn=lambda *_: None)
    comp = rep["comparison"]
    assert comp["identical"], comp
    assert all(v["snnconv_spikes"] > 0 for v in comp["layers"].values())
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["comparison"]["identical"] and (tmp_path / "out" / "network.npz").is_file()
    assert (tmp_path / "out" / "network.net").is_file() and (tmp_path / "out" / "hardware.md").is_file()
