"""Stateless kernels: what each non-spiking IR node computes, on any leading batch size.

The simulator applies these to all timesteps of a chunk at once as one ``[T*B, ...]`` batch,
so every stateless layer costs one large call per chunk instead of one call per timestep.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from snnconv.ir import Node
from snnconv.runtime.neurons import NEURON_DYNAMICS

#: Steps over which the ANN-mode kernel of a neuron model without a closed-form rate response
#: (adaptive, current-based, Izhikevich, Hodgkin-Huxley) simulates its mean output.
RATE_STEPS = 100


def _conv2d(n, xs):
    return F.conv2d(xs[0], n.weight, n.bias, n.stride, n.padding, n.dilation, n.groups)


def _conv_transpose2d(n, xs):
    return F.conv_transpose2d(xs[0], n.weight, n.bias, n.stride, n.padding, n.output_padding, n.groups, n.dilation)


def _linear(n, xs):
    return F.linear(xs[0], n.weight, n.bias)


def _batchnorm(n, xs):
    a, c = n.scale_shift()
    view = (1, -1) + (1,) * (xs[0].dim() - 2)
    return xs[0] * a.view(view) + c.view(view)


def _clip(n, xs):
    if n.levels:  # QCFS quantized clip
        return torch.clamp(torch.floor(xs[0] * (n.levels / n.hi) + n.shift), 0, n.levels) * (n.hi / n.levels)
    return torch.clamp(xs[0], n.lo, n.hi)


def _neuron_rate(n, xs):
    # ANN-mode equivalent of a neuron: its steady-state rate response clip(x, 0, L*theta)
    x = xs[0]
    th = n.threshold.view((1, -1) + (1,) * (x.dim() - 2)) if n.threshold.numel() > 1 else n.threshold
    y = torch.minimum(torch.relu(x), th * n.levels)
    if n.refractory:  # input arriving during the r dead steps after each spike is lost: rho' = rho / (1 + r rho)
        y = y / (1.0 + n.refractory * y / th)
    return y


def _simulated_rate(n, xs):
    """ANN-mode equivalent of a neuron model without a closed-form rate: its mean output over
    the first :data:`RATE_STEPS` steps from its initial state, the input held constant."""
    x, state, total, chunk = xs[0], None, 0.0, 25
    for t0 in range(0, RATE_STEPS, chunk):
        tc = min(chunk, RATE_STEPS - t0)
        out, _, state = NEURON_DYNAMICS[n.kind](n, x.unsqueeze(0).expand(tc, *x.shape), state)
        total = total + out.sum(0)
    return total / RATE_STEPS


def _add(n, xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _scale(n, xs):
    y = xs[0] * n.scale
    return y + n.offset if n.offset is not None else y


KERNELS: dict[str, Callable[[Node, list[torch.Tensor]], torch.Tensor]] = {
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "linear": _linear,
    "batchnorm": _batchnorm,
    "clip": _clip,
    "neuron": _neuron_rate,
    "adaptive_lif": _simulated_rate,
    "cuba_lif": _simulated_rate,
    "izhikevich": _simulated_rate,
    "hodgkin_huxley": _simulated_rate,
    "add": _add,
    "concat": lambda n, xs: torch.cat(xs, dim=n.dim),
    "flatten": lambda n, xs: torch.flatten(xs[0], n.start_dim),
    "reshape": lambda n, xs: xs[0].reshape(xs[0].shape[0], *n.target),
    "identity": lambda n, xs: xs[0],
    "scale": _scale,
    "avgpool2d": lambda n, xs: F.avg_pool2d(xs[0], n.kernel_size, n.stride, n.padding, n.ceil_mode, n.count_include_pad),
    "maxpool2d": lambda n, xs: F.max_pool2d(xs[0], n.kernel_size, n.stride, n.padding, n.dilation, n.ceil_mode),
    "adaptive_avgpool2d": lambda n, xs: F.adaptive_avg_pool2d(xs[0], n.output_size),
    "upsample": lambda n, xs: F.interpolate(xs[0], size=tuple(n.size), mode=n.mode,
                                            align_corners=n.align_corners if n.mode == "bilinear" else None),
}

# transformer nodes (layer norm, softmax, matmul, embeddings, views, signed neuron): snnconv.runtime.operators
from snnconv.runtime.operators import TRANSFORMER_KERNELS  # noqa: E402

KERNELS.update(TRANSFORMER_KERNELS)
