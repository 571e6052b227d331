"""--device: conversion, calibration, evaluation and simulation take a device; on a CPU-only machine the
CPU path is unchanged, touches no CUDA, and a missing GPU is a one-line error before any work.

The tests run on the CPU (CI has no GPU); a GPU machine runs the same code with ``device="cuda"``."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from snnconv.api import ann_accuracy, conversion_pipeline, convert_graph, resolve_model, simulate
from snnconv.config import ConversionConfig, RunConfig
from snnconv.data.datasets import load_dataset
from snnconv.errors import SnnconvError
from snnconv.frontends.torch import from_torch
from snnconv.runtime.device import resolve_device


@pytest.fixture(scope="module")
def mnist():
    model, shape, _ = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist-bundled"), log_fn=lambda *_: None)
    graph, _ = from_torch(model, shape)
    calib = [x for x, _ in load_dataset("mnist-bundled", train=True).subset(128, 1).batches(64)]
    test = load_dataset("mnist-bundled", train=False).subset(96, 0)
    return graph, calib, test


def test_graph_to_moves_tensors_and_keeps_the_source(mnist):
    graph = mnist[0]
    assert graph.to("cpu") is graph  # already there: no copy
    moved = graph.to("cpu")
    assert all(t.device.type == "cpu" for n in moved.nodes.values() for t in n.tensors().values())
    # a node with tensors moves to a new node with the same shape annotation; the source is untouched
    name = next(k for k, n in graph.nodes.items() if n.tensors())
    node = graph.nodes[name]
    assert node.to("cpu").shape == node.shape


@pytest.mark.parametrize("method,calibrate", [("percentile", True), ("sfn", False)])
def test_explicit_cpu_device_gives_the_default_results(mnist, method, calibrate):
    """device='cpu' runs the device code path (statistics, calibration sweep, simulator with a device):
    results equal the device-less run bit for bit."""
    graph, calib, test = mnist
    pipe = lambda: conversion_pipeline(ConversionConfig(method=method, calibrate=calibrate))  # noqa: E731
    snn_a, _ = convert_graph(graph, calib, pipe())
    snn_b, _ = convert_graph(graph, calib, pipe(), device="cpu")
    for name, node in snn_a.nodes.items():
        for k, t in node.tensors().items():
            assert torch.equal(t, snn_b.nodes[name].tensors()[k]), (name, k)
    a = simulate(snn_a, test, 4, batch_size=32)
    b = simulate(snn_b, test, 4, batch_size=32, device="cpu")
    assert a.accuracy() == b.accuracy() and a.synops_per_sample() == b.synops_per_sample()
    assert ann_accuracy(graph, test) == ann_accuracy(graph, test, device="cpu")


def test_calibration_on_a_device_context_matches(mnist):
    """The calibration pass with ctx.device set (the path a GPU takes) corrects exactly as without it."""
    from snnconv.passes import PassContext

    graph, calib, _ = mnist
    spec = conversion_pipeline(ConversionConfig(method="percentile", calibrate=True))
    a = spec.run(graph, PassContext(calibration=calib))
    b = spec.run(graph, PassContext(calibration=calib, device=torch.device("cpu")))
    for name, node in a.nodes.items():
        for k, t in node.tensors().items():
            assert torch.allclose(t, b.nodes[name].tensors()[k], atol=1e-6), (name, k)


@pytest.mark.parametrize("name,message", [("tpu", "unknown device"), ("cuda:7", "CUDA"), ("mps", "unknown device")])
def test_unavailable_devices_are_one_line_errors(name, message):
    if name.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(SnnconvError, match=message if name != "mps" else "unknown device|only cpu and cuda"):
        resolve_device(name)


def test_convert_refuses_a_missing_gpu_before_any_work(tmp_path, monkeypatch, capsys):
    from test_cli import run_main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.chdir(tmp_path)
    proc = run_main("convert", "--device", "cuda", "--output-dir", tmp_path / "o", monkeypatch=monkeypatch, capsys=capsys)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: device 'cuda'")
    assert not (tmp_path / "o").exists()


def test_cpu_runs_never_initialise_cuda():
    """A CPU-only machine pays no CUDA start-up: a whole CPU conversion leaves CUDA uninitialised."""
    code = ("import torch\nfrom snnconv.api import run_convert\nfrom snnconv.config import RunConfig\n"
            "cfg = RunConfig(model='mnist_cnn', dataset='mnist-bundled', timesteps=[1, 2], eval_samples=32, "
            "calib_samples=64, device='cpu')\n"
            "run_convert(cfg, log_fn=lambda *_: None, coverage_fn=lambda *_: None)\n"
            "print(torch.cuda.is_initialized())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
