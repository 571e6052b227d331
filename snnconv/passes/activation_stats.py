"""Activation statistics on calibration data (the input of every data-based normalisation).

Runs the graph in ANN mode and reduces the outputs of chosen nodes to a scale per layer or per
channel: the maximum, or a percentile of the positive activations (Rueckauer et al. 2017 use
the 99.9-99.99th percentile of non-zero activations because the maximum is an outlier).
Large activations are subsampled with a fixed seed (at most ``max_samples`` values per layer
and channel) so the percentile stays exact on small sets and memory stays bounded on big ones.
"""
from __future__ import annotations

from typing import Iterable

import torch

from snnconv.ir import Graph
from snnconv.progress import progress
from snnconv.runtime.interpreter import run_ann


@torch.no_grad()
def activation_scales(graph: Graph, batches: Iterable[torch.Tensor], nodes: list[str], method: str = "percentile",
                      percentile: float = 99.99, per_channel: bool = False, max_samples: int = 2_000_000,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """Scale per node in ``nodes``: a 0-d tensor, or ``[C]`` (channel = dim 1) when ``per_channel``."""
    wanted = set(nodes)
    gen = torch.Generator().manual_seed(seed)
    maxima: dict[str, torch.Tensor] = {}
    samples: dict[str, list[torch.Tensor]] = {n: [] for n in nodes}
    kept: dict[str, int] = {n: 0 for n in nodes}

    def record(name, t):
        if name not in wanted:
            return
        # [C, N] per channel, [1, N] per layer
        flat = t.transpose(0, 1).reshape(t.shape[1], -1) if per_channel else t.reshape(1, -1)
        m = flat.amax(1)
        maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)
        if method == "percentile" and kept[name] < max_samples:
            take = min(flat.shape[1], max_samples - kept[name])
            if take < flat.shape[1]:
                idx = torch.randperm(flat.shape[1], generator=gen)[:take]
                flat = flat[:, idx]
            samples[name].append(flat.clone())
            kept[name] += flat.shape[1]

    for x in progress(batches, desc="calibration statistics"):
        run_ann(graph, x, record=record)
    out = {}
    for name in nodes:
        if method == "max":
            scale = maxima[name]
        else:
            vals = torch.cat(samples[name], dim=1)
            scale = torch.stack([_positive_percentile(row, percentile) for row in vals])
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # dead channels: any threshold works
        out[name] = scale.reshape(()) if not per_channel else scale
    return out


def _positive_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    pos = values[values > 0]
    if pos.numel() == 0:
        return torch.tensor(0.0)
    k = max(1, min(pos.numel(), int(round(q / 100.0 * pos.numel()))))
    return pos.kthvalue(k).values
