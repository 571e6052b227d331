"""Multi-step integrate-and-fire dynamics (IF, LIF, multi-threshold), fused over a time chunk.

Implements the update of :class:`snnconv.ir.SpikingNeuron` (equations there). The loop over
time is the only sequential part of the simulator; everything inside one step is a handful of
in-place tensor ops so no per-step temporaries are kept.
"""
from __future__ import annotations

import torch


def threshold_view(threshold: torch.Tensor, sample_dims: int) -> torch.Tensor:
    """Broadcast a scalar or per-channel ``[C]`` threshold over ``[B, C, ...]`` tensors."""
    if threshold.numel() == 1:
        return threshold.reshape(())
    return threshold.view((-1,) + (1,) * (sample_dims - 1))


@torch.no_grad()
def integrate_fire(current: torch.Tensor, v: torch.Tensor, threshold: torch.Tensor, leak: float = 1.0,
                   reset: str = "subtract", levels: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``T`` steps on ``current`` ``[T, B, ...]`` from membrane ``v`` ``[B, ...]``.

    Returns ``(output, counts, v)``: the output spikes with amplitude ``theta`` ``[T, B, ...]``,
    the integer spike counts per step (graded: 0..levels) and the final membrane potential.
    """
    th = threshold_view(threshold, v.dim() - 1)
    counts = torch.empty_like(current)
    for t in range(current.shape[0]):
        if leak != 1.0:
            v.mul_(leak)
        v.add_(current[t])
        s = counts[t]
        if levels == 1:
            torch.ge(v, th, out=s)
        else:
            torch.div(v, th, out=s).floor_().clamp_(0, levels)
        if reset == "subtract":
            v.sub_(s * th)
        else:
            v.masked_fill_(s > 0, 0.0)
    return counts * th, counts, v
