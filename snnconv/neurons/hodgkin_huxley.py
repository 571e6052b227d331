"""Dynamics of :class:`snnconv.ir.HodgkinHuxley` (equations and discretisation there): RK4."""
from __future__ import annotations

import torch


def _vtrap(x: torch.Tensor, k: float) -> torch.Tensor:
    """``x / (1 - exp(-x / k))`` with its limit ``k`` at ``x = 0`` (removable singularity)."""
    small = x.abs() < 1e-4
    return torch.where(small, k + 0.5 * x, x / -torch.expm1(-x / k))


def rates(v: torch.Tensor):
    """Opening/closing rates ``(alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n)`` in 1/ms at ``v`` mV."""
    return (0.1 * _vtrap(v + 40.0, 10.0), 4.0 * torch.exp(-(v + 65.0) / 18.0),
            0.07 * torch.exp(-(v + 65.0) / 20.0), torch.sigmoid((v + 35.0) / 10.0),
            0.01 * _vtrap(v + 55.0, 10.0), 0.125 * torch.exp(-(v + 65.0) / 80.0))


def steady_state(v: torch.Tensor):
    """Gate values ``(m, h, n)`` at rest at ``v``."""
    am, bm, ah, bh, an, bn = rates(v)
    return am / (am + bm), ah / (ah + bh), an / (an + bn)


def _derivs(node, v, m, h, n, i_ext):
    am, bm, ah, bh, an, bn = rates(v)
    i_ion = (node.g_na * m ** 3 * h * (v - node.e_na) + node.g_k * n ** 4 * (v - node.e_k)
             + node.g_l * (v - node.e_l))
    return ((i_ext - i_ion) / node.c_m, am * (1 - m) - bm * m, ah * (1 - h) - bh * h, an * (1 - n) - bn * n)


@torch.no_grad()
def run_hodgkin_huxley(node, current: torch.Tensor, state):
    """``(output, counts, state)`` over ``current`` ``[T, B, ...]`` (uA/cm^2 per step);
    ``state`` is ``(v, m, h, n)``."""
    if state is None:
        v = torch.full(current.shape[1:], node.v_init, dtype=current.dtype)
        state = (v, *steady_state(v))
    y = state
    dt = node.dt
    counts = torch.zeros_like(current)
    for t in range(current.shape[0]):
        i_ext = current[t]
        for _ in range(node.substeps):
            k1 = _derivs(node, *y, i_ext)
            k2 = _derivs(node, *(s + 0.5 * dt * k for s, k in zip(y, k1)), i_ext)
            k3 = _derivs(node, *(s + 0.5 * dt * k for s, k in zip(y, k2)), i_ext)
            k4 = _derivs(node, *(s + dt * k for s, k in zip(y, k3)), i_ext)
            new = tuple(s + dt / 6.0 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(y, k1, k2, k3, k4))
            counts[t] += (y[0] < node.v_spike) & (new[0] >= node.v_spike)
            y = new
    return counts * node.amplitude, counts, y
