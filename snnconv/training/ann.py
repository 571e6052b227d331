"""Plain ANN training for the model zoo (SGD + momentum, cosine LR, crop/flip augmentation).

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
from snnconv.data.datasets import Split
from snnconv.errors import SnnconvError
from snnconv.progress import progress


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


def training_device(name: str) -> torch.device:
    """``torch.device(name)``, or a clear error when that device is not present here."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SnnconvError(f"unknown device {name!r} (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SnnconvError(f"device {name!r} requested but this torch build sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise SnnconvError(f"device {name!r}: only cpu and cuda are supported")
    return dev


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


def train_ann(model: nn.Module, train: Split, test: Split, cfg: TrainConfig, out: Path,
              meta: dict, log=print) -> dict:
    """Train ``model`` and write the final checkpoint to ``out``; returns the checkpoint dict."""
    torch.manual_seed(cfg.seed)
    dev = training_device(cfg.device)
    model.to(dev)  # before the optimizer is built, so its state lives on the same device
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    steps_per_epoch = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                                                pct_start=0.15)
    state_path = out.with_name(out.stem + ".state.pt")
    start, history = 0, []
    if state_path.is_file():
        st = load_checkpoint(state_path)
        model.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, history = st["epoch"], st.get("history", [])
        log(f"resuming from epoch {start}/{cfg.epochs} ({state_path})")
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, total, seen = time.time(), 0.0, 0
        bar = progress(train.batches(cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed + epoch),
                       total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for x, y in bar:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        acc = evaluate_ann(model, test)
        history.append({"epoch": epoch + 1, "loss": total / seen, "test_acc": acc, "seconds": time.time() - t0})
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {total / seen:.4f} test acc {acc:.2f}% ({time.time() - t0:.0f}s)")
        save_checkpoint(state_path, {"state_dict": cpu_state(model), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history})
    model.cpu()  # the caller gets its model back on the CPU, where the checkpoint's tensors are
    final = {**meta, "state_dict": model.state_dict(), "accuracy": history[-1]["test_acc"] if history else None,
             "epochs": cfg.epochs, "history": history}
    save_checkpoint(out, final)
    return final
