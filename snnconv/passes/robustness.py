r"""Noise robustness: a device-variation pass, accuracy-vs-noise curves and a trivial baseline.

* ``device_noise`` pass: applies weight noise (device variation) and threshold jitter from
  :mod:`snnconv.runtime.noise` to the converted graph, e.g. to simulate one sampled chip.
* :func:`noise_curves`: accuracy of an SNN against the noise level for each noise kind, next to
  a nearest-class-mean classifier (:class:`NearestClassMean`: each class is the mean training input,
  prediction = the closest mean in Euclidean distance) that sees *the same noisy inputs*:

  - ``gaussian``: direct-coded input with additive Gaussian noise (std = level x input range);
    the baseline classifies the same noisy tensor.
  - ``flip`` / ``drop`` / ``spurious``: rate-coded input spikes over T steps with event bit flips at
    rate = level; the baseline classifies the time average of the same spike trains (generated
    with the same seeds).
  - ``weight``: multiplicative weight noise (std = level); the baseline's class-mean templates get
    the same multiplicative noise.
  - ``threshold``: per-channel threshold jitter (std = level); the baseline has no thresholds (None).

  Robust models come from :func:`snnconv.training.robust.robust_finetune` (noise-curriculum
  fine-tuning of the ANN before conversion). Noise injection during training as a route to
  robustness of converted/spiking networks follows e.g. Schuman et al. 2019 and the
  noise-curriculum idea of Bengio et al. (ICML 2009, curriculum learning).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.data.datasets import Split
from snnconv.errors import SnnconvError
from snnconv.ir import Graph
from snnconv.passes.base import Pass, PassContext, register_pass, simulator_for
from snnconv.progress import progress
from snnconv.runtime.noise import FLIP_MODES, NoisyRateEncoder, flip_events, gaussian_input, threshold_jitter, weight_noise

NOISE_KINDS = ("gaussian", *FLIP_MODES, "weight", "threshold")


@register_pass
class DeviceNoise(Pass):
    """Weight noise and threshold jitter on the converted graph (one sampled device)."""

    name = "device_noise"

    @dataclass
    class Config:
        weight_sigma: float = 0.0
        threshold_sigma: float = 0.0
        seed: int = 0

        def validate(self, where: str) -> None:
            if self.weight_sigma < 0 or self.threshold_sigma < 0:
                raise SnnconvError(f"{where}: noise levels must be >= 0")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        g = threshold_jitter(weight_noise(graph, c.weight_sigma, c.seed), c.threshold_sigma, c.seed + 1)
        ctx.log(self.name, f"weight noise sigma {c.weight_sigma}, threshold jitter sigma {c.threshold_sigma}")
        return g


class NearestClassMean:
    """Nearest class-mean classifier on flattened normalised inputs."""

    def __init__(self, split: Split, batch_size: int = 1000):
        sums, counts = None, torch.zeros(split.num_classes)
        for x, y in split.batches(batch_size):
            f = x.flatten(1)
            if sums is None:
                sums = torch.zeros(split.num_classes, f.shape[1])
            sums.index_add_(0, y, f)
            counts += torch.bincount(y, minlength=split.num_classes).float()
        self.means = sums / counts.clamp_min(1).unsqueeze(1)

    def predict(self, x: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        m = self.means if means is None else means
        return torch.cdist(x.flatten(1), m).argmin(1)


@torch.no_grad()
def noise_curves(graph: Graph, split: Split, kind: str, levels: list[float], timesteps: int,
                 ncm: NearestClassMean | None = None, x_max: float | None = None, value_range: float = 1.0,
                 batch_size: int = 250, seed: int = 0, simulator=None) -> list[dict]:
    """``[{level, snn, ncm}, ...]``: SNN accuracy at ``timesteps`` (and the baseline's) per noise level."""
    if kind not in NOISE_KINDS:
        raise SnnconvError(f"unknown noise kind '{kind}' (known: {', '.join(NOISE_KINDS)})")
    rows = []
    for level in progress(levels, desc=f"noise {kind}"):
        g = graph
        if kind == "weight":
            g = weight_noise(graph, level, seed)
        elif kind == "threshold":
            g = threshold_jitter(graph, level, seed)
        encoder = NoisyRateEncoder(x_max=x_max, flip_rate=level, flip_mode=kind, seed=seed) if kind in FLIP_MODES \
            else None
        sim = simulator_for(simulator)(g, timesteps, chunk=timesteps, encoder=encoder)
        means = None
        if ncm is not None and kind == "weight":
            gen = torch.Generator().manual_seed(seed + 7)
            means = ncm.means * (1 + level * torch.randn(ncm.means.shape, generator=gen))
        ncm_correct = 0
        for b, (x, y) in enumerate(split.batches(batch_size)):
            if kind == "gaussian":
                x = gaussian_input(x, level, value_range, torch.Generator().manual_seed(seed * 1_000_003 + b))
            sim.run(x, y)
            if ncm is not None and kind != "threshold":
                if kind in FLIP_MODES:  # the same spike trains the simulator saw (same seed, same batch index)
                    st = encoder.start(x, b)
                    feat = encoder.encode(x, 0, timesteps, st).mean(0)
                else:
                    feat = x
                ncm_correct += int((ncm.predict(feat, means) == y).sum())
        acc = sim.stats.accuracy()[-1]
        rows.append({"level": level, "snn": acc,
                     "ncm": 100.0 * ncm_correct / len(split) if ncm is not None and kind != "threshold" else None})
    return rows


def measured_flip_rate(events: torch.Tensor, flipped: torch.Tensor) -> dict:
    """Observed drop / spurious / overall flip rates between two event tensors (for checks and reports)."""
    e, f = events.bool(), flipped.bool()
    ones, zeros = e.sum().clamp_min(1), (~e).sum().clamp_min(1)
    return {"drop": float((e & ~f).sum() / ones), "spurious": float((~e & f).sum() / zeros),
            "flip": float((e ^ f).float().mean())}


__all__ = ["DeviceNoise", "NearestClassMean", "noise_curves", "measured_flip_rate", "NOISE_KINDS", "flip_events"]
