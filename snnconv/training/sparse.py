r"""Pruning-aware fine-tuning of an ANN before conversion: prune, then retrain the survivors.

The three-step method of Han et al. (NeurIPS 2015, "Learning both weights and connections for
efficient neural networks"): rank the conv/linear weights by :math:`|w|` (over all layers
together, ``scope="global"``, or within each layer), zero the smallest ``sparsity`` fraction, and
fine-tune the remaining ones with the pruned ones held at zero. The mask is a weight
parametrisation (:math:`\hat w = w \odot m`), so the gradient of a pruned weight is zero and it
stays pruned; :func:`snnconv.training.qat.finalize_qat` bakes the masked weights in.

After BN folding the ``prune`` pass at the same sparsity finds these zeros again (a folded zero is
still zero and zeros rank lowest), so the converted SNN carries exactly the fine-tuned pattern and
the simulator counts its SynOps. Batch-norm statistics are re-estimated by default
(``train_bn``): removing half the synapses shifts every channel's pre-BN mean and variance.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from snnconv.data.datasets import Split
from snnconv.training.qat import finalize_qat, finetune_parametrized, synaptic_modules


class FixedMask(nn.Module):
    """Weight parametrisation: forward = weight * mask (pruned weights get no gradient)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global") -> dict[nn.Module, torch.Tensor]:
    """Keep-masks (1 = kept) that remove the ``sparsity`` fraction of smallest-|w| conv/linear weights."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError("sparsity must be in [0, 1)")
    mods = synaptic_modules(model)
    if scope == "layer":
        cuts = {m: torch.quantile(m.weight.abs().flatten().float(), sparsity) if sparsity else -1.0 for m in mods}
    elif scope == "global":
        allw = torch.cat([m.weight.abs().flatten() for m in mods])
        k = int(round(sparsity * allw.numel()))
        cut = allw.kthvalue(k).values if k else torch.tensor(-1.0)
        cuts = {m: cut for m in mods}
    else:
        raise ValueError("scope must be 'global' or 'layer'")
    return {m: (m.weight.abs() > cuts[m]).float() for m in mods}


def prune_finetune(model: nn.Module, train: Split, sparsity: float = 0.5, scope: str = "global", epochs: int = 1,
                   lr: float = 0.01, batch_size: int = 128, seed: int = 0, augment: bool = False,
                   test: Split | None = None, log=print, bf16: bool = False,
                   train_bn: bool = True) -> tuple[nn.Module, list[dict]]:
    """Magnitude-prune ``model`` (in place) and fine-tune the surviving weights; returns it and the history."""
    torch.manual_seed(seed)
    for m, mask in magnitude_masks(model, sparsity, scope).items():
        parametrize.register_parametrization(m, "weight", FixedMask(mask))
    history = finetune_parametrized(model, train, f"prune {sparsity:.0%} fine-tune", epochs, lr, batch_size, seed,
                                    augment, test, log, bf16, train_bn)
    return finalize_qat(model), history
