"""Input encoders: how the (normalised) input tensor enters the first layer at each timestep.

Each encoder is seeded and deterministic, runs batched on torch, and returns for a time chunk
either the input itself (``static=True``: direct coding, the same analog current every step, so
the first layer counts MACs) or a ``[Tc, B, ...]`` spike tensor (the first layer then counts
accumulates: events x fan-out).

* ``direct``: analog current every step (the default for conversion; Rueckauer et al. 2017).
* ``rate``: Bernoulli spikes with ``P(spike) = |x| / x_max`` and amplitude ``sign(x) * x_max``, so
  the expected input per step equals ``x`` exactly (signed rate coding of normalised inputs;
  Diehl et al. 2015, Sengupta et al. 2019 use the unsigned form on [0, 1] images).
* ``latency``: time-to-first-spike; one spike of amplitude ``sign(x) * x_max`` at step
  ``round((1 - |x|/x_max) * (window - 1))`` (Thorpe et al. 2001). Rate-converted networks cannot
  decode spike times, so expect poor accuracy unless the network was trained for it.
* ``delta``: delta modulation (:func:`delta_modulate` for sequences; a static input is a constant
  sequence): a spike of amplitude ``±delta`` (graded up to ``levels``) whenever the signal moved
  by ``delta`` from the last reconstruction (as in the NIR/snnTorch delta encoders).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError

ENCODINGS = ("direct", "rate", "latency", "delta")


@dataclass
class Encoder:
    kind: str = "direct"
    x_max: float | None = None  # amplitude scale; None: max |x| of each batch
    window: int = 8  # latency coding window (steps)
    delta: float = 0.1  # delta modulation step
    levels: int = 8  # max delta spikes per step and element
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ENCODINGS:
            raise SnnconvError(f"unknown encoding '{self.kind}' (known: {', '.join(ENCODINGS)})")

    @property
    def static(self) -> bool:
        return self.kind == "direct"

    def start(self, x: torch.Tensor, batch_index: int = 0) -> dict:
        """Per-batch encoder state (random generator seeded by batch, reconstruction for delta)."""
        scale = self.x_max if self.x_max is not None else float(x.abs().max().clamp_min(1e-12))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + batch_index)
        return {"scale": scale, "gen": gen, "recon": torch.zeros_like(x)}

    @torch.no_grad()
    def encode(self, x: torch.Tensor, t0: int, tc: int, state: dict) -> torch.Tensor:
        """Spike input for steps ``t0 .. t0+tc-1``: ``[tc, B, ...]``."""
        scale = state["scale"]
        if self.kind == "rate":
            p = (x.abs() / scale).clamp_(max=1.0)
            u = torch.rand((tc, *x.shape), generator=state["gen"]).to(x.device)  # CPU generator: same spikes on every device
            return (u < p).to(x.dtype) * (torch.sign(x) * scale)
        if self.kind == "latency":
            when = torch.round((1 - (x.abs() / scale).clamp(max=1.0)) * (self.window - 1))
            when = torch.where(x == 0, torch.full_like(when, -1), when)  # zero inputs never fire
            steps = torch.arange(t0, t0 + tc, dtype=x.dtype, device=x.device).view(tc, *([1] * x.dim()))
            return (steps == when.unsqueeze(0)).to(x.dtype) * (torch.sign(x) * scale)
        # a static input is the constant sequence x, x, ...: the reconstruction catches up, then stays silent
        spikes, state["recon"] = delta_modulate(x.unsqueeze(0).expand(tc, *x.shape), self.delta, self.levels,
                                                state["recon"])
        return spikes

    def first_layer_ops(self) -> str:
        return "MAC (analog input)" if self.static else "AC (spike events x fan-out)"


@torch.no_grad()
def delta_modulate(seq: torch.Tensor, delta: float, levels: int = 1, recon: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Delta-modulate a sequence ``[T, B, ...]``: ``(spikes, final reconstruction)``.

    At each step ``n_t = trunc((x_t - r_{t-1}) / delta)`` clipped to ``[-levels, levels]`` spikes of
    amplitude ``delta`` are emitted and the reconstruction becomes ``r_t = r_{t-1} + n_t delta``, so
    ``|x_t - r_t| < delta`` whenever the signal moves by at most ``levels * delta`` per step.
    """
    r = torch.zeros_like(seq[0]) if recon is None else recon.clone()
    out = torch.empty_like(seq)
    for t in range(seq.shape[0]):
        n = torch.trunc((seq[t] - r) / delta).clamp_(-levels, levels)
        out[t] = n * delta
        r += out[t]
    return out, r
