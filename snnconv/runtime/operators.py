r"""Kernels of the transformer nodes, and the accumulate-and-difference operator dynamics.

**Stateless kernels** (``TRANSFORMER_KERNELS``) compute each node's ANN function on any leading batch
size; :mod:`snnconv.runtime.kernels` merges them into ``KERNELS``.

**Spiking-operator nodes.** A node with ``operator = True`` (layer norm, GELU/tanh/..., softmax,
matmul of two dynamic inputs) has no spiking form. In the SNN it integrates each input,
:math:`A_t = \sum_{\tau \le t} x_\tau`, applies the ANN function :math:`f` to the running averages
:math:`\bar x_t = A_t / t` and emits the difference of successive time-weighted outputs

.. math::
    o_t = t\, f(\bar x^{(1)}_t, \bar x^{(2)}_t, \dots) - (t-1)\, f(\bar x^{(1)}_{t-1}, \bar x^{(2)}_{t-1}, \dots),

so that :math:`\sum_{\tau \le t} o_\tau = t\, f(\bar x_t)`: the running average of the output is
exactly the function of the running averages of the inputs, and the downstream rate-coded
layers and neurons see a stream whose mean converges as the inputs' means do. This is the
accumulate-and-difference scheme of the spike-equivalent operators of SpikeZIP-TF (You et al.,
ICML 2024, §4: "Spike-Softmax" / "Spike-LayerNorm" accumulate the input spikes, apply the
operator and output the difference between the current and the previous output), written here
for running averages (rate coding, direct input every step) instead of running sums, so the same
node also works for matmul of two spike streams (SpikeZIP-TF's spike-equivalent self-attention
expands the product of two accumulators the same way). The arithmetic is real-valued: these
nodes are operators, not neurons, and are reported as such.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATION_FNS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "silu": F.silu, "relu": torch.relu, "hardswish": F.hardswish,
        "hardsigmoid": F.hardsigmoid}


def _layernorm(n, xs):
    return F.layer_norm(xs[0], n.normalized_shape, n.weight, n.bias, n.eps)


def _embedding(n, xs):
    return F.embedding(xs[0].round().long(), n.weight, n.padding_idx)


def _select(n, xs):
    return xs[0].select(n.dim, n.index)


def _slice(n, xs):
    x = xs[0]
    dim = n.dim % x.dim()
    return x[(slice(None),) * dim + (slice(n.start, n.end, n.step),)]


def _concat_const(n, xs):
    x = xs[0]
    c = n.value.to(x.dtype).unsqueeze(0).expand(x.shape[0], *n.value.shape)
    return torch.cat([c, x] if n.first else [x, c], dim=n.dim)


def _signed_rate(n, xs):
    """ANN-mode response of a signed neuron: clip(x, -L theta, L theta) (identity without a cap)."""
    if not n.levels:
        return xs[0]
    bound = n.threshold * n.levels
    return torch.maximum(torch.minimum(xs[0], bound), -bound)


def _function_rate(n, xs):
    """ANN-mode equivalent of a function neuron: f(x) (its rate limit; the per-step cap L*theta only delays
    the output, the neuron carries the rest to later steps)."""
    return ACTIVATION_FNS[n.fn](xs[0])


TRANSFORMER_KERNELS = {
    "layernorm": _layernorm,
    "activation": lambda n, xs: ACTIVATION_FNS[n.fn](xs[0]),
    "softmax": lambda n, xs: torch.softmax(xs[0], n.dim),
    "matmul": lambda n, xs: torch.matmul(xs[0], xs[1]),
    "mul": lambda n, xs: xs[0] * xs[1],
    "embedding": _embedding,
    "permute": lambda n, xs: xs[0].permute(*n.dims),
    "select": _select,
    "slice": _slice,
    "concat_const": _concat_const,
    "signed_neuron": _signed_rate,
    "function_neuron": _function_rate,
}


def running_sum(x: torch.Tensor, acc0: torch.Tensor | None = None) -> torch.Tensor:
    """Running float sum over the first (time) axis of ``x`` ``[Tc, ...]``, continuing from ``acc0``.

    One addition per step, in step order, so the result does not depend on how the run was cut into
    chunks. (``torch.cumsum`` accumulates in double on the CPU and rounds once per element: a chunk
    boundary then changes sums by an ulp, and a difference of two equal totals becomes a tiny nonzero
    output that counts as an event.)
    """
    acc = torch.empty_like(x)
    run = acc0
    for t in range(x.shape[0]):
        run = acc[t].copy_(x[t]) if run is None else torch.add(run, x[t], out=acc[t])
    return acc


@torch.no_grad()
def run_operator(node, inputs: list[torch.Tensor], state, kernel):
    """Accumulate-and-difference over one time chunk.

    ``inputs`` are ``[Tc, B, ...]`` per input, ``state`` the dict returned for the previous chunk
    (None on the first), ``kernel(node, tensors)`` the node's stateless ANN function. Returns
    ``(output [Tc, B, ...], state)``.
    """
    tc, b = inputs[0].shape[0], inputs[0].shape[1]
    if state is None:
        state = {"t": 0, "acc": [torch.zeros_like(x[0]) for x in inputs], "prev": None}
    t = torch.arange(state["t"] + 1, state["t"] + tc + 1, dtype=inputs[0].dtype, device=inputs[0].device)
    accs = [running_sum(x, a0) for a0, x in zip(state["acc"], inputs)]
    means = [(a / t.view(-1, *([1] * (a.dim() - 1)))).reshape(tc * b, *a.shape[2:]) for a in accs]
    y = kernel(node, means)
    y = y.view(tc, b, *y.shape[1:]) * t.view(-1, *([1] * (y.dim())))
    prev = state["prev"] if state["prev"] is not None else torch.zeros_like(y[0])
    out = torch.cat([y[:1] - prev.unsqueeze(0), y[1:] - y[:-1]])
    return out, {"t": state["t"] + tc, "acc": [a[-1] for a in accs], "prev": y[-1]}
