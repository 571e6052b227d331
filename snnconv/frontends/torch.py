"""PyTorch frontend: ``nn.Module`` -> IR via ``torch.export`` (ATen graph), fx tracing as fallback.

``torch.export`` lowers module calls, ``F.relu``, ``torch.relu``, ``clamp`` and ``nn.ReLU`` to the
same ATen ops, so one table of ATen rules covers them all. Each IR node is named after the
module that produced it (e.g. ``layers.0.conv1``) so errors and reports point at user code.
Where ``torch.export`` fails (e.g. on code it cannot trace), ``torch.fx.symbolic_trace`` +
shape propagation is tried and its module/function calls are mapped by the same rules.
"""
from __future__ import annotations

import math
import operator
from collections import Counter
from typing import Any

import torch
from torch import nn

from snnconv.frontends import Frontend, register_frontend
from snnconv.errors import SnnconvError, UnsupportedOpError
from snnconv.ir import (AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, Clip, Concat, Conv2d, ConvTranspose2d, Flatten,
                        Graph, Identity, Input, Linear, MaxPool2d, Reshape, Scale, Upsample)
from snnconv.ir.transformer import (Activation, ConcatConst, Embedding, LayerNorm, MatMul, Mul, Permute, Select, Slice,
                                    Softmax)

aten = torch.ops.aten


def _is_qcfs(target) -> bool:
    return getattr(target, "name", lambda: "")() == "snnconv::qcfs"


def _pair(v, default=None) -> tuple:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, int):
        return (v, v)
    return tuple(v) if len(v) == 2 else (v[0], v[0])


class _Builder:
    """Turns one ATen fx graph into IR nodes; collects unsupported ops instead of stopping at the first."""

    def __init__(self, params: dict[str, torch.Tensor]):
        self.g = Graph()
        self.params = params  # placeholder name -> tensor (parameters, buffers, constants)
        self.env: dict[str, Any] = {}  # fx node name -> IR node name (or a python constant/tensor)
        self.unsupported: list[tuple[str, str]] = []
        self.coverage: Counter = Counter()
        self.unsupported_kinds: set[str] = set()

    def name_for(self, fx_node) -> str:
        stack = fx_node.meta.get("nn_module_stack")
        if stack:
            path = list(stack.values())[-1][0]
            path = path.replace("L['self'].", "").replace("L__self___", "")
            base = path if path else fx_node.name
            # a module that emits several ops (e.g. a functional relu inside forward) gets a suffix
            return self.g.unique_name(base if self.g.nodes.get(base) is None else f"{base}.{fx_node.name}")
        return self.g.unique_name(fx_node.name)

    def location(self, fx_node) -> str:
        stack = fx_node.meta.get("nn_module_stack")
        where = f"node '{fx_node.name}'"
        if stack:
            path, cls = list(stack.values())[-1]
            where += f" in module '{path.replace(chr(76) + chr(91), '') or '<root>'}' ({getattr(cls, '__name__', cls)})"
        trace = fx_node.meta.get("stack_trace")
        if trace:
            lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip().startswith("File")]
            if lines:
                where += f" [{lines[-1]}]"
        return where

    def tensor(self, a):
        if hasattr(a, "name") and a.name in self.params:
            return self.params[a.name]
        if a is None:
            return None
        raise KeyError(a)

    def src(self, a) -> str:
        return self.env[a.name]

    def emit(self, fx_node, node, srcs) -> None:
        self.env[fx_node.name] = self.g.add(self.name_for(fx_node), node, srcs)


def _is_param(b: _Builder, a) -> bool:
    return hasattr(a, "name") and a.name in b.params


def _convert_call(b: _Builder, n) -> bool:
    """Map one ATen call; returns False if the op is not supported."""
    t, args, kw = n.target, n.args, n.kwargs
    arg = lambda i, d=None: args[i] if len(args) > i else kw.get(_ARGNAMES.get(t, {}).get(i, ""), d)  # noqa: E731
    out_shape = tuple(n.meta["val"].shape) if "val" in n.meta and hasattr(n.meta["val"], "shape") else None

    if t in (aten.conv2d.default,):
        w = b.tensor(args[1])
        b.emit(n, Conv2d(w.detach().clone(), _opt_clone(b.tensor(arg(2))), _pair(arg(3, 1)), _pair(arg(4, 0)),
                         _pair(arg(5, 1)), int(arg(6, 1))), [b.src(args[0])])
    elif t is aten.conv1d.default or (t is aten.convolution.default and not args[6] and b.tensor(args[1]).dim() == 3):
        w = b.tensor(args[1])
        if t is aten.conv1d.default:
            bias, st, pad, dil, groups = _opt_clone(b.tensor(arg(2))), arg(3, [1]), arg(4, [0]), arg(5, [1]), arg(6, 1)
        else:
            bias, st, pad, dil, groups = _opt_clone(b.tensor(args[2])), args[3], args[4], args[5], args[8]
        if isinstance(pad, str):
            return False
        in_shape = tuple(args[0].meta["val"].shape[1:])
        b.env[n.name] = conv1d_nodes(b.g, b.name_for(n), b.src(args[0]), w, bias, _single(st), _single(pad),
                                     _single(dil), int(groups), in_shape, tuple(out_shape[1:]))
    elif t is aten.conv_transpose2d.input or (t is aten.convolution.default and args[6] and b.tensor(args[1]).dim() == 4):
        if t is aten.conv_transpose2d.input:
            bias, st, pad, opad, groups, dil = (_opt_clone(b.tensor(arg(2))), arg(3, 1), arg(4, 0), arg(5, 0),
                                                arg(6, 1), arg(7, 1))
        else:
            bias, st, pad, dil, opad, groups = (_opt_clone(b.tensor(args[2])), args[3], args[4], args[5], args[7],
                                                args[8])
        b.emit(n, ConvTranspose2d(b.tensor(args[1]).detach().clone(), bias, _pair(st), _pair(pad), _pair(opad),
                                  _pair(dil), int(groups)), [b.src(args[0])])
    elif t is aten.convolution.default and not args[6]:
        b.emit(n, Conv2d(b.tensor(args[1]).detach().clone(), _opt_clone(b.tensor(args[2])), _pair(args[3]),
                         _pair(args[4]), _pair(args[5]), int(args[8])), [b.src(args[0])])
    elif t is aten.linear.default:
        b.emit(n, Linear(b.tensor(args[1]).detach().clone(), _opt_clone(b.tensor(arg(2)))), [b.src(args[0])])
    elif t in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default):
        eps = args[7] if t is aten.batch_norm.default else args[6]
        c = b.tensor(args[3]).shape[0]
        w = b.tensor(args[1]) if args[1] is not None else torch.ones(c)
        bias = b.tensor(args[2]) if args[2] is not None else torch.zeros(c)
        b.emit(n, BatchNorm(w.detach().clone(), bias.detach().clone(), b.tensor(args[3]).clone(),
                            b.tensor(args[4]).clone(), float(eps)), [b.src(args[0])])
    elif t in (aten.relu.default, aten.relu_.default):
        b.emit(n, Clip(0.0, math.inf, "relu"), [b.src(args[0])])
    elif _is_qcfs(t):  # conversion-aware QCFS activation (snnconv.models.qcfs)
        lam = float(b.tensor(args[1]).detach())
        if not lam > 0:  # a broken checkpoint, not an unsupported op: say which threshold
            raise SnnconvError(f"QCFS threshold lambda = {lam:.4g} at {b.location(n)} is not positive (the "
                               "activation collapsed during training, e.g. a too high learning rate): retrain or "
                               "fine-tune this checkpoint")
        b.emit(n, Clip(0.0, lam, "qcfs", levels=int(args[2]), shift=float(args[3])), [b.src(args[0])])
    elif t in (aten.hardtanh.default, aten.hardtanh_.default):
        lo, hi = float(arg(1, -1.0)), float(arg(2, 1.0))
        b.emit(n, Clip(lo, hi, "relu6" if (lo, hi) == (0.0, 6.0) else "hardtanh"), [b.src(args[0])])
    elif t in (aten.leaky_relu.default, aten.leaky_relu_.default):
        b.env[n.name] = leaky_relu_nodes(b.g, b.name_for(n), b.src(args[0]), float(arg(1, 0.01)))
    elif t in (aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default, aten.upsample_bilinear2d.vec,
               aten.upsample_bilinear2d.default):
        bilinear = t in (aten.upsample_bilinear2d.vec, aten.upsample_bilinear2d.default)
        align = bool(arg(2, False)) if bilinear else False
        b.emit(n, Upsample(tuple(int(v) for v in out_shape[2:]), "bilinear" if bilinear else "nearest", align),
               [b.src(args[0])])
    elif t in (aten.relu6.default,):
        b.emit(n, Clip(0.0, 6.0, "relu6"), [b.src(args[0])])
    elif t in (aten.clamp.default, aten.clamp_.default, aten.clamp_min.default):
        lo = arg(1)
        hi = arg(2) if t is not aten.clamp_min.default else None
        b.emit(n, Clip(-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi), "clamp"),
               [b.src(args[0])])
    elif t in (aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor, aten.sub.Tensor):
        return _arith(b, n)
    elif t is aten.cat.default and any(_is_param(b, a) for a in args[0]):
        return _concat_const(b, n, args[0], int(arg(1, 0)), out_shape)
    elif t is aten.cat.default:
        dim = int(arg(1, 0))
        rank = len(out_shape) if out_shape else 4
        b.emit(n, Concat(dim % rank), [b.src(a) for a in args[0]])
    elif t is aten.avg_pool2d.default:
        if arg(6) is not None:
            return False
        k = _pair(args[1])
        b.emit(n, AvgPool2d(k, _pair(arg(2), k), _pair(arg(3, 0)), bool(arg(4, False)), bool(arg(5, True))),
               [b.src(args[0])])
    elif t in (aten.max_pool2d.default, aten.max_pool2d_with_indices.default):
        k = _pair(args[1])
        b.emit(n, MaxPool2d(k, _pair(arg(2), k), _pair(arg(3, 0)), _pair(arg(4, 1)), bool(arg(5, False))),
               [b.src(args[0])])
    elif t in (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default):
        b.emit(n, AdaptiveAvgPool2d(_pair(args[1])), [b.src(args[0])])
    elif t is aten.mean.dim:
        dims = sorted(d % len(n.args[0].meta["val"].shape) for d in args[1])
        keep = bool(arg(2, False))
        if dims != [2, 3]:
            return False
        name = b.g.add(b.g.unique_name(b.name_for(n)), AdaptiveAvgPool2d((1, 1)), [b.src(args[0])])
        b.env[n.name] = name if keep else b.g.add(b.g.unique_name(name + ".flatten"), Flatten(1), [name])
    elif t is aten.flatten.using_ints:
        start = int(arg(1, 0))
        end = int(arg(2, -1))
        rank = len(n.args[0].meta["val"].shape)
        if end % rank != rank - 1 or start % rank == 0:
            return False
        b.emit(n, Flatten(start % rank), [b.src(args[0])])
    elif t in (aten.view.default, aten.reshape.default, aten._unsafe_view.default):
        in_shape = tuple(n.args[0].meta["val"].shape)
        if out_shape[0] != in_shape[0]:
            return False  # reshapes across the batch dimension have no per-sample meaning
        node = Flatten(1) if len(out_shape) == 2 else Reshape(tuple(out_shape[1:]))
        b.emit(n, node, [b.src(args[0])])
    elif t in (aten.dropout.default, aten.dropout_.default, aten.clone.default, aten.contiguous.default,
               aten.alias.default, aten.detach.default, aten.feature_dropout.default):
        b.emit(n, Identity(), [b.src(args[0])])
    elif _convert_transformer_op(b, n, t, args, out_shape):
        pass
    elif t in (aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.split_with_sizes_copy.default,
               aten.split_copy.Tensor):
        return _split(b, n, args, kw)
    elif t is operator.getitem and isinstance(b.env.get(args[0].name), _SplitParts):
        parts = b.env[args[0].name]
        start, end = parts.bounds[int(args[1])]
        b.emit(n, Slice(parts.dim, start, None if end >= parts.size else end, 1), [parts.src])
    elif t is operator.getitem:
        if args[1] != 0:
            return False
        b.env[n.name] = b.env[args[0].name]
    else:
        return False
    return True


class _SplitParts:
    """What ``torch.split`` / ``torch.chunk`` / ``Tensor.split`` produced: each ``getitem`` becomes a Slice."""

    def __init__(self, src: str, dim: int, bounds: list[tuple[int, int]], size: int):
        self.src, self.dim, self.bounds, self.size = src, dim, bounds, size


def _split(b: _Builder, n, args, kw) -> bool:
    """split / split_with_sizes / chunk along a non-batch dimension: the pieces' bounds come from the traced
    output shapes; every ``getitem`` of the result is emitted as a :class:`Slice` of the input."""
    val = n.meta.get("val")
    x = args[0]
    if not isinstance(val, (list, tuple)) or not hasattr(x, "meta") or "val" not in x.meta or x.name not in b.env:
        return False
    rank = len(x.meta["val"].shape)
    dim = int(args[2] if len(args) > 2 else kw.get("dim", 0)) % rank
    if dim == 0:
        return False  # pieces of the batch have no per-sample meaning
    bounds, start = [], 0
    for piece in val:
        size = int(piece.shape[dim])
        bounds.append((start, start + size))
        start += size
    b.env[n.name] = _SplitParts(b.src(x), dim, bounds, int(x.meta["val"].shape[dim]))
    return True


def leaky_relu_nodes(g: Graph, name: str, src: str, slope: float) -> str:
    """LeakyReLU as :math:`\\mathrm{relu}(x) - a\\,\\mathrm{relu}(-x)`: two ReLU-like clips that threshold
    balancing turns into two IF populations (the negative part through a -1 / -a scaling), so the network
    spikes; exact in ANN mode. Returns the name of the sum. Shared by both frontends."""
    pos = g.add(g.unique_name(f"{name}.pos"), Clip(0.0, math.inf, "relu"), [src])
    flip = g.add(g.unique_name(f"{name}.flip"), Scale(torch.tensor(-1.0)), [src])
    neg = g.add(g.unique_name(f"{name}.neg"), Clip(0.0, math.inf, "relu"), [flip])
    scaled = g.add(g.unique_name(f"{name}.slope"), Scale(torch.tensor(-float(slope))), [neg])
    return g.add(g.unique_name(name), Add(), [pos, scaled])


def _single(v) -> int:
    v = v if isinstance(v, int) else (list(v) or [0])[0]
    return int(v)


def conv1d_nodes(g: Graph, name: str, src: str, w: torch.Tensor, bias, stride: int, padding: int, dilation: int,
                 groups: int, in_shape: tuple, out_shape: tuple) -> str:
    """A 1-D convolution ``[C, L] -> [O, L']`` as Reshape ``[C, 1, L]`` -> Conv2d with a ``1 x k`` kernel ->
    Reshape ``[O, L']`` (exact: the same sums). Returns the last node's name. Shared by both frontends."""
    a = g.add(g.unique_name(f"{name}.as2d"), Reshape((in_shape[0], 1, in_shape[1])), [src])
    c = g.add(g.unique_name(name), Conv2d(w.detach().clone().unsqueeze(2), bias, (1, stride), (0, padding),
                                          (1, dilation), groups), [a])
    return g.add(g.unique_name(f"{name}.as1d"), Reshape(tuple(out_shape)), [c])


def _arith(b: _Builder, n) -> bool:
    t, (x, y) = n.target, n.args[:2]
    alpha = n.kwargs.get("alpha", 1)
    is_node = lambda a: hasattr(a, "name") and a.name in b.env  # noqa: E731
    if t in (aten.add.Tensor, aten.add_.Tensor) and is_node(x) and is_node(y) and alpha == 1:
        b.emit(n, Add(), [b.src(x), b.src(y)])
        return True
    if t in (aten.mul.Tensor, aten.mul_.Tensor) and is_node(x) and is_node(y):  # e.g. a squeeze-excitation gate
        b.emit(n, Mul(), [b.src(x), b.src(y)])
        return True
    if t in (aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor) and is_node(y) and not is_node(x) \
            and alpha == 1:
        x, y = y, x  # commutative: put the constant on the right
    # constant operand: scalar or a parameter/constant tensor -> Scale node
    if is_node(x) and not is_node(y):
        c = b.tensor(y) if _is_param(b, y) else torch.tensor(float(y))
        c = _per_sample_const(c.detach().clone().float(), n)
        if c is None:
            return False
        if t in (aten.mul.Tensor, aten.mul_.Tensor):
            b.emit(n, Scale(c), [b.src(x)])
        elif t is aten.sub.Tensor:
            b.emit(n, Scale(torch.tensor(1.0), -c * alpha), [b.src(x)])
        else:
            b.emit(n, Scale(torch.tensor(1.0), c * alpha), [b.src(x)])
        return True
    return False


def _per_sample_const(c: torch.Tensor, n) -> torch.Tensor | None:
    """A constant operand as a per-sample tensor (broadcast over the batch), or None if it varies per sample.

    A constant with the full rank of the output carries a batch dimension (an ``expand`` to the
    capture batch, e.g. BERT's token-type embeddings, a ViT class token): it is per-sample if its
    rows are all equal, and then the first row is kept."""
    val = n.meta.get("val")
    rank = len(val.shape) if hasattr(val, "shape") else None
    if rank is None or c.dim() < rank:
        return c
    if c.shape[0] != 1 and not torch.equal(c, c[:1].expand_as(c)):
        return None
    return c[0]


def _concat_const(b: _Builder, n, parts, dim: int, out_shape) -> bool:
    """cat([const, x]) / cat([x, const]) with a per-sample constant -> ConcatConst."""
    if len(parts) != 2 or out_shape is None or dim % len(out_shape) == 0:
        return False
    first = _is_param(b, parts[0])
    const, node = (parts[0], parts[1]) if first else (parts[1], parts[0])
    if _is_param(b, node) or not hasattr(node, "name") or node.name not in b.env:
        return False
    c = _per_sample_const(b.tensor(const).detach().clone().float(), n)
    if c is None or c.dim() != len(out_shape) - 1:
        return False
    b.emit(n, ConcatConst(c, dim % len(out_shape), first), [b.src(node)])
    return True


def _node_arg(b: _Builder, a) -> bool:
    return hasattr(a, "name") and isinstance(b.env.get(a.name), str)


def _convert_transformer_op(b: _Builder, n, t, args, out_shape) -> bool:
    """Transformer ops (layer norm, GELU, softmax, attention matmuls, embeddings, views); False if not one."""
    rank = len(out_shape) if out_shape is not None else None
    in_val = args[0].meta.get("val") if args and hasattr(args[0], "meta") else None
    in_rank = len(in_val.shape) if hasattr(in_val, "shape") else None
    if t is aten.layer_norm.default:
        shape = tuple(args[1])
        w = b.tensor(args[2]) if len(args) > 2 and args[2] is not None else None
        bias = b.tensor(args[3]) if len(args) > 3 and args[3] is not None else None
        eps = float(args[4]) if len(args) > 4 else float(n.kwargs.get("eps", 1e-5))
        b.emit(n, LayerNorm(_opt_clone(w), _opt_clone(bias), eps, shape), [b.src(args[0])])
    elif t is aten.gelu.default:
        approx = n.kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        b.emit(n, Activation("gelu_tanh" if approx == "tanh" else "gelu"), [b.src(args[0])])
    elif t in (aten.tanh.default, aten.sigmoid.default, aten.silu.default, aten.hardswish.default,
               aten.hardsigmoid.default, aten.silu_.default, aten.hardswish_.default, aten.hardsigmoid_.default):
        b.emit(n, Activation(_op_name(t).split(".")[0].rstrip("_")), [b.src(args[0])])
    elif t in (aten.softmax.int, aten._softmax.default):
        dim = int(args[1]) % rank
        b.emit(n, Softmax(dim - rank), [b.src(args[0])])
    elif t in (aten.matmul.default, aten.bmm.default) and _node_arg(b, args[0]) and _node_arg(b, args[1]):
        if rank < 3:
            return False  # a product over the batch dimension
        b.emit(n, MatMul(), [b.src(args[0]), b.src(args[1])])
    elif t is aten.matmul.default and _node_arg(b, args[0]) and _is_param(b, args[1]) and \
            b.tensor(args[1]).dim() == 2:
        b.emit(n, Linear(b.tensor(args[1]).detach().t().contiguous().clone()), [b.src(args[0])])
    elif t is aten.embedding.default and _is_param(b, args[0]) and _node_arg(b, args[1]):
        pad = args[2] if len(args) > 2 else n.kwargs.get("padding_idx", -1)
        b.emit(n, Embedding(b.tensor(args[0]).detach().clone(), None if pad is None or pad < 0 else int(pad)),
               [b.src(args[1])])
    elif t is aten.transpose.int:
        d0, d1 = int(args[1]) % rank, int(args[2]) % rank
        if 0 in (d0, d1):
            return False
        dims = list(range(rank))
        dims[d0], dims[d1] = d1, d0
        b.emit(n, Permute(tuple(dims)), [b.src(args[0])])
    elif t is aten.permute.default:
        dims = tuple(int(d) % rank for d in args[1])
        if dims[0] != 0:
            return False
        b.emit(n, Permute(dims), [b.src(args[0])])
    elif t in (aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default):
        if out_shape[0] != args[0].meta["val"].shape[0] or (t is aten.unsqueeze.default and int(args[1]) % rank == 0):
            return False
        b.emit(n, Reshape(tuple(out_shape[1:])), [b.src(args[0])])
    elif t is aten.select.int:
        dim = int(args[1]) % in_rank
        if dim == 0:
            return False
        b.emit(n, Select(dim, int(args[2])), [b.src(args[0])])
    elif t is aten.slice.Tensor:
        dim = int(args[1]) % in_rank if len(args) > 1 else 0
        start = args[2] if len(args) > 2 else None
        end = args[3] if len(args) > 3 else None
        step = int(args[4]) if len(args) > 4 else 1
        size = args[0].meta["val"].shape[dim]
        if tuple(out_shape) == tuple(args[0].meta["val"].shape):
            b.emit(n, Identity(), [b.src(args[0])])
        elif dim == 0:
            return False
        else:
            b.emit(n, Slice(dim, int(start or 0), None if end is None or end >= size else int(end), step),
                   [b.src(args[0])])
    elif t in (aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.type_as.default,
               aten.lift_fresh_copy.default):
        b.emit(n, Identity(), [b.src(args[0])])  # the IR is float; embeddings cast their ids themselves
    elif t in (aten.div.Tensor, aten.div_.Tensor) and _node_arg(b, args[0]) and not _node_arg(b, args[1]):
        c = b.tensor(args[1]) if _is_param(b, args[1]) else torch.tensor(float(args[1]))
        c = _per_sample_const(1.0 / c.detach().clone().float(), n)
        if c is None:
            return False
        b.emit(n, Scale(c), [b.src(args[0])])
    elif t is aten.rsub.Scalar and _node_arg(b, args[0]):
        alpha = float(n.kwargs.get("alpha", 1))
        b.emit(n, Scale(torch.tensor(-alpha), torch.tensor(float(args[1]))), [b.src(args[0])])
    elif t is aten.scaled_dot_product_attention.default:
        return _sdpa(b, n, args)
    else:
        return False
    return True


def _sdpa(b: _Builder, n, args) -> bool:
    """softmax(Q K^T * scale + mask) V, decomposed into IR nodes (matmul, scale, add, softmax, matmul)."""
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else n.kwargs.get("attn_mask")
    dropout = args[4] if len(args) > 4 else n.kwargs.get("dropout_p", 0.0)
    causal = args[5] if len(args) > 5 else n.kwargs.get("is_causal", False)
    scale = n.kwargs.get("scale", args[6] if len(args) > 6 else None)
    if causal or dropout or n.kwargs.get("enable_gqa", False) or not all(_node_arg(b, a) for a in (q, k, v)):
        return False
    rank = len(q.meta["val"].shape)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(q.meta["val"].shape[-1])
    base = b.name_for(n)
    g = b.g
    dims = list(range(rank))
    dims[-1], dims[-2] = dims[-2], dims[-1]
    kt = g.add(g.unique_name(base + ".key_t"), Permute(tuple(dims)), [b.src(k)])
    s = g.add(g.unique_name(base + ".scores"), MatMul(), [b.src(q), kt])
    s = g.add(g.unique_name(base + ".scaled"), Scale(torch.tensor(scale)), [s])
    if mask is not None:
        if _node_arg(b, mask):
            s = g.add(g.unique_name(base + ".masked"), Add(), [s, b.src(mask)])
        else:
            m = b.tensor(mask)
            m = torch.zeros(m.shape).masked_fill(~m, float("-inf")) if m.dtype == torch.bool else m.float()
            c = m[0] if m.dim() == rank else m
            s = g.add(g.unique_name(base + ".masked"), Scale(torch.tensor(1.0), c.clone()), [s])
    p = g.add(g.unique_name(base + ".softmax"), Softmax(-1), [s])
    b.env[n.name] = g.add(g.unique_name(base), MatMul(), [p, b.src(v)])
    return True


def _opt_clone(t):
    return None if t is None else t.detach().clone()


_ARGNAMES = {aten.conv2d.default: {2: "bias", 3: "stride", 4: "padding", 5: "dilation", 6: "groups"},
             aten.conv_transpose2d.input: {2: "bias", 3: "stride", 4: "padding", 5: "output_padding", 6: "groups",
                                           7: "dilation"},
             aten.linear.default: {2: "bias"},
             aten.avg_pool2d.default: {2: "stride", 3: "padding", 4: "ceil_mode", 5: "count_include_pad",
                                       6: "divisor_override"},
             aten.max_pool2d.default: {2: "stride", 3: "padding", 4: "dilation", 5: "ceil_mode"},
             aten.flatten.using_ints: {1: "start_dim", 2: "end_dim"}, aten.mean.dim: {2: "keepdim"},
             aten.clamp.default: {1: "min", 2: "max"}, aten.hardtanh.default: {1: "min_val", 2: "max_val"}}


def _op_name(target) -> str:
    return getattr(target, "__name__", str(target)).replace("aten.", "")


def _capture(model: nn.Module, example: torch.Tensor):
    """ATen graph + its lifted tensors; torch.export first, make_fx-tracing of fx as fallback."""
    try:
        ep = torch.export.export(model, (example,))
        sig = ep.graph_signature
        params = {}
        for spec in sig.input_specs:
            if spec.target is not None and spec.arg.name:
                src = ep.state_dict.get(spec.target)
                if src is None:
                    src = ep.constants.get(spec.target)
                if src is not None:
                    params[spec.arg.name] = src
        return ep.graph, params, "torch.export"
    except Exception as export_error:  # noqa: BLE001 - any failure falls back to fx
        from torch.fx.experimental.proxy_tensor import make_fx

        try:
            gm = make_fx(model, pre_dispatch=True)(example)
        except Exception:
            raise SnnconvError(f"cannot capture the model: torch.export failed "
                               f"({str(export_error).splitlines()[0][:200]}) and fx tracing failed too") from None
        params = {}
        graph = gm.graph
        for node in list(graph.nodes):
            if node.op == "get_attr":
                params[node.name] = getattr(gm, node.target)
        return graph, params, "fx (make_fx)"


def coverage_table(counts: Counter, unsupported: set[str]) -> str:
    """Markdown table of the ops met during ingest and whether each maps into the IR."""
    lines = ["| op | count | supported |", "|---|---:|---|"]
    for op, c in sorted(counts.items()):
        lines.append(f"| {op} | {c} | {'no' if op in unsupported else 'yes'} |")
    return "\n".join(lines)


def _live_nodes(graph) -> set:
    """fx nodes the outputs depend on (dead code, e.g. an unused pooler or shape asserts, is skipped)."""
    live, stack = set(), [n for n in graph.nodes if n.op == "output"]
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(n.all_input_nodes)
    return live


def _fold_constant(b: _Builder, n) -> bool:
    """Evaluate an op whose inputs are all constants (position ids, masks of constants, expanded
    class tokens ...) at ingest time; its result becomes a constant for the ops that use it."""
    if any(a.name not in b.params for a in n.all_input_nodes) or \
            not (isinstance(n.target, torch._ops.OpOverload) or n.target is operator.getitem):
        return False
    try:
        val = n.target(*torch.fx.node.map_arg(n.args, lambda a: b.params[a.name]),
                       **torch.fx.node.map_arg(n.kwargs, lambda a: b.params[a.name]))
    except Exception:  # noqa: BLE001 - not foldable: mapped (or reported) like any other op
        return False
    b.params[n.name] = val
    return True


def from_torch(model: nn.Module, input_shape: tuple[int, ...], check: bool = True,
               example: torch.Tensor | None = None) -> tuple[Graph, str]:
    """Ingest ``model`` (per-sample ``input_shape``, e.g. (3, 32, 32)) into the IR.

    Returns ``(graph, coverage_table)``. Raises :class:`UnsupportedOpError` naming every
    unsupported op and its location. With ``check``, the IR run as an ANN must reproduce the
    module's output (max abs error 1e-4 relative to the output scale). ``example`` (a batch of
    2 or more) is the capture and check input; default ``randn`` from a fixed seed (the check gives
    the same answer on every run and does not move the global RNG). Ops on constants only are
    folded at ingest; ops the output does not depend on are skipped.
    """
    model = model.eval()
    if example is None:
        example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    graph, params, method = _capture(model, example)
    b = _Builder(params)
    live = _live_nodes(graph)
    for n in graph.nodes:
        if n.op == "placeholder":
            if n.name in params:
                continue
            b.env[n.name] = b.g.add(b.g.unique_name("input"), Input(shape=tuple(input_shape)))
        elif n.op == "get_attr":
            continue
        elif n.op == "call_function":
            if n not in live:
                continue
            name = _op_name(n.target)
            b.coverage[name] += 1
            if _fold_constant(b, n):
                continue
            try:
                ok = _convert_call(b, n)
            except (KeyError, TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                b.unsupported.append((name, b.location(n)))
                b.unsupported_kinds.add(name)
                # a pass-through stand-in lets the ops downstream be judged on their own
                srcs = [b.env[a.name] for a in n.all_input_nodes if isinstance(b.env.get(a.name), str)]
                stand_in = Identity() if srcs else Input(shape=())
                b.env[n.name] = b.g.add(b.g.unique_name(f"unsupported.{n.name}"), stand_in, srcs[:1])
        elif n.op == "output":
            outs = n.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            b.g.outputs = [b.env[o.name] for o in outs if hasattr(o, "name") and b.env.get(o.name)]
    table = coverage_table(b.coverage, b.unsupported_kinds)
    if b.unsupported:
        err = UnsupportedOpError(b.unsupported)
        err.coverage = table
        raise err
    g = b.g
    g.meta.update({"frontend": method, "input_shape": list(input_shape)})
    g.validate()
    g.infer_shapes()
    if check:
        check_equivalence(model, g, example)
    return g, table


def _relative_errors(model: nn.Module, graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """Per sample: max abs difference between ``model(x)`` and the IR run as an ANN, relative to the output scale."""
    from snnconv.runtime.interpreter import run_ann

    ref, out = model(x).flatten(1), run_ann(graph, x).flatten(1)
    return (ref - out).abs().amax(1) / ref.abs().amax(1).clamp_min(1.0)


@torch.no_grad()
def check_equivalence(model: nn.Module, graph: Graph, x: torch.Tensor, tol: float = 1e-4,
                      recheck: int = 32, agree: float = 0.9) -> float:
    """Max abs difference between ``model(x)`` and the IR run as an ANN, relative to the output scale.

    Quantized activations (QCFS clips with L levels) are step functions: the IR and the module compute a
    layer's input in different but equally valid floating-point orders (e.g. batch norm unfused), and an input
    within an ulp of a step lands on either side, changing the output by a whole step (measured: 6 of 300
    random batches of 2 on a ResNet-20 with L = 2). So when a graph with quantized activations misses ``tol``,
    it is re-checked on ``recheck`` fresh samples and passes if at least ``agree`` of them match within ``tol``
    each; a wrong mapping (levels, shift, threshold, layer) misses on nearly every sample and is still refused."""
    errs = _relative_errors(model, graph, x)
    err = float(errs.max())
    if err <= tol:
        return err
    quantized = any(getattr(n, "levels", 0) for n in graph.nodes.values())
    if quantized:
        fresh = torch.randn(recheck, *x.shape[1:], generator=torch.Generator().manual_seed(0), dtype=x.dtype)
        errs = _relative_errors(model, graph, fresh)
        share = float((errs <= tol).float().mean())
        if share >= agree:
            return float(errs[errs <= tol].max())
        raise SnnconvError(f"ingested graph differs from the module: {share:.0%} of {recheck} samples within "
                           f"relative error {tol} (largest {float(errs.max()):.2e}; quantized activations may "
                           f"differ on a step boundary, but not this often)")
    raise SnnconvError(f"ingested graph differs from the module (relative error {err:.2e} > {tol})")


@register_frontend
class TorchFrontend(Frontend):
    """Any loaded ``nn.Module`` (the zoo and checkpoint frontends of :mod:`snnconv.api` load them)."""

    name = "torch"

    def accepts(self, model) -> bool:
        return isinstance(model, nn.Module) and not (hasattr(model, "main_input_name") and hasattr(model, "config"))

    def ingest(self, model, shape):
        return from_torch(model, shape)
