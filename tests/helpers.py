"""Helpers shared by several test modules (imported as ``helpers``; tests/ is on sys.path)."""
from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) * 1.0 + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
    return model.eval()


def reference_if(current: torch.Tensor, theta: float, v_init: float = 0.0, reset: str = "subtract",
                 levels: int = 1) -> torch.Tensor:
    """Straightforward per-step IF neuron (independent of snnconv): spike counts ``[T, ...]`` for
    input currents ``[T, ...]``, scalar threshold ``theta`` and initial potential ``v_init * theta``."""
    v = torch.full_like(current[0], v_init * theta)
    counts = []
    for t in range(current.shape[0]):
        v = v + current[t]
        if levels == 1:
            s = (v >= theta).to(current.dtype)
        else:
            s = torch.clamp(torch.floor(v / theta), 0, levels)
        v = v - s * theta if reset == "subtract" else torch.where(s > 0, torch.zeros_like(v), v)
        counts.append(s)
    return torch.stack(counts)


class SplitNet(nn.Module):
    """torch.chunk, Tensor.split (list and int sizes), strided and negative-index slicing on the channel axis."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.l = nn.Linear(4 * 8 * 8, 6)

    def forward(self, x):
        y = torch.relu(self.c(x))
        a, b = torch.chunk(y, 2, dim=1)
        c, d = y.split([3, 5], dim=1)
        e = y.split(4, dim=1)[1]
        z = self.l(torch.flatten(a + b + d[:, 1:] + e + c[:, :1] + y[:, 1:8:2] + y[:, -4:], 1))
        p, q = z.split(3, dim=-1)
        return torch.cat([q, p], dim=1)

