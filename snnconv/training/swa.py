"""Stochastic weight averaging of checkpoints from one training trajectory.

Izmailov et al., UAI 2018, "Averaging Weights Leads to Wider Optima and Better Generalization":
the weights at the ends of cyclic-learning-rate cycles lie around a wide, flat basin, and their
mean lies nearer its centre than any of them, so it usually generalises better. Here the cycles are
warm restarts (``snnconv finetune`` from the previous cycle's checkpoint, each with its own OneCycle
schedule) and the method is applied offline to their final checkpoints.

Floating-point parameters and buffers are averaged element-wise (QCFS thresholds included: they are
parameters). BatchNorm running statistics of the averaged weights are *not* the average of the
runs' statistics, so, as in the paper, they are re-estimated with one pass over the training data
(``torch.optim.swa_utils.update_bn``, which resets them and uses a cumulative mean).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from snnconv.checkpoints import apply_state_dict
from snnconv.errors import SnnconvError


def average_state_dicts(states: list[dict[str, torch.Tensor]], sources: list[str]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point entries; integer entries (BN batch counters) come from the first."""
    if len(states) < 2:
        raise SnnconvError("weight averaging needs at least two checkpoints")
    keys = list(states[0])
    for state, src in zip(states[1:], sources[1:]):
        if list(state) != keys:
            missing = sorted(set(keys) ^ set(state))
            raise SnnconvError(f"checkpoint {src} has other tensors than {sources[0]} (e.g. {missing[:3]})")
        for k in keys:
            if state[k].shape != states[0][k].shape:
                raise SnnconvError(f"checkpoint {src}: {k} has shape {tuple(state[k].shape)}, "
                                   f"{sources[0]} has {tuple(states[0][k].shape)}")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
            if states[0][k].is_floating_point() else states[0][k].clone() for k in keys}


@torch.no_grad()
def swa_model(model: nn.Module, states: list[dict[str, torch.Tensor]], sources: list[str],
              train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """Load the mean of ``states`` into ``model`` and re-estimate its BatchNorm statistics on ``train_batches``."""
    apply_state_dict(model, {"state_dict": average_state_dicts(states, sources)}, " + ".join(sources))
    update_bn(train_batches, model)  # takes x from each (x, y); leaves the model in its former train/eval mode
    return model.eval()
