"""Plain ANN training for the model zoo (SGD + Nesterov momentum, OneCycle LR, crop/flip augmentation,
optional Cutout and label smoothing, optional knowledge distillation).

Resumable: the full training state is saved after every epoch next to the final checkpoint
(``<name>.state.pt``); re-running the same command continues from the last finished epoch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from snnconv.checkpoints import load_checkpoint, save_checkpoint
from snnconv.errors import SnnconvError
from snnconv.data.datasets import Split
from snnconv.progress import ProgressLines, progress
from snnconv.runtime.device import resolve_device


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    seed: int = 0
    # bfloat16 autocast: about 2x faster on CPUs with AVX512-BF16/AMX; weights and the optimizer stay fp32
    bf16: bool = False
    # "cpu", "cuda" or "cuda:N": where the model trains; checkpoints are always written as CPU tensors
    device: str = "cpu"
    # knowledge distillation from a teacher ANN passed to train_ann (0 = labels only): loss weight and temperature
    distill: float = 0.0
    temperature: float = 4.0
    # regularisation: label smoothing of the cross-entropy (Szegedy et al. 2016) and Cutout squares of this
    # side in pixels (DeVries & Taylor 2017; with augment); 0 = off, what every run before them used
    label_smoothing: float = 0.0
    cutout: int = 0


def optimizer_step(opt, sched, loss: torch.Tensor) -> float:
    """Backpropagate ``loss``, step the optimizer and the per-batch scheduler; returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def distillation_loss(student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None,
                      alpha: float = 0.0, temperature: float = 4.0, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy (with label smoothing ``smoothing``, Szegedy et al. 2016), mixed with weight ``alpha``
    with the teacher's softened distribution (Hinton et al. 2015; the ``temperature ** 2`` factor keeps the
    soft term's gradient scale)."""
    ce = nn.functional.cross_entropy(student, target, label_smoothing=smoothing)
    if teacher is None or alpha == 0:
        return ce
    kl = nn.functional.kl_div(nn.functional.log_softmax(student / temperature, dim=1),
                              nn.functional.log_softmax(teacher / temperature, dim=1),
                              reduction="batchmean", log_target=True)
    return (1 - alpha) * ce + alpha * temperature ** 2 * kl


def loss_with_teacher(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, teacher=None, alpha: float = 0.0,
                      temperature: float = 4.0, who: str = "training", smoothing: float = 0.0) -> torch.Tensor:
    """:func:`distillation_loss` of the student's ``out`` with ``teacher``'s logits on the same batch ``x`` (no
    gradient through the teacher); cross-entropy alone without a teacher or with ``alpha`` = 0. A teacher whose
    outputs have another shape is an error naming ``who`` ran it."""
    if teacher is None or alpha == 0:
        return distillation_loss(out, y, smoothing=smoothing)
    with torch.no_grad():
        soft = teacher(x).float()
    if soft.shape != out.shape:
        raise SnnconvError(f"{who}: the teacher gives outputs of shape {tuple(soft.shape)}, the student "
                           f"{tuple(out.shape)}; the teacher must be a network for the same classes")
    return distillation_loss(out.float(), y, soft, alpha, temperature, smoothing)


def cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate_ann(model: nn.Module, split: Split, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``model`` on ``split``."""
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for x, y in progress(split.batches(batch_size), total=(len(split) + batch_size - 1) // batch_size, desc="eval"):
        correct += (model(x.to(dev)).argmax(1).cpu() == y).sum().item()
    return 100.0 * correct / len(split)


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 / AMX); without it oneDNN emulates bf16,
    which measured 10-18x *slower* than fp32 on an AVX2-only 2-core EPYC (ResNet-20/18 training steps,
    docs/benchmarks/train_speed.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_ann(model: nn.Module, train: Split, val: Split | None, test: Split | None, cfg: TrainConfig, out: Path,
              meta: dict, log=print, state_every: float = 300.0, teacher=None) -> dict:
    """Train ``model`` on ``train`` and write the final checkpoint to ``out``; returns the checkpoint dict.

    ``val`` (the validation split, never trained on) is scored after every epoch; ``test`` is scored
    once, on the final weights. The full training state (weights, optimizer, scheduler, epoch and the
    batch reached) is saved to ``<out stem>.state.pt`` every ``state_every`` seconds and after every
    epoch, so a killed run resumes within a few minutes of work (re-run the same command). Inputs and
    weights are channels-last; ``cfg.bf16`` autocasts to bfloat16 only where the CPU has native bf16.

    With ``teacher`` (a trained network for the same classes, or a callable giving its logits; kept frozen)
    and ``cfg.distill`` = alpha > 0, the loss is :func:`distillation_loss`: the teacher's logits on the same
    augmented batch, softened at ``cfg.temperature`` (knowledge distillation, Hinton et al. 2015). Used to
    fine-tune a QCFS network to fewer levels L from its higher-L parent, the ANN side of low-latency
    conversion (Takuya et al. 2021)."""
    if cfg.distill and teacher is None:
        raise ValueError("train_ann: a distillation weight needs a teacher network")
    torch.manual_seed(cfg.seed)
    dev = resolve_device(cfg.device)
    use_bf16 = cfg.bf16 and (dev.type == "cuda" or bf16_native())
    if cfg.bf16 and not use_bf16:
        log("bf16 requested, but this CPU has no native bfloat16 (no AVX512-BF16/AMX): training in fp32, "
            "which is faster here than emulated bf16")
    model.to(dev).to(memory_format=torch.channels_last)  # before the optimizer: its state on the same device
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    steps_per_epoch = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                                                pct_start=0.15)
    state_path = out.with_name(out.stem + ".state.pt")
    start, start_batch, history, partial = 0, 0, [], (0.0, 0, 0.0)
    if state_path.is_file():
        st = load_checkpoint(state_path)
        model.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, history = st["epoch"], st.get("history", [])
        start_batch = st.get("batch", 0)
        partial = tuple(st.get("partial", (0.0, 0, 0.0)))
        log(f"resuming from epoch {start}/{cfg.epochs}" + (f", batch {start_batch}/{steps_per_epoch}" if start_batch
                                                            else "") + f" ({state_path})")
    if isinstance(teacher, nn.Module) and cfg.distill:
        teacher = teacher.eval().requires_grad_(False).to(dev).to(memory_format=torch.channels_last)


    def save_state(epoch: int, batch: int, part: tuple) -> None:
        save_checkpoint(state_path, {"state_dict": cpu_state(model), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "epoch": epoch, "batch": batch,
                                     "partial": list(part), "history": history})

    for epoch in range(start, cfg.epochs):
        model.train()
        first = start_batch if epoch == start else 0
        total, seen, train_seconds = partial if epoch == start and first else (0.0, 0, 0.0)
        t0 = last_save = time.time()
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        batches = train.batches(cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed + epoch, start=first,
                                cutout=cfg.cutout)
        bar = progress(batches, total=steps_per_epoch, initial=first, desc=desc)
        lines = ProgressLines(log, desc, steps_per_epoch, first)
        for k, (x, y) in enumerate(bar, start=first):
            x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(dev, non_blocking=True)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_with_teacher(model(x), x, y, teacher, cfg.distill, cfg.temperature, "train",
                                         cfg.label_smoothing)
            total += optimizer_step(opt, sched, loss) * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.3f}")
            lines.update(k + 1, total / seen)
            if time.time() - last_save > state_every and k + 1 < steps_per_epoch:
                save_state(epoch, k + 1, (total, seen, train_seconds + time.time() - t0))
                last_save = time.time()
        train_seconds += time.time() - t0
        t_eval = time.time()
        acc = evaluate_ann(model, val) if val is not None else None
        entry = {"epoch": epoch + 1, "loss": total / seen, "val_acc": acc, "train_seconds": round(train_seconds, 1),
                 "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
                 "eval_seconds": round(time.time() - t_eval, 1)}
        history.append(entry)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {total / seen:.4f}" +
            (f" val acc {acc:.2f}%" if acc is not None else "") +
            f" ({train_seconds:.0f}s, {entry['images_per_second']:.0f} img/s)")
        save_state(epoch + 1, 0, (0.0, 0, 0.0))
    model.cpu().to(memory_format=torch.contiguous_format)  # the caller gets its model back on the CPU
    test_acc = evaluate_ann(model, test) if test is not None else None
    if test_acc is not None:
        log(f"final test accuracy {test_acc:.2f}% ({len(test)} images, scored once)")
    final = {**meta, "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}, "accuracy": test_acc,
             "val_accuracy": history[-1]["val_acc"] if history else None, "epochs": cfg.epochs, "history": history,
             "train_config": {**cfg.__dict__, "bf16_used": use_bf16}, "train_samples": len(train),
             "val_samples": len(val) if val is not None else 0}
    save_checkpoint(out, final)
    return final
