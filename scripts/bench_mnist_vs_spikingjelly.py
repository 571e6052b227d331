#!/usr/bin/env python
"""snnconv vs SpikingJelly ann2snn on the bundled MNIST CNN: same network, same data, one run.

Both tools convert the trained ``mnist_cnn`` shipped in ``snnconv/assets/mnist_cnn-mnist.pt``
with the same calibration batches (the first ``--calib-samples`` of the seeded permutation of
the MNIST training set that ``snnconv convert`` uses) and are evaluated on the same test images
(MNIST test set, x/255, the normalisation the network was trained with), fed as a constant input
current at every step (direct encoding). Accuracy for every T <= max(T) comes from one run to
max(T): the readout is the output layer summed over time (SpikingJelly, as in its
``ann2snn/examples/cnn_mnist.py``) or its running mean (snnconv), which have the same argmax.

Writes ``<out>/mnist_vs_spikingjelly.json`` and ``<out>/mnist_vs_spikingjelly.md``.

Setup (SpikingJelly's wheel requires torchvision, which does not install beside the pinned CPU
torch, so its dependencies are not installed)::

    pip install --no-deps spikingjelly==2.0.0 loguru

``requests`` (imported by ``spikingjelly.activation_based.ann2snn.utils`` only for its
``download_url`` helper) is replaced by an empty stub module if it is not installed; ``loguru``
(SpikingJelly's logger) likewise, by a stub that forwards to :mod:`logging`, if missing.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import importlib.metadata
import json
import logging
import os
import shlex
import sys
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIMESTEPS = "1,2,4,8,16,32,64"
STUBS: list[str] = []  # modules replaced by stubs in this run (reported in the outputs)


def _install_stubs() -> None:
    """Stub the two SpikingJelly imports that are not installed with ``--no-deps`` and not used here."""
    try:
        import requests  # noqa: F401
    except ImportError:
        # Only spikingjelly.activation_based.ann2snn.utils imports it, for download_url (never called here).
        sys.modules["requests"] = types.ModuleType("requests")
        STUBS.append("requests (empty module; used only by ann2snn.utils.download_url, not called)")
    try:
        import loguru  # noqa: F401
    except ImportError:
        class _Logger:  # loguru-style "{}" formatting forwarded to logging
            def __getattr__(self, level):
                lg = logging.getLogger("spikingjelly")
                fn = getattr(lg, {"success": "info", "trace": "debug", "critical": "critical"}.get(level, level),
                             lg.info)
                return lambda msg, *a, **k: fn(str(msg).format(*a, **k) if a or k else str(msg))

        mod = types.ModuleType("loguru")
        mod.logger = _Logger()
        sys.modules["loguru"] = mod
        STUBS.append("loguru (logger forwarded to the logging module)")


def parse_args(argv=None) -> argparse.Namespace:
    default_data = os.environ.get("SNNCONV_DATA_DIR") or str(REPO.parent / "shared" / "datasets")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=default_data,
                   help="MNIST root (MNIST/raw/*.gz); default $SNNCONV_DATA_DIR or ../shared/datasets")
    p.add_argument("--samples", type=int, default=None, help="test samples (default: all 10000)")
    p.add_argument("--calib-samples", type=int, default=1024, help="training samples used for calibration by both tools")
    p.add_argument("--calib-batch", type=int, default=100,
                   help="calibration batch size for both tools (100 = SpikingJelly's cnn_mnist example); it matters "
                        "for SpikingJelly, whose scale is a momentum-0.1 running average of per-batch statistics")
    p.add_argument("--batch-size", type=int, default=128, help="test batch size (does not change the results)")
    p.add_argument("--timesteps", default=DEFAULT_TIMESTEPS, help="comma-separated T values to report")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks"), help="output folder")
    p.add_argument("--no-extra", action="store_true",
                   help="skip the extra rows (snnconv ablations, SpikingJelly channel-wise + half threshold)")
    p.add_argument("--crosscheck-samples", type=int, default=1000,
                   help="re-simulate each SpikingJelly SNN with snnconv's simulator (SpikingJelly's thresholds) on "
                        "this many test samples and compare predictions (0: skip)")
    p.add_argument("--render-from", metavar="JSON", default=None,
                   help="only rewrite the .md next to JSON from that file (no conversion or simulation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset (snnconv convert uses seed+1)")
    return p.parse_args(argv)


# -- SpikingJelly ---------------------------------------------------------------------------------
@torch.no_grad()
def sj_simulate(snn: torch.nn.Module, test, T: int, batch_size: int, desc: str) -> tuple[list[float], torch.Tensor]:
    """SpikingJelly's rate-coding evaluation (``val`` in ann2snn/examples/cnn_mnist.py): reset the
    network, feed the same image at every step, sum the outputs, score the running sum at every t.
    Returns the accuracy at every t and the predicted classes ``[T, N]``."""
    from spikingjelly.activation_based import functional

    from snnconv.progress import progress

    snn.eval()
    preds = []
    nb = -(-len(test) // batch_size)
    for x, _ in progress(test.batches(batch_size), total=nb, desc=desc):
        functional.reset_net(snn)
        out, p = None, []
        for t in range(T):
            step = snn(x)
            out = step if out is None else out + step
            p.append(out.argmax(1))
        preds.append(torch.stack(p))
    functional.reset_net(snn)
    preds = torch.cat(preds, 1)
    acc = (100.0 * (preds == test.labels.view(1, -1)).sum(1) / len(test)).tolist()
    return acc, preds


def sj_scales(snn: torch.nn.Module) -> list[torch.Tensor]:
    """The calibrated scale s of every converted ReLU, in network order (VoltageScaler(s) after the IF node)."""
    return [m.scale.detach().clone().float() for name, m in snn.named_modules() if name.endswith("scaler1")]


@torch.no_grad()
def crosscheck(snn_graph, scales: list[torch.Tensor], v_init: float, test, n: int, T: int, sj_preds: torch.Tensor,
               batch_size: int) -> dict:
    """Run snnconv's simulator with SpikingJelly's thresholds (and initial membrane) on the first ``n`` test
    samples and compare its predictions at every t with SpikingJelly's own."""
    from snnconv.data.datasets import Split
    from snnconv.runtime.simulator import Simulator

    g = snn_graph.copy()
    neurons = [name for name, node in g.nodes.items() if node.kind == "neuron"]
    if len(neurons) != len(scales):
        return {"error": f"{len(neurons)} snnconv neurons vs {len(scales)} SpikingJelly scalers"}
    for name, s in zip(neurons, scales):
        g.nodes[name] = g.nodes[name].replace(threshold=s.reshape(()) if s.numel() == 1 else s.flatten(),
                                              v_init=v_init)
    sub = Split(test.images[:n], test.labels[:n], test.mean, test.std, test.num_classes)
    sim = Simulator(g, T, collect_stats=False)
    preds = torch.cat([sim.run(x).argmax(-1) for x, _ in sub.batches(batch_size)], 1)
    diff = (preds != sj_preds[:, :n])
    acc = (100.0 * (preds == sub.labels.view(1, -1)).sum(1) / n).tolist()
    sj_acc = (100.0 * (sj_preds[:, :n] == sub.labels.view(1, -1)).sum(1) / n).tolist()
    return {"samples": n, "v_init": v_init, "differing_predictions": int(diff.sum()),
            "samples_differing_at_some_t": int(diff.any(0).sum()),
            "max_accuracy_difference": max(abs(a - b) for a, b in zip(acc, sj_acc))}


def sj_thresholds(snn: torch.nn.Module) -> dict[str, float | list[float]]:
    """The calibrated activation scale of every converted ReLU (= the effective threshold)."""
    out = {}
    for name, mod in snn.named_modules():
        if name.endswith("scaler1"):
            s = mod.scale.detach().flatten()
            out[name.rsplit(".", 1)[0]] = float(s) if s.numel() == 1 else [round(v, 5) for v in s.tolist()]
    return out


def sj_neurons(snn: torch.nn.Module) -> str:
    kinds = sorted({f"{type(m).__name__}(v_threshold={float(m.v_threshold):g}, v_reset={m.v_reset})"
                    for m in snn.modules() if hasattr(m, "v_threshold")})
    return ", ".join(kinds)


@torch.no_grad()
def relu_sizes(model: torch.nn.Module, shape) -> dict[str, int]:
    """Activations per image at every ReLU module (what the calibration statistics see)."""
    sizes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ReLU):
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=name: sizes.__setitem__(n, o[0].numel())))
    model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sizes


# -- snnconv --------------------------------------------------------------------------------------
def snnconv_thresholds(records: list[dict]) -> dict[str, float]:
    for r in records:
        if r.get("pass") == "threshold_balance" and "thresholds" in r:
            return r["thresholds"]
    return {}


def fmt(v: float) -> str:
    return f"{v:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render_from:
        src = Path(args.render_from)
        src.with_suffix(".md").write_text(render_md(json.loads(src.read_text())))
        print(f"wrote {src.with_suffix('.md')}")
        return 0
    torch.set_num_threads(1)  # the benchmark machine is shared with a training job
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _install_stubs()

    from snnconv.api import (ann_accuracy, conversion_pipeline, convert_graph, environment, from_torch, resolve_model,
                             simulate)
    from snnconv.config import ConversionConfig, RunConfig, parse_timesteps
    from snnconv.data.datasets import load_dataset
    from snnconv.passes.threshold_balance import ThresholdBalance
    from snnconv.progress import progress

    import spikingjelly
    from spikingjelly.activation_based import ann2snn

    sj_version = importlib.metadata.version("spikingjelly")
    timesteps = parse_timesteps(args.timesteps, "--timesteps")
    T = max(timesteps)
    t_start = time.time()

    # -- the network and the data, shared by both tools ------------------------------------------
    model, shape, source = resolve_model(RunConfig(model="mnist_cnn", dataset="mnist"))
    test = load_dataset("mnist", args.data_dir, train=False).subset(args.samples, args.seed)
    calib = load_dataset("mnist", args.data_dir, train=True).subset(args.calib_samples, args.seed + 1)
    calib_batches = [x for x, _ in calib.batches(args.calib_batch)]
    print(f"mnist_cnn from {source['weights']}; {len(test)} test samples, {len(calib)} calibration samples "
          f"({len(calib_batches)} batches of {args.calib_batch}); T up to {T}; torch {torch.__version__}, "
          f"spikingjelly {sj_version}", flush=True)

    rows: list[dict] = []

    def add(key, label, tool, acc_all, seconds, settings, thresholds=None, extra=False, more=None):
        more = more or {}
        row = {"key": key, "label": label, "tool": tool, "extra": extra, "settings": settings,
               "accuracy": {str(t): acc_all[t - 1] for t in timesteps}, "accuracy_all_t": acc_all,
               "seconds": round(seconds, 1), "thresholds": thresholds or {}}
        row.update(more)
        rows.append(row)
        print(f"{label:<46} " + " ".join(f"T={t}:{acc_all[t - 1]:6.2f}" for t in timesteps)
              + f"  ({seconds:.0f} s)", flush=True)

    # -- ANN ------------------------------------------------------------------------------------------
    t0 = time.time()
    correct = 0
    with torch.no_grad():
        for x, y in progress(test.batches(args.batch_size), total=-(-len(test) // args.batch_size), desc="ANN"):
            correct += (model(x).argmax(1) == y).sum().item()
    ann_acc = 100.0 * correct / len(test)
    add("ann", "ANN (the nn.Module)", "torch", [ann_acc] * T, time.time() - t0, {})
    graph, _ = from_torch(model, shape)
    ann_graph_acc, ann_macs = ann_accuracy(graph, test, args.batch_size)

    # -- SpikingJelly ann2snn, rate-coding recipe -------------------------------------------------------
    sj_configs = [
        ("sj_max", "SpikingJelly max", dict(mode="max"), False),
        ("sj_p99.9", "SpikingJelly 99.9%", dict(mode="99.9%"), False),
        ("sj_p99.9_channel_half", "SpikingJelly 99.9%, channel-wise, half threshold",
         dict(mode="99.9%", channel_wise=True, half_threshold=True), True),
    ]
    base_snn = None  # any snnconv conversion of the graph; the cross-check overwrites its neurons
    for key, label, kw, extra in sj_configs:
        if extra and args.no_extra:
            continue
        t0, c0 = time.time(), time.process_time()
        recipe = ann2snn.RateCodingRecipe(dataloader=calib_batches, **kw)
        # the converter fuses conv+BN into the traced module's submodules, i.e. into the ANN it is given
        snn = ann2snn.Converter(recipe=recipe).convert(copy.deepcopy(model))
        t_conv = time.time() - t0
        acc, preds = sj_simulate(snn, test, T, args.batch_size, f"{label} T={T}")
        seconds, cpu = time.time() - t0, time.process_time() - c0
        settings = {"recipe": "RateCodingRecipe", "momentum": recipe.momentum, "fuse_flag": recipe.fuse_flag, **kw,
                    "neurons": sj_neurons(snn)}
        more = {"convert_seconds": round(t_conv, 1), "cpu_seconds": round(cpu, 1)}
        if args.crosscheck_samples > 0:
            if base_snn is None:
                base_snn, _ = convert_graph(graph, calib_batches, conversion_pipeline(ConversionConfig()))
            more["crosscheck_snnconv_simulator"] = crosscheck(
                base_snn, sj_scales(snn), 0.5 if kw.get("half_threshold") else 0.0, test,
                min(args.crosscheck_samples, len(test)), T, preds, args.batch_size)
        add(key, label, "spikingjelly", acc, seconds, settings, sj_thresholds(snn), extra, more)

    # -- snnconv ------------------------------------------------------------------------------------------
    sn_configs = [
        ("snnconv_max_layer_v0", "snnconv max, per layer, v_init 0",
         ConversionConfig(method="max", granularity="layer", v_init=0.0), False),
        ("snnconv_p99.9_layer_v0", "snnconv p99.9, per layer, v_init 0",
         ConversionConfig(method="percentile", percentile=99.9, granularity="layer", v_init=0.0), True),
        ("snnconv_p99.9_channel_v0", "snnconv p99.9, per channel, v_init 0",
         ConversionConfig(method="percentile", percentile=99.9, granularity="channel", v_init=0.0), True),
        ("snnconv_default", "snnconv default (p99.9, per channel, v_init 0.5)", ConversionConfig(), False),
    ]
    for key, label, conv, extra in sn_configs:
        if extra and args.no_extra:
            continue
        t0, c0 = time.time(), time.process_time()
        snn, records = convert_graph(graph, calib_batches, conversion_pipeline(conv))
        t_conv = time.time() - t0
        stats = simulate(snn, test, T, args.batch_size)
        acc = stats.accuracy()
        synops = stats.synops_per_sample()
        add(key, label, "snnconv", acc, time.time() - t0, dict(vars(conv)), snnconv_thresholds(records), extra,
            {"convert_seconds": round(t_conv, 1), "cpu_seconds": round(time.process_time() - c0, 1),
             "synops_per_sample": {str(t): round(synops[t - 1]) for t in timesteps},
             "firing_rates": stats.firing_rates()})

    # -- outputs ------------------------------------------------------------------------------------------
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]) \
        if argv is None else "main(" + repr(argv) + ")"
    env = environment()
    env.update({"spikingjelly": sj_version, "spikingjelly_path": os.path.dirname(spikingjelly.__file__)})
    report = {
        "benchmark": "mnist_cnn: snnconv vs SpikingJelly ann2snn (rate coding)",
        "date_utc": now.isoformat(), "command": command, "environment": env, "stubbed_modules": STUBS,
        "model": "mnist_cnn", "weights": source,
        "data": {"dataset": "mnist", "data_dir": str(args.data_dir), "test_samples": len(test),
                 "test_subset_seed": args.seed if args.samples is not None else None,
                 "calib_samples": len(calib), "calib_subset_seed": args.seed + 1, "calib_batch": args.calib_batch,
                 "normalisation": "x / 255 (Split.batches; mean 0, std 1)", "encoding": "direct (constant current)"},
        "timesteps": timesteps, "max_T": T,
        "ann_accuracy": ann_acc, "ann_accuracy_snnconv_ir": ann_graph_acc, "ann_macs_per_sample": ann_macs,
        "relu_activations_per_image": relu_sizes(model, shape),
        "snnconv_percentile_max_samples": ThresholdBalance.Config().max_samples,
        "rows": rows, "seconds": round(time.time() - t_start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mnist_vs_spikingjelly.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "mnist_vs_spikingjelly.md").write_text(render_md(report))
    print(f"wrote {out}/mnist_vs_spikingjelly.json and .md ({report['seconds']:.0f} s)")
    return 0


def render_md(r: dict) -> str:
    ts = r["timesteps"]
    env = r["environment"]
    by_key = {row["key"]: row for row in r["rows"]}
    lines = [
        "# MNIST CNN: snnconv vs SpikingJelly ann2snn",
        "",
        f"Top-1 accuracy (%) on {r['data']['test_samples']} MNIST test images after T timesteps of direct "
        f"(constant-current) input. One trained network (`{r['weights']['weights'].split('snnconv/')[-1]}`), "
        f"the same calibration batches ({r['data']['calib_samples']} training images, batches of "
        f"{r['data']['calib_batch']}) and the same test images for every row, all in one run; accuracy at every T "
        f"comes from a single simulation to T={r['max_T']} scored at each step.",
        "",
        "| method | " + " | ".join(f"T={t}" for t in ts) + " |",
        "|---|" + "---:|" * len(ts),
    ]
    for row in r["rows"]:
        label = row["label"] + (" *" if row["extra"] else "")
        if row["key"] == "ann":
            cells = [fmt(r["ann_accuracy"])] * len(ts)
        else:
            cells = [fmt(row["accuracy"][str(t)]) for t in ts]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any(row["extra"] for row in r["rows"]):
        lines += ["", "\\* extra rows, beyond the two settings of each tool: snnconv ablations that isolate each "
                  "change between the classic setting and snnconv's defaults, and SpikingJelly 2.0's own "
                  "channel-wise + half-threshold option (its closest counterpart to snnconv's defaults)."]
    lines += [
        "",
        "## Setup",
        "",
        f"- Command (from the repository root): `{r['command']}`",
        f"- Date (UTC): {r['date_utc']}",
        f"- spikingjelly {env['spikingjelly']}, torch {env['torch']}, snnconv {env['snnconv']}, "
        f"python {env['python']}, numpy {env['numpy']}, {env['platform']}, {env['threads']} torch thread(s)",
        f"- Test samples: {r['data']['test_samples']} (MNIST test set); calibration: {r['data']['calib_samples']} "
        f"training samples (the seeded subset `snnconv convert` uses, seed {r['data']['calib_subset_seed']}), "
        f"fed to both tools as the same list of {r['data']['calib_batch']}-image batches.",
        f"- Input: {r['data']['normalisation']}, the normalisation the network was trained with; the same "
        "tensor is the input current at every step for both tools.",
        f"- ANN accuracy: {fmt(r['ann_accuracy'])}% for the `nn.Module`, {fmt(r['ann_accuracy_snnconv_ir'])}% "
        "for snnconv's IR of it run as an ANN.",
        "- SpikingJelly: `Converter(recipe=RateCodingRecipe(dataloader=calibration_batches, mode=...))` "
        "on a deep copy of the module, then, per test batch, `functional.reset_net(snn)` and T calls `snn(x)` "
        "with the outputs summed over time (as `val()` in SpikingJelly's `ann2snn/examples/cnn_mnist.py`). "
        "In 2.0.0 the mode and dataloader are arguments of `RateCodingRecipe`, not of `Converter` "
        "(`Converter(mode=..., dataloader=...)` is the pre-2.0 API).",
        "- snnconv: `from_torch` + `convert_graph(graph, calibration_batches, conversion_pipeline(ConversionConfig(...)))`"
        " + `simulate(snn, test, T)`; `stats.accuracy()` gives every t.",
        "- Install: `pip install --no-deps spikingjelly==2.0.0` (its wheel requires torchvision, torchaudio, "
        "scipy, tensorboard, requests, ..., none installed; torchvision would replace the pinned CPU torch) plus "
        "`pip install --no-deps loguru` (SpikingJelly's logger, imported by `ann2snn`). torchvision is not "
        "needed: `ann2snn` and `functional` import without it.",
        "- Stubbed modules in this run: " + ("; ".join(r["stubbed_modules"]) if r["stubbed_modules"] else "none") + ".",
        "",
        "## What differs",
        "",
    ]
    lines += differences(r, by_key)
    timed = [row for row in r["rows"] if row["key"] != "ann"]
    cpu = all("cpu_seconds" in row for row in timed)
    lines += ["", "Run times (conversion + simulation to T=" + str(r["max_T"]) + ", one torch thread; wall-clock "
              "seconds on a shared 2-core machine where other jobs may run, so they are not a careful speed "
              "comparison; snnconv's `simulate` also counts spikes and SynOps per layer, SpikingJelly's loop does "
              "not" + ("; process CPU seconds in brackets" if cpu else "") + "): "
              + ", ".join(f"{row['label']} {row['seconds']:.0f} s"
                          + (f" ({row['cpu_seconds']:.0f} s CPU)" if cpu else "") for row in timed) + ".", ""]
    return "\n".join(lines)


def _mean(v) -> float:
    return float(sum(v) / len(v)) if isinstance(v, list) else float(v)


def differences(r: dict, by_key: dict) -> list[str]:
    """Facts read from SpikingJelly 2.0.0's source (ann2snn/recipes/rate_coding.py, ann2snn/modules.py,
    neuron/integrate_and_fire.py, _ops/reset.py, surrogate.py) and snnconv's (passes/threshold_balance.py,
    passes/activation_stats.py, neurons/integrate_fire.py, runtime/simulator.py)."""
    out = [
        "Both tools replace each ReLU by an integrate-and-fire neuron with **reset by subtraction** that fires "
        "when its membrane reaches the threshold (v >= theta), keep the ANN weights (BN folded into the "
        "convolutions), average pooling and the last linear layer as they are, and read out the output layer "
        "accumulated over time. SpikingJelly's `RateCodingRecipe` inserts `VoltageScaler(1/s) -> "
        "IFNode(v_threshold=1.0, v_reset=None) -> VoltageScaler(s)` in place of each ReLU (channel-wise: "
        "`ChannelVoltageScaler`), which is the same dynamics as snnconv's IF neuron with threshold and spike "
        "amplitude s. Both run all layers within the same step (SpikingJelly: the whole network once per step in "
        "single-step mode; snnconv: each layer on a chunk of steps), so neither adds a per-layer delay. "
        "The differences are in how s is estimated and where the membrane starts:",
        "",
        "- **Scale statistic.** SpikingJelly's `VoltageHook` (per layer) and `ChannelVoltageHook` (per channel) "
        "do not keep the maximum or the percentile of the whole calibration set: for each calibration batch they "
        "take the batch maximum (`mode='max'`) or `torch.quantile(..., 0.999)` of the batch, and the scale is a "
        "running average with momentum 0.1 (the first batch sets it, each later batch moves it 10% towards its "
        "own value), so the batch size and order matter. The quantile is taken over *all* ReLU outputs, zeros "
        "included. snnconv's `max` is the maximum over the whole calibration set, and its percentile is taken "
        "over the positive activations only. In this run both effects make SpikingJelly's scales lower than "
        "snnconv's for the same nominal setting (see the scales below).",
        "- **Granularity.** SpikingJelly's default is one scale per layer (`channel_wise=False`); snnconv's "
        "default is one per channel.",
        "- **Initial membrane.** SpikingJelly's `IFNode(v_reset=None)` starts at v = 0 and `reset_net` puts it "
        "back to 0; snnconv's default starts at v = theta/2 (`v_init=0.5`), which turns the floor of the "
        "spike-count quantiser into rounding. SpikingJelly 2.0 offers this too, only together with "
        "`channel_wise=True` (`half_threshold=True`: `HalfThresholdIFNode`, reset to v_threshold/2).",
        _calib_use(r),
    ]
    th = []
    for row in r["rows"]:
        if not row["thresholds"]:
            continue
        vals = list(row["thresholds"].values())
        per_channel = any(isinstance(v, list) for v in vals) or row["settings"].get("granularity") == "channel"
        th.append(f"{row['label']}: " + ", ".join(f"{_mean(v):.3g}" for v in vals)
                  + (" (channel means)" if per_channel else ""))
    if th:
        out += ["", "Scales (thresholds) in layer order conv1, conv2, conv3, fc1:", ""] + [f"- {t}" for t in th]
    checks = [(row["label"], row["crosscheck_snnconv_simulator"]) for row in r["rows"]
              if "crosscheck_snnconv_simulator" in row]
    if checks:
        n = checks[0][1].get("samples")
        parts = []
        for label, c in checks:
            if "error" in c:
                parts.append(f"{label}: not run ({c['error']})")
            else:
                parts.append(f"{label}: {c['samples_differing_at_some_t']} of {c['samples']} samples with a "
                             f"different prediction at some t, largest accuracy difference "
                             f"{c['max_accuracy_difference']:.2f} points")
        out += ["", f"**Cross-check.** Each SpikingJelly SNN was re-simulated with snnconv's simulator, using "
                f"SpikingJelly's scales as thresholds and its initial membrane, on the first {n} test samples, up "
                f"to T={r['max_T']}: " + "; ".join(parts) + ". Where this is zero, the two simulators compute the "
                "same thing and every accuracy gap between the tools comes from the thresholds and the initial "
                "membrane, not from the simulation."]
    out += [""] + _reading(r, by_key)
    return out


def _calib_use(r: dict) -> str:
    limit = r["snnconv_percentile_max_samples"]
    n, bs = r["data"]["calib_samples"], r["data"]["calib_batch"]
    capped = []
    for name, per_image in r["relu_activations_per_image"].items():
        batches, kept, i = 0, 0, 0
        while kept < limit and i < n:
            kept += per_image * min(bs, n - i)
            i += bs
            batches += 1
        if kept >= limit and i < n:
            capped.append(f"`{name}` ({per_image:,} activations per image) within the first {batches} "
                          f"batches ({min(i, n)} images)")
    text = (f"- **Calibration sample use.** snnconv's percentile keeps at most {limit:,} activation values per "
            "layer (per-layer granularity) or per channel, taken from the calibration batches in order "
            "(`max_samples` of the threshold_balance pass); `max` uses every value.")
    if capped:
        text += (" In this run the per-layer percentile rows reach that limit at the ReLU "
                 + "; and at ".join(capped) + ", so those thresholds come from those images only (the last of "
                 "those batches subsampled).")
    else:
        text += " In this run no layer reaches that limit."
    return text + " SpikingJelly uses every batch, weighted by its running average."


def _reading(r: dict, by_key: dict) -> list[str]:
    pick = [t for t in (2, 4, 8, 16) if t in r["timesteps"]] or r["timesteps"][:4]

    def acc(key):
        return "/".join(f"{by_key[key]['accuracy'][str(t)]:.1f}" for t in pick)

    out = [f"**Reading the table** (accuracy at T={'/'.join(map(str, pick))}):", ""]
    pairs = [("sj_max", "snnconv_max_layer_v0", "Classic setting (max, per layer, v=0)"),
             ("sj_p99.9", "snnconv_p99.9_layer_v0", "99.9th percentile, per layer, v=0")]
    for a, b, what in pairs:
        if a in by_key and b in by_key:
            out.append(f"- {what}: SpikingJelly {acc(a)}, snnconv {acc(b)}.")
    steps = [k for k in ("snnconv_max_layer_v0", "snnconv_p99.9_layer_v0", "snnconv_p99.9_channel_v0",
                         "snnconv_default") if k in by_key]
    if len(steps) > 1:
        what = "one change at a time from the classic setting to its defaults" if len(steps) == 4 else \
            "from the classic setting to its defaults"
        out.append(f"- snnconv, {what}: " + " -> ".join(
            f"{by_key[k]['label'].replace('snnconv ', '')}: {acc(k)}" for k in steps) + ".")
    if "sj_p99.9_channel_half" in by_key and "snnconv_default" in by_key:
        out.append(f"- Closest settings of the two tools: SpikingJelly 99.9%, channel-wise, half threshold "
                   f"{acc('sj_p99.9_channel_half')}; snnconv default {acc('snnconv_default')}.")
    return out


if __name__ == "__main__":
    sys.exit(main())
