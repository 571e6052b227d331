"""Stateless kernels: what each non-spiking IR node computes, on any leading batch size.

The simulator applies these to all timesteps of a chunk at once as one ``[T*B, ...]`` batch,
so every stateless layer costs one large call per chunk instead of one call per timestep.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from snnconv.ir import Node


def _conv2d(n, xs):
    return F.conv2d(xs[0], n.weight, n.bias, n.stride, n.padding, n.dilation, n.groups)


def _linear(n, xs):
    return F.linear(xs[0], n.weight, n.bias)


def _batchnorm(n, xs):
    a, c = n.scale_shift()
    view = (1, -1) + (1,) * (xs[0].dim() - 2)
    return xs[0] * a.view(view) + c.view(view)


def _clip(n, xs):
    return torch.clamp(xs[0], n.lo, n.hi)


def _neuron_rate(n, xs):
    # ANN-mode equivalent of a neuron: its steady-state rate response clip(x, 0, L*theta)
    x = xs[0]
    th = n.threshold.view((1, -1) + (1,) * (x.dim() - 2)) if n.threshold.numel() > 1 else n.threshold
    return torch.minimum(torch.relu(x), th * n.levels)


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
    "linear": _linear,
    "batchnorm": _batchnorm,
    "clip": _clip,
    "neuron": _neuron_rate,
    "add": _add,
    "concat": lambda n, xs: torch.cat(xs, dim=n.dim),
    "flatten": lambda n, xs: torch.flatten(xs[0], n.start_dim),
    "reshape": lambda n, xs: xs[0].reshape(xs[0].shape[0], *n.target),
    "identity": lambda n, xs: xs[0],
    "scale": _scale,
    "avgpool2d": lambda n, xs: F.avg_pool2d(xs[0], n.kernel_size, n.stride, n.padding, n.ceil_mode, n.count_include_pad),
    "maxpool2d": lambda n, xs: F.max_pool2d(xs[0], n.kernel_size, n.stride, n.padding, n.dilation, n.ceil_mode),
    "adaptive_avgpool2d": lambda n, xs: F.adaptive_avg_pool2d(xs[0], n.output_size),
}
