"""Dynamics of :class:`snnconv.ir.HodgkinHuxley` (equations and discretisation there): RK4.

The state is one stacked tensor ``[4, B, ...]`` = ``(V, m, h, n)`` so that every RK4 stage is a
few dozen tensor ops whatever the number of neurons (the per-op overhead dominates for the
small populations these models are used with).
"""
from __future__ import annotations

import math

import torch


def rates(v: torch.Tensor):
    """Opening/closing rates ``(alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n)`` in 1/ms at ``v``
    mV, written out plainly (the reference for the fused version used by the integrator)."""
    def vtrap(x, k):  # x / (1 - exp(-x/k)), limit k at x = 0
        return torch.where(x.abs() < 1e-4, k + 0.5 * x, x / -torch.expm1(-x / k))
    return (0.1 * vtrap(v + 40.0, 10.0), 4.0 * torch.exp(-(v + 65.0) / 18.0),
            0.07 * torch.exp(-(v + 65.0) / 20.0), torch.sigmoid((v + 35.0) / 10.0),
            0.01 * vtrap(v + 55.0, 10.0), 0.125 * torch.exp(-(v + 65.0) / 80.0))


def steady_state(v: torch.Tensor):
    """Gate values ``(m, h, n)`` at rest at ``v``."""
    am, bm, ah, bh, an, bn = rates(v)
    return am / (am + bm), ah / (ah + bh), an / (an + bn)


class _Consts:
    """Broadcastable coefficient tensors for the fused right-hand side."""

    def __init__(self, node, dtype, sample_dims, device=None):
        view = (-1,) + (1,) * sample_dims
        t = lambda *xs: torch.tensor(xs, dtype=dtype, device=device).view(view)  # noqa: E731
        # with u = V + 65: beta_m = 4 e^{-u/18}, alpha_h = 0.07 e^{-u/20}, beta_n = 0.125 e^{-u/80},
        # e^{-(V+35)/10} = e^{-u/10 + 3} (for beta_h)
        self.exp_a = t(-1 / 18, -1 / 20, -1 / 80, -1 / 10)
        self.exp_b = t(math.log(4.0), math.log(0.07), math.log(0.125), 3.0)
        self.x_off = t(-25.0, -10.0)  # V + 40 and V + 55 for alpha_m and alpha_n
        self.x_scale = t(0.1, 0.01)
        self.x_limit = t(1.0, 0.1)  # c * 10 at the removable singularity
        self.node = node


def _derivs(y: torch.Tensor, i_ext: torch.Tensor, k: _Consts) -> torch.Tensor:
    n_ = k.node
    v, g = y[0], y[1:]
    u = v + 65.0
    e = torch.exp(torch.addcmul(k.exp_b, k.exp_a, u))  # beta_m, alpha_h, beta_n, e^{-(V+35)/10}
    x = u + k.x_off
    a_mn = torch.where(x.abs() < 1e-4, k.x_limit + 0.5 * k.x_scale * x,
                       k.x_scale * x / torch.expm1(-0.1 * x).neg_())
    alpha = torch.stack((a_mn[0], e[1], a_mn[1]))
    beta = torch.stack((e[0], (1.0 + e[3]).reciprocal_(), e[2]))
    dg = alpha - (alpha + beta) * g
    m, h, n = g[0], g[1], g[2]
    n2 = n * n
    i_ion = (n_.g_na * m * m * m * h) * (v - n_.e_na) + (n_.g_k * n2 * n2) * (v - n_.e_k) + n_.g_l * (v - n_.e_l)
    dv = (i_ext - i_ion) / n_.c_m
    return torch.cat((dv.unsqueeze(0), dg))


@torch.no_grad()
def run_hodgkin_huxley(node, current: torch.Tensor, state):
    """``(output, counts, state)`` over ``current`` ``[T, B, ...]`` (uA/cm^2 per step);
    ``state`` is the stacked ``[4, B, ...]`` tensor of ``(V, m, h, n)``."""
    if state is None:
        v = torch.full(current.shape[1:], node.v_init, dtype=current.dtype, device=current.device)
        state = torch.stack((v, *steady_state(v)))
    k = _Consts(node, current.dtype, current.dim() - 1, current.device)
    y, dt = state, node.dt
    counts = torch.zeros_like(current)
    above = y[0] >= node.v_spike
    for t in range(current.shape[0]):
        i_ext = current[t]
        for _ in range(node.substeps):
            k1 = _derivs(y, i_ext, k)
            k2 = _derivs(torch.add(y, k1, alpha=0.5 * dt), i_ext, k)
            k3 = _derivs(torch.add(y, k2, alpha=0.5 * dt), i_ext, k)
            k4 = _derivs(torch.add(y, k3, alpha=dt), i_ext, k)
            y = y + (dt / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
            now = y[0] >= node.v_spike
            counts[t] += now & ~above  # upward crossing of v_spike
            above = now
    return counts * node.amplitude, counts, y
