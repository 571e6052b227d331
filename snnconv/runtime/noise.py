r"""Noise models for robustness studies: input noise, spike bit flips, device variation.

* :func:`gaussian_input`: additive Gaussian noise on the (normalised) input,
  :math:`x + \sigma \cdot r \cdot \mathcal N(0, 1)` with ``r`` the input's dynamic range, so
  ``sigma`` is a fraction of the range (0.45 = 45%).
* :func:`flip_events`: bit flips on a binary event tensor at rate ``p``: ``drop`` turns each
  spike into silence with probability p, ``spurious`` turns each silent slot into a spike with
  probability p, ``flip`` does both (a binary symmetric channel, the usual model of event
  corruption on a noisy link or memory). :class:`NoisyRateEncoder` applies it to rate-coded input
  spikes inside the simulator; a spurious input spike carries the amplitude of that input's own
  rate code (``sign(x) * x_max``, + for x = 0).
* :func:`weight_noise`: device variation of synaptic weights (e.g. memristive/analog crossbars),
  multiplicative Gaussian :math:`w (1 + \sigma \mathcal N(0,1))` per synapse, the model used by
  Joshi et al. (Nat. Commun. 2020) for PCM weights.
* :func:`threshold_jitter`: per-neuron-channel threshold mismatch
  :math:`\theta (1 + \sigma \mathcal N(0, 1))`, clamped to stay positive.

All take an explicit seed / generator and are deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.encoders import Encoder
from snnconv.errors import SnnconvError
from snnconv.ir import Graph

FLIP_MODES = ("drop", "spurious", "flip")


def gaussian_input(x: torch.Tensor, sigma: float, value_range: float, gen: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise of std ``sigma * value_range``."""
    if sigma == 0:
        return x
    return x + sigma * value_range * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def flip_events(events: torch.Tensor, rate: float, mode: str, gen: torch.Generator) -> torch.Tensor:
    """A bool tensor: ``events`` (bool/0-1) with bits flipped at ``rate`` according to ``mode``."""
    if mode not in FLIP_MODES:
        raise SnnconvError(f"unknown flip mode '{mode}' (known: {', '.join(FLIP_MODES)})")
    if not 0.0 <= rate <= 1.0:
        raise SnnconvError(f"flip rate must be in [0, 1], got {rate}")
    e = events.bool()
    if rate == 0:
        return e
    hit = torch.rand(e.shape, generator=gen) < rate
    if mode == "drop":
        return e & ~hit
    if mode == "spurious":
        return e | hit
    return e ^ hit


@dataclass
class NoisyRateEncoder(Encoder):
    """Rate coding whose spike events go through :func:`flip_events` before entering the network."""

    kind: str = "rate"
    flip_rate: float = 0.0
    flip_mode: str = "flip"

    def __post_init__(self):
        super().__post_init__()
        if self.kind != "rate":
            raise SnnconvError("NoisyRateEncoder is a rate encoder")

    @torch.no_grad()
    def encode(self, x: torch.Tensor, t0: int, tc: int, state: dict) -> torch.Tensor:
        spikes = super().encode(x, t0, tc, state)
        if self.flip_rate == 0:
            return spikes
        amp = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x)) * state["scale"]
        events = flip_events(spikes != 0, self.flip_rate, self.flip_mode, state["gen"])
        return events.to(x.dtype) * amp


def weight_noise(graph: Graph, sigma: float, seed: int = 0) -> Graph:
    """A copy of ``graph`` with every conv/linear weight multiplied by ``1 + sigma * N(0, 1)``.

    Quantized layers lose their integer codes (the noisy weights are off the grid); zero weights stay zero."""
    g = graph.copy()
    if sigma == 0:
        return g
    gen = torch.Generator().manual_seed(seed)
    for name, node in g.nodes.items():
        if node.kind in ("conv2d", "linear"):
            w = node.weight * (1 + sigma * torch.randn(node.weight.shape, generator=gen))
            g.nodes[name] = node.replace(weight=w, weight_int=None, weight_scale=None, bits=None)
    return g


def threshold_jitter(graph: Graph, sigma: float, seed: int = 0) -> Graph:
    """A copy of ``graph`` whose neuron thresholds are multiplied per channel by ``1 + sigma * N(0, 1)``
    (clamped to at least 5% of the original so thresholds stay positive)."""
    g = graph.copy()
    if sigma == 0:
        return g
    gen = torch.Generator().manual_seed(seed)
    for name, node in g.nodes.items():
        if node.kind == "neuron":
            th = node.threshold.reshape(-1)
            channels = node.shape[0] if node.shape else th.numel()
            th = th.expand(channels) if th.numel() == 1 else th
            factor = (1 + sigma * torch.randn(th.shape, generator=gen)).clamp_min(0.05)
            g.nodes[name] = node.replace(threshold=(th * factor).float())
    return g
