r"""Noise-robust fine-tuning of an ANN before conversion, with a noise curriculum.

Each mini-batch is corrupted by one noise kind of :mod:`snnconv.runtime.noise`, cycling over
``kinds``, at a level that grows linearly from 0 to ``max_level`` (default 45%) over the first
``ramp`` fraction of the steps and then stays there (curriculum learning, Bengio et al., ICML 2009):

* ``gaussian``: additive input noise, std = level x input range;
* ``flip``: conversion-aware spike noise. The input is rate coded for ``timesteps`` steps exactly
  as the SNN's rate encoder does (Bernoulli events, amplitude ``sign(x) * x_max``), the events go
  through a binary symmetric channel with flip rate = level, and the ANN sees their time average:
  the very current the first SNN layer integrates;
* ``weight``: multiplicative weight noise (std = level / 2, since 45% device variation destroys any
  network) applied to every conv/linear weight for the forward and backward pass of the batch and
  removed before the optimiser step (noise-injection training, as in Joshi et al. 2020).

Batch-norm statistics are frozen (eval mode) so the fine-tuned network converts with the
same activation scales.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from snnconv.data.datasets import Split
from snnconv.progress import progress
from snnconv.runtime.noise import flip_events, gaussian_input


def rate_flip_average(x: torch.Tensor, x_max: float, rate: float, timesteps: int, gen: torch.Generator) -> torch.Tensor:
    """Time average of rate-coded spikes of ``x`` after bit flips at ``rate`` (what the SNN integrates)."""
    p = (x.abs() / x_max).clamp(max=1.0)
    events = torch.rand((timesteps, *x.shape), generator=gen) < p
    events = flip_events(events, rate, "flip", gen)
    amp = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x)) * x_max
    return events.float().mean(0) * amp


def robust_finetune(model: nn.Module, train: Split, epochs: int = 2, max_level: float = 0.45, ramp: float = 0.5,
                    kinds: tuple[str, ...] = ("gaussian", "flip", "weight"), timesteps: int = 8,
                    x_max: float = 1.0, value_range: float = 1.0, lr: float = 0.01, batch_size: int = 128,
                    seed: int = 0, augment: bool = False, log=print, bf16: bool = False) -> tuple[nn.Module, list[dict]]:
    """Fine-tune ``model`` in place under the noise curriculum; returns it and the per-epoch history.

    ``bf16``: bfloat16 autocast for the forward pass (as ``TrainConfig.bf16``; weights, the injected
    noise and the optimizer stay fp32)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    per_epoch = -(-len(train) // batch_size)
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    history, step = [], 0
    for epoch in range(epochs):
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        t0, total, seen = time.time(), 0.0, 0
        for x, y in progress(train.batches(batch_size, shuffle=True, augment=augment, seed=seed + epoch),
                             total=per_epoch, desc=f"robust epoch {epoch + 1}"):
            level = max_level * min(1.0, step / max(1.0, ramp * steps))
            kind = kinds[step % len(kinds)]
            noise = []
            if kind == "gaussian":
                x = gaussian_input(x, level, value_range, gen)
            elif kind == "flip":
                x = rate_flip_average(x, x_max, level, timesteps, gen)
            elif kind == "weight":
                with torch.no_grad():
                    for w in weights:
                        n = w * (0.5 * level) * torch.randn(w.shape, generator=gen)
                        w.add_(n)
                        noise.append(n)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for w, n in zip(weights, noise):
                    w.sub_(n)
            opt.step()
            sched.step()
            step += 1
            total, seen = total + loss.item() * len(y), seen + len(y)
        history.append({"epoch": epoch + 1, "loss": total / seen, "final_level": level,
                        "seconds": round(time.time() - t0, 1)})
        log(f"robust fine-tuning epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}, noise level {level:.2f}")
    return model.eval(), history
