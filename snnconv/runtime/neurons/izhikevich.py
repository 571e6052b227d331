"""Dynamics of :class:`snnconv.ir.Izhikevich` (equations and discretisation there)."""
from __future__ import annotations

import torch


@torch.no_grad()
def run_izhikevich(node, current: torch.Tensor, state):
    """``(output, counts, state)`` over ``current`` ``[T, B, ...]`` (injected current per step);
    ``state`` is ``(v, u)``."""
    if state is None:
        v = torch.full(current.shape[1:], node.v_init, dtype=current.dtype, device=current.device)
        u = v * node.b
    else:
        v, u = state
    a, b, c, d, dt = node.a, node.b, node.c, node.d, node.dt
    counts = torch.zeros_like(current)
    for t in range(current.shape[0]):
        drive = current[t] + 140.0
        for _ in range(node.substeps):
            dv = (0.04 * v + 5.0) * v + drive - u
            du = a * (b * v - u)
            v = v + dt * dv
            u = u + dt * du
            fired = v >= node.v_peak
            counts[t] += fired
            v = v.masked_fill(fired, c)
            u = torch.where(fired, u + d, u)
    return counts * node.amplitude, counts, (v, u)
