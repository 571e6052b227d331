"""ONNX backend: write the ANN form of an IR graph (before conversion) as an ONNX model, opset 17.

The model is built node by node with ``onnx.helper`` straight from the IR (no ``torch.onnx``),
so what is written is exactly what snnconv holds: conv2d -> Conv, linear -> Gemm (or MatMul + Add
for inputs of rank > 2), batchnorm -> BatchNormalization, clip -> Relu / Clip (a quantized QCFS
clip, Bu et al. ICLR 2022, as Mul-Add-Floor-Clip-Mul), avg/max/adaptive pooling -> AveragePool /
MaxPool / GlobalAveragePool, add -> Add / Sum, concat, flatten, reshape, identity and scale
(Mul/Add with constants). The batch axis is symbolic (``batch``).

Before the file appears it is checked with ``onnx.checker`` (full check, with shape inference)
and run with onnxruntime on a random input: its output must match the IR interpreter
(:func:`snnconv.runtime.interpreter.run_ann`) within 1e-4. The file is written to a temp file
and renamed into place, so a failed export leaves nothing behind. Spiking nodes have no ONNX
form and are refused: export the graph before conversion (``ann.pt``, or the model itself).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph

OPSET = 17


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


class _Writer:
    def __init__(self, graph: Graph):
        import onnx
        from onnx import helper

        self.onnx, self.h, self.graph = onnx, helper, graph
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, value) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(self.h.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def emit(self, name: str, node, srcs: list[str]) -> None:
        k, n = node.kind, node
        x = srcs[0] if srcs else None
        in_shape = self.graph.nodes[x].shape if x else ()
        if k == "conv2d":
            ins = [x, self.const(f"{name}.weight", _np(n.weight))]
            if n.bias is not None:
                ins.append(self.const(f"{name}.bias", _np(n.bias)))
            self.node("Conv", ins, name, name, kernel_shape=list(n.weight.shape[2:]), strides=list(n.stride),
                      pads=list(n.padding) * 2, dilations=list(n.dilation), group=int(n.groups))
        elif k == "linear":
            w = _np(n.weight)
            if len(in_shape) == 1:
                ins = [x, self.const(f"{name}.weight", w)]
                if n.bias is not None:
                    ins.append(self.const(f"{name}.bias", _np(n.bias)))
                self.node("Gemm", ins, name, name, transB=1)
            elif n.bias is None:
                self.node("MatMul", [x, self.const(f"{name}.weight_t", w.T.copy())], name, name)
            else:
                mm = self.node("MatMul", [x, self.const(f"{name}.weight_t", w.T.copy())], f"{name}.matmul",
                               f"{name}.matmul")
                self.node("Add", [mm, self.const(f"{name}.bias", _np(n.bias))], name, name)
        elif k == "batchnorm":
            self.node("BatchNormalization", [x] + [self.const(f"{name}.{p}", _np(getattr(n, p))) for p in
                                                   ("weight", "bias", "running_mean", "running_var")],
                      name, name, epsilon=float(n.eps))
        elif k == "clip":
            levels = getattr(n, "levels", 0)
            if levels:  # QCFS: clip(floor(x * L / hi + shift), 0, L) * hi / L, as the IR kernel computes it
                y = self.node("Mul", [x, self.const(f"{name}.in_scale", np.float32(levels / n.hi))], f"{name}.scaled",
                              f"{name}.scaled")
                y = self.node("Add", [y, self.const(f"{name}.shift", np.float32(n.shift))], f"{name}.shifted",
                              f"{name}.shifted")
                y = self.node("Floor", [y], f"{name}.floor", f"{name}.floor")
                y = self.node("Clip", [y, self.const(f"{name}.lo", np.float32(0.0)),
                                       self.const(f"{name}.hi", np.float32(levels))], f"{name}.clip", f"{name}.clip")
                self.node("Mul", [y, self.const(f"{name}.out_scale", np.float32(n.hi / levels))], name, name)
            elif n.lo == 0.0 and n.hi == math.inf:
                self.node("Relu", [x], name, name)
            else:
                lo = self.const(f"{name}.lo", np.float32(n.lo)) if n.lo != -math.inf else ""
                hi = self.const(f"{name}.hi", np.float32(n.hi)) if n.hi != math.inf else ""
                self.node("Clip", [x, lo, hi], name, name)
        elif k == "add":
            self.node("Add" if len(srcs) == 2 else "Sum", list(srcs), name, name)
        elif k == "concat":
            self.node("Concat", list(srcs), name, name, axis=int(n.dim))
        elif k == "avgpool2d":
            self.node("AveragePool", [x], name, name, kernel_shape=list(n.kernel_size), strides=list(n.stride),
                      pads=list(n.padding) * 2, ceil_mode=int(n.ceil_mode), count_include_pad=int(n.count_include_pad))
        elif k == "maxpool2d":
            self.node("MaxPool", [x], name, name, kernel_shape=list(n.kernel_size), strides=list(n.stride),
                      pads=list(n.padding) * 2, dilations=list(n.dilation), ceil_mode=int(n.ceil_mode))
        elif k == "adaptive_avgpool2d":
            oh, ow = n.output_size
            if (oh, ow) == (1, 1):
                self.node("GlobalAveragePool", [x], name, name)
            elif len(in_shape) == 3 and in_shape[1] % oh == 0 and in_shape[2] % ow == 0:
                kk = [in_shape[1] // oh, in_shape[2] // ow]
                self.node("AveragePool", [x], name, name, kernel_shape=kk, strides=kk)
            else:
                raise SnnconvError(f"node '{name}': adaptive average pooling from {in_shape} to {n.output_size} "
                                   f"has no fixed-window ONNX form")
        elif k == "flatten":
            if n.start_dim == 1:
                self.node("Flatten", [x], name, name, axis=1)
            else:
                self.node("Reshape", [x, self.const(f"{name}.shape", np.array([0, *n.shape], dtype=np.int64))],
                          name, name)
        elif k == "reshape":
            self.node("Reshape", [x, self.const(f"{name}.shape", np.array([0, *n.shape], dtype=np.int64))], name, name)
        elif k == "identity":
            self.node("Identity", [x], name, name)
        elif k == "scale":
            y = self.node("Mul", [x, self.const(f"{name}.scale", _np(n.scale))],
                          name if n.offset is None else f"{name}.mul", name if n.offset is None else f"{name}.mul")
            if n.offset is not None:
                self.node("Add", [y, self.const(f"{name}.offset", _np(n.offset))], name, name)
        else:
            raise SnnconvError(f"node '{name}' ({k}) has no ONNX export")


def build_onnx(graph: Graph, input_shape: tuple[int, ...] | None = None):
    """The ``onnx.ModelProto`` of ``graph``'s ANN form (not yet checked or written)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise SnnconvError("ONNX export needs the 'onnx' package: pip install 'snnconv[onnx]'") from None
    spiking = [f"{n} ({node.kind})" for n, node in graph.nodes.items() if node.spiking]
    if spiking:
        raise SnnconvError(f"ONNX export writes the ANN form only, but the graph holds spiking neuron node(s): "
                           f"{', '.join(spiking[:5])}{' ...' if len(spiking) > 5 else ''}; export the graph "
                           f"before conversion (ann.pt or the model itself)")
    g = graph.copy()
    if input_shape is not None:
        for i in g.inputs:
            if g.nodes[i].shape and tuple(g.nodes[i].shape) != tuple(input_shape):
                raise SnnconvError(f"input '{i}' has shape {tuple(g.nodes[i].shape)}, not {tuple(input_shape)}")
            g.nodes[i].shape = tuple(input_shape)
    if any(not g.nodes[i].shape for i in g.inputs):
        raise SnnconvError("the graph's input shape is unknown: pass input_shape")
    g.validate()
    g.infer_shapes()
    w = _Writer(g)
    for name, node in g.nodes.items():
        if node.kind != "input":
            w.emit(name, node, g.edges[name])
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *g.nodes[n].shape])  # noqa: E731
    onnx_graph = helper.make_graph(w.nodes, g.meta.get("name", "snnconv_ann"), [vi(i) for i in g.inputs],
                                   [vi(o) for o in g.outputs], initializer=w.inits)
    from snnconv import __version__
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="snnconv", producer_version=__version__)
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases from 1.14 on
    return model


def export_onnx(graph: Graph, path: str | Path, input_shape: tuple[int, ...] | None = None,
                check: bool = True, tol: float = 1e-4, overwrite: bool = False) -> dict:
    """Write ``graph`` (its ANN form) to ``path`` as ONNX; returns ``{path, nodes, opset, max_abs_diff}``.

    ``path`` is checked first: an existing file is replaced only with ``overwrite`` (:mod:`snnconv.output`).

    With ``check`` (default) the model must pass ``onnx.checker.check_model(full_check=True)`` and
    onnxruntime's output on a random batch must match :func:`run_ann` within ``tol``; otherwise
    nothing is written."""
    import onnx

    from snnconv.frontends.onnx import check_onnx_equivalence
    from snnconv.output import check_output_file

    check_output_file(path, overwrite)
    model = build_onnx(graph, input_shape)
    err = None
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
            raise SnnconvError(f"exported ONNX model fails onnx.checker: {first[:300]}") from None
        shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        err = check_onnx_equivalence(graph, model, x, tol)
    from snnconv.output import atomic_file

    with atomic_file(path, overwrite) as tmp:
        Path(tmp).write_bytes(model.SerializeToString())
    return {"path": str(path), "nodes": len(model.graph.node), "opset": OPSET, "max_abs_diff": err}


def register_torch_qcfs_symbolic(opset: int = OPSET) -> None:
    """Teach ``torch.onnx.export`` (TorchScript exporter) the ``snnconv::qcfs`` custom op.

    It is written as ``Mul(L / lambda) -> Add(shift) -> Floor -> Clip(0, L) -> Mul(lambda / L)``
    (the QCFS activation of Bu et al., ICLR 2022, in the form the IR kernel computes it), which
    :func:`snnconv.frontends.onnx.from_onnx` folds back into one quantized clip."""
    import snnconv.models.qcfs  # noqa: F401 - registers the custom op
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx.symbolic_helper import parse_args

    @parse_args("v", "v", "i", "f")
    def qcfs_symbolic(g, x, lam, levels, shift):
        levels_c = g.op("Constant", value_t=torch.tensor(float(levels)))
        y = g.op("Mul", x, g.op("Div", levels_c, lam))
        y = g.op("Floor", g.op("Add", y, g.op("Constant", value_t=torch.tensor(float(shift)))))
        y = g.op("Clip", y, g.op("Constant", value_t=torch.tensor(0.0)), levels_c)
        return g.op("Mul", y, g.op("Div", lam, levels_c))

    register_custom_op_symbolic("snnconv::qcfs", qcfs_symbolic, opset)


def check_export(snn) -> None:
    """``--export onnx`` writes the ANN, which ingested already: nothing to refuse after conversion."""


def write_export(path, snn, ann, input_shape, dataset, data_dir, log_fn=print, timesteps=None) -> None:
    """``--export onnx`` (:mod:`snnconv.backends.exports`): the ANN before conversion as ``ann.onnx``."""
    info = export_onnx(ann, path, input_shape)
    log_fn(f"export onnx: {Path(path).name} (opset {info['opset']}, {info['nodes']} nodes, onnxruntime vs "
           f"snnconv max abs diff {info['max_abs_diff']:.1e})")
