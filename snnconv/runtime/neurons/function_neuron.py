"""Multi-step dynamics of the function neuron (:class:`snnconv.ir.FunctionNeuron`, equations there)."""
from __future__ import annotations

import torch

from snnconv.ir.function_neuron import FUNCTIONS as NAMES
from snnconv.runtime.neurons.integrate_fire import threshold_view
from snnconv.runtime.operators import ACTIVATION_FNS

#: the nonlinearity of each function-neuron kind: the same functions the operator nodes apply
FUNCTIONS = {name: ACTIVATION_FNS[name] for name in NAMES}


@torch.no_grad()
def run_function_neuron(node, current: torch.Tensor, state):
    """Simulator entry: ``current`` ``[T, B, ...]``; returns ``(output, signed counts, state)`` with the
    state ``{"a": integrated input, "n": net spike count, "t": steps so far}``."""
    if state is None:
        a = torch.zeros_like(current[0])
        state = {"a": a, "n": torch.zeros_like(a), "t": 0}
    a, n, t = state["a"], state["n"], state["t"]
    f = FUNCTIONS[node.fn]
    th = threshold_view(node.threshold.to(current.dtype), current.dim() - 2)
    L = float(node.levels)
    counts = torch.empty_like(current)
    for k in range(current.shape[0]):
        t += 1
        a.add_(current[k])
        s = counts[k]
        torch.sub(f(a / t) * t, n * th, out=s).div_(th).add_(0.5).floor_().clamp_(-L, L)
        n.add_(s)
    return counts * th, counts, {"a": a, "n": n, "t": t}
