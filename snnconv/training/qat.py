r"""Quantization-aware fine-tuning (QAT) of an ANN before conversion, with a straight-through estimator.

Every conv/linear weight is reparametrised as its fake-quantized value in the forward pass,
:math:`\hat w = w + \mathrm{sg}(Q(w) - w)` (``sg`` = stop-gradient), so the loss sees the
quantized network while the gradient passes straight through the rounding to the latent float
weights: the straight-through estimator of Bengio et al. 2013 ("Estimating or propagating
gradients through stochastic neurons"), as used for ternary weights by BitNet b1.58 (Ma et al.
2024) and for low-bit integers by Jacob et al. (CVPR 2018). ``Q`` is exactly the quantizer of the
``quantize`` pass (:func:`snnconv.passes.quantize.fake_quantize`), per output channel, so after
:func:`finalize_qat`, batch-norm folding and the ``quantize`` pass the integer codes are those the
fine-tuning optimised (per-channel scales absorb the folded BN factors). Batch-norm statistics are
frozen during fine-tuning (BN in eval mode) unless ``train_bn``: ternary weights change each
channel's pre-BN scale and mean so much that frozen statistics leave the clips of a deep net
saturated or silent (ResNet-20 ternary QAT with frozen BN stays at chance); with per-channel
quantization re-estimating them is safe, because the folded BN factor of a channel only rescales
that channel's codes (absmean ternarisation of ``c * codes`` returns the same codes).
"""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn.utils import parametrize

from snnconv.data.datasets import Split
from snnconv.passes.quantize import fake_quantize
from snnconv.progress import progress
from snnconv.training.ann import evaluate_ann


class FakeQuant(nn.Module):
    """Weight parametrisation: forward = quantized weight, backward = identity (STE)."""

    def __init__(self, scheme: str, bits: int, granularity: str = "channel"):
        super().__init__()
        self.scheme, self.bits, self.granularity = scheme, bits, granularity

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fake_quantize(w, self.scheme, self.bits, self.granularity) - w).detach()


def synaptic_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prepare_qat(model: nn.Module, scheme: str = "ternary", bits: int = 8, granularity: str = "channel",
                keep_first_last: bool = False) -> nn.Module:
    """Register the fake-quant parametrisation on the conv/linear weights (in place)."""
    mods = synaptic_modules(model)
    if keep_first_last:
        mods = mods[1:-1]
    for m in mods:
        parametrize.register_parametrization(m, "weight", FakeQuant(scheme, bits, granularity))
    return model


def finalize_qat(model: nn.Module) -> nn.Module:
    """Bake the quantized weights in and drop the parametrisations (in place)."""
    for m in synaptic_modules(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def qat_finetune(model: nn.Module, train: Split, scheme: str = "ternary", bits: int = 8, epochs: int = 1,
                 lr: float = 0.01, batch_size: int = 128, seed: int = 0, augment: bool = False,
                 granularity: str = "channel", keep_first_last: bool = False, test: Split | None = None,
                 log=print, bf16: bool = False, train_bn: bool = False) -> tuple[nn.Module, list[dict]]:
    """Fine-tune ``model`` (in place) with fake-quantized weights; returns it finalized and the history.

    ``bf16``: bfloat16 autocast for the forward pass (as ``TrainConfig.bf16``; the latent weights, the
    fake quantizer and the optimizer stay fp32). ``train_bn``: batch-norm layers train (statistics
    re-estimated) instead of being frozen; only with per-channel quantization (see the module docstring)."""
    if train_bn and granularity != "channel":
        raise ValueError("train_bn needs per-channel quantization (a per-layer scale cannot absorb per-channel BN drift)")
    torch.manual_seed(seed)
    prepare_qat(model, scheme, bits, granularity, keep_first_last)
    history = finetune_parametrized(model, train, f"QAT {scheme}{bits if scheme == 'int' else ''}", epochs, lr,
                                    batch_size, seed, augment, test, log, bf16, train_bn)
    return finalize_qat(model), history


def finetune_parametrized(model: nn.Module, train: Split, label: str, epochs: int = 1, lr: float = 0.01,
                          batch_size: int = 128, seed: int = 0, augment: bool = False, test: Split | None = None,
                          log=print, bf16: bool = False, train_bn: bool = False) -> list[dict]:
    """The fine-tuning loop shared by QAT and pruning-aware fine-tuning: SGD + Nesterov, cosine LR,
    no weight decay (it would pull the latent weights of a fake-quantized or masked layer around
    without changing the forward pass), BN frozen unless ``train_bn``. Leaves ``model`` in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    steps = epochs * -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    for epoch in range(epochs):
        model.train()
        if not train_bn:
            _freeze_bn(model)
        t0, total, seen = time.time(), 0.0, 0
        for x, y in progress(train.batches(batch_size, shuffle=True, augment=augment, seed=seed + epoch),
                             total=-(-len(train) // batch_size), desc=f"{label} epoch {epoch + 1}"):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        rec = {"epoch": epoch + 1, "loss": total / seen, "seconds": round(time.time() - t0, 1)}
        if test is not None:
            rec["test_acc"] = evaluate_ann(model, test)
        history.append(rec)
        log(f"{label} epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"))
    model.eval()
    return history
