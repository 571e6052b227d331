"""Dynamics of :class:`snnconv.ir.AdaptiveLIF` (equations there), fused over a time chunk."""
from __future__ import annotations

import torch


@torch.no_grad()
def run_adaptive_lif(node, current: torch.Tensor, state):
    """``(output, counts, state)`` over ``current`` ``[T, B, ...]``; ``state`` is ``(v, a)``."""
    if state is None:
        v = torch.zeros(current.shape[1:], dtype=current.dtype, device=current.device)
        a = torch.zeros_like(v)
    else:
        v, a = state
    counts = torch.empty_like(current)
    for t in range(current.shape[0]):
        if node.leak != 1.0:
            v.mul_(node.leak)
        v.add_(current[t])
        theta = node.threshold + node.adapt_strength * a
        s = counts[t]
        torch.ge(v, theta, out=s)
        if node.reset == "subtract":
            v.sub_(s * theta)
        else:
            v.masked_fill_(s > 0, node.v_reset)
        a.mul_(node.adapt_decay).add_(s)
    return counts * node.amplitude, counts, (v, a)
