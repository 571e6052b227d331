"""Triplet STDP (Pfister & Gerstner, J. Neurosci. 2006), all-to-all interaction.

Two presynaptic traces ``r1`` (τ+), ``r2`` (τx) and two postsynaptic traces ``o1`` (τ-),
``o2`` (τy), each decaying by ``exp(-1/τ)`` per step (dt = 1 step) and jumping by 1 at a spike::

    at a post spike:  Δw_ij += f+(w) r1_j(t) [A2+ + A3+ o2_i(t-ε)]
    at a pre spike:   Δw_ij -= f-(w) o1_i(t-ε) [A2- + A3- r2_j(t-ε)]

``t-ε`` means the trace just before the current spike is added. ``r1`` includes a pre spike of
the same step (Δt = 0 potentiates), as in :class:`snnconv.learning.stdp.TraceSTDP`. With
``A3+ = A3- = 0`` the rule is exactly pair STDP; the triplet term ``A3+ r1 o2`` adds
potentiation that grows with the postsynaptic rate (post-post-pre interaction), which gives
the frequency dependence of Sjöström et al. (2001). Time constants default to the visual-cortex
fit of Pfister & Gerstner (τ+ = 16.8, τ- = 33.7, τx = 101, τy = 125, in steps of 1 ms); the
amplitudes are free parameters. Weight dependence as in :class:`WeightDependence`.
"""
from __future__ import annotations

import math

import torch

from snnconv.learning.stdp import WeightDependence


class TripletSTDP:
    """Online all-to-all triplet STDP on spike tensors (``[B, N]`` per step, weights ``[N_post, N_pre]``)."""

    def __init__(self, a2_plus: float = 5e-3, a3_plus: float = 6.2e-3, a2_minus: float = 7e-3, a3_minus: float = 2.3e-4,
                 tau_plus: float = 16.8, tau_minus: float = 33.7, tau_x: float = 101.0, tau_y: float = 125.0,
                 bounds: WeightDependence | None = None):
        self.a2p, self.a3p, self.a2m, self.a3m = a2_plus, a3_plus, a2_minus, a3_minus
        self.d = {k: math.exp(-1.0 / v) for k, v in (("r1", tau_plus), ("r2", tau_x), ("o1", tau_minus), ("o2", tau_y))}
        self.bounds = bounds or WeightDependence()
        self.reset()

    def reset(self) -> None:
        self.r1 = self.r2 = self.o1 = self.o2 = None

    def step(self, pre: torch.Tensor, post: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """One step: returns the weight change ``[N_post, N_pre]`` (not applied)."""
        if self.r1 is None:
            self.r1, self.r2 = torch.zeros_like(pre), torch.zeros_like(pre)
            self.o1, self.o2 = torch.zeros_like(post), torch.zeros_like(post)
        r1 = self.r1 * self.d["r1"] + pre
        r2_prev, o1_prev, o2_prev = self.r2 * self.d["r2"], self.o1 * self.d["o1"], self.o2 * self.d["o2"]
        ltp = ((post * (self.a2p + self.a3p * o2_prev)).unsqueeze(2) * r1.unsqueeze(1)).sum(0)
        ltd = (o1_prev.unsqueeze(2) * (pre * (self.a2m + self.a3m * r2_prev)).unsqueeze(1)).sum(0)
        self.r1, self.r2 = r1, r2_prev + pre
        self.o1, self.o2 = o1_prev + post, o2_prev + post
        return self.bounds.ltp(w) * ltp - self.bounds.ltd(w) * ltd

    def run(self, pre: torch.Tensor, post: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Apply the rule online over spike trains ``[T, B, N]``; returns the new weights."""
        w = w.clone()
        for t in range(pre.shape[0]):
            w = self.bounds.clip(w + self.step(pre[t], post[t], w))
        return w
