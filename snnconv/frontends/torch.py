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
import torch.nn.functional as F
from torch import nn

from snnconv.errors import SnnconvError, UnsupportedOpError
from snnconv.ir import (AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, Clip, Concat, Conv2d, Flatten, Graph, Identity,
                        Input, Linear, MaxPool2d, Reshape, Scale)

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
        b.emit(n, Clip(0.0, float(b.tensor(args[1]).detach()), "qcfs", levels=int(args[2]), shift=float(args[3])),
               [b.src(args[0])])
    elif t in (aten.hardtanh.default, aten.hardtanh_.default):
        lo, hi = float(arg(1, -1.0)), float(arg(2, 1.0))
        b.emit(n, Clip(lo, hi, "relu6" if (lo, hi) == (0.0, 6.0) else "hardtanh"), [b.src(args[0])])
    elif t in (aten.relu6.default,):
        b.emit(n, Clip(0.0, 6.0, "relu6"), [b.src(args[0])])
    elif t in (aten.clamp.default, aten.clamp_.default, aten.clamp_min.default):
        lo = arg(1)
        hi = arg(2) if t is not aten.clamp_min.default else None
        b.emit(n, Clip(-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi), "clamp"),
               [b.src(args[0])])
    elif t in (aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor, aten.sub.Tensor):
        return _arith(b, n)
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
    elif t is operator.getitem:
        if args[1] != 0:
            return False
        b.env[n.name] = b.env[args[0].name]
    else:
        return False
    return True


def _arith(b: _Builder, n) -> bool:
    t, (x, y) = n.target, n.args[:2]
    alpha = n.kwargs.get("alpha", 1)
    is_node = lambda a: hasattr(a, "name") and a.name in b.env  # noqa: E731
    if t in (aten.add.Tensor, aten.add_.Tensor) and is_node(x) and is_node(y) and alpha == 1:
        b.emit(n, Add(), [b.src(x), b.src(y)])
        return True
    # constant operand: scalar or a parameter/constant tensor -> Scale node
    if is_node(x) and not is_node(y):
        c = b.tensor(y) if _is_param(b, y) else torch.tensor(float(y))
        c = c.detach().clone().float()
        if t in (aten.mul.Tensor, aten.mul_.Tensor):
            b.emit(n, Scale(c), [b.src(x)])
        elif t is aten.sub.Tensor:
            b.emit(n, Scale(torch.tensor(1.0), -c * alpha), [b.src(x)])
        else:
            b.emit(n, Scale(torch.tensor(1.0), c * alpha), [b.src(x)])
        return True
    return False


def _opt_clone(t):
    return None if t is None else t.detach().clone()


_ARGNAMES = {aten.conv2d.default: {2: "bias", 3: "stride", 4: "padding", 5: "dilation", 6: "groups"},
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


def from_torch(model: nn.Module, input_shape: tuple[int, ...], check: bool = True) -> tuple[Graph, str]:
    """Ingest ``model`` (per-sample ``input_shape``, e.g. (3, 32, 32)) into the IR.

    Returns ``(graph, coverage_table)``. Raises :class:`UnsupportedOpError` naming every
    unsupported op and its location. With ``check``, the IR run as an ANN must reproduce the
    module's output (max abs error 1e-4 relative to the output scale).
    """
    model = model.eval()
    example = torch.randn(2, *input_shape)
    graph, params, method = _capture(model, example)
    b = _Builder(params)
    for n in graph.nodes:
        if n.op == "placeholder":
            if n.name in params:
                continue
            b.env[n.name] = b.g.add(b.g.unique_name("input"), Input(shape=tuple(input_shape)))
        elif n.op == "get_attr":
            continue
        elif n.op == "call_function":
            name = _op_name(n.target)
            b.coverage[name] += 1
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


@torch.no_grad()
def check_equivalence(model: nn.Module, graph: Graph, x: torch.Tensor, tol: float = 1e-4) -> float:
    """Max abs difference between ``model(x)`` and the IR run as an ANN, relative to the output scale."""
    from snnconv.runtime.interpreter import run_ann

    ref = model(x)
    out = run_ann(graph, x)
    err = float((ref - out).abs().max() / ref.abs().max().clamp_min(1.0))
    if err > tol:
        raise SnnconvError(f"ingested graph differs from the module (relative error {err:.2e} > {tol})")
    return err
