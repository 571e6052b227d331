"""Multi-step dynamics of the signed multi-level IF neuron (:class:`snnconv.ir.SignedNeuron`, equations there)."""
from __future__ import annotations

import torch


@torch.no_grad()
def run_signed_neuron(node, current: torch.Tensor, state):
    """Simulator entry: ``current`` ``[T, B, ...]``; thresholds broadcast over the last dimension.

    Returns ``(output, counts, v)``: output spikes of amplitude theta (signed, up to ``levels`` per
    step; any count when ``levels`` is 0), the signed spike counts per step and the membrane potential after the chunk."""
    v = torch.zeros(current.shape[1:], dtype=current.dtype, device=current.device) if state is None else state
    th = node.threshold.reshape(()) if node.threshold.numel() == 1 else node.threshold
    counts = torch.empty_like(current)
    L = float(node.levels)
    for t in range(current.shape[0]):
        v.add_(current[t])
        s = counts[t]
        torch.div(v, th, out=s).add_(0.5).floor_()
        if L:
            s.clamp_(-L, L)
        v.sub_(s * th)
    return counts * th, counts, v
