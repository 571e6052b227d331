"""ONNX frontend: an ``.onnx`` file -> IR, read with the ``onnx`` package (no onnxruntime needed to ingest).

The file is loaded with ``onnx.load``, validated with ``onnx.checker`` and typed with
``onnx.shape_inference``; then its nodes (topologically ordered by the ONNX spec) are mapped one
by one onto the same IR the PyTorch frontend builds:

=====================================  ==============================================
ONNX                                   IR
=====================================  ==============================================
Conv (2-D)                             Conv2d
Gemm; MatMul [+ Add of a bias]         Linear (bias folded in when it is a constant)
BatchNormalization                     BatchNorm
Relu, Clip                             Clip
Add / Sum (two tensors), Sub           Add (Sub via a Scale(-1) on the subtrahend)
Add/Sub/Mul/Div with a constant        Scale
Concat                                 Concat
AveragePool, GlobalAveragePool         AvgPool2d, AdaptiveAvgPool2d((1, 1))
ReduceMean over H, W                   AdaptiveAvgPool2d((1, 1)) [+ Flatten]
MaxPool                                MaxPool2d
Flatten, Reshape, Squeeze, Unsqueeze   Flatten / Reshape (per sample: the batch axis is kept)
Identity, Dropout                      Identity
Split, Slice (non-batch axes)          Slice (one per output / sliced axis)
=====================================  ==============================================

Initializers and ``Constant`` nodes are constants; every node whose inputs are all constants
(weight ``Identity`` copies, ``Shape -> Gather -> Concat`` chains that compute reshape targets)
is folded with ``onnx.reference.ReferenceEvaluator``; ``Shape`` of a tensor is read from the
inferred shapes. Unsupported ops are all collected and reported together with their ONNX node
names (:class:`UnsupportedOpError`). :func:`check_onnx_equivalence` runs the ingested graph with
the ANN interpreter and the original file with onnxruntime on the same input.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnconv.frontends import Frontend, register_frontend
from snnconv.errors import SnnconvError, UnsupportedOpError
from snnconv.frontends.torch import conv1d_nodes, coverage_table, leaky_relu_nodes
from snnconv.ir import (Activation, Mul, AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, Clip, Concat, Conv2d, Flatten, Graph, Identity,
                        Input, Linear, MaxPool2d, Reshape, Scale, Slice, Upsample, ConvTranspose2d)

#: batch size substituted for a symbolic batch dimension when ``Shape`` results are folded
_FOLD_BATCH = 2


def _onnx():
    try:
        import onnx
    except ImportError:
        raise SnnconvError("reading ONNX needs the 'onnx' package: pip install 'snnconv[onnx]'") from None
    return onnx


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else e.__class__.__name__)[:300]


def load_onnx(path_or_model) -> tuple[Any, str]:
    """``(ModelProto, description)``: loaded and checked with ``onnx.checker``; bad files are one-line errors."""
    onnx = _onnx()
    if isinstance(path_or_model, onnx.ModelProto):
        model, where = path_or_model, "the ONNX model"
    else:
        path = Path(path_or_model)
        where = f"ONNX file {path}"
        if not path.is_file():
            raise SnnconvError(f"{where} not found")
        try:
            model = onnx.load(str(path))
        except Exception as e:  # protobuf DecodeError, missing external data, ...
            raise SnnconvError(f"cannot read {where} (corrupt or truncated?): {_first_line(e)}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise SnnconvError(f"{where} is not a valid ONNX model: {_first_line(e)}") from None
    if not model.graph.node:
        raise SnnconvError(f"{where} holds an empty graph")
    return model, where


def _real_inputs(model) -> list:
    init_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def onnx_input_shape(model) -> tuple[int, ...] | None:
    """Per-sample shape of the (single) graph input when it is static beyond the batch axis."""
    ins = _real_inputs(model)
    if len(ins) != 1:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ins[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        return None
    return tuple(int(d) for d in dims[1:])


class _Builder:
    """Maps ONNX nodes to IR nodes; ``env`` maps an ONNX value name to an IR node name (str) or a
    constant (``np.ndarray``)."""

    def __init__(self, model, batch: int):
        onnx = _onnx()
        self.onnx = onnx
        self.g = Graph()
        self.env: dict[str, Any] = {}
        self.coverage: Counter = Counter()
        self.unsupported: list[tuple[str, str]] = []
        self.unsupported_kinds: set[str] = set()
        self.batch = batch
        graph = model.graph
        self.shapes: dict[str, list] = {}
        for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        self.consumers: Counter = Counter(i for n in graph.node for i in n.input if i)
        self.consumers.update(o.name for o in graph.output)
        self.linear_from_matmul: dict[str, str] = {}  # IR Linear from a MatMul -> its ONNX output
        self.onnx_of: dict[str, str] = {}  # IR node -> the ONNX value it computes

    # -- helpers --------------------------------------------------------------------------
    def rank(self, name: str) -> int | None:
        s = self.shapes.get(name)
        return len(s) if s is not None else None

    def sample_shape(self, name: str) -> tuple[int, ...] | None:
        """Per-sample (no batch) static shape of an ONNX value, if shape inference knows it."""
        s = self.shapes.get(name)
        if s is None or len(s) < 1 or any(d is None for d in s[1:]):
            return None
        return tuple(int(d) for d in s[1:])

    def emit(self, node, ir_node, srcs: list[str], out_index: int = 0) -> str:
        base = (node.name or f"{node.op_type.lower()}_{node.output[0]}").lstrip("/")
        return self.bind(node, self.g.add(self.g.unique_name(base), ir_node, srcs), out_index)

    def bind(self, node, name: str, out_index: int = 0) -> str:
        """Record IR node ``name`` as what ONNX ``node``'s output ``out_index`` is (for ops made of several nodes)."""
        self.env[node.output[out_index]] = name
        self.onnx_of[name] = node.output[out_index]
        return name

    def location(self, node, idx: int) -> str:
        name = node.name or f"<unnamed #{idx}>"
        return f"ONNX node '{name}' (output '{node.output[0] if node.output else '-'}')"


def _attrs(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


def _sym_pads(pads, n: int = 2) -> tuple | None:
    if not pads:
        return (0,) * n
    pads = list(pads)
    if pads[:n] != pads[n:]:
        return None  # asymmetric padding has no IR equivalent
    return tuple(int(p) for p in pads[:n])


def _same_pads(in_hw, k, s, d) -> tuple | None:
    """Padding of auto_pad=SAME_*; None when it is asymmetric."""
    pads = []
    for i, kk, ss, dd in zip(in_hw, k, s, d):
        out = -(-i // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - i, 0)
        if total % 2:
            return None
        pads.append(total // 2)
    return tuple(pads)


def _spatial_padding(b: _Builder, node, at: dict, in_name: str, k, s, d) -> tuple | None:
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return _sym_pads(at.get("pads"))
    if auto == "VALID":
        return (0, 0)
    shape = b.shapes.get(in_name)
    if shape is None or any(v is None for v in shape[2:]):
        return None
    return _same_pads(shape[2:], k, s, d)


def _resize(b: _Builder, node, at: dict, x: str) -> bool:
    """ONNX Resize as an :class:`Upsample` to the output's static size: nearest (asymmetric, floor; what
    PyTorch exports for ``nearest``) or linear (half_pixel / pytorch_half_pixel = ``align_corners=False``,
    align_corners). Other modes have no IR equivalent and are reported."""
    dec = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    mode, ctm = dec(at.get("mode", "nearest")), dec(at.get("coordinate_transformation_mode", "half_pixel"))
    out = b.shapes.get(node.output[0])
    if out is None or len(out) != 4 or any(v is None for v in out[2:]):
        return False
    if mode == "nearest" and ctm == "asymmetric" and dec(at.get("nearest_mode", "round_prefer_floor")) == "floor":
        up = Upsample((int(out[2]), int(out[3])), "nearest")
    elif mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        up = Upsample((int(out[2]), int(out[3])), "bilinear", ctm == "align_corners")
    else:
        return False
    b.emit(node, up, [x])
    return True


def _convert(b: _Builder, node, ins: list) -> bool:
    """Map one ONNX node whose data input is a tensor; returns False if it has no IR equivalent."""
    onnx, op = b.onnx, node.op_type
    at = _attrs(onnx, node)
    is_t = lambda v: isinstance(v, str)  # noqa: E731
    is_c = lambda v: isinstance(v, np.ndarray)  # noqa: E731
    x = ins[0] if ins else None
    out_used = lambda i: len(node.output) > i and node.output[i] and b.consumers[node.output[i]] > 0  # noqa: E731

    if op == "Conv" and is_t(x) and is_c(ins[1]) and ins[1].ndim == 3:  # 1-D convolution
        if len(ins) > 2 and ins[2] is not None and not is_c(ins[2]):
            return False
        w, in_shape, out_shape = ins[1], b.shapes.get(node.input[0]), b.shapes.get(node.output[0])
        pad = _sym_pads(at.get("pads"), 1)
        if pad is None or in_shape is None or out_shape is None or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"", ""):
            return False
        bias = _t(ins[2]) if len(ins) > 2 and ins[2] is not None else None
        base = (node.name or f"conv_{node.output[0]}").lstrip("/")
        last = conv1d_nodes(b.g, base, x, _t(w), bias, int(at.get("strides", [1])[0]), pad[0],
                            int(at.get("dilations", [1])[0]), int(at.get("group", 1)), tuple(in_shape[1:]),
                            tuple(out_shape[1:]))
        b.bind(node, last)
    elif op == "Conv":
        if not (is_t(x) and is_c(ins[1]) and ins[1].ndim == 4) or (len(ins) > 2 and ins[2] is not None and not is_c(ins[2])):
            return False
        w = ins[1]
        k = tuple(at.get("kernel_shape", w.shape[2:]))
        s, d = tuple(at.get("strides", (1, 1))), tuple(at.get("dilations", (1, 1)))
        pad = _spatial_padding(b, node, at, node.input[0], k, s, d)
        if pad is None or k != tuple(w.shape[2:]):
            return False
        bias = _t(ins[2]) if len(ins) > 2 and ins[2] is not None else None
        b.emit(node, Conv2d(_t(w), bias, s, pad, d, int(at.get("group", 1))), [x])
    elif op == "ConvTranspose":
        if not (is_t(x) and is_c(ins[1]) and ins[1].ndim == 4) or (len(ins) > 2 and ins[2] is not None and not is_c(ins[2])):
            return False
        auto = at.get("auto_pad", b"NOTSET")
        if "output_shape" in at or (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", ""):
            return False  # an explicit output shape / auto_pad: pads computed by the runtime, not stated
        w = ins[1]
        pad = _sym_pads(at.get("pads"))
        if pad is None or tuple(at.get("kernel_shape", w.shape[2:])) != tuple(w.shape[2:]):
            return False
        bias = _t(ins[2]) if len(ins) > 2 and ins[2] is not None else None
        b.emit(node, ConvTranspose2d(_t(w), bias, tuple(at.get("strides", (1, 1))), pad,
                                     tuple(at.get("output_padding", (0, 0))), tuple(at.get("dilations", (1, 1))),
                                     int(at.get("group", 1))), [x])
    elif op == "Gemm":
        if not (is_t(x) and is_c(ins[1])) or at.get("transA", 0):
            return False
        w = ins[1] if at.get("transB", 0) else ins[1].T
        w = w * at.get("alpha", 1.0)
        bias = None
        if len(ins) > 2 and ins[2] is not None:
            if not is_c(ins[2]) or ins[2].size not in (1, w.shape[0]):
                return False
            bias = np.broadcast_to(ins[2].reshape(-1) * at.get("beta", 1.0), (w.shape[0],))
        b.emit(node, Linear(_t(w), None if bias is None else _t(bias)), [x])
    elif op == "MatMul":
        if not (is_t(x) and is_c(ins[1]) and ins[1].ndim == 2) or (b.rank(node.input[0]) or 0) < 2:
            return False
        name = b.emit(node, Linear(_t(ins[1].T)), [x])
        b.linear_from_matmul[name] = node.output[0]
    elif op in ("Add", "Sub", "Mul", "Div"):
        return _arith(b, node, ins)
    elif op == "Sum":
        if len(ins) == 1 and is_t(x):
            b.emit(node, Identity(), [x])
        elif all(is_t(v) for v in ins):
            b.emit(node, Add(), list(ins))
        else:
            return False
    elif op == "BatchNormalization":
        if not (is_t(x) and all(is_c(v) for v in ins[1:5])) or at.get("training_mode", 0) or out_used(1):
            return False
        b.emit(node, BatchNorm(_t(ins[1]), _t(ins[2]), _t(ins[3]), _t(ins[4]), float(at.get("epsilon", 1e-5))), [x])
    elif op == "Floor":
        return _qcfs_floor(b, node, x)
    elif op == "Relu":
        b.emit(node, Clip(0.0, math.inf, "relu"), [x])
    elif op in ("Sigmoid", "Tanh", "HardSwish") and is_t(x):
        b.emit(node, Activation({"Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}[op]), [x])
    elif op == "HardSigmoid" and is_t(x):  # PyTorch's relu6(x + 3) / 6 only
        if abs(float(at.get("alpha", 0.2)) - 1 / 6) > 1e-6 or abs(float(at.get("beta", 0.5)) - 0.5) > 1e-6:
            return False
        b.emit(node, Activation("hardsigmoid"), [x])
    elif op == "Gelu" and is_t(x):
        approx = at.get("approximate", "none")
        b.emit(node, Activation("gelu_tanh" if (approx.decode() if isinstance(approx, bytes) else approx) == "tanh"
                                else "gelu"), [x])
    elif op == "LeakyRelu" and is_t(x):
        base = (node.name or f"leakyrelu_{node.output[0]}").lstrip("/")
        last = leaky_relu_nodes(b.g, base, x, float(at.get("alpha", 0.01)))
        b.bind(node, last)
    elif op == "Resize" and is_t(x):
        return _resize(b, node, at, x)
    elif op == "Clip":
        lo, hi = at.get("min"), at.get("max")  # opset < 11 keeps the bounds as attributes
        if len(ins) > 1 and ins[1] is not None:
            if not is_c(ins[1]):
                return False
            lo = float(ins[1])
        if len(ins) > 2 and ins[2] is not None:
            if not is_c(ins[2]):
                return False
            hi = float(ins[2])
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        b.emit(node, Clip(lo, hi, "relu6" if (lo, hi) == (0.0, 6.0) else "clip"), [x])
    elif op == "Concat":
        rank = b.rank(node.output[0]) or b.rank(node.input[0])
        axis = int(at["axis"])
        if not all(is_t(v) for v in ins) or rank is None or axis % rank == 0:
            return False
        b.emit(node, Concat(axis % rank), list(ins))
    elif op == "AveragePool":
        k = tuple(at["kernel_shape"])
        s = tuple(at.get("strides", (1,) * len(k)))
        if len(k) != 2 or at.get("dilations", [1, 1]) != [1, 1]:
            return False
        pad = _spatial_padding(b, node, at, node.input[0], k, s, (1, 1))
        if pad is None:
            return False
        b.emit(node, AvgPool2d(k, s, pad, bool(at.get("ceil_mode", 0)), bool(at.get("count_include_pad", 0))), [x])
    elif op == "MaxPool":
        k = tuple(at["kernel_shape"])
        s = tuple(at.get("strides", (1,) * len(k)))
        d = tuple(at.get("dilations", (1,) * len(k)))
        if len(k) != 2 or out_used(1):
            return False
        pad = _spatial_padding(b, node, at, node.input[0], k, s, d)
        if pad is None:
            return False
        b.emit(node, MaxPool2d(k, s, pad, d, bool(at.get("ceil_mode", 0))), [x])
    elif op == "GlobalAveragePool":
        if b.rank(node.input[0]) != 4:
            return False
        b.emit(node, AdaptiveAvgPool2d((1, 1)), [x])
    elif op == "ReduceMean":
        rank = b.rank(node.input[0])
        axes = at.get("axes")
        if len(ins) > 1 and ins[1] is not None:
            if not is_c(ins[1]):
                return False
            axes = ins[1].tolist()
        if rank != 4 or axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            return False
        if at.get("keepdims", 1):
            b.emit(node, AdaptiveAvgPool2d((1, 1)), [x])
        else:
            pooled = b.g.add(b.g.unique_name((node.name or "reducemean").lstrip("/")), AdaptiveAvgPool2d((1, 1)), [x])
            b.env[node.output[0]] = b.g.add(b.g.unique_name(pooled + ".flatten"), Flatten(1), [pooled])
    elif op == "Flatten":
        rank = b.rank(node.input[0])
        axis = int(at.get("axis", 1))
        if rank is None or axis % max(rank, 1) != 1:
            return False  # other axes fold (part of) the batch dimension into the features
        b.emit(node, Flatten(1), [x])
    elif op in ("Reshape", "Squeeze", "Unsqueeze"):
        target = _per_sample_target(b, node, ins, at)
        if target is None:
            return False
        b.emit(node, Flatten(1) if len(target) == 1 else Reshape(tuple(target)), [x])
    elif op == "Split" and is_t(x):
        return _split(b, node, at, ins)
    elif op == "Slice" and is_t(x):
        return _slice(b, node, ins)
    elif op in ("Identity", "Dropout"):
        if out_used(1):
            return False  # a used dropout mask
        b.emit(node, Identity(), [x])
    else:
        return False
    return True


def _split(b: _Builder, node, at: dict, ins: list) -> bool:
    """Split along a non-batch axis: one IR Slice per output. Sizes from the ``split`` input (opset >= 13)
    or attribute (opset < 13), else equal parts of ``ceil(size / n)`` with a smaller last one (opset 18)."""
    shape = b.shapes.get(node.input[0])
    if not shape:
        return False
    axis = int(at.get("axis", 0)) % len(shape)
    size = shape[axis]
    if axis == 0 or size is None:
        return False  # a split of the batch axis is not a per-sample operation
    sizes = at.get("split")
    if len(ins) > 1 and ins[1] is not None:
        if not isinstance(ins[1], np.ndarray):
            return False
        sizes = ins[1].tolist()
    if sizes is None:
        n = int(at.get("num_outputs", len(node.output)))
        part = -(-size // n)
        sizes = [max(0, min(part, size - i * part)) for i in range(n)]
    if sum(sizes) != size or len(sizes) != len(node.output):
        return False
    base, start = (node.name or f"split_{node.output[0]}").lstrip("/"), 0
    for i, (out, n) in enumerate(zip(node.output, sizes)):
        if out:
            end = start + int(n)
            b.bind(node, b.g.add(b.g.unique_name(f"{base}.{i}"), Slice(axis, start, None if end >= size else end, 1),
                                 [ins[0]]), i)
        start += int(n)
    return True


def _slice(b: _Builder, node, ins: list) -> bool:
    """Slice with constant starts / ends / axes / positive steps: one IR Slice per sliced non-batch axis
    (ONNX clamping: negative indices count from the end, out-of-range ones are clipped)."""
    shape = b.shapes.get(node.input[0])
    consts = [v for v in ins[1:]]
    if not shape or any(v is not None and not isinstance(v, np.ndarray) for v in consts):
        return False
    starts, ends = ins[1].reshape(-1).tolist(), ins[2].reshape(-1).tolist()
    axes = ins[3].reshape(-1).tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ins[4].reshape(-1).tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    cur, base = ins[0], (node.name or f"slice_{node.output[0]}").lstrip("/")
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % len(shape)
        size = shape[axis]
        if size is None or step < 1:
            return False
        start, end = (int(v) + size if v < 0 else min(int(v), size) for v in (start, end))
        start, end = max(0, start), max(0, min(end, size))
        if (start, end, step) == (0, size, 1):
            continue
        if axis == 0:
            return False  # slicing the batch axis is not a per-sample operation
        cur = b.g.add(b.g.unique_name(base), Slice(axis, start, None if end >= size else end, int(step)), [cur])
    b.bind(node, cur if cur != ins[0] else b.g.add(b.g.unique_name(base), Identity(), [cur]))
    return True


def _per_sample_target(b: _Builder, node, ins: list, at: dict) -> list[int] | None:
    """The per-sample output shape of a reshape-like node, if it keeps the batch axis in place."""
    in_shape = b.sample_shape(node.input[0])
    if in_shape is None:
        return None
    numel = int(np.prod(in_shape)) if in_shape else 1
    if node.op_type != "Reshape":
        out = b.sample_shape(node.output[0])
        full = b.shapes.get(node.output[0])
        axes = at.get("axes")
        if len(ins) > 1 and isinstance(ins[1], np.ndarray):
            axes = ins[1].tolist()
        if out is None or full is None or axes is None:
            return None
        rank = len(full) if node.op_type == "Unsqueeze" else len(in_shape) + 1
        if any(int(a) % rank == 0 for a in axes) or int(np.prod(out) if out else 1) != numel:
            return None
        return list(out)
    if not isinstance(ins[1], np.ndarray):
        return None
    t = [int(v) for v in ins[1].reshape(-1)]
    allowzero = at.get("allowzero", 0)
    if not t:
        return None
    first, rest = t[0], t[1:]
    if not allowzero:
        rest = [in_shape[i] if v == 0 and i < len(in_shape) else v for i, v in enumerate(rest)]
    if first == -1:
        if any(v < 0 for v in rest) or int(np.prod(rest) if rest else 1) != numel:
            return None
    elif not ((first == 0 and not allowzero) or first == b.batch):
        return None
    if rest.count(-1) > 1:
        return None
    if -1 in rest:
        known = int(np.prod([v for v in rest if v != -1])) if len(rest) > 1 else 1
        if known <= 0 or numel % known:
            return None
        rest = [numel // known if v == -1 else v for v in rest]
    if int(np.prod(rest) if rest else 1) != numel:
        return None
    return rest


class _QcfsChain:
    """A partly matched QCFS activation (Bu et al., ICLR 2022) as written by ONNX exporters:
    ``Mul(L / lambda) -> Add(shift) -> Floor -> Clip(0, L) -> Mul(lambda / L)``; folded into one
    quantized :class:`~snnconv.ir.Clip` (``levels = L``, ``hi = lambda``) when the chain completes."""

    def __init__(self, src: str, scales: list[str], in_scale: float, shift: float, where: str, levels: int = 0):
        self.src, self.scales, self.in_scale, self.shift, self.where, self.levels = \
            src, scales, in_scale, shift, where, levels


def _scalar(v) -> float | None:
    return float(v.reshape(-1)[0]) if isinstance(v, np.ndarray) and v.size == 1 else None


def _qcfs_floor(b: _Builder, node, x) -> bool:
    """Floor after ``Scale(L / lambda)`` and ``Scale(1, shift)``: the start of a QCFS chain."""
    add = b.g.nodes.get(x) if isinstance(x, str) else None
    if add is None or add.kind != "scale" or add.offset is None or add.offset.numel() != 1 \
            or add.scale.numel() != 1 or float(add.scale) != 1.0 or b.consumers[b.onnx_of.get(x, "")] != 1:
        return False
    (mul_name,) = b.g.edges[x]
    mul = b.g.nodes[mul_name]
    if mul.kind != "scale" or mul.offset is not None or mul.scale.numel() != 1 \
            or b.consumers[b.onnx_of.get(mul_name, "")] != 1 or b.consumers[node.output[0]] != 1:
        return False
    shift = float(add.offset)
    if not (0.0 <= shift < 1.0 and float(mul.scale) > 0):
        return False
    b.env[node.output[0]] = _QcfsChain(b.g.edges[mul_name][0], [x, mul_name], float(mul.scale), shift,
                                       b.location(node, -1))
    return True


def _qcfs_step(b: _Builder, node, ins: list) -> bool:
    """Continue a QCFS chain: ``Clip(0, L)`` after the Floor, then ``Mul(lambda / L)`` closes it."""
    op = node.op_type
    chain = ins[0] if isinstance(ins[0], _QcfsChain) else (ins[1] if len(ins) > 1 else None)
    if not isinstance(chain, _QcfsChain):
        return False
    if op == "Clip" and not chain.levels and ins[0] is chain and len(ins) == 3:
        lo, hi = _scalar(ins[1]), _scalar(ins[2])
        if lo != 0.0 or hi is None or hi < 1 or hi != int(hi) or b.consumers[node.output[0]] != 1:
            return False
        b.env[node.output[0]] = _QcfsChain(chain.src, chain.scales, chain.in_scale, chain.shift, chain.where, int(hi))
        return True
    if op == "Mul" and chain.levels and len(ins) == 2:
        c = _scalar(ins[1] if ins[0] is chain else ins[0])
        if c is None or abs(c * chain.in_scale - 1.0) > 1e-4:
            return False
        for name in chain.scales:  # the two Scale nodes become part of the quantized clip
            del b.g.nodes[name], b.g.edges[name]
        b.emit(node, Clip(0.0, chain.levels / chain.in_scale, "qcfs", levels=chain.levels, shift=chain.shift),
               [chain.src])
        return True
    return False


def _silu(b: _Builder, node, x: str, y: str) -> bool:
    """``Mul(x, Sigmoid(x))`` (how PyTorch exports SiLU) -> one ``silu`` activation on ``x``; the sigmoid
    node is dropped when the product is its only consumer."""
    for a, s in ((x, y), (y, x)):
        sig = b.g.nodes.get(s)
        if sig is not None and sig.kind == "activation" and sig.fn == "sigmoid" and b.g.edges[s] == [a]:
            if b.consumers[b.onnx_of.get(s, "")] == 1 and s not in b.g.outputs:
                del b.g.nodes[s], b.g.edges[s]
            b.emit(node, Activation("silu"), [a])
            return True
    return False


def _arith(b: _Builder, node, ins: list) -> bool:
    op = node.op_type
    if len(ins) != 2:
        return False
    x, y = ins
    is_t = lambda v: isinstance(v, str)  # noqa: E731
    if is_t(x) and is_t(y):
        if op == "Mul":
            if not _silu(b, node, x, y):
                b.emit(node, Mul(), [x, y])
            return True
        if op == "Add":
            b.emit(node, Add(), [x, y])
            return True
        if op == "Sub":
            neg = b.g.add(b.g.unique_name((node.name or "sub").lstrip("/") + ".neg"), Scale(torch.tensor(-1.0)), [y])
            b.emit(node, Add(), [x, neg])
            return True
        return False
    tensor_first = is_t(x)
    t_name, c = (x, y) if tensor_first else (y, x)
    full_rank = b.rank(node.output[0])
    if full_rank is not None and c.ndim == full_rank and c.shape[0] != 1:
        return False  # the constant varies along the batch axis
    if full_rank is not None and c.ndim == full_rank:
        c = c.reshape(c.shape[1:])  # drop the leading broadcast batch axis
    ct = _t(c)
    src_node = b.g.nodes.get(t_name)
    # MatMul + Add(bias) -> one Linear with a bias
    if (op == "Add" and t_name in b.linear_from_matmul and src_node.bias is None and c.size == src_node.weight.shape[0]
            and (c.ndim == 1 or all(v == 1 for v in c.shape[:-1])) and b.consumers[b.linear_from_matmul[t_name]] == 1):
        src_node.bias = ct.reshape(-1)
        b.env[node.output[0]] = t_name
        return True
    one = torch.tensor(1.0)
    if op == "Add":
        b.emit(node, Scale(one, ct), [t_name])
    elif op == "Sub":
        b.emit(node, Scale(one, -ct) if tensor_first else Scale(-one, ct), [t_name])
    elif op == "Mul":
        b.emit(node, Scale(ct), [t_name])
    elif op == "Div" and tensor_first:
        b.emit(node, Scale(1.0 / ct), [t_name])
    else:
        return False
    return True


def _fold(b: _Builder, node, ins: list) -> bool:
    """Evaluate a node whose inputs are all constants (or a Shape of a tensor with a known shape)."""
    if node.op_type == "Shape" and isinstance(ins[0], str):
        shape = b.shapes.get(node.input[0])
        if shape is None or any(d is None for d in shape[1:]):
            return False
        full = np.array([b.batch if shape[0] is None else shape[0]] + list(shape[1:]), dtype=np.int64)
        at = _attrs(b.onnx, node)
        b.env[node.output[0]] = full[at.get("start", 0):at.get("end", len(full))]
        return True
    from onnx.reference import ReferenceEvaluator

    try:
        outs = ReferenceEvaluator(node).run(None, {i: v for i, v in zip(node.input, ins) if i})
    except Exception:  # noqa: BLE001 - an op the reference evaluator cannot fold is reported as unsupported
        return False
    for name, v in zip(node.output, outs):
        if name:
            b.env[name] = np.asarray(v)
    return True


def _fuse_erf_gelu(onnx, graph, consts: dict) -> list:
    """The graph's nodes with every exact-GELU decomposition ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``
    (how exporters write GELU before opset 20) replaced by one ``Gelu`` node, so both frontends see a GELU."""
    nodes = list(graph.node)
    for n in nodes:  # Constant nodes: their values, for matching the pattern's constants
        if n.op_type == "Constant" and n.attribute:
            try:
                consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
            except Exception:  # noqa: BLE001 - a constant of another kind: it is not part of the pattern
                pass
    by_out = {o: n for n in nodes for o in n.output}
    users: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def const(name, value):
        v = consts.get(name)
        return v is not None and np.size(v) == 1 and abs(float(np.asarray(v).reshape(-1)[0]) - value) < 1e-4

    def only_user(name, op):
        u = users.get(name, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    drop, replace = set(), {}
    for erf in (n for n in nodes if n.op_type == "Erf"):
        div = by_out.get(erf.input[0])
        if div is None or div.op_type != "Div" or not const(div.input[1], 2 ** 0.5):
            continue
        x = div.input[0]
        add = only_user(erf.output[0], "Add")
        mul = add and only_user(add.output[0], "Mul")
        half = mul and only_user(mul.output[0], "Mul")
        if not (add and mul and half and const(next(i for i in add.input if i != erf.output[0]), 1.0)
                and set(mul.input) == {x, add.output[0]} and const(next(i for i in half.input if i != mul.output[0]), 0.5)):
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [half.output[0]], name=(erf.name or "erf") + ".gelu")
        drop.update(id(n) for n in (div, erf, add, mul))
        replace[id(half)] = gelu
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def from_onnx(path_or_model, input_shape: tuple[int, ...] | None = None, check: bool = True) -> tuple[Graph, str]:
    """Ingest an ONNX file (or ``onnx.ModelProto``) into the IR.

    Returns ``(graph, coverage_table)`` like :func:`snnconv.frontends.torch.from_torch`.
    ``input_shape`` (per sample, e.g. (3, 32, 32)) is needed only when the file's input shape is
    symbolic beyond the batch axis. Raises :class:`UnsupportedOpError` naming every unsupported
    op with its ONNX node name, and a one-line :class:`SnnconvError` for unreadable files. With
    ``check``, the IR run as an ANN must match onnxruntime on a random input (max abs diff 1e-4).
    """
    onnx = _onnx()
    model, where = load_onnx(path_or_model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:
        raise SnnconvError(f"ONNX shape inference failed on {where}: {_first_line(e)}") from None
    graph = inferred.graph
    real_inputs = _real_inputs(inferred)
    if len(real_inputs) != 1:
        raise SnnconvError(f"{where} has {len(real_inputs)} graph inputs; snnconv ingests single-input models")
    inp = real_inputs[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise SnnconvError(f"{where}: input '{inp.name}' is not float32 "
                           f"({onnx.TensorProto.DataType.Name(tt.elem_type)})")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if input_shape is None:
        if len(dims) < 2 or any(d is None for d in dims[1:]):
            raise SnnconvError(f"{where}: input '{inp.name}' has shape {dims} (symbolic beyond the batch axis); "
                               f"pass input_shape")
        input_shape = tuple(int(d) for d in dims[1:])
    elif len(dims) >= 2 and all(d is not None for d in dims[1:]) and tuple(dims[1:]) != tuple(input_shape):
        raise SnnconvError(f"{where}: input '{inp.name}' has per-sample shape {tuple(dims[1:])}, "
                           f"not {tuple(input_shape)}")
    batch = dims[0] if dims and dims[0] else _FOLD_BATCH

    b = _Builder(inferred, batch)
    b.shapes[inp.name] = [dims[0] if dims else None] + list(input_shape)
    for t in graph.initializer:
        b.env[t.name] = onnx.numpy_helper.to_array(t)
    b.env[inp.name] = b.g.add(b.g.unique_name(inp.name or "input"), Input(shape=tuple(input_shape)))
    for idx, node in enumerate(_fuse_erf_gelu(onnx, graph, b.env)):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        b.coverage[op] += 1
        ins = [b.env.get(i) if i else None for i in node.input]
        ok = False
        chains = [v for v in ins if isinstance(v, _QcfsChain)]
        if chains:
            ok = _qcfs_step(b, node, ins)
            if not ok:  # the Floor it started from is not part of a QCFS activation after all
                b.unsupported.append(("Floor", chains[0].where))
                b.unsupported_kinds.add("Floor")
                ins = [v.src if isinstance(v, _QcfsChain) else v for v in ins]
        elif node.domain in ("", "ai.onnx") and not any(i and b.env.get(i) is None for i in node.input):
            try:
                if not any(isinstance(v, str) for v in ins) or node.op_type == "Shape":
                    ok = _fold(b, node, ins)
                else:
                    ok = _convert(b, node, ins)
            except (KeyError, TypeError, ValueError, IndexError):
                ok = False
        if not ok:
            b.unsupported.append((op, b.location(node, idx)))
            b.unsupported_kinds.add(op)
            srcs = [v for v in ins if isinstance(v, str)]
            stand_in = Identity() if srcs else Input(shape=())
            name = b.g.add(b.g.unique_name(f"unsupported.{(node.name or node.op_type).lstrip('/')}"), stand_in, srcs[:1])
            for o in node.output:
                if o:
                    b.env[o] = name
    outputs = []
    for o in graph.output:
        v = b.env.get(o.name)
        if not isinstance(v, str):
            b.unsupported.append(("constant output", f"ONNX graph output '{o.name}'"))
            continue
        outputs.append(v)
    b.g.outputs = outputs
    table = coverage_table(b.coverage, b.unsupported_kinds)
    if b.unsupported:
        err = UnsupportedOpError(b.unsupported)
        err.coverage = table
        raise err
    g = b.g
    g.meta.update({"frontend": "onnx", "input_shape": list(input_shape),
                   "onnx_opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
                   "onnx_producer": f"{model.producer_name} {model.producer_version}".strip()})
    g.validate()
    g.infer_shapes()
    if check:
        gen = torch.Generator().manual_seed(0)
        n = dims[0] if dims and dims[0] else 2
        check_onnx_equivalence(g, model, torch.randn(n, *input_shape, generator=gen))
    return g, table


def onnxruntime_run(path_or_model, x: torch.Tensor) -> list[np.ndarray]:
    """Run an ONNX file/model with onnxruntime (CPU, 1 thread) on ``x``; returns all graph outputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SnnconvError("checking ONNX needs 'onnxruntime': pip install 'snnconv[onnx]'") from None
    onnx = _onnx()
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().numpy().astype(np.float32)})
    except Exception as e:
        raise SnnconvError(f"onnxruntime cannot run the model: {_first_line(e)}") from None


@torch.no_grad()
def check_onnx_equivalence(graph: Graph, path_or_model, x: torch.Tensor, tol: float = 1e-4) -> float:
    """Max abs difference between onnxruntime's output for ``x`` and the IR run as an ANN on ``x``.

    Raises :class:`SnnconvError` when it exceeds ``tol`` (absolute, every output)."""
    from snnconv.runtime.interpreter import run_ann

    refs = onnxruntime_run(path_or_model, x)
    outs = run_ann(graph, x)
    outs = outs if isinstance(outs, list) else [outs]
    if len(outs) != len(refs):
        raise SnnconvError(f"ingested graph has {len(outs)} outputs, the ONNX model {len(refs)}")
    err = 0.0
    for o, r in zip(outs, refs):
        if tuple(o.shape) != tuple(r.shape):
            raise SnnconvError(f"ingested graph output shape {tuple(o.shape)} differs from onnxruntime's {r.shape}")
        err = max(err, float((o - torch.from_numpy(np.asarray(r, dtype=np.float32))).abs().max()))
    if not err <= tol:
        raise SnnconvError(f"ingested ONNX graph differs from onnxruntime (max abs error {err:.2e} > {tol})")
    return err


@register_frontend
class OnnxFrontend(Frontend):
    """A ``.onnx`` file: loaded and checked; its input must fit the dataset's samples."""

    name = "onnx"

    def matches(self, ref: str) -> bool:
        return ref.endswith(".onnx")

    def load(self, cfg, shape, log_fn):
        if cfg.weights:
            raise SnnconvError(f"--weights does not apply to an ONNX model ({cfg.model} holds its weights)")
        model, where = load_onnx(cfg.model)
        file_shape = onnx_input_shape(model)
        if file_shape is not None and tuple(file_shape) != tuple(shape):
            raise SnnconvError(f"{where} takes inputs of shape {tuple(file_shape)}, but {cfg.dataset} samples are "
                               f"{tuple(shape)}")
        return model, shape, {"weights": str(cfg.model), "checkpoint_accuracy": None, "format": "onnx"}

    def accepts(self, model) -> bool:
        return type(model).__name__ == "ModelProto"

    def ingest(self, model, shape):
        return from_onnx(model, shape)
