"""Python API: resolve a model, ingest it, run the conversion pipeline, simulate and report.

The CLI is a thin layer over these functions::

    from snnconv.api import convert_module, simulate
    snn = convert_module(model, (3, 32, 32), calibration_batches)
    stats = simulate(snn, test_split, timesteps=32)
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from snnconv import checkpoints
from snnconv.config import ConversionConfig, RunConfig
from snnconv.data.datasets import Split, check_dataset_name, dataset_info, load_dataset, load_part, load_train_val
from snnconv.encoders import Encoder
from snnconv.errors import SnnconvError
from snnconv.frontends import Frontend, register_frontend
from snnconv.frontends.torch import from_torch
from snnconv.ir import Graph
from snnconv.models.zoo import MODELS, build_model
from snnconv.output import atomic_dir
from snnconv.passes import PassContext, Pipeline
from snnconv.progress import ProgressLines, progress
from snnconv.recipes import get_recipe
from snnconv.report import environment, framework_line, write_report
from snnconv.runtime.interpreter import run_ann
from snnconv.runtime.device import resolve_device
from snnconv.runtime.simulator import E_MAC_PJ, SimStats, Simulator
from snnconv.runtime.lowp import KERNEL_SETS, int8_summary
from snnconv.tasks import Job, Task, energy_fields, register_task, task_for

log = logging.getLogger("snnconv")

#: zoo model -> (default epochs, minutes per epoch of ``snnconv train`` in fp32, minutes per epoch with ``--bf16`` on a
#: CPU with native bf16), batch 128, channels-last, 2 threads, 45,000 training images plus validation, from the
#: step times in docs/benchmarks/train_speed.md: fp32 on a 2-core AVX2 EPYC (resnet20 0.37 s per step; resnet18
#: 3.96 s per step, one idle epoch of 19 min with validation, docs/benchmarks/train_resnet18_cifar10_qcfs4.md);
#: bf16 on a 2-core AVX512-BF16 EPYC with the fused QCFS backward (resnet20 0.175 s, resnet18 1.19 s per step,
#: 2026-12-06). resnet34 and vgg16 are scaled by their MACs. Used to tell users what `snnconv train` will cost
#: before they start it.
TRAIN_PLAN = {"mnist_cnn": (5, 0.5, 0.5), "resnet20": (30, 2.3, 1.2), "resnet18": (30, 19, 7.5),
              "resnet34": (30, 38, 15), "vgg16": (30, 13, 5.1), "vgg16_avg": (30, 13, 5.1)}


def checkpoint_key(dataset: str) -> str:
    return "mnist" if dataset == "mnist-bundled" else dataset.replace(":", "_").replace("/", "_")


def train_command(model: str, dataset: str, method: str = "percentile") -> str:
    """The `snnconv train` command for a zoo model, trained as conversion ``method`` wants it
    (:attr:`Recipe.trained_as`: QCFS for ``qcfs`` and ``sfn``), with its time on this kind of CPU (``--bf16``
    where the CPU runs bf16 natively, fp32 where oneDNN would emulate it)."""
    from snnconv.training.ann import bf16_native

    epochs, fp32, bf16 = TRAIN_PLAN.get(model, (30, 10, 6))
    native = bf16_native()
    per_epoch = bf16 if native else fp32
    activation, levels = get_recipe(method).trained_as
    qcfs = f" --activation qcfs --levels {levels}" if activation == "qcfs" else ""
    hint = ("" if qcfs else "; for few timesteps add --activation qcfs --levels 4 and convert with --method qcfs")
    return (f"snnconv train --model {model} --dataset {dataset} --epochs {epochs}{qcfs}{' --bf16' if native else ''} "
            f"(about {epochs * per_epoch / 60:.1f} h at {per_epoch:g} min per epoch on a 2-core CPU "
            f"{'with native bf16' if native else 'without bf16 hardware (fp32)'}; "
            f"minutes on a GPU with --device cuda{hint})")


def zoo_weights(model: str, dataset: str) -> Path:
    """The weights ``convert --model <model> --dataset <dataset>`` takes: the model cache's, else the package's,
    else the committed benchmark checkpoints' (the cache path, absent, when there are none)."""
    key = checkpoint_key(dataset)
    path = checkpoints.cached_checkpoint(model, key)
    if not path.is_file():
        path = checkpoints.bundled_checkpoint(model, key) or checkpoints.repo_checkpoint(model, key) or path
    return path


def recipe_card(weights: str | Path) -> dict | None:
    """The recipe chosen for a checkpoint on the validation split, when one was: ``<stem>.recipe.json`` beside
    the weights (``resnet18-cifar10.pt`` -> ``resnet18-cifar10.recipe.json``, written by
    ``scripts/choose_recipe.py``): the conversion settings (``conversion``), the name of the choice
    (``chosen``), its ``criterion`` and the ``checkpoint_sha256`` it was chosen for. A card written for other
    weights (hash mismatch) is not used (``None``, with ``"stale"`` said by the caller); a malformed one is a
    one-line error naming the file and key."""
    import dataclasses
    import hashlib
    import json

    path = Path(weights)
    card_path = path.with_name(path.stem + ".recipe.json")
    if not card_path.is_file() or not path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        raise SnnconvError(f"recipe card {card_path}: not readable JSON ({e})") from None
    known = {f.name for f in dataclasses.fields(ConversionConfig)}
    for key, kind in (("conversion", dict), ("chosen", str), ("criterion", str), ("checkpoint_sha256", str)):
        if not isinstance(card.get(key) if isinstance(card, dict) else None, kind):
            raise SnnconvError(f"recipe card {card_path}: key '{key}' missing or not a {kind.__name__}")
    bad = sorted(set(card["conversion"]) - known)
    if bad:
        raise SnnconvError(f"recipe card {card_path}: key 'conversion.{bad[0]}' is not a conversion setting")
    card["path"] = str(card_path)
    card["stale"] = hashlib.sha256(path.read_bytes()).hexdigest() != card["checkpoint_sha256"]
    return card


def resolve_model(cfg: RunConfig, log_fn=print) -> tuple[nn.Module, tuple[int, ...], dict]:
    """The trained model to convert, its per-sample input shape and where its weights came from, loaded by the
    registered frontend that takes ``cfg.model`` (:mod:`snnconv.frontends`): a zoo name, a checkpoint, a
    ``.onnx`` file (then the first item is the checked ``onnx.ModelProto``) or ``hf:<folder>``. Turn it into a
    graph with :func:`ingest`."""
    from snnconv.frontends import frontend_for

    frontend = frontend_for(cfg.model)
    if frontend is None:
        build_model(cfg.model)  # raises the 'unknown model' error
        raise AssertionError("unreachable")
    shape = None
    if frontend.shape_from_dataset:
        check_dataset_name(cfg.dataset)
        in_ch, _ = dataset_info(cfg.dataset)
        shape = (in_ch, 28, 28) if in_ch == 1 else (in_ch, 32, 32)
    return frontend.load(cfg, shape, log_fn)


def _load_zoo_module(name: str, ckpt: dict, path: Path, cfg: RunConfig, shape) -> tuple[nn.Module, tuple, dict]:
    """A zoo architecture with the checkpoint's weights (and its QCFS activations when trained with them)."""
    _, ncls = dataset_info(cfg.dataset)
    model = with_activation(build_model(name, num_classes=ncls, in_channels=shape[0]), ckpt.get("activation", "relu"),
                            ckpt.get("levels", 0), ckpt.get("maxpool_to_avgpool", True))
    checkpoints.apply_state_dict(model, ckpt, str(path))
    return model.eval(), shape, {"weights": str(path), "checkpoint_accuracy": ckpt.get("accuracy"),
                                 "activation": ckpt.get("activation", "relu"), "levels": ckpt.get("levels", 0)}


@register_frontend
class ZooFrontend(Frontend):
    """A zoo model name: its weights from ``--weights``, the model cache, the package or the committed
    benchmark checkpoints, else the exact train command (or training first with ``--train-if-missing``)."""

    name = "zoo"

    def matches(self, ref: str) -> bool:
        return ref in MODELS

    def load(self, cfg, shape, log_fn):
        name = cfg.model
        path = Path(cfg.weights) if cfg.weights else zoo_weights(name, cfg.dataset)
        if not path.is_file():
            if cfg.weights:
                raise SnnconvError(f"weights file {path} not found")
            if not cfg.train_if_missing:
                places = ", ".join(str(p) for p in (path.parent, checkpoints.BUNDLED_DIR, checkpoints.REPO_CHECKPOINTS))
                raise SnnconvError(f"no trained weights for {name} on {cfg.dataset} (looked for {path.name} in {places}); "
                                   f"get them with: "
                                   f"{train_command(name, cfg.dataset, cfg.conversion.method)}, or pass "
                                   f"--weights PATH, or add --train-if-missing")
            log_fn(f"no weights for {name}/{cfg.dataset}: training first "
                   f"({train_command(name, cfg.dataset, cfg.conversion.method)})")
            activation, levels = get_recipe(cfg.conversion.method).trained_as  # what the recipe converts best
            train(name, cfg.dataset, cfg.data_dir, epochs=TRAIN_PLAN.get(name, (30,))[0], bf16=True,
                  log_fn=log_fn, activation=activation, levels=levels)  # bf16 where native, else fp32
        ckpt = checkpoints.load_checkpoint(path)
        if ckpt.get("model") not in (None, name):
            raise SnnconvError(f"checkpoint {path} is for model '{ckpt['model']}', not '{name}'")
        return _load_zoo_module(name, ckpt, path, cfg, shape)


@register_frontend
class CheckpointFrontend(Frontend):
    """A ``.pt`` / ``.pth`` checkpoint written by ``snnconv train`` (it names its zoo architecture)."""

    name = "checkpoint"

    def matches(self, ref: str) -> bool:
        return ref.endswith((".pt", ".pth"))

    def load(self, cfg, shape, log_fn):
        path = Path(cfg.model)
        ckpt = checkpoints.load_checkpoint(path)
        if ckpt.get("model") not in MODELS:
            raise SnnconvError(f"checkpoint {path} does not name a zoo architecture (key 'model'); "
                               f"use the Python API convert_module() for custom modules")
        return _load_zoo_module(ckpt["model"], ckpt, path, cfg, shape)


def with_activation(model: nn.Module, activation: str, levels: int = 0, avgpool: bool = True) -> nn.Module:
    """``model`` with its ReLUs as trained: ``relu`` (unchanged) or ``qcfs`` with ``levels`` steps."""
    if activation == "relu":
        return model
    if activation == "qcfs":
        from snnconv.models.qcfs import to_qcfs

        if levels < 1:
            raise SnnconvError("activation 'qcfs' needs levels >= 1")
        return to_qcfs(model, levels, avgpool)
    raise SnnconvError(f"unknown activation '{activation}' (known: relu, qcfs)")


def ingest(model, input_shape: tuple[int, ...]) -> tuple[Graph, str]:
    """The IR graph and op-coverage table of what :func:`resolve_model` returned (or any ``nn.Module``), through
    the registered frontend that accepts the object (PyTorch, ONNX or HuggingFace)."""
    from snnconv.frontends import frontend_of

    frontend = frontend_of(model)
    if frontend is None:
        raise SnnconvError(f"cannot ingest a {type(model).__name__}: expected an nn.Module, an onnx.ModelProto or a "
                           f"HuggingFace model")
    return frontend.ingest(model, input_shape)


def inspect_target(target: str, dataset: str = "cifar10", log_fn=print) -> tuple[Graph, str | None]:
    """The IR graph (and op-coverage table when ingested) of whatever ``snnconv inspect`` is given: a zoo
    name, a checkpoint ``.pt`` naming a zoo model, a saved IR (``snn.pt`` / ``ann.pt``), an ONNX file or
    ``hf:<folder>``. Zoo names are inspected with untrained weights (the structure is what is shown)."""
    if target in MODELS:
        in_ch, ncls = dataset_info(dataset)
        size = 28 if in_ch == 1 else 32
        return from_torch(build_model(target, ncls, in_ch), (in_ch, size, size))
    if target.startswith("hf:") or target.endswith(".onnx"):
        model, shape, _ = resolve_model(RunConfig(model=target, dataset=dataset), log_fn)
        return ingest(model, shape)
    path = Path(target)
    if not path.is_file():
        raise SnnconvError(f"{target}: not a zoo model name ({', '.join(sorted(MODELS))}), hf:<folder> or an "
                           f"existing file")
    obj = checkpoints.read_torch_file(path, "an snnconv IR file or a checkpoint")
    if isinstance(obj, dict) and "nodes" in obj and "state_dict" not in obj:
        return Graph.from_dict(obj), None
    model, shape, _ = resolve_model(RunConfig(model=str(path), dataset=dataset), log_fn)
    return ingest(model, shape)


def train(model_name: str, dataset: str, data_dir: str | None, epochs: int, batch_size: int = 128, lr: float = 0.1,
          out: str | None = None, seed: int = 0, log_fn=print, activation: str = "relu", levels: int = 0,
          init_from: str | None = None, bf16: bool = False, device: str = "cpu", overwrite: bool = False,
          keep_maxpool: bool = False, teacher: str | None = None, distill: float = 0.5,
          temperature: float = 4.0, label_smoothing: float = 0.0, cutout: int = 0) -> dict:
    """Train a zoo model with ``snnconv.training.ann`` and store it in the model cache (or ``out``).

    ``activation='qcfs'`` trains conversion-aware (QCFS, Bu et al. 2022) with ``levels`` steps; as in
    that paper, max pooling is trained as average pooling unless ``keep_maxpool`` (the run says so, and the
    checkpoint records it as ``maxpool_to_avgpool``, which loading follows).
    ``init_from`` (a checkpoint of the same architecture) fine-tunes instead of training from
    scratch; QCFS thresholds then start at the 99.9th percentile of each layer's ReLU input, or,
    from a QCFS checkpoint with other ``levels``, at its trained thresholds (re-quantized to ``levels``).
    """
    from snnconv.output import check_output_file
    from snnconv.training.ann import TrainConfig, train_ann

    resolve_device(device)  # fail before loading data
    if not 0 <= label_smoothing < 1 or cutout < 0:
        raise SnnconvError(f"--label-smoothing must be in [0, 1) (got {label_smoothing}) and --cutout >= 0 "
                           f"(got {cutout})")
    if cutout and dataset.startswith("mnist"):
        raise SnnconvError(f"--cutout: {dataset} is trained without augmentation; Cutout is for the augmented "
                           "image datasets (cifar10, cifar100, imagefolder)")
    if teacher is not None and (not 0 < distill <= 1 or temperature <= 0):
        raise SnnconvError(f"--distill must be in (0, 1] (got {distill}) and --temperature > 0 (got {temperature})")
    path = Path(out) if out else checkpoints.cached_checkpoint(model_name, checkpoint_key(dataset))
    check_output_file(path, overwrite, what="checkpoint")  # before any work: never replaces a file unasked
    teach = load_teacher(teacher, dataset, data_dir, log_fn) if teacher is not None else None  # before the data
    in_ch, ncls = dataset_info(dataset)
    model = build_model(model_name, num_classes=ncls, in_channels=in_ch)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in model.modules())  # before QCFS may swap them
    train_split, val_split = load_train_val(dataset, data_dir)
    test_split = load_dataset(dataset, data_dir, train=False)
    log_fn(f"training on {len(train_split)} images, validating on {len(val_split)} held out of the training split "
           f"(snnconv.data.datasets.split_validation); the {len(test_split)} test images are scored once at the end")
    if init_from:
        src = checkpoints.load_checkpoint(Path(init_from))
        # a QCFS source is rebuilt with the pooling it was trained with, unless --keep-maxpool asks for max
        # pooling (pools hold no weights, so an average-pool checkpoint loads into the max-pool network)
        to_avg = (not keep_maxpool and src.get("maxpool_to_avgpool", True) if src.get("activation", "relu") == "qcfs"
                  else not keep_maxpool)
        model = with_activation(model, src.get("activation", "relu"), src.get("levels", 0), to_avg)
        checkpoints.apply_state_dict(model, src, init_from)
        if activation == "qcfs" and src.get("activation", "relu") == "relu":
            from snnconv.models.qcfs import init_thresholds, to_qcfs

            model = to_qcfs(model, levels, to_avg)
            init_thresholds(model, [x for x, _ in train_split.subset(1024, seed).batches(256)])
        elif activation == "qcfs" and levels != src.get("levels", 0):
            from snnconv.models.qcfs import set_levels

            set_levels(model, levels)  # a QCFS net re-trained for another L keeps its thresholds
    else:
        to_avg = not keep_maxpool
        model = with_activation(model, activation, levels, to_avg)
    if activation == "qcfs" and pools:
        log_fn(f"{model_name}: {pools} max pooling layer(s) " + ("trained as average pooling (QCFS, Bu et al. 2022; "
               "--keep-maxpool keeps them)" if to_avg else "kept as max pooling (--keep-maxpool)"))
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      augment=not dataset.startswith("mnist"), bf16=bf16, device=device,
                      distill=distill if teacher is not None else 0.0, temperature=temperature,
                      label_smoothing=label_smoothing, cutout=cutout)
    meta = {"model": model_name, "dataset": dataset, "activation": activation, "levels": levels if activation == "qcfs" else 0,
            "maxpool_to_avgpool": bool(activation == "qcfs" and to_avg)}
    if teacher is not None:
        log_fn(f"distilling from {teacher} (weight {distill}, temperature {temperature}; Hinton et al. 2015)")
        meta["distilled_from"] = {"teacher": Path(teacher).name, "distill": distill, "temperature": temperature}
    result = train_ann(model, train_split, val_split, test_split, cfg, path, meta, log=log_fn, teacher=teach)
    log_fn(f"saved {path} (validation accuracy {result['val_accuracy']:.2f}%, test accuracy {result['accuracy']:.2f}%)")
    return {"path": str(path), "accuracy": result["accuracy"], "val_accuracy": result["val_accuracy"]}


def average_weights(model_name: str, dataset: str, data_dir: str | None, weights: list[str], out: str,
                    batch_size: int = 256, seed: int = 0, log_fn=print, overwrite: bool = False) -> dict:
    """Stochastic weight averaging (Izmailov et al. 2018, :mod:`snnconv.training.swa`) of checkpoints of one
    zoo model, e.g. the ends of successive ``finetune`` cycles; BatchNorm statistics are re-estimated on the
    training set. Writes ``out`` (a checkpoint like ``train``'s) and returns its path and test accuracy."""
    from snnconv.output import check_output_file
    from snnconv.training.ann import evaluate_ann
    from snnconv.training.swa import swa_model

    check_output_file(out, overwrite, what="checkpoint")  # before any work
    in_ch, ncls = dataset_info(dataset)
    ckpts = [checkpoints.load_checkpoint(Path(w)) for w in weights]
    kinds = {(c.get("model", model_name), c.get("activation", "relu"), c.get("levels", 0)) for c in ckpts}
    if len(kinds) > 1:
        raise SnnconvError(f"checkpoints differ in model/activation/levels: {sorted(kinds)}; average only one kind")
    name, activation, levels = kinds.pop()
    if name != model_name:
        raise SnnconvError(f"checkpoints are for model '{name}', not '{model_name}'")
    model = with_activation(build_model(model_name, num_classes=ncls, in_channels=in_ch), activation, levels)
    train_split, val_split = load_train_val(dataset, data_dir)
    batches = train_split.batches(batch_size, shuffle=True, augment=not dataset.startswith("mnist"), seed=seed)
    model = swa_model(model, [c["state_dict"] for c in ckpts], list(weights),
                      progress(batches, total=(len(train_split) + batch_size - 1) // batch_size, desc="BN statistics"))
    val_acc = evaluate_ann(model, val_split)
    acc = evaluate_ann(model, load_dataset(dataset, data_dir, train=False))
    meta = {"model": model_name, "dataset": dataset, "activation": activation, "levels": levels}
    checkpoints.save_checkpoint(out, {**meta, "state_dict": model.state_dict(), "accuracy": acc, "val_accuracy": val_acc,
                                      "averaged_from": [str(w) for w in weights]}, overwrite=overwrite)
    theirs = ", ".join("?" if c.get("accuracy") is None else f"{c['accuracy']:.2f}" for c in ckpts)
    log_fn(f"saved {out}: mean of {len(weights)} checkpoints, validation accuracy {val_acc:.2f}%, "
           f"test accuracy {acc:.2f}% (theirs, test: {theirs})")
    return {"path": str(out), "accuracy": acc, "val_accuracy": val_acc}


def load_teacher(ref: str, dataset: str, data_dir: str | None, log_fn=print):
    """The network to distil from (any model reference ``convert`` takes: a checkpoint, zoo name, ``.onnx`` or
    ``hf:`` folder), as a frozen module, or as a function running its ingested graph when it is not a plain
    module (ONNX, HF). Checked here, before any data is read, to give one logit per class of ``dataset``."""
    from snnconv.frontends.torch import TorchFrontend

    tm, tshape, _ = resolve_model(RunConfig(model=ref, dataset=dataset, data_dir=data_dir), log_fn)
    if TorchFrontend().accepts(tm):  # a plain module runs as it is (faster than its graph)
        fn = tm.eval().requires_grad_(False)
    else:  # ONNX, HF: through the ingested graph, as convert runs them
        tgraph, _ = ingest(tm, tshape)
        fn = lambda x: run_ann(tgraph, x)  # noqa: E731
    _, ncls = dataset_info(dataset)
    with torch.no_grad():
        got = tuple(fn(torch.zeros(1, *tshape)).shape)
    if got != (1, ncls):
        raise SnnconvError(f"teacher {ref} gives outputs of shape {got} for one input, {dataset} has {ncls} classes; "
                           f"the teacher must be a network for the same classes")
    return fn


def finetune_snn(snn: str, dataset: str, data_dir: str | None, timesteps: int, out: str, epochs: int = 2,
                 lr: float = 1e-4, batch_size: int = 64, seed: int = 0, overwrite: bool = False, log_fn=print,
                 max_batches: int | None = None, teacher: str | None = None, distill: float = 0.5,
                 temperature: float = 4.0, checkpoint_steps: bool | None = None) -> dict:
    """Hybrid fine-tuning of a converted SNN (:mod:`snnconv.training.snn_finetune`) for ``timesteps`` steps on
    the training part of ``dataset``; the epoch kept is chosen on the validation split, the test split is
    scored once (before and after, by the simulator). Writes the fine-tuned IR graph to ``out``; the run's
    state is kept in ``<out stem>.state.pt``, so re-running a killed command continues from it.

    ``teacher`` (any model reference ``convert`` takes: a checkpoint, zoo name, ``.onnx`` or ``hf:`` folder):
    distil from that ANN with weight ``distill`` at ``temperature`` (Hinton et al. 2015)."""
    from snnconv.output import atomic_file, check_output_file
    from snnconv.training.snn_finetune import activation_memory_mb, finetune

    check_output_file(out, overwrite)
    graph = Graph.load(snn)
    teach = None
    if teacher is not None:
        teach = load_teacher(teacher, dataset, data_dir, log_fn)
        log_fn(f"finetune-snn: distilling from {teacher} (weight {distill}, temperature {temperature})")
    train_part, val = load_train_val(dataset, data_dir)
    test = load_dataset(dataset, data_dir, train=False)
    log_fn(f"finetune-snn: {snn} on {len(train_part)} training images, validation {len(val)}, T={timesteps}; "
           f"BPTT keeps about {activation_memory_mb(graph, timesteps, batch_size):.0f} MB of activations per batch")
    state = Path(out).with_name(Path(out).stem + ".state.pt")  # resumable: re-run the same command
    res = finetune(graph, train_part, val, timesteps, epochs, lr, batch_size, augment=not dataset.startswith("mnist"),
                   seed=seed, log=log_fn, max_batches=max_batches, state_path=state, teacher=teach,
                   distill=distill if teach is not None else 0.0, temperature=temperature,
                   checkpoint_steps=checkpoint_steps)
    before = simulate(graph, test, timesteps, layer_error=False).accuracy()[timesteps - 1]
    after = simulate(res["graph"], test, timesteps, layer_error=False).accuracy()[timesteps - 1]
    with atomic_file(out, overwrite) as tmp:
        res["graph"].save(tmp)
    log_fn(f"saved {out}: T={timesteps} test accuracy {before:.2f}% -> {after:.2f}% (epoch {res['best_epoch']} kept, "
           f"validation {res['val_accuracy']:.2f}%)")
    return {"path": str(out), "test_before": before, "test_after": after, "history": res["history"],
            "best_epoch": res["best_epoch"], "val_accuracy": res["val_accuracy"]}


def conversion_pipeline(conversion: ConversionConfig | None = None, passes: list | None = None) -> Pipeline:
    cfg = RunConfig(conversion=conversion or ConversionConfig(), passes=passes)
    return Pipeline.from_config(cfg.pipeline_spec())


def check_spiking(snn: Graph) -> None:
    """Refuse (one line) a "converted" network without a single spiking neuron (no activation a neuron can
    replace: ReLU-like clips become IF neurons, smooth ones function neurons); no SNN is reported as converted."""
    if any(n.spiking for n in snn.nodes.values()):
        return
    acts = [f"{n.fn} at '{k}'" for k, n in snn.nodes.items() if n.kind == "activation"][:3]
    raise SnnconvError("the converted network has no spiking neurons: " +
                       (f"its activations ({', '.join(acts)}) have no spiking form in this recipe"
                        if acts else "the model has no activation a neuron can replace") +
                       "; pass an explicit `passes:` pipeline in a config to simulate it anyway")


def convert_graph(graph: Graph, calibration: Iterable[torch.Tensor], pipeline: Pipeline,
                  labelled=None, device=None) -> tuple[Graph, list[dict]]:
    """Run ``pipeline`` on ``graph`` with calibration batches (and optional labelled held-out
    ``(x, y)`` batches for passes that score accuracy, e.g. ``hseo``); returns the SNN graph and the pass log.
    ``device`` (cpu, cuda, cuda:N): where the passes compute statistics and simulate; the graph stays on the CPU."""
    ctx = PassContext(calibration=calibration, labelled=labelled,
                      device=None if device is None else resolve_device(device))
    snn = pipeline.run(graph, ctx)
    return snn, ctx.records


def convert_module(model: nn.Module, input_shape: tuple[int, ...], calibration: Iterable[torch.Tensor],
                   conversion: ConversionConfig | None = None) -> Graph:
    """Convert any ``nn.Module`` (ingest + default pipeline); ``calibration`` yields input batches."""
    graph, _ = from_torch(model, input_shape)
    snn, _ = convert_graph(graph, list(calibration), conversion_pipeline(conversion))
    return snn


@torch.no_grad()
def ann_accuracy(graph: Graph, split: Split, batch_size: int = 256, device=None) -> tuple[float, float]:
    """(top-1 accuracy %, dense MACs per sample) of the graph run as an ANN (on ``device``, default cpu)."""
    from snnconv.runtime import distributed as dist

    dev = resolve_device(device)
    run_graph = graph.to(dev)
    correct = 0
    part, first = _batch_shard(split, batch_size)  # this process's batches under torchrun, else all
    for x, y in progress(part.batches(batch_size), total=-(-len(part) // batch_size), desc="ANN eval"):
        correct += (run_ann(run_graph, x.to(dev)).argmax(1).cpu() == y).sum().item()
    correct = int(dist.all_reduce_sum(torch.tensor([correct], dtype=torch.int64)).item())
    return 100.0 * correct / len(split), ann_macs(graph)


def _batch_shard(split: Split, batch_size: int) -> tuple[Split, int]:
    """The contiguous block of ``split``'s batches this process handles (all of them without torchrun)
    and the global index of its first batch; batch contents equal those of a one-process run."""
    from snnconv.runtime import distributed as dist

    if not dist.is_active():
        return split, 0
    nb = -(-len(split) // batch_size)
    r = dist.shard_range(nb)
    lo, hi = r.start * batch_size, min(len(split), r.stop * batch_size)
    return Split(split.images[lo:hi], split.labels[lo:hi], split.mean, split.std, split.num_classes), r.start


def ann_macs(graph: Graph) -> float:
    total = 0.0
    for name, node in graph.nodes.items():
        if node.kind == "conv2d":
            total += node.shape[1] * node.shape[2] * node.shape[0] * node.weight[0].numel()
        elif node.kind == "conv_transpose2d":
            total += torch.Size(graph.nodes[graph.edges[name][0]].shape).numel() * node.weight[0].numel()
        elif node.kind == "linear":
            total += node.weight.numel()
    return total


#: a simulation shorter than this prints no progress lines (short commands keep their output as it is)
SIM_QUIET_SECONDS = 30.0


def simulate(graph: Graph, split: Split, timesteps: int, batch_size: int = 128, chunk: int = 8,
             layer_error: bool = True, encoder: Encoder | None = None, device=None, kernels: str = "fp32",
             log_fn=None, state: str | Path | None = None, save_seconds: float = 300.0) -> SimStats:
    """Run the SNN on ``split`` for ``timesteps`` steps (on ``device``, default cpu); accuracy for every
    t <= T comes from this one run. ``kernels="int8"``: the layers :mod:`snnconv.runtime.lowp` can run exactly on
    integer kernels do (``log_fn`` is told which and why the others cannot). Off a terminal, ``log_fn`` also gets
    a progress line (batches done, ETA) every 5 % once the run has taken 30 s.

    ``state``: a file where a long run keeps its totals after the batches done so far (at most every
    ``save_seconds``, written atomically); a run killed part-way and started again with the same ``state``
    continues after those batches, with the same totals as one uninterrupted run. The file records a digest of
    the graph, the data and the settings (:func:`_simulation_key`); one written for anything else is refused
    in one line. It is removed when the run completes. One process only (not under torchrun)."""
    from snnconv.passes.srp import presim_steps
    from snnconv.runtime import distributed as dist

    if presim_steps(graph):
        raise SnnconvError("this SNN has an SRP pre-run; simulate it with snnconv.passes.srp.simulate_srp, "
                           "which scores the readout after the pre-run")
    if state is not None and dist.is_active():
        raise SnnconvError("a resumable simulation (state file) runs in one process, not under torchrun")
    sim = Simulator(graph, timesteps, chunk=chunk, encoder=encoder, device=resolve_device(device), kernels=kernels)
    if kernels != "fp32" and log_fn is not None:
        log_fn(int8_summary(sim._int8, sim.int8_skipped))
    part, first = _batch_shard(split, batch_size)  # under torchrun: this process's block of batches
    nb = -(-len(part) // batch_size)
    key = None if state is None else _simulation_key(graph, part, timesteps, batch_size, chunk, encoder, kernels)
    done = 0 if state is None else _resume_simulation(Path(state), key, sim, log_fn)
    sim._batches = first + done  # global batch index: seeds of stochastic encoders match a one-process run
    # off a terminal (logs, CI) a long simulation still says how far it is, after its first 30 s
    lines = ProgressLines(log_fn, f"SNN T={timesteps}", nb, start=done, quiet_seconds=SIM_QUIET_SECONDS) \
        if log_fn else None
    saved = time.time()
    for i, (x, y) in enumerate(progress(part.batches(batch_size), total=nb, desc=f"SNN T={timesteps}"),
                               start=first):
        if i - first < done:
            continue
        sim.run(x, y, layer_error=layer_error and i < 4)  # layer error from the first batches only
        if lines is not None:
            lines.update(i - first + 1)
        if state is not None and time.time() - saved >= save_seconds and i - first + 1 < nb:
            _save_simulation(Path(state), key, i - first + 1, sim.stats)
            saved = time.time()
    if state is not None:
        Path(state).unlink(missing_ok=True)
    return dist.all_reduce_stats(sim.stats)


def _simulation_key(graph: Graph, split: Split, timesteps: int, batch_size: int, chunk: int, encoder,
                    kernels: str) -> str:
    """A digest of what a simulation's totals depend on: every tensor and attribute of the graph, the images
    and labels, T, the batching, the encoder and the kernels."""
    import hashlib
    import json

    h = hashlib.sha256()
    for name, node in graph.nodes.items():
        h.update(json.dumps([name, node.kind, graph.edges.get(name, []), repr(node.attrs()), list(node.shape)],
                            default=str).encode())
        for k, t in node.tensors().items():
            h.update(k.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for t in (split.images, split.labels):
        h.update(t.contiguous().numpy().tobytes())
    h.update(json.dumps([timesteps, batch_size, chunk, repr(encoder), kernels, split.mean, split.std]).encode())
    return h.hexdigest()


def _save_simulation(path: Path, key: str, done: int, stats: SimStats) -> None:
    """The totals after ``done`` batches, written to a temporary file and renamed over ``path``."""
    import dataclasses

    from snnconv.output import atomic_file

    with atomic_file(path, True, what="simulation state") as tmp:
        torch.save({"key": key, "batches": done, "stats": dataclasses.asdict(stats)}, tmp)


def _resume_simulation(path: Path, key: str, sim, log_fn) -> int:
    """The batches a state file says are done (0 when there is none), their totals put into ``sim.stats``."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        return 0
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(d, dict) and isinstance(d.get("stats"), dict) and isinstance(d.get("batches"), int)
    except Exception:  # noqa: BLE001 - any unreadable file is refused in one line below
        ok = False
    if not ok:
        raise SnnconvError(f"simulation state {path}: not a state file written by snnconv's simulate (remove it "
                           f"to start the run afresh)")
    if d.get("key") != key:
        raise SnnconvError(f"simulation state {path}: written for another graph, data or settings (remove it to "
                           f"start this run afresh)")
    sim.stats = SimStats(**d["stats"])
    if log_fn is not None:
        log_fn(f"resuming the simulation after {d['batches']} batches ({path.name})")
    return d["batches"]


def evaluate(snn: str | None = None, model: str | None = None, weights: str | None = None,
             dataset: str = "mnist-bundled", data_dir=None, timesteps: list[int] = (1, 2, 4, 8, 16, 32),
             eval_samples: int | None = None, device: str = "cpu", log_fn=print, kernels: str = "fp32") -> dict:
    """``snnconv evaluate``: a saved SNN (``snn``, an IR file) at every T in ``timesteps``, or an ANN (``model``
    and optional ``weights``) on the test split; ``{"snn_accuracy": {T: %}}`` or ``{"ann_accuracy": %}``."""
    if not snn and not model:
        raise SnnconvError("give --snn FILE or --model NAME")
    if kernels not in KERNEL_SETS:
        raise SnnconvError(f"--kernels must be fp32 or int8, not {kernels!r}")
    resolve_device(device)
    split = load_dataset(dataset, data_dir, train=False).subset(eval_samples)
    if snn:
        acc = simulate(Graph.load(snn), split, max(timesteps), layer_error=False, device=device, kernels=kernels,
                       log_fn=log_fn).accuracy()
        return {"snn_accuracy": {t: acc[t - 1] for t in timesteps}}
    m, shape, _ = resolve_model(RunConfig(model=model, weights=weights, dataset=dataset, data_dir=data_dir), log_fn)
    graph, _ = ingest(m, shape)
    return {"ann_accuracy": ann_accuracy(graph, split, device=device)[0]}


def spike_format(graph: Graph, fit: dict[str, list[str]] | None = None) -> dict:
    """What the hardware must carry per spike: graded (multi-level) and/or signed spikes."""
    from snnconv.passes.sfn import graded_spikes

    info = graded_spikes(graph)
    needs = []
    if info["graded"]:
        needs.append(f"graded spikes with an integer payload of 0..{info['max_levels']} per step "
                     f"(e.g. Loihi 2 graded spikes; binary-spike chips must unroll each step into "
                     f"{info['max_levels']} sub-steps)")
    if info["signed"]:
        needs.append("signed spikes (a sign bit per spike, or two axons per neuron on binary-spike chips)")
    info["hardware"] = "; ".join(needs) or "binary spikes"
    info["frameworks"] = fit or framework_fit(graph)
    return info


def framework_fit(graph: Graph) -> dict[str, list[str]]:
    """For each deployment target (:func:`snnconv.backends.exports.deployment_targets`: the frameworks that run
    a NIR file, and Lava): what the graph's spiking neurons need that the target's own neurons do not provide
    (``[]``: it runs them as written). Read from the targets' declared capabilities (``Target.supports``, the
    same set ``Target.check`` refuses a NIR neuron with); nothing is imported. Spiking nodes other than IF/LIF
    neurons (function, Izhikevich, ...), refractory periods and SRP pre-runs are needs no target provides.
    ``snnconv verify`` runs an exported file in them; :func:`target_refusal` adds the export's own check."""
    from snnconv.backends.exports import deployment_targets
    from snnconv.interop.base import neuron_needs

    need: set[str] = set()
    for n in graph.nodes.values():
        if not n.spiking:
            continue
        if n.kind != "neuron":
            need.add(n.kind.replace("_", " "))
            continue
        need |= neuron_needs(n.reset, n.v_init, n.model, n.levels, n.signed)
        need.update(k for k, on in (("refractory", bool(n.refractory)), ("SRP pre-run", bool(n.presim))) if on)
    return {name: sorted(need - set(supports)) for name, supports in deployment_targets().items()}


def target_refusal(snn: Graph, target: str, fit: dict[str, list[str]] | None = None) -> str | None:
    """Why ``target`` cannot run the converted ``snn`` as converted (one line), or ``None`` when it can: its
    neurons (:func:`framework_fit`, or ``fit`` when already computed), then the check of the export that
    carries the network there (the NIR file for the frameworks, Lava's own network for Lava: the layout its
    synapse processes map). A property of the network, not of this machine: whether the target is installed
    is not asked (``--export`` and ``snnconv verify`` check that)."""
    return target_refusals(snn, fit, only=(target,))[target]


def target_refusals(snn: Graph, fit: dict[str, list[str]] | None = None,
                    only: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """:func:`target_refusal` for every deployment target (or those in ``only``), running each carrying
    export's check of the network once however many targets it carries (NIR for all the frameworks)."""
    from snnconv.backends.exports import EXPORT_TARGETS, deployment_export

    fit = fit or framework_fit(snn)
    checked: dict[str, str | None] = {}
    out: dict[str, str | None] = {}
    for target in only or tuple(fit):
        missing = fit[target]
        if missing:
            out[target] = (f"the converted network needs {', '.join(missing)}, which {target}'s own neurons do "
                           "not provide")
            continue
        export = deployment_export(target)
        if export not in checked:
            try:
                EXPORT_TARGETS[export].check_network(snn)
                checked[export] = None
            except SnnconvError as e:
                checked[export] = str(e)
        out[target] = checked[export]
    return out


def held_out_split(dataset: str, data_dir, n: int, seed: int, size: int | None = None) -> Split:
    """``size`` (default ``n``) labelled samples of the training part disjoint from ``load_part(..., "train")
    .subset(n, seed)`` (the calibration set): the ones after it in the same seeded permutation. Never touches the
    validation split (kept for choices) or the test split."""
    train = load_part(dataset, data_dir, "train")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[n:n + (size or n)]
    return Split(train.images[idx], train.labels[idx], train.mean, train.std, train.num_classes)


def embedded_default() -> dict:
    """The recipe of the embedded default run: ``snnconv/assets/embedded_default.json``, chosen on the MNIST
    validation split by ``scripts/choose_embedded_default.py`` (checkpoint, conversion settings, criterion,
    and the validation table of every candidate)."""
    import json

    from snnconv.checkpoints import BUNDLED_DIR

    return json.loads((BUNDLED_DIR / "embedded_default.json").read_text())


def recipe_for_target(card: dict, target: str, where: str) -> tuple[str, dict]:
    """``(name, candidate)``: of the recipes a card was chosen among (a recipe card or the embedded default's,
    each candidate scored on the validation split), the best by the card's criterion among those whose converted
    network ``target`` runs as converted (``runs_in``: :func:`target_refusal` of each candidate's conversion,
    written by ``scripts/choose_recipe.py`` for the targets it lists in ``targets_checked``). The test set plays no part. ``where`` names the card
    in the one-line errors: a target snnconv does not know, a card without ``runs_in``, no candidate that fits."""
    from snnconv.backends.exports import check_deployment_target

    check_deployment_target(target)  # an unknown name is a one-line error listing the deployment targets
    cands = card.get("candidates") or {}
    if not cands or any("runs_in" not in c for c in cands.values()):
        raise SnnconvError(f"{where}: its candidates do not list the targets that run them ('runs_in'); re-run "
                           f"scripts/choose_recipe.py with --targets-only, or give the recipe with --method")
    if target not in card.get("targets_checked", []):
        raise SnnconvError(f"{where}: its candidates were not checked against target '{target}' (it lists "
                           f"{', '.join(card.get('targets_checked', [])) or 'no checked targets'}); re-run "
                           f"scripts/choose_recipe.py with --targets-only, or give the recipe with --method")
    fit = {k: c for k, c in cands.items() if target in c["runs_in"]}
    if not fit:
        raise SnnconvError(f"--target {target}: none of the recipes chosen among for these weights "
                           f"({', '.join(cands)}) runs in {target}; {where}")
    name = max(fit, key=lambda k: fit[k]["criterion"])
    return name, fit[name]


def _for_target(card: dict, name: str, target: str | None) -> str:
    """The log's words on a recipe taken for ``target`` instead of the card's overall choice."""
    if target is None:
        return ""
    if name == card["chosen"]:
        return f"; {target} runs it"
    return f"; the best that {target} runs: '{card['chosen']}' scores higher but {target} cannot run it"


def apply_run_defaults(cfg: RunConfig, embedded: bool = False, recipe_given: bool = False,
                       log_fn=lambda *_: None, conversion_given: bool = False) -> RunConfig:
    """Fill what ``snnconv convert`` leaves to defaults: with ``embedded`` (no model, dataset or config given)
    the bundled MNIST CNN on the full MNIST test set when the data dir holds it, else on the MNIST subset
    shipped in the package (offline), converted with the checkpoint and recipe chosen on the validation
    split (:func:`embedded_default`, said through ``log_fn``) unless weights or conversion options were given
    (``recipe_given``); the output folder ``artifacts/<model>-<dataset>``. With ``cfg.target`` the recipe is
    the card's best that the target runs (:func:`recipe_for_target`).

    Any other zoo model or checkpoint whose weights have a recipe card (:func:`recipe_card`) is converted
    with the card's recipe, chosen on the validation split, unless conversion settings were given
    (``conversion_given``: options on the command line, or ``cfg.conversion`` differing from the defaults, e.g.
    a config file's ``conversion``) or the config lists its passes."""
    from snnconv.checkpoints import BUNDLED_DIR
    from snnconv.data.datasets import _find_mnist, default_data_dir

    if embedded and not recipe_given:
        choice = embedded_default()
        name, cand = (choice["chosen"], choice) if cfg.target is None else \
            recipe_for_target(choice, cfg.target, "snnconv/assets/embedded_default.json")
        cfg.weights = str(BUNDLED_DIR / cand["weights"])
        for key, value in cand["conversion"].items():
            setattr(cfg.conversion, key, value)
        log_fn(f"embedded default: {cand['weights']} with recipe '{name}', chosen on the MNIST validation split "
               f"({choice['criterion']}{_for_target(choice, name, cfg.target)}; snnconv/assets/embedded_default.json)")
    elif not (conversion_given or cfg.conversion != ConversionConfig()) and cfg.passes is None:
        weights = (cfg.weights or (zoo_weights(cfg.model, cfg.dataset) if cfg.model in MODELS else None)
                   or (cfg.model if cfg.model.endswith((".pt", ".pth")) else None))
        card = recipe_card(weights) if weights else None
        if card and card["stale"]:
            log_fn(f"note: {card['path']} was chosen for other weights than {weights} (sha256 differs): not used; "
                   f"the default conversion settings apply")
        elif card:
            name, cand = (card["chosen"], card) if cfg.target is None else \
                recipe_for_target(card, cfg.target, card["path"])
            for key, value in cand["conversion"].items():
                setattr(cfg.conversion, key, value)
            log_fn(f"recipe '{name}' ({', '.join(f'{k}={v}' for k, v in cand['conversion'].items())}), "
                   f"chosen for these weights on the validation split ({card['criterion']}"
                   f"{_for_target(card, name, cfg.target)}; {Path(card['path']).name}); any conversion option "
                   f"replaces it")
    if embedded:
        root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
        cfg.dataset = "mnist" if _find_mnist(root, "t10k-images-idx3-ubyte") else "mnist-bundled"
        if cfg.dataset == "mnist-bundled":
            cfg.calib_samples = min(cfg.calib_samples, 256)
    if cfg.output_dir is None:
        cfg.output_dir = str(Path("artifacts") / f"{Path(cfg.model).stem}-{cfg.dataset.replace(':', '_').replace('/', '_')}")
    return cfg


def run_convert(cfg: RunConfig, log_fn=print, coverage_fn=print) -> dict:
    """The `snnconv convert` job: returns the report and writes it (atomically) to ``cfg.output_dir``.

    The output folder is checked (and its temporary folder made) before any work: an existing folder
    is only replaced when it is an snnconv run folder and ``cfg.output.overwrite`` is set
    (:mod:`snnconv.output`)."""
    from snnconv.runtime import distributed as dist

    resolve_device(cfg.device)  # a missing GPU is a one-line error before any work
    task = task_for(cfg)
    if cfg.output.export and not task.exportable:
        raise SnnconvError(f"--export {','.join(cfg.output.export)}: not available for {task.name} runs "
                           f"(model '{cfg.model}')")
    if not cfg.output_dir or not dist.is_main():  # under torchrun every process has the report; rank 0 writes it
        return _run_convert(cfg, task, None, log_fn, coverage_fn)
    with atomic_dir(cfg.output_dir, overwrite=cfg.output.overwrite) as out:
        report = _run_convert(cfg, task, out, log_fn, coverage_fn)
    from snnconv.output import read_marker

    written = sorted({f.split("/")[0] for f in read_marker(cfg.output_dir)["files"]})  # what the run folder holds
    log_fn(f"wrote {cfg.output_dir}/ ({', '.join(written)})")
    return report


@register_task
class ClassificationTask(Task):
    """Image classification (zoo models, PyTorch checkpoints, ONNX files): top-1 accuracy of the ANN and of
    the SNN at every T on the test split (``eval_samples`` seeded images), calibration images from the
    training part (the validation split stays unseen), energy per T next to the ANN's."""

    name = "classification"
    metric = "top-1 accuracy (%)"

    def handles(self, cfg) -> bool:
        return not cfg.model.startswith("hf:")

    def prepare(self, cfg, log_fn) -> Job:
        Encoder(cfg.encoding)  # a bad encoding fails before any heavy work
        model, shape, source = resolve_model(cfg, log_fn)
        test = load_dataset(cfg.dataset, cfg.data_dir, train=False).subset(cfg.eval_samples, cfg.seed)
        # calibration comes from the training part: the validation split stays unseen by every fitted value
        calib = load_part(cfg.dataset, cfg.data_dir, "train").subset(cfg.calib_samples, cfg.seed + 1)
        log_fn(f"converting {cfg.model} on {cfg.dataset} (T = {','.join(map(str, cfg.timesteps))})")
        graph, coverage = ingest(model, shape)
        return Job(graph=graph, coverage=coverage, calibration=[x for x, _ in calib.batches(256)],
                   dataset=cfg.dataset, samples=len(test),
                   labelled=lambda: held_out_split(cfg.dataset, cfg.data_dir, cfg.calib_samples,
                                                   cfg.seed + 1).batches(256),
                   data={"test": test, "shape": shape, "source": source})

    def score(self, job: Job, snn: Graph, cfg, log_fn) -> dict:
        test = job.data["test"]
        ann_acc, macs = ann_accuracy(job.graph, test, device=cfg.device)
        log_fn(f"ANN accuracy {ann_acc:.2f}% on {len(test)} samples")
        encoder = Encoder(cfg.encoding, seed=cfg.seed)
        stats = simulate(snn, test, max(cfg.timesteps), cfg.batch_size, cfg.chunk, encoder=encoder, device=cfg.device,
                         kernels=cfg.kernels, log_fn=log_fn)
        acc = stats.accuracy()
        for t in cfg.timesteps:
            log_fn(f"T={t:>3}: SNN {acc[t - 1]:.2f}% (ANN {ann_acc:.2f}%)")
        return {"weights": job.data["source"], "encoding": cfg.encoding, "first_layer_ops": encoder.first_layer_ops(),
                "kernels": cfg.kernels,
                "ann_accuracy": ann_acc, "snn_accuracy": {str(t): acc[t - 1] for t in cfg.timesteps},
                "snn_accuracy_all_t": acc, "ann_macs": macs, "ann_energy_uj": macs * E_MAC_PJ * 1e-6,
                **energy_fields(stats, cfg.timesteps), "layer_error": stats.layer_errors()}


def conversion_warnings(snn: Graph) -> list[str]:
    """What the report must say about a converted graph whose conversion is known to be lossy."""
    schemes = {"gate": "the spike-gating scheme of Rueckauer et al. 2017, which converges slowly",
               "wta": "first-spike winner-take-all, which passes the earliest input rather than the most active"}
    out = []
    for mode, what in schemes.items():  # say it, do not hide it (issue 18): both bias the layers after the pool
        pools = [k for k, n in snn.nodes.items() if n.kind == "maxpool2d" and n.spike_mode == mode]
        if pools:
            out.append(f"max pooling ({len(pools)} layer(s), first '{pools[0]}') runs with {what} and loses "
                       f"fidelity in the layers after it; use --maxpool count (exact, the default) or average "
                       f"pooling (e.g. vgg16_avg)")
    return out


def _run_convert(cfg: RunConfig, task: Task, out: Path | None, log_fn, coverage_fn) -> dict:
    """One conversion run for every kind of model: the task (snnconv.tasks) loads the model and data and
    scores the SNN; everything else (pipeline, recipe contract, spiking check, exports, report) is shared."""
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    recipe = get_recipe(task.recipe(cfg))
    pipeline = Pipeline.from_config(cfg.pipeline_spec(recipe.name))  # validate the config before any heavy work
    job = task.prepare(cfg, log_fn)
    coverage_fn(job.coverage)
    if cfg.passes is None:  # the recipe states what its input must have (snnconv/recipes.py)
        recipe.check(job.graph, cfg.conversion)
    snn, records = convert_graph(job.graph, job.calibration, pipeline, labelled=job.labelled, device=cfg.device)
    if cfg.passes is None:  # a default pipeline must produce a spiking network
        check_spiking(snn)
    fit = framework_fit(snn)
    if cfg.target is not None:  # before the simulation: the network is for a target that must run it
        from snnconv.backends.exports import EXPORT_TARGETS, deployment_export

        why = target_refusal(snn, cfg.target, fit)
        if why:
            raise SnnconvError(f"--target {cfg.target}: {why}; choose a recipe whose neurons it runs (snnconv methods) "
                               f"or drop --target")
        fmt = deployment_export(cfg.target)
        log_fn(f"{cfg.target} runs this network's neurons as converted; --export {fmt} writes "
               f"{EXPORT_TARGETS[fmt].help}" + ("" if fmt == cfg.target else
                                                f", `snnconv verify --targets {cfg.target}` runs it there"))
    warnings = conversion_warnings(snn)
    for w in warnings:
        log_fn(f"warning: {w}")
    if cfg.output.export:  # refuse an unexportable graph now, not after the simulation
        from snnconv.backends.exports import check_exports

        check_exports(cfg.output.export, snn)
    T = max(cfg.timesteps)
    report = {
        "model": cfg.model, "dataset": job.dataset, "task": task.name, "metric": task.metric,
        "samples": job.samples, "calib_samples": sum(len(x) for x in job.calibration),
        "conversion": {**cfg.to_dict()["conversion"], "method": recipe.name, "pipeline": cfg.pipeline_spec(recipe.name)},
        "timesteps": cfg.timesteps, "max_T": T,
    }
    report.update(task.score(job, snn, cfg, log_fn))
    report.update({"spikes": spike_format(snn, fit), "passes": records, "coverage": job.coverage, "config": cfg.to_dict(),
                   "environment": environment(), "warnings": warnings})
    if any(report["spikes"]["frameworks"].values()):  # a target that cannot run the result: say so now
        log_fn(framework_line(report["spikes"]["frameworks"]))
    if any(getattr(n, "operator", False) for n in snn.nodes.values()):  # operator nodes are not neurons: say so
        from snnconv.passes.spiking_transformer import census_counts, spiking_census

        report["spiking_census"] = spiking_census(snn)
        report["census_counts"] = census_counts(report["spiking_census"])
    report["seconds"] = round(time.time() - t_start, 2)
    if out is not None:
        if cfg.output.graphs:
            snn.save(out / "snn.pt")
            job.graph.save(out / "ann.pt")
        if cfg.output.export:  # inside the temporary folder: a failed export leaves no run folder
            from snnconv.backends.exports import write_exports

            report["exports"] = write_exports(out, cfg.output.export, snn, job.graph, job.data["shape"], cfg.dataset,
                                              cfg.data_dir, log_fn, timesteps=T)
        write_report(out, report, html_page=cfg.output.html)
    return report
