"""Dynamics of :class:`snnconv.ir.CubaLIF` (equations and discretisation there)."""
from __future__ import annotations

import math

import torch


def propagators(node) -> tuple[float, float, float]:
    """``(alpha, beta, kappa)`` of the exact one-step solution (see :class:`snnconv.ir.CubaLIF`)."""
    alpha = math.exp(-node.dt / node.tau_syn)
    beta = math.exp(-node.dt / node.tau_mem)
    if math.isclose(node.tau_syn, node.tau_mem, rel_tol=1e-9):
        kappa = node.dt / node.tau_mem * beta
    else:
        kappa = node.tau_syn / (node.tau_syn - node.tau_mem) * (alpha - beta)
    return alpha, beta, kappa


@torch.no_grad()
def run_cuba_lif(node, current: torch.Tensor, state):
    """``(output, counts, state)`` over ``current`` ``[T, B, ...]``; ``state`` is ``(i, v)``."""
    alpha, beta, kappa = propagators(node)
    if state is None:
        i = torch.zeros(current.shape[1:], dtype=current.dtype, device=current.device)
        v = torch.full_like(i, node.v_leak)
    else:
        i, v = state
    counts = torch.empty_like(current)
    for t in range(current.shape[0]):
        i_inf = current[t] * node.w_in
        di = i - i_inf
        # v <- v_leak + (v - v_leak) beta + R I_inf (1 - beta) + R (I - I_inf) kappa
        v = (v - node.v_leak).mul_(beta).add_(i_inf, alpha=node.r * (1.0 - beta)).add_(di, alpha=node.r * kappa)
        v.add_(node.v_leak)
        i = di.mul_(alpha).add_(i_inf)
        s = counts[t]
        torch.ge(v, node.v_threshold, out=s)
        v.masked_fill_(s > 0, node.v_reset)
    return counts * node.amplitude, counts, (i, v)
