"""Activation statistics on calibration data (the input of every data-based normalisation).

Runs the graph in ANN mode and reduces the outputs of chosen nodes to a scale per layer or per
channel: the maximum, or a percentile of the positive activations (Rueckauer et al. 2017 use
the 99.9-99.99th percentile of non-zero activations because the maximum is an outlier).
Large activations are subsampled with a fixed seed (at most ``max_samples`` values per layer
and channel: every batch keeps at most ``max_samples // batches`` of them, drawn with a generator
seeded by the seed and the batch's index) so the percentile stays exact on small sets and memory
stays bounded on big ones.

Under ``torchrun`` (see :mod:`snnconv.runtime.distributed`) each process runs a contiguous block of
the batches; maxima are all-reduced and the kept samples all-gathered, and since what a batch
keeps depends only on its global index, every process computes exactly the scales of a
one-process run.
"""
from __future__ import annotations

from typing import Iterable

import torch

from snnconv.ir import Graph
from snnconv.progress import progress
from snnconv.runtime import distributed as dist
from snnconv.runtime.interpreter import run_ann


@torch.no_grad()
def activation_scales(graph: Graph, batches: Iterable[torch.Tensor], nodes: list[str], method: str = "percentile",
                      percentile: float = 99.99, per_channel: bool = False, max_samples: int = 2_000_000,
                      seed: int = 0, device=None, absolute: bool = False) -> dict[str, torch.Tensor]:
    """Scale per node in ``nodes``: a 0-d tensor, or ``[C]`` (channel = dim 1) when ``per_channel``; the
    graph runs on ``device`` (default: where its tensors are), the scales come back on the CPU. With
    ``absolute`` the statistics are of ``|x|`` (signed activations such as SiLU or tanh)."""
    wanted = set(nodes)
    if device is not None:
        graph = graph.to(device)
    batches = list(batches)
    quota = max(1, max_samples // max(1, len(batches)))  # samples kept per batch, layer and channel
    maxima: dict[str, torch.Tensor] = {}
    samples: dict[str, list[tuple[int, torch.Tensor]]] = {n: [] for n in nodes}
    current = [0]  # global index of the batch being recorded

    def record(name, t):
        if name not in wanted:
            return
        # [C, N] per channel, [1, N] per layer
        flat = t.transpose(0, 1).reshape(t.shape[1], -1) if per_channel else t.reshape(1, -1)
        if absolute:
            flat = flat.abs()
        m = flat.amax(1)
        maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)
        if method == "percentile":
            if flat.shape[1] > quota:  # a CPU generator: the same samples on every device
                gen = torch.Generator().manual_seed(seed * 1_000_003 + current[0])
                flat = flat[:, torch.randperm(flat.shape[1], generator=gen)[:quota].to(flat.device)]
            samples[name].append((current[0], flat.clone()))

    mine = dist.shard_range(len(batches))
    for i in progress(mine, desc="calibration statistics"):
        current[0] = i
        run_ann(graph, batches[i] if device is None else batches[i].to(device), record=record)
    if dist.is_active():
        for name in nodes:
            if name not in maxima:  # this rank had no batch
                maxima[name] = torch.full((1,), float("-inf"))
        shapes = dist.all_gather_objects({n: tuple(maxima[n].shape) for n in nodes})
        for name in nodes:
            shape = max((s[name] for s in shapes), key=lambda s: s[0])
            m = maxima[name].expand(shape).clone() if maxima[name].shape != shape else maxima[name].clone()
            maxima[name] = dist.all_reduce_max(m)
        if method == "percentile":
            gathered = dist.all_gather_objects(samples)
            samples = {n: sorted((b for part in gathered for b in part[n]), key=lambda b: b[0]) for n in nodes}
    out = {}
    for name in nodes:
        if method == "max":
            scale = maxima[name]
        else:
            vals = torch.cat([v for _, v in samples[name]], dim=1)
            scale = torch.stack([_positive_percentile(row, percentile) for row in vals])
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).cpu()  # dead channels: any threshold works
        out[name] = scale.reshape(()) if not per_channel else scale
    return out


def _positive_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    pos = values[values > 0]
    if pos.numel() == 0:
        return torch.tensor(0.0, device=values.device)
    k = max(1, min(pos.numel(), int(round(q / 100.0 * pos.numel()))))
    return pos.kthvalue(k).values
