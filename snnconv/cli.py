"""Command line: ``snnconv convert | batch | train | evaluate | inspect``.

Every user error is printed as one line on stderr with exit code 2 (no traceback).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from snnconv.errors import SnnconvError

# plain click help (rich_markup_mode=None): flags show as --signed / --no-signed, not with a <bool> metavar,
# and docstring paragraphs are re-wrapped instead of broken where the source lines end
app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="ANN-to-SNN conversion: ingest, convert, simulate, report.")


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _zoo_names() -> list[str]:
    from snnconv.models.zoo import MODELS

    return sorted(MODELS)


@app.command()
def convert(
    model: Optional[str] = typer.Option(None, help=f"zoo name ({', '.join(_zoo_names())}), checkpoint .pt, ONNX "
                                                   "file .onnx or hf:<HuggingFace folder>"),
    weights: Optional[str] = typer.Option(None, help="checkpoint for a zoo model (default: the model cache)"),
    dataset: Optional[str] = typer.Option(None, help="cifar10, cifar100, mnist, mnist-bundled, imagefolder:<path>"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR", help="root of the dataset layouts"),
    timesteps: Optional[str] = typer.Option(None, help="comma-separated T values, e.g. 1,2,4,8,16,32"),
    output_dir: Optional[str] = typer.Option(None, help="run folder (default artifacts/<model>-<dataset>)"),
    config: Optional[str] = typer.Option(None, help="YAML run config (flags override its keys)"),
    method: Optional[str] = typer.Option(None, help="a registered recipe: max | percentile | calibration | qcfs | "
                                                    "sfn (`snnconv methods` lists them with their passes)"),
    percentile: Optional[float] = typer.Option(None, help="percentile for method=percentile (e.g. 99.9, 99.99)"),
    granularity: Optional[str] = typer.Option(None, help="layer | channel thresholds"),
    reset: Optional[str] = typer.Option(None, help="subtract | zero"),
    v_init: Optional[float] = typer.Option(None, help="initial membrane potential as a fraction of threshold"),
    neuron: Optional[str] = typer.Option(None, help="if | lif"),
    leak: Optional[float] = typer.Option(None, help="LIF decay per step (with --neuron lif)"),
    levels: Optional[int] = typer.Option(None, help="method=sfn: spike levels per step (non-QCFS activations)"),
    calibration: Optional[str] = typer.Option(None, help="method=calibration or --calibrate: bias | potential"),
    calib_timesteps: Optional[int] = typer.Option(None, help="method=calibration or --calibrate: T to calibrate for"),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate/--no-calibrate",
                                             help="add Li et al.'s layer-wise calibration to a max/percentile/qcfs "
                                                  "conversion (after --signed)"),
    signed: Optional[bool] = typer.Option(None, "--signed/--no-signed", help="negative spikes cancel over-firing"),
    maxpool: Optional[str] = typer.Option(None, help="max pooling in the SNN: count (exact max of accumulated "
                                                     "inputs, default) | tree (the count mode built from signed "
                                                     "IF neurons: exportable to NIR and the peers) | gate "
                                                     "(Rueckauer et al. 2017) | wta (first-spike winner-take-all)"),
    qcfs_as_clip: Optional[bool] = typer.Option(None, "--qcfs-as-clip/--no-qcfs-as-clip",
                                                help="treat trained QCFS activations as plain clip(0, lambda)"),
    calib_samples: Optional[int] = typer.Option(None, help="calibration samples from the training split"),
    eval_samples: Optional[int] = typer.Option(None, help="test samples to evaluate (default: all)"),
    batch_size: Optional[int] = typer.Option(None),
    encoding: Optional[str] = typer.Option(None, help="input coding: direct | rate | latency | delta"),
    train_if_missing: bool = typer.Option(False, help="train the ANN first when no checkpoint is cached"),
    exports: Optional[list[str]] = typer.Option(None, "--export", help="also write onnx (ann.onnx) | nir (snn.nir) | "
                                                "lava (lava/) into the run folder; repeatable or comma list"),
    seed: Optional[int] = typer.Option(None, help="seed of the calibration/test sample choice and stochastic "
                                                  "encoders (default 0)"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:N: where calibration, evaluation and "
                                                    "simulation run (default cpu)"),
    kernels: Optional[str] = typer.Option(None, help="fp32 | int8: run spike-fed layers with int8 weights (a "
                                          "quantize pass) on exact integer kernels, CPU (default fp32)"),
    target: Optional[str] = typer.Option(None, help="spikingjelly | snntorch | norse | sinabs | lava: the best recipe "
                                         "chosen on validation that this framework's own neurons run (from the "
                                         "weights' recipe card); an error if the network needs what they lack"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --output-dir when it is an earlier snnconv "
                                   "run folder (a folder snnconv did not create is never replaced)"),
):
    """Convert a trained ANN to an SNN and report accuracy vs T, firing rates and energy.

    With no --model/--dataset/--config it converts the bundled MNIST CNN (offline, < 1 min)."""
    from snnconv.api import run_convert
    from snnconv.backends.exports import parse_exports
    from snnconv.config import load_config, parse_timesteps

    overrides = {"model": model, "weights": weights, "dataset": dataset, "data_dir": data_dir,
                 "timesteps": parse_timesteps(timesteps) if timesteps else None, "output_dir": output_dir,
                 "calib_samples": calib_samples, "eval_samples": eval_samples, "batch_size": batch_size,
                 "encoding": encoding, "train_if_missing": train_if_missing or None, "seed": seed, "device": device,
                 "kernels": kernels, "target": target, "conversion": {"method": method, "percentile": percentile, "granularity": granularity,
                                "reset": reset, "v_init": v_init,
                                "neuron": neuron, "leak": leak, "levels": levels, "calibration": calibration,
                                "calibration_timesteps": calib_timesteps, "signed": signed, "calibrate": calibrate,
                                "qcfs_as_clip": qcfs_as_clip, "maxpool": maxpool},
                 "output": {"export": parse_exports(",".join(exports), "--export") if exports else None,
                            "overwrite": overwrite or None}}
    cfg = load_config(config, overrides)
    from snnconv.runtime import distributed

    log = _err
    if distributed.init_from_env():  # launched by torchrun: calibration and evaluation are sharded
        log = _err if distributed.is_main() else (lambda *_: None)
    from snnconv.api import apply_run_defaults

    options_given = any(v is not None for v in overrides["conversion"].values())
    apply_run_defaults(cfg, embedded=model is None and dataset is None and config is None,
                       recipe_given=weights is not None or options_given, log_fn=log,
                       conversion_given=options_given)
    run_convert(cfg, log_fn=log, coverage_fn=lambda t: log("op coverage:\n" + t))


@app.command()
def methods(
    config: Optional[str] = typer.Option(None, help="show the pipelines for this run config's conversion settings"),
):
    """List the conversion methods (registered recipes): what each does, what its input needs, its passes."""
    import json

    from snnconv.config import load_config
    from snnconv.recipes import describe

    cfg = load_config(config, {})
    for r in describe(cfg.conversion):
        typer.echo(f"{r['name']}: {r['summary']}\n  requires: {r['requires']}\n  guarantees: {r['guarantees']}\n"
                   f"  pipeline: {json.dumps(r['pipeline'])}")


#: options `train` and `finetune` share: knowledge distillation (Hinton et al. 2015; snnconv.training.ann), pooling,
#: precision, device and overwriting
TEACHER = typer.Option(None, help="distil from this network (a checkpoint, zoo name, .onnx or hf:<folder>), e.g. "
                       "a larger trained net, or the higher-L QCFS net a lower-L one comes from")
DISTILL = typer.Option(0.5, help="with --teacher: weight of the teacher's soft targets (0..1]")
TEMPERATURE = typer.Option(4.0, help="with --teacher: softmax temperature of the distillation")
KEEP_MAXPOOL = typer.Option(False, "--keep-maxpool", help="with qcfs: keep max pooling (default: trained as "
                            "average pooling, as in Bu et al. 2022)")
BF16 = typer.Option(False, help="bfloat16 autocast (about 2x faster on CPUs with AVX512-BF16)")
TRAIN_DEVICE = typer.Option("cpu", help="cpu, cuda or cuda:N (the checkpoint is saved for CPU either way)")
LABEL_SMOOTHING = typer.Option(0.0, help="label smoothing of the cross-entropy (Szegedy et al. 2016), e.g. 0.1")
CUTOUT = typer.Option(0, help="Cutout square side in pixels (DeVries & Taylor 2017), e.g. 16 for CIFAR; 0 = off")
OVERWRITE_CHECKPOINT = typer.Option(False, "--overwrite",
                                    help="replace an existing checkpoint at --out (or in the model cache)")


@app.command()
def train(
    model: str = typer.Option(..., help="zoo model name"),
    dataset: str = typer.Option(..., help="cifar10, cifar100, mnist, imagefolder:<path>"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    epochs: Optional[int] = typer.Option(None, help="default: 5 for mnist_cnn, 30 otherwise"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.1),
    seed: int = typer.Option(0),
    out: Optional[str] = typer.Option(None, help="checkpoint path (default: the model cache)"),
    activation: str = typer.Option("relu", help="relu, or qcfs (conversion-aware, Bu et al. ICLR 2022)"),
    levels: int = typer.Option(4, help="QCFS quantization levels L (with --activation qcfs)"),
    keep_maxpool: bool = KEEP_MAXPOOL,
    bf16: bool = BF16,
    device: str = TRAIN_DEVICE,
    teacher: Optional[str] = TEACHER,
    distill: float = DISTILL,
    temperature: float = TEMPERATURE,
    label_smoothing: float = LABEL_SMOOTHING,
    cutout: int = CUTOUT,
    overwrite: bool = OVERWRITE_CHECKPOINT,
):
    """Train a zoo ANN (ReLU or QCFS), optionally distilling from a teacher network (Hinton et al. 2015);
    resumable: re-run the same command to continue."""
    from snnconv.api import TRAIN_PLAN
    from snnconv.api import train as do_train
    from snnconv.models.zoo import build_model

    build_model(model)
    do_train(model, dataset, data_dir, epochs or TRAIN_PLAN.get(model, (30,))[0], batch_size, lr, out, seed,
             log_fn=_err, activation=activation, levels=levels, bf16=bf16, device=device, overwrite=overwrite,
             keep_maxpool=keep_maxpool, teacher=teacher, distill=distill, temperature=temperature,
             label_smoothing=label_smoothing, cutout=cutout)


@app.command()
def finetune(
    model: str = typer.Option(..., help="zoo model name"),
    dataset: str = typer.Option(..., help="cifar10, cifar100, mnist, imagefolder:<path>"),
    weights: str = typer.Option(..., help="trained ReLU checkpoint to start from"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.02),
    seed: int = typer.Option(0),
    out: Optional[str] = typer.Option(None, help="checkpoint path (default: the model cache)"),
    levels: int = typer.Option(4, help="QCFS quantization levels L"),
    keep_maxpool: bool = KEEP_MAXPOOL,
    bf16: bool = BF16,
    device: str = TRAIN_DEVICE,
    teacher: Optional[str] = TEACHER,
    distill: float = DISTILL,
    temperature: float = TEMPERATURE,
    label_smoothing: float = LABEL_SMOOTHING,
    cutout: int = CUTOUT,
    overwrite: bool = OVERWRITE_CHECKPOINT,
):
    """Fine-tune a trained ReLU ANN into QCFS form (thresholds start at the 99.9th percentile), or a
    QCFS ANN to another number of levels L (thresholds start at the trained ones), optionally distilling
    from a teacher network (Hinton et al. 2015)."""
    from snnconv.api import train as do_train
    from snnconv.models.zoo import build_model

    build_model(model)
    if not Path(weights).is_file():
        raise SnnconvError(f"weights file {weights} not found")
    do_train(model, dataset, data_dir, epochs, batch_size, lr, out, seed, log_fn=_err, activation="qcfs",
             levels=levels, init_from=weights, bf16=bf16, device=device, overwrite=overwrite, keep_maxpool=keep_maxpool,
             teacher=teacher, distill=distill, temperature=temperature, label_smoothing=label_smoothing, cutout=cutout)


@app.command()
def swa(
    model: str = typer.Option(..., help="zoo model name"),
    dataset: str = typer.Option(..., help="cifar10, cifar100, mnist, imagefolder:<path>"),
    weights: list[str] = typer.Option(..., help="checkpoints to average (repeat: --weights a.pt --weights b.pt)"),
    out: str = typer.Option(..., help="checkpoint path for the averaged model"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    batch_size: int = typer.Option(256, help="batch size of the BatchNorm re-estimation pass"),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file at --out"),
):
    """Average the weights of checkpoints from one training trajectory, e.g. the ends of successive
    finetune cycles (SWA, Izmailov et al. 2018), re-estimate BatchNorm statistics, report test accuracy."""
    from snnconv.api import average_weights
    from snnconv.models.zoo import build_model

    build_model(model)
    average_weights(model, dataset, data_dir, weights, out, batch_size, seed, log_fn=_err, overwrite=overwrite)


@app.command("finetune-snn")
def finetune_snn(
    snn: str = typer.Option(..., help="a converted SNN (snn.pt from convert)"),
    dataset: str = typer.Option(..., help="the dataset it was converted for (training part used, validation held out)"),
    timesteps: int = typer.Option(..., help="the T to fine-tune for (e.g. 1 or 2)"),
    out: str = typer.Option(..., help="where to save the fine-tuned SNN (IR file)"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    epochs: int = typer.Option(2),
    lr: float = typer.Option(1e-4, help="Adam learning rate (cosine decay)"),
    batch_size: int = typer.Option(64),
    seed: int = typer.Option(0),
    teacher: Optional[str] = typer.Option(None, help="distil from this ANN (a checkpoint, zoo name, .onnx or "
                                          "hf:<folder>), e.g. the network the SNN was converted from"),
    distill: float = typer.Option(0.5, help="with --teacher: weight of the teacher's soft targets (0..1)"),
    temperature: float = typer.Option(4.0, help="with --teacher: softmax temperature of the distillation"),
    checkpoint_steps: Optional[bool] = typer.Option(None, "--checkpoint-steps/--no-checkpoint-steps",
                                                    help="recompute each time step in the backward pass instead of "
                                                         "keeping its activations (default: when BPTT would keep "
                                                         "over a quarter of the machine's memory per batch)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file at --out"),
):
    """Hybrid fine-tuning: train a converted SNN through time with surrogate gradients (BPTT over T steps;
    weights, thresholds and initial membranes), keeping the epoch best on the validation split."""
    from snnconv.api import finetune_snn as run

    if timesteps < 1 or epochs < 0:
        raise SnnconvError("--timesteps must be >= 1 and --epochs >= 0")
    if not 0 <= distill <= 1 or temperature <= 0:
        raise SnnconvError(f"--distill must be in [0, 1] (got {distill}) and --temperature > 0 (got {temperature})")
    run(snn, dataset, data_dir, timesteps, out, epochs, lr, batch_size, seed, overwrite, log_fn=_err,
        teacher=teacher, distill=distill, temperature=temperature, checkpoint_steps=checkpoint_steps)


@app.command()
def evaluate(
    snn: Optional[str] = typer.Option(None, help="a converted SNN (snn.pt from convert) to simulate"),
    model: Optional[str] = typer.Option(None, help="zoo model (evaluates the ANN)"),
    weights: Optional[str] = typer.Option(None),
    dataset: str = typer.Option("mnist-bundled"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    timesteps: str = typer.Option("1,2,4,8,16,32"),
    eval_samples: Optional[int] = typer.Option(None),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    kernels: str = typer.Option("fp32", help="fp32 | int8 (exact integer kernels for spike-fed int8-weight "
                                "layers; CPU)"),
):
    """Evaluate an ANN checkpoint, or a converted SNN at several T."""
    from snnconv.api import evaluate as run
    from snnconv.config import parse_timesteps

    result = run(snn=snn, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                 timesteps=parse_timesteps(timesteps), eval_samples=eval_samples, device=device, log_fn=_err, kernels=kernels)
    if "snn_accuracy" in result:
        for t, acc in result["snn_accuracy"].items():
            typer.echo(f"T={t}: {acc:.2f}%")
    else:
        typer.echo(f"ANN accuracy: {result['ann_accuracy']:.2f}%")


@app.command()
def inspect(
    target: str = typer.Argument(..., help="zoo model name, checkpoint .pt, ONNX file .onnx, hf:<folder> or a saved "
                                           "IR (snn.pt/ann.pt)"),
    dataset: str = typer.Option("cifar10", help="sets input shape and classes for zoo models"),
):
    """Print the IR and the op-coverage table of a model."""
    from snnconv.api import inspect_target

    graph, table = inspect_target(target, dataset, log_fn=_err)
    if table:
        typer.echo(table + "\n")
    typer.echo(graph.summary())


@app.command()
def batch(
    configs: list[str] = typer.Argument(..., help="run configs and/or sweep files (YAML)"),
    output_dir: str = typer.Option("artifacts/batch", help="batch folder: one subfolder per item + summary"),
    resume: bool = typer.Option(False, help="skip items whose folder holds a report made from the same config"),
    jobs: int = typer.Option(1, help="items run in parallel (worker processes)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE override for every item (dotted keys, "
                                                                 "YAML values), e.g. --set eval_samples=100"),
    overwrite: bool = typer.Option(False, "--overwrite", help="run the items of an existing snnconv batch folder again, replacing their run folders"),
):
    """Run many conversions (config files, sweep grids); one failed item does not stop the others.

    Writes <output-dir>/<item>/ per item and summary.json, summary.md, index.html; exit code 1 if an item failed."""
    from snnconv.batch import parse_sets, run_batch

    summary = run_batch(configs, output_dir, parse_sets(set_), resume=resume, jobs=jobs, log_fn=_err, overwrite=overwrite)
    if summary["failed"]:
        raise typer.Exit(1)


def _export_onnx(model: str, weights: Optional[str], dataset: str, data_dir: Optional[str], out: str,
                 overwrite: bool = False, **_) -> None:
    """`export --format onnx`: the ANN (zoo model + weights, checkpoint or .onnx) as an ONNX file."""
    from snnconv.api import ingest, resolve_model
    from snnconv.backends.onnx_export import export_onnx
    from snnconv.config import RunConfig

    from snnconv.output import check_output_file

    check_output_file(out, overwrite)
    m, shape, _ = resolve_model(RunConfig(model=model, weights=weights, dataset=dataset, data_dir=data_dir), _err)
    graph, _ = ingest(m, shape)
    info = export_onnx(graph, out, shape, overwrite=overwrite)
    _err(f"wrote {info['path']} (ONNX opset {info['opset']}, {info['nodes']} nodes; onnx.checker passed, "
         f"onnxruntime vs snnconv max abs diff {info['max_abs_diff']:.1e})")


def _load_snn(model: str):
    from snnconv.ir import Graph

    if not model.endswith(".pt"):
        raise SnnconvError(f"--model must be a converted SNN saved by `snnconv convert` (snn.pt), got {model!r}")
    return Graph.load(model)


def _export_nir(model: str, out: str, dt: float = 1.0, pool: str = "avg", overwrite: bool = False,
                dynamics: Optional[str] = None, **_) -> None:
    """`export --format nir`: the converted SNN (snn.pt), lowered exactly to NIR form (docs/nir.md)."""
    from snnconv.backends.nir import export_nir

    info = export_nir(_load_snn(model), out, dt=dt, pool=pool, overwrite=overwrite, dynamics=dynamics)
    nodes = ", ".join(f"{k} {v}" for k, v in info["nodes"].items())
    _err(f"wrote {info['path']} (NIR {info['nir_version']}, {info['dynamics']} dynamics, dt={dt}, {nodes}; "
         f"{info['edges']} edges)")


def _export_lava(model: str, out: str, dataset: str = "mnist-bundled", data_dir: Optional[str] = None,
                 samples: int = 4, timesteps: int = 16, overwrite: bool = False, lava_route: str = "if", **_) -> None:
    """`export --format lava`: quantized Loihi 2 network files, hardware report, and a Lava run compared with snnconv."""
    from snnconv.backends.lava import export_lava

    export_lava(_load_snn(model), out, dataset=dataset, data_dir=data_dir, samples=samples, timesteps=timesteps,
                log_fn=_err, overwrite=overwrite, route=lava_route)


def _export_names() -> list[str]:
    from snnconv.backends.exports import EXPORT_TARGETS

    return list(EXPORT_TARGETS)


#: ``snnconv export --format F`` handlers for the formats with their own options (all called with the same
#: keyword arguments); any other registered export target (snnconv.backends.exports) is written generically
EXPORTERS = {"onnx": _export_onnx, "nir": _export_nir, "lava": _export_lava}


def _export_registered(format: str, model: str, out: str, dataset: str = "mnist-bundled",
                       data_dir: Optional[str] = None, overwrite: bool = False, **_) -> None:
    from snnconv.backends.exports import EXPORT_TARGETS
    from snnconv.output import check_output_file

    check_output_file(out, overwrite)
    EXPORT_TARGETS[format].backend().write_export(out, _load_snn(model), None, None, dataset, data_dir, _err)


@app.command()
def export(
    format: str = typer.Option(..., "--format", help="output format: " + " | ".join(_export_names())),
    model: str = typer.Option(..., help="zoo name, checkpoint .pt or .onnx file"),
    dataset: str = typer.Option("mnist-bundled", help="sets input shape and classes (and the zoo checkpoint)"),
    weights: Optional[str] = typer.Option(None, help="checkpoint for a zoo model (default: the model cache)"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    out: str = typer.Option(..., help="output file (written atomically)"),
    dt: float = typer.Option(1.0, help="nir: time step the file's r / tau are written for (docs/nir.md)"),
    pool: str = typer.Option("avg", help="nir: avg (NIR AvgPool2d) | sum (SumPool2d, 1/k^2 folded; for Norse)"),
    dynamics: Optional[str] = typer.Option(None, help="nir: snnconv (subtractive reset, v_init, graded spikes as "
                                           "documented metadata, for snnconv.interop) | nir (NIR fields only); "
                                           "default: snnconv when the neurons need it"),
    samples: int = typer.Option(4, help="lava: test samples run in Lava and in snnconv for the spike comparison"),
    timesteps: int = typer.Option(16, help="lava: steps of that comparison run"),
    lava_route: str = typer.Option("if", help="lava: if (the converted spiking network: snnconv's neuron process) | "
                                   "sdn (lava.proc.sdn Sigma-Delta neurons, graded spikes; docs/lava.md)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out written by snnconv (a file, or an snnconv lava folder)"),
):
    """Write a model in another format (onnx: the ANN before conversion, checked with onnxruntime;
    nir / lava: a converted SNN, --model artifacts/<run>/snn.pt)."""
    if format not in _export_names():
        raise SnnconvError(f"unknown export format '{format}' (known: {', '.join(_export_names())})")
    handler = EXPORTERS.get(format) or (lambda **kw: _export_registered(format, **kw))
    handler(model=model, weights=weights, dataset=dataset, data_dir=data_dir, out=out, dt=dt, pool=pool,
                      dynamics=dynamics, samples=samples, timesteps=timesteps, lava_route=lava_route,
                      overwrite=overwrite)


@app.command("import")
def import_(
    file: str = typer.Argument(..., help="file to read (a NIR .nir HDF5 graph)"),
    format: str = typer.Option("nir", "--format", help="input format: nir"),
    out: str = typer.Option(..., help="where to save the snnconv graph (snn.pt; simulate with evaluate --snn)"),
    dt: Optional[float] = typer.Option(None, help="time step (default: the file's metadata dt, else 1)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file at --out"),
):
    """Read a spiking network from another format into the snnconv IR."""
    from snnconv.backends.nir import import_nir

    from snnconv.output import atomic_file, check_output_file

    if format != "nir":
        raise SnnconvError(f"unknown import format '{format}' (known: nir)")
    check_output_file(out, overwrite)
    graph = import_nir(file, dt)
    with atomic_file(out, overwrite) as tmp:
        graph.save(tmp)
    _err(f"wrote {out} ({len(graph.nodes)} nodes, {sum(1 for n in graph.nodes.values() if n.spiking)} spiking)")


@app.command()
def verify(
    file: str = typer.Argument(..., help="NIR file to check"),
    targets: str = typer.Option("spikingjelly,snntorch,norse,sinabs", help="comma-separated deployment targets "
                                "(also: lava, the Lava / Loihi 2 export run in Lava)"),
    route: str = typer.Option("loader", help="loader: snnconv.interop builds the file with each target's own "
                              "neurons (honours snnconv dynamics); importer: the target's own NIR importer "
                              "(spikingjelly, norse, snntorch; plain NIR semantics only)"),
    dataset: Optional[str] = typer.Option(None, help="inputs from this dataset's test split (default: mnist-bundled "
                                                     "for 1x28x28 inputs, else uniform random inputs)"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    samples: int = typer.Option(64, help="samples to run"),
    timesteps: int = typer.Option(8),
    min_agreement: float = typer.Option(99.0, help="fail below this top-1 agreement with snnconv (%)"),
    max_acc_diff: float = typer.Option(0.3, help="fail when a target's accuracy differs more (points)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the report as JSON here"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file at --json"),
):
    """Run a NIR file in snnconv and in each deployment target; exit 1 when any target is missing, fails,
    or disagrees with snnconv beyond the tolerances."""
    import json

    from snnconv.backends import verify as V
    from snnconv.output import atomic_file, check_output_file

    if json_out:
        check_output_file(json_out, overwrite)
    names = [p.strip() for p in targets.split(",") if p.strip()]
    if route not in ("loader", "importer"):
        raise SnnconvError(f"unknown route '{route}' (known: loader, importer)")
    x, y, inputs = V.verify_inputs(file, dataset, data_dir, samples)
    if route == "importer":
        bad = [p for p in names if p not in V.PEERS]
        if bad:
            raise SnnconvError(f"no NIR importer route for {', '.join(bad)} (importers: {', '.join(V.PEERS)})")
        rep = V.verify(file, x, timesteps, names)
        text = V.format_report(rep)
        failures = [f"{p}: {e['status']}" if e.get("status") != "ran" else f"{p}: agreement "
                    f"{100 * e['prediction_agreement']:.2f}%" for p, e in rep["peers"].items()
                    if e.get("status") != "ran" or 100 * e["prediction_agreement"] < min_agreement]
    else:
        rep = V.verify_targets(file, x, timesteps, names, y)
        text = V.format_targets(rep)
        failures = V.gate(rep, min_agreement, max_acc_diff)
    rep["inputs"] = inputs
    rep["failures"] = failures
    typer.echo(text)
    if json_out:
        with atomic_file(json_out, overwrite) as tmp:
            tmp.write_text(json.dumps(rep, indent=2))
    if failures:
        _err("verify FAILED: " + "; ".join(failures))
        raise typer.Exit(1)


@app.command()
def evolve(
    model: str = typer.Option("mnist_cnn", help="zoo model name or checkpoint .pt (its output must be a linear readout)"),
    weights: Optional[str] = typer.Option(None, help="checkpoint for a zoo model (default: the model cache / bundled)"),
    dataset: str = typer.Option("mnist", help="dataset the model was trained on (clean); the stream is its test split"),
    data_dir: Optional[str] = typer.Option(None, envvar="SNNCONV_DATA_DIR"),
    shift: str = typer.Option("rotate:45", help="shift of the streamed data: rotate:DEG | invert | noise:STD | contrast:F | none"),
    rule: str = typer.Option("rstdp,ed", help="comma-separated plasticity rules for the readout: rstdp, ed"),
    layers: str = typer.Option("readout", help="what adapts: readout | readout+hidden (also the last hidden "
                               "layer, learners <rule>+hidden) | readout,readout+hidden (both, one stream)"),
    timesteps: int = typer.Option(32),
    clean: int = typer.Option(1000, help="clean samples at the start of the stream"),
    shifted: int = typer.Option(4000, help="shifted samples after them"),
    heldout: int = typer.Option(1000, help="other test samples scored after the stream (clean and shifted)"),
    window: int = typer.Option(500, help="sliding window of the accuracy curve"),
    batch_size: int = typer.Option(20, help="stream batch: predicted, then learned from"),
    lr: Optional[float] = typer.Option(None, help="learning rate for every rule (default: per-rule defaults)"),
    seed: int = typer.Option(0),
    output_dir: str = typer.Option("artifacts/evolve", help="run folder: evolve.json, evolve.png, snn_<rule>.pt"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --output-dir when it is an earlier snnconv run folder"),
):
    """Adapt a converted SNN's readout online (prequential) on a shifted data stream with R-STDP or ED,
    and plot accuracy over the stream with and without evolution."""
    from snnconv.learning.evolve import evolve_run

    rules = tuple(r.strip() for r in rule.split(",") if r.strip())
    rep = evolve_run(output_dir, model, dataset, data_dir, weights, shift, rules, timesteps, clean, shifted, window,
                     batch_size, heldout=heldout, seed=seed, lr=lr, overwrite=overwrite, log_fn=_err,
                     layers=tuple(x.strip() for x in layers.split(",") if x.strip()))
    for k, v in rep["prequential_accuracy"].items():
        typer.echo(f"{k:>12}: stream shifted part {v['shifted_part']:.2f}%, last {window} {v['last_window']:.2f}%, "
                   f"held-out shifted {rep['heldout']['shifted'][k]:.2f}%, clean {rep['heldout']['clean'][k]:.2f}%")
    _err(f"wrote {output_dir}/ (evolve.json, evolve.png, snn_*.pt)")


def main() -> None:
    logging.basicConfig(level=os.environ.get("SNNCONV_LOG", "WARNING"), format="%(message)s")
    try:
        app()  # standalone mode: usage errors exit 2 with typer's message
    except SnnconvError as e:
        _err(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
