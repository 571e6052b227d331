"""Reward-modulated STDP with eligibility traces (Izhikevich, Cereb. Cortex 2007; Florian,
Neural Comput. 2007, "MSTDPET").

Each synapse keeps an eligibility trace ``c_ij`` that integrates what pair STDP would have
done and decays with τ_c; the weight only changes when a neuromodulatory reward ``r`` arrives::

    c_ij(t) = c_ij(t-1) e^{-1/τc} + STDP_ij(t)          STDP_ij(t) = A+ s_i(t) x_j(t) - A- s_j(t) y_i(t-ε)
    Δw_ij   = η r_i(t) c_ij(t)

(traces ``x``, ``y`` as in :class:`snnconv.learning.stdp.TraceSTDP`, weight-independent). A
zero reward changes nothing, whatever the spikes; a reward delivered after the pattern
(delayed reward) acts on what is left of the eligibility then. Eligibility is kept per
sample ``[B, N_post, N_pre]`` so that each sample in a batch can get its own reward; the
reward can be a scalar, ``[B]`` (global per sample, Izhikevich/Florian) or ``[B, N_post]``
(one per postsynaptic neuron, as in the classification variant of Mozafari et al.,
IEEE TNNLS 2018, where the winner is rewarded or punished).
"""
from __future__ import annotations

import math

import torch

from snnconv.learning.stdp import UNBOUNDED, TraceSTDP, WeightDependence


class RewardSTDP:
    """R-STDP with eligibility traces (Izhikevich 2007; Florian 2007)."""

    def __init__(self, lr: float = 1.0, tau_c: float = 200.0, a_plus: float = 1.0, a_minus: float = 1.0,
                 tau_plus: float = 20.0, tau_minus: float = 20.0, bounds: WeightDependence | None = None):
        self.lr = lr
        self.dec_c = math.exp(-1.0 / tau_c)
        self.stdp = TraceSTDP(a_plus, a_minus, tau_plus, tau_minus, bounds=UNBOUNDED)
        self.bounds = bounds or UNBOUNDED
        self.reset()

    def reset(self) -> None:
        """Forget traces and eligibility (start of a new pattern/episode)."""
        self.stdp.reset()
        self.c = None

    def step(self, pre: torch.Tensor, post: torch.Tensor, reward: torch.Tensor | float | None = None,
             w: torch.Tensor | None = None) -> torch.Tensor | None:
        """Advance eligibility by one step; with ``reward`` (and ``w``) also return ``Δw = η r c``."""
        ltp, ltd = self.stdp.terms(pre, post)
        inc = self.stdp.a_plus * ltp - self.stdp.a_minus * ltd
        self.c = inc if self.c is None else self.c * self.dec_c + inc
        return None if reward is None else self.reward(reward)

    def run(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """Accumulate eligibility over spike trains ``[T, B, N]``; returns it ``[B, N_post, N_pre]``."""
        for t in range(pre.shape[0]):
            self.step(pre[t], post[t])
        return self.c

    def reward(self, r: torch.Tensor | float) -> torch.Tensor:
        """Weight change ``[N_post, N_pre]`` for reward ``r`` (scalar, ``[B]`` or ``[B, N_post]``) now."""
        if self.c is None:
            raise ValueError("no eligibility yet: call step()/run() first")
        r = torch.as_tensor(r, dtype=self.c.dtype)
        if r.dim() == 0:
            r = r.expand(self.c.shape[0])
        if r.dim() == 1:
            r = r.view(-1, 1, 1)
        else:
            r = r.unsqueeze(2)
        return self.lr * (r * self.c).sum(0)

    def apply(self, w: torch.Tensor, r: torch.Tensor | float) -> torch.Tensor:
        """New weights after reward ``r`` (clipped to the bounds, if any)."""
        return self.bounds.clip(w + self.reward(r))
