"""Multi-step dynamics of the function neuron (:class:`snnconv.ir.FunctionNeuron`, equations there)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

FUNCTIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
             "sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}


def _per_channel(th: torch.Tensor, ndim: int) -> torch.Tensor:
    """A scalar, or ``[C]`` viewed to broadcast over one sample ``[B, C, ...]`` of ``ndim`` dims."""
    return th.reshape(()) if th.numel() == 1 else th.view(-1, *([1] * (ndim - 2)))


@torch.no_grad()
def run_function_neuron(node, current: torch.Tensor, state):
    """Simulator entry: ``current`` ``[T, B, ...]``; returns ``(output, signed counts, state)`` with the
    state ``{"a": integrated input, "n": net spike count, "t": steps so far}``."""
    if state is None:
        a = torch.zeros_like(current[0])
        state = {"a": a, "n": torch.zeros_like(a), "t": 0}
    a, n, t = state["a"], state["n"], state["t"]
    f = FUNCTIONS[node.fn]
    th = _per_channel(node.threshold.to(current.dtype), current.dim() - 1)
    L = float(node.levels)
    counts = torch.empty_like(current)
    for k in range(current.shape[0]):
        t += 1
        a.add_(current[k])
        s = counts[k]
        torch.sub(f(a / t) * t, n * th, out=s).div_(th).add_(0.5).floor_().clamp_(-L, L)
        n.add_(s)
    return counts * th, counts, {"a": a, "n": n, "t": t}
