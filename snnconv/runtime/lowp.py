"""Integer kernels for spike-driven synaptic layers (oneDNN int8 convolution / matmul with int32 accumulation).

A spiking neuron's output is its spike count times its threshold, ``counts * theta``; with one threshold for
the whole layer that is an integer tensor (0/1 for binary spikes, -1/0/1 signed, 0..L multi-level) times one
scale. A conv or linear layer whose weights the ``quantize`` pass put on an int8 grid (``weight_int``, one
scale per output channel or per layer, ``weight == weight_int * weight_scale``) then computes

    y[o] = theta * weight_scale[o] * sum_i weight_int[o, i] * counts[i]  + bias[o]

and the sum is an integer: oneDNN's u8 x s8 kernels (``onednn::qconv2d_pointwise`` / ``qlinear_pointwise``,
what PyTorch's x86 quantization backend runs) accumulate it exactly in int32 and apply the two scales once,
returning fp32. The fp32 path computes the same sum as rounded float products added in some order, so the two
differ by float rounding only: the int8 result is the exact sum rounded at the end, the fp32 one is not. On a
graph where every product and partial sum is representable in fp32 (small integer codes, power-of-two scales)
both are exact and agree to the bit (``tests/test_lowp.py``); elsewhere they may differ in the last bits of a
membrane input, which can move a spike that sits on its threshold (``docs/benchmarks/simulator.md`` states how
often on the benchmark nets).

Between the neuron and the layer there may be average pooling (with uniform windows: a window's sum of counts is
an integer and the mean is that sum times ``theta / window``) and flattening: the kernel then takes the pooled
window sums as its integer input. Not used, and the fp32 kernel runs instead, where this is not exact: weights
without int8 codes (the ``quantize`` pass was not run, or used more than 8 bits), a source that is not a spiking
neuron reached that way (analog input, max pooling, additions), a source with per-channel thresholds (the scale
would differ per input channel, which the kernel cannot take), integer inputs outside 0..255 after the
zero-point shift, and devices other than the CPU.
:func:`int8_plan` says for each synaptic node which applies. Signed counts are shifted by the largest count
magnitude ``L`` into 0..2L with zero point ``L`` (oneDNN's zero-point compensation keeps padding exact).

Speed: on a CPU with AVX512-VNNI the int8 kernels, with the conversion of the counts to uint8, run 1.8-3.6x
faster than the fp32 channels-last convolution on ResNet layer shapes (``docs/benchmarks/low_precision.md``);
without VNNI / AMX oneDNN still computes them exactly, without that speed-up.

Quantization scheme: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018 (symmetric weights, uint8 activations with a zero point, int32
accumulation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.runtime.kernels import KERNELS

#: the kernel sets the simulator runs synaptic layers on (``Simulator(kernels=...)``, ``--kernels``)
KERNEL_SETS = ("fp32", "int8")


def int8_kernels_available() -> bool:
    """oneDNN's quantized conv/linear ops are in this torch build (CPU)."""
    ops = getattr(torch.ops, "onednn", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and ops is not None
                    and hasattr(ops, "qconv2d_pointwise") and hasattr(ops, "qlinear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def _uniform_threshold(node) -> float | None:
    th = getattr(node, "threshold", None)
    if not isinstance(th, torch.Tensor) or th.numel() == 0:
        return None
    first = th.reshape(-1)[0]
    return float(first) if bool(torch.all(th == first)) else None


#: nodes an integer input passes through on its way from a neuron to a synaptic layer
_PASS_THROUGH = ("flatten", "avgpool2d", "adaptive_avgpool2d")


def _window(node, in_shape) -> int | None:
    """Elements per pooling window (the factor from mean to sum), or None where windows are not uniform."""
    if node.kind == "flatten":
        return 1
    if node.kind == "avgpool2d":
        if any(node.padding) and not node.count_include_pad or node.ceil_mode:
            return None
        return int(node.kernel_size[0] * node.kernel_size[1])
    h, w = in_shape[-2:]
    oh, ow = (node.output_size, node.output_size) if isinstance(node.output_size, int) else node.output_size
    oh, ow = oh or h, ow or w
    return (h // oh) * (w // ow) if h % oh == 0 and w % ow == 0 else None


@dataclass
class Int8Synapse:
    """One conv/linear node run as u8 spikes x s8 weights -> fp32 (see the module docstring). ``source`` is the
    neuron whose spike counts feed it, through ``chain``: (node, window) pairs of pooling/flatten in between."""

    kind: str
    packed: torch.Tensor
    x_scale: float
    x_zero_point: int
    w_scale: torch.Tensor  # [O] fp32
    w_zero_point: torch.Tensor  # [O] int32 zeros
    bias: torch.Tensor | None
    conv_args: tuple = ()  # stride, padding, dilation, groups
    source: str = ""
    chain: tuple = ()

    def __call__(self, counts: torch.Tensor) -> torch.Tensor:
        """``counts`` (float spike counts of the source, any memory format) -> the layer's fp32 output."""
        for node, window in self.chain:  # pooled window sums: small integers, recovered exactly by rounding
            counts = KERNELS[node.kind](node, [counts])
            if window != 1:
                counts = (counts * window).round_()
        qx = (counts + self.x_zero_point if self.x_zero_point else counts).to(torch.uint8)
        if self.kind == "conv2d":
            return torch.ops.onednn.qconv2d_pointwise(qx, self.x_scale, self.x_zero_point, self.packed, self.w_scale,
                                                      self.w_zero_point, self.bias, *self.conv_args, 1.0, 0,
                                                      torch.float32, "none", [], "")
        lead = qx.shape[:-1]
        y = torch.ops.onednn.qlinear_pointwise(qx.reshape(-1, qx.shape[-1]), self.x_scale, self.x_zero_point,
                                               self.packed, self.w_scale, self.w_zero_point, self.bias, 1.0, 0,
                                               torch.float32, "none", [], "")
        return y.reshape(*lead, y.shape[-1])


def int8_synapse(node, source, chain: tuple = (), source_name: str = "") -> tuple[Int8Synapse | None, str]:
    """The int8 kernel for synaptic ``node`` fed by neuron ``source`` through ``chain`` ((node, window) pairs of
    pooling/flatten), or ``(None, why not)``."""
    if node.kind not in ("conv2d", "linear"):
        return None, f"{node.kind} has no int8 kernel"
    codes, scale = getattr(node, "weight_int", None), getattr(node, "weight_scale", None)
    if codes is None or scale is None or (node.bits or 32) > 8:
        return None, "weights are not on an int8 grid (run the quantize pass with bits <= 8)"
    if int(codes.abs().max()) > 127:
        return None, "weight codes outside -127..127"
    if source.kind != "neuron":
        return None, f"fed by {source.kind}, not by spikes"
    theta = _uniform_threshold(source)
    if theta is None:
        return None, "its source has per-channel thresholds"
    window = 1
    for _, w in chain:
        window *= w
    levels = int(getattr(source, "levels", 1)) * window  # the largest integer input
    zero_point = levels if getattr(source, "signed", False) else 0
    if zero_point + levels > 255:
        return None, f"integer inputs up to {levels} do not fit 8 bits"
    theta /= window
    out = codes.shape[0]
    w_scale = scale.detach().float().reshape(-1)
    if w_scale.numel() == 1:
        w_scale = w_scale.expand(out).contiguous()
    if w_scale.numel() != out:
        return None, "weight scale is neither per layer nor per output channel"
    bias = None if node.bias is None else node.bias.detach().float().contiguous()
    zeros = torch.zeros(out, dtype=torch.int32)
    q = codes.to(torch.int8).contiguous()
    if node.kind == "conv2d":
        args = (list(node.stride), list(node.padding), list(node.dilation), node.groups)
        packed = torch.ops.onednn.qconv_prepack(q, w_scale, theta, zero_point, *args, None)
        return Int8Synapse("conv2d", packed, theta, zero_point, w_scale, zeros, bias, tuple(args), source_name,
                           tuple(chain)), ""
    packed = torch.ops.onednn.qlinear_prepack(q, None)
    return Int8Synapse("linear", packed, theta, zero_point, w_scale, zeros, bias, (), source_name, tuple(chain)), ""


def _trace_source(graph, name: str):
    """Walk back from synaptic node ``name`` through flatten/average pooling: ``(source name, chain, why)``."""
    chain = []
    srcs = graph.edges.get(name, [])
    while True:
        if len(srcs) != 1:
            return None, (), "more than one input"
        src = srcs[0]
        node = graph.nodes[src]
        if node.kind not in _PASS_THROUGH:
            return src, tuple(reversed(chain)), ""
        up = graph.edges.get(src, [])
        w = _window(node, getattr(graph.nodes[up[0]], "shape", ()) if len(up) == 1 else ())
        if w is None:
            return None, (), f"{node.kind} '{src}' has windows of different sizes"
        chain.append((node, w))
        srcs = up


def int8_plan(graph, device: torch.device | None = None) -> tuple[dict[str, Int8Synapse], dict[str, str]]:
    """``(kernels, skipped)``: an int8 kernel for every conv/linear node where it is exact, and for the others
    why not (node name -> reason). ``device``: where the graph runs (the kernels are the CPU's)."""
    kernels, skipped = {}, {}
    layers = [n for n, nd in graph.nodes.items() if nd.kind in ("conv2d", "linear", "conv_transpose2d")]
    if device is not None and device.type != "cpu":
        return kernels, {n: f"int8 kernels run on the CPU, not {device}" for n in layers}
    if not int8_kernels_available():
        return kernels, {n: "this torch build has no oneDNN int8 kernels" for n in layers}
    for name in layers:
        src, chain, why = _trace_source(graph, name)
        k, why = (None, why) if src is None else int8_synapse(graph.nodes[name], graph.nodes[src], chain, src)
        if k is None:
            skipped[name] = why
        else:
            kernels[name] = k
    return kernels, skipped


def int8_summary(kernels: dict, skipped: dict) -> str:
    """One line for the log: how many conv/linear layers run int8, and why the others do not (by reason)."""
    reasons: dict[str, list[str]] = {}
    for name, why in skipped.items():
        reasons.setdefault(why, []).append(name)
    rest = "; ".join(f"{len(v)} {why} (first '{v[0]}')" for why, v in reasons.items())
    return f"int8 kernels on {len(kernels)} of {len(kernels) + len(skipped)} conv/linear layers" + \
        (f"; fp32 on the others: {rest}" if rest else "")
