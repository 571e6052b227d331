"""Pair-based STDP: the exponential window, its all-to-all pair sum, and the online (trace) form
with weight-dependent bounds.

Window (Bi & Poo, J. Neurosci. 1998; Song, Miller & Abbott, Nat. Neurosci. 2000), with
``Δt = t_post - t_pre`` in simulator steps (dt = 1 step)::

    W(Δt) = +A+ exp(-Δt / τ+)    for Δt >= 0   (pre before post: potentiation)
    W(Δt) = -A- exp(+Δt / τ-)    for Δt <  0   (post before pre: depression)

Online form (Song et al. 2000; Morrison, Diesmann & Gerstner, Biol. Cybern. 2008): a presynaptic
trace ``x_j`` and a postsynaptic trace ``y_i`` decay by ``exp(-1/τ)`` per step and jump by 1 at
each spike. At step t::

    x_j(t) = x_j(t-1) e^{-1/τ+} + s_j(t)             (includes the current pre spike)
    LTP:  Δw_ij += A+ f+(w_ij) s_i(t) x_j(t)
    LTD:  Δw_ij -= A- f-(w_ij) s_j(t) y_i(t-1) e^{-1/τ-}   (excludes the current post spike)
    y_i(t) = y_i(t-1) e^{-1/τ-} + s_i(t)

so coincident spikes (Δt = 0) count once, as potentiation, and the sum of the online updates
with ``f± = 1`` equals the all-to-all pair sum ``Σ_pairs W(t_post - t_pre)`` exactly
(:func:`pair_stdp_dw`). ``interaction="nearest"`` resets traces to 1 instead of adding 1
(nearest-spike interaction, Morrison et al. 2008).

Weight dependence (Gütig, Aharonov, Rotter & Sompolinsky, J. Neurosci. 2003)::

    f+(w) = (w_max - w)^μ        f-(w) = (w - w_min)^μ

μ = 0 is additive STDP (hard bounds: weights are clipped to [w_min, w_max]); μ = 1 is the
multiplicative (soft-bound) rule of van Rossum, Bi & Turrigiano (2000) / Rubin et al. (2001),
under which updates shrink to zero at the bounds (with μ = 1, ``w + A+(w_max-w)x - A-(w-w_min)y``
stays in [w_min, w_max] without clipping while ``A+ x <= 1`` and ``A- y <= 1``); 0 < μ < 1
interpolates (its updates can overshoot a bound, so :meth:`TraceSTDP.run` clips). Spike tensors are
``[T, B, N]`` (time, batch, neurons) and weights ``[N_post, N_pre]``, as in ``torch.nn.Linear``
and the snnconv IR; batch contributions are summed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WeightDependence:
    """Gütig et al. (2003) weight dependence ``f+(w) = (w_max-w)^μ``, ``f-(w) = (w-w_min)^μ``.

    ``w_min``/``w_max`` of ``None`` mean unbounded on that side (factor 1, no clipping), used for
    signed readout weights."""

    mu: float = 0.0
    w_min: float | None = 0.0
    w_max: float | None = 1.0

    def ltp(self, w: torch.Tensor) -> torch.Tensor | float:
        if self.w_max is None or self.mu == 0:
            return 1.0
        return (self.w_max - w).clamp_min(0) ** self.mu

    def ltd(self, w: torch.Tensor) -> torch.Tensor | float:
        if self.w_min is None or self.mu == 0:
            return 1.0
        return (w - self.w_min).clamp_min(0) ** self.mu

    def clip(self, w: torch.Tensor) -> torch.Tensor:
        lo = -math.inf if self.w_min is None else self.w_min
        hi = math.inf if self.w_max is None else self.w_max
        return w.clamp(lo, hi)


UNBOUNDED = WeightDependence(mu=0.0, w_min=None, w_max=None)


def stdp_window(dt: torch.Tensor | float, a_plus: float = 0.01, a_minus: float = 0.0105, tau_plus: float = 20.0,
                tau_minus: float = 20.0) -> torch.Tensor:
    """The pair STDP window ``W(Δt)``, ``Δt = t_post - t_pre`` (Bi & Poo 1998; Song et al. 2000)."""
    dt = torch.as_tensor(dt, dtype=torch.float64)
    return torch.where(dt >= 0, a_plus * torch.exp(-dt / tau_plus), -a_minus * torch.exp(dt / tau_minus))


def pair_stdp_dw(pre: torch.Tensor, post: torch.Tensor, a_plus: float = 0.01, a_minus: float = 0.0105,
                 tau_plus: float = 20.0, tau_minus: float = 20.0) -> torch.Tensor:
    """All-to-all pair sum ``Δw_ij = Σ_b Σ_{t_i, t_j} W(t_i - t_j)`` from spike trains ``[T, B, N]``
    (reference implementation, O(T²); weight-independent)."""
    T = pre.shape[0]
    t = torch.arange(T, dtype=torch.float64)
    win = stdp_window(t.view(T, 1) - t.view(1, T), a_plus, a_minus, tau_plus, tau_minus)  # [t_post, t_pre]
    return torch.einsum("pq,pbi,qbj->ij", win, post.double(), pre.double()).to(pre.dtype)


class TraceSTDP:
    """Online pair-based STDP with traces and Gütig weight dependence (see the module docstring)."""

    def __init__(self, a_plus: float = 0.01, a_minus: float = 0.0105, tau_plus: float = 20.0,
                 tau_minus: float = 20.0, bounds: WeightDependence | None = None, interaction: str = "all"):
        if interaction not in ("all", "nearest"):
            raise ValueError("interaction must be 'all' or 'nearest'")
        self.a_plus, self.a_minus = a_plus, a_minus
        self.dec_plus, self.dec_minus = math.exp(-1.0 / tau_plus), math.exp(-1.0 / tau_minus)
        self.bounds = bounds or WeightDependence()
        self.interaction = interaction
        self.reset()

    def reset(self) -> None:
        self.x = self.y = None  # pre trace [B, N_pre], post trace [B, N_post]

    def _bump(self, trace: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.where(s > 0, torch.ones_like(trace), trace) if self.interaction == "nearest" else trace + s

    def terms(self, pre: torch.Tensor, post: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance the traces by one step; returns the weight-independent (LTP, LTD) terms ``[B, N_post, N_pre]``."""
        if self.x is None:
            self.x, self.y = torch.zeros_like(pre), torch.zeros_like(post)
        self.x = self._bump(self.x * self.dec_plus, pre)
        y_dec = self.y * self.dec_minus
        ltp = post.unsqueeze(2) * self.x.unsqueeze(1)
        ltd = y_dec.unsqueeze(2) * pre.unsqueeze(1)
        self.y = self._bump(y_dec, post)
        return ltp, ltd

    def step(self, pre: torch.Tensor, post: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """One step: spikes ``[B, N_pre]``, ``[B, N_post]`` -> weight change ``[N_post, N_pre]`` (not applied)."""
        ltp, ltd = self.terms(pre, post)
        b = self.bounds
        return self.a_plus * b.ltp(w) * ltp.sum(0) - self.a_minus * b.ltd(w) * ltd.sum(0)

    def run(self, pre: torch.Tensor, post: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Apply the rule online over spike trains ``[T, B, N]``; returns the new weights."""
        w = w.clone()
        for t in range(pre.shape[0]):
            w = self.bounds.clip(w + self.step(pre[t], post[t], w))
        return w
