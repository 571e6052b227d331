r"""Weight quantization of conv/linear layers, and fixed-point target profiles.

Schemes (``scheme`` / ``bits``), each applied per output channel (``granularity="channel"``, the
default) or per layer:

* ``int`` with ``bits = k``: symmetric uniform quantization (Jacob et al., CVPR 2018, symmetric
  variant; per-channel as in Krishnamoorthi 2018, "Quantizing deep convolutional networks for
  efficient inference"): :math:`s = \max|w| / q_{max}`, :math:`q = \mathrm{round}(w / s)`,
  :math:`q_{max} = 2^{k-1}-1` (int8: ±127, int4: ±7).
* ``ternary`` (1.58 bit): codes in {-1, 0, +1} from the absmean rule of BitNet b1.58 (Ma et al.,
  2024, "The Era of 1-bit LLMs"): :math:`\gamma = \mathrm{mean}|w|`,
  :math:`q = \mathrm{clip}(\mathrm{round}(w/\gamma), -1, 1)`. The stored scale is then refit to
  the least-squares optimum for those codes, the mean :math:`|w|` over the non-zero codes (the scale
  of Ternary Weight Networks, Li & Liu 2016). Unlike :math:`\gamma` itself this makes the quantizer
  idempotent (quantizing a ternary tensor returns it unchanged) and can only lower the L2 error.
  Stored in 2 bits per weight (:math:`\log_2 3 = 1.58` bits of information).

Per-channel scales make int-k quantization invariant to a positive per-output-channel rescaling,
so weights fake-quantized before batch-norm folding (quantization-aware training,
:mod:`snnconv.training.qat`) come out of this pass with the same integer codes after folding.

The pass stores ``weight_int`` (integer codes), ``weight_scale`` and ``bits`` on each conv/linear
node and replaces ``weight`` by exactly ``weight_int * weight_scale``, so the simulator and every
exporter see the quantized network. Run it after ``fold_batchnorm`` (it refuses a graph whose
conv/linear layers still feed a batch norm, since folding would change the weights again).

Target profiles (``profile``) set the weight format and additionally put thresholds (and biases)
on the hardware's fixed-point grid:

* ``loihi`` (Intel Loihi, as documented for Loihi 1 by Davies et al., IEEE Micro 2018, and the
  NxSDK/Lava-dl quantization rules): 8-bit signed weight mantissa with one power-of-two exponent
  per layer (``granularity="layer"``, ``power_of_two=True``); biases and thresholds integers in
  units of the layer's weight LSB (threshold mantissa up to 17 bits; the hardware shifts it by
  :math:`2^6`, which is only a change of units here); 24-bit signed membrane state.
* ``int8_mcu`` (a generic int8 accelerator/MCU): per-channel int8 weights, thresholds and biases
  on the per-channel weight LSB grid, 16-bit thresholds, 32-bit membrane state.

What a profile changes and what it only checks: weights, biases and thresholds are snapped to
the grids above, so the simulated network is the one the chip would hold; the simulator keeps
floating-point membrane arithmetic. The membrane width is *checked*, not emulated: a static
bound :math:`|v| \le \theta(1 + v_0) + T \cdot I_{max}` (``I_max`` from the absolute-value network
with every neuron emitting its largest spike) gives the state bits each layer needs over ``T``
steps, reported per layer and compared with the profile's state width. See docs/quantization.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph, Scale
from snnconv.passes.base import Pass, PassContext, register_pass, check_config

PROFILES = {
    "loihi": {"scheme": "int", "bits": 8, "granularity": "layer", "power_of_two": True, "threshold_bits": 17,
              "state_bits": 24},
    "int8_mcu": {"scheme": "int", "bits": 8, "granularity": "channel", "power_of_two": False, "threshold_bits": 16,
                 "state_bits": 32},
}
SCHEMES = ("int", "ternary")


def _reduce_dims(w: torch.Tensor, granularity: str) -> tuple[int, ...]:
    return tuple(range(1, w.dim())) if granularity == "channel" else tuple(range(w.dim()))


def _code_dtype(bits: int) -> torch.dtype:
    return torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32


def quantize_int(w: torch.Tensor, bits: int, granularity: str = "channel",
                 power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric uniform quantization: ``(codes, scale)`` with ``codes * scale`` the quantized weight.

    ``scale`` is ``[O, 1, ...]`` per channel or 0-d per layer; ``power_of_two`` rounds it up to a
    power of two (a shared exponent, as on Loihi)."""
    if bits < 2:
        raise SnnconvError("int quantization needs bits >= 2 (use scheme 'ternary' for 1.58 bits)")
    qmax = 2 ** (bits - 1) - 1
    amax = w.detach().abs().amax(dim=_reduce_dims(w, granularity), keepdim=granularity == "channel")
    scale = amax / qmax
    if power_of_two:
        scale = torch.exp2(torch.ceil(torch.log2(scale.clamp_min(1e-30))))
    scale = torch.where(amax > 0, scale, torch.ones_like(scale))  # all-zero channel: any scale, codes 0
    codes = torch.clamp(torch.round(w.detach() / scale), -qmax, qmax)
    return codes.to(_code_dtype(bits)), scale.float()


def quantize_ternary(w: torch.Tensor, granularity: str = "channel") -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary ``(codes in {-1, 0, 1}, scale)``: BitNet b1.58 absmean codes, least-squares scale."""
    dims = _reduce_dims(w, granularity)
    keep = granularity == "channel"
    wd = w.detach()
    gamma = wd.abs().mean(dim=dims, keepdim=keep).clamp_min(1e-12)
    codes = torch.clamp(torch.round(wd / gamma), -1, 1)
    nz = codes.ne(0).to(wd.dtype)
    count = nz.sum(dim=dims, keepdim=keep)
    scale = (wd.abs() * nz).sum(dim=dims, keepdim=keep) / count.clamp_min(1)
    scale = torch.where(count > 0, scale, torch.ones_like(scale))
    return codes.to(torch.int8), scale.float()


def quantize_weight(w: torch.Tensor, scheme: str = "int", bits: int = 8, granularity: str = "channel",
                    power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(codes, scale, stored_bits)`` for one weight tensor."""
    if scheme == "ternary":
        codes, scale = quantize_ternary(w, granularity)
        return codes, scale, 2
    if scheme == "int":
        codes, scale = quantize_int(w, bits, granularity, power_of_two)
        return codes, scale, bits
    raise SnnconvError(f"unknown quantization scheme '{scheme}' (known: {', '.join(SCHEMES)})")


def fake_quantize(w: torch.Tensor, scheme: str = "int", bits: int = 8, granularity: str = "channel") -> torch.Tensor:
    """The dequantized weight ``codes * scale`` (no gradient; QAT wraps it in a straight-through estimator)."""
    codes, scale, _ = quantize_weight(w, scheme, bits, granularity)
    return codes.to(w.dtype) * scale


def model_size_bytes(graph: Graph) -> dict:
    """Storage of the synaptic layers: weights at their stored bits (32 if float), scales and biases fp32."""
    weight_bits = weights = scales = biases = nonzero = 0
    for node in graph.nodes.values():
        if node.kind not in ("conv2d", "linear"):
            continue
        bits = node.bits or 32
        weights += node.weight.numel()
        nonzero += int(node.weight.ne(0).sum())
        weight_bits += node.weight.numel() * bits
        scales += node.weight_scale.numel() if node.weight_scale is not None else 0
        biases += node.bias.numel() if node.bias is not None else 0
    return {"weights": weights, "nonzero_weights": nonzero, "bytes": (weight_bits + 32 * (scales + biases)) / 8,
            "fp32_bytes": 4 * (weights + biases)}


@register_pass
class Quantize(Pass):
    name = "quantize"

    @dataclass
    class Config:
        scheme: str = "int"  # int | ternary
        bits: int = 8  # for scheme=int
        granularity: str = "channel"  # channel | layer
        power_of_two: bool = False  # scales rounded up to powers of two
        keep_first_last: bool = False  # leave the first and the last synaptic layer in float
        profile: str | None = None  # loihi | int8_mcu: overrides the above, snaps thresholds/biases
        timesteps: int = 32  # horizon of the membrane-width check (profiles only)

        def validate(self, where: str) -> None:
            checks = [(self.scheme in SCHEMES, f"scheme must be one of {', '.join(SCHEMES)}"),
                      (self.scheme != "int" or 2 <= self.bits <= 16, "bits must be in 2..16"),
                      (self.granularity in ("channel", "layer"), "granularity must be 'channel' or 'layer'"),
                      (self.profile is None or self.profile in PROFILES,
                       f"profile must be one of {', '.join(PROFILES)}"),
                      (self.timesteps >= 1, "timesteps must be >= 1")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        prof = PROFILES.get(c.profile) if c.profile else None
        scheme, bits, gran, p2 = ((prof["scheme"], prof["bits"], prof["granularity"], prof["power_of_two"])
                                  if prof else (c.scheme, c.bits, c.granularity, c.power_of_two))
        synaptic = [n for n, node in graph.nodes.items() if node.kind in ("conv2d", "linear")]
        unfolded = [n for n in synaptic if any(graph.nodes[d].kind == "batchnorm" for d in graph.succs(n))]
        if unfolded:
            raise SnnconvError(f"quantize: run fold_batchnorm first (layer '{unfolded[0]}' still feeds a batch norm)")
        targets = synaptic[1:-1] if c.keep_first_last else synaptic
        per_layer = {}
        for name in targets:
            node = graph.nodes[name]
            codes, scale, stored = quantize_weight(node.weight, scheme, bits, gran, p2)
            w = codes.to(node.weight.dtype) * scale
            err = float((w - node.weight).norm() / node.weight.norm().clamp_min(1e-12))
            graph.replace(name, node.replace(weight=w, weight_int=codes, weight_scale=scale, bits=stored))
            per_layer[name] = {"bits": stored, "rel_error": err, "levels_used": int(codes.unique().numel())}
        summary = {"scheme": scheme, "bits": bits if scheme == "int" else 1.58, "granularity": gran,
                   "power_of_two": p2, "layers": per_layer, "size": model_size_bytes(graph)}
        if prof:
            summary["profile"] = c.profile
            summary["fixed_point"] = _fixed_point(graph, prof, c.timesteps, ctx)
        graph.meta["quantization"] = summary
        mean_err = sum(v["rel_error"] for v in per_layer.values()) / max(len(per_layer), 1)
        ctx.log(self.name, f"{len(per_layer)} layer(s) -> {scheme}{bits if scheme == 'int' else ' 1.58-bit'} "
                           f"per {gran} (mean relative weight error {mean_err:.4f}); "
                           f"{summary['size']['bytes'] / 1024:.1f} KiB vs {summary['size']['fp32_bytes'] / 1024:.1f} "
                           f"KiB fp32" + (f"; profile {c.profile}" if prof else ""), **summary)
        return graph


def _lsb_per_channel(node) -> torch.Tensor:
    s = node.weight_scale
    return s.reshape(-1) if s.numel() > 1 else s.reshape(1).expand(node.weight.shape[0])


def _fixed_point(graph: Graph, prof: dict, T: int, ctx: PassContext) -> dict:
    """Snap biases and thresholds to the weight-LSB grid of the layer feeding them; check state width."""
    out = {}
    bound = _current_bounds(graph, ctx)
    for name, node in list(graph.nodes.items()):
        if node.kind != "neuron":
            continue
        (src,) = graph.preds(name)
        prod = graph.nodes[src]
        if prod.kind not in ("conv2d", "linear") or prod.weight_int is None:
            out[name] = {"snapped": False, "reason": f"fed by {prod.kind}, not a quantized conv/linear"}
            continue
        lsb = _lsb_per_channel(prod)
        if prod.bias is not None:
            graph.replace(src, prod.replace(bias=torch.round(prod.bias / lsb) * lsb))
        th = node.threshold.reshape(-1).expand(lsb.numel()) if node.threshold.numel() == 1 else node.threshold
        th_lsb = lsb if node.threshold.numel() > 1 else lsb.max().reshape(1)
        codes = torch.clamp(torch.round(th / th_lsb), min=1)
        th_q = (codes * th_lsb).reshape(node.threshold.shape) if node.threshold.numel() > 1 else (codes * th_lsb)[0]
        graph.replace(name, node.replace(threshold=th_q.float()))
        thr_bits = int(math.ceil(math.log2(float(codes.max()) + 1)))
        vmax = (th_q.reshape(-1) * (1 + abs(node.v_init)) + T * bound[src].reshape(-1)) / th_lsb
        state_bits = int(math.ceil(math.log2(float(vmax.max()) + 1))) + 1  # + sign
        out[name] = {"snapped": True, "threshold_bits": thr_bits, "threshold_fits": thr_bits <= prof["threshold_bits"],
                     "state_bits_needed": state_bits, "state_fits": state_bits <= prof["state_bits"]}
    return out


@torch.no_grad()
def _current_bounds(graph: Graph, ctx: PassContext) -> dict[str, torch.Tensor]:
    """Per-channel bound on the per-step input current of every layer: the absolute-value network
    (|W|, |b|) driven by the largest input magnitude, every neuron emitting its largest spike."""
    from snnconv.runtime.interpreter import run_ann

    g = graph.copy()
    for name, node in g.nodes.items():
        if node.kind in ("conv2d", "linear"):
            g.nodes[name] = node.replace(weight=node.weight.abs(), bias=None if node.bias is None else node.bias.abs(),
                                         weight_int=None, weight_scale=None, bits=None)
        elif node.kind == "batchnorm":
            a, c = node.scale_shift()
            g.nodes[name] = Scale(a.abs().view(-1, *([1] * (len(node.shape) - 1))),
                                  c.abs().view(-1, *([1] * (len(node.shape) - 1))), shape=node.shape)
        elif node.kind == "neuron":
            amp = node.threshold.reshape(-1) * node.levels
            view = amp.view(-1, *([1] * (len(node.shape) - 1))) if amp.numel() > 1 else amp.reshape(())
            g.nodes[name] = Scale(torch.tensor(0.0), view.expand(node.shape).clone(), shape=node.shape)
    x_max = 1.0
    if ctx.calibration is not None:
        x_max = max(float(b.abs().max()) for b in ctx.calibration_batches())
    x = torch.full((1, *g.nodes[g.inputs[0]].shape), x_max)
    bounds = {}

    def rec(name, t):
        if g.nodes[name].kind in ("conv2d", "linear", "scale", "add", "avgpool2d", "adaptive_avgpool2d"):
            bounds[name] = t[0].flatten(1).amax(1) if t.dim() > 2 else t[0]

    run_ann(g, x, record=rec)
    return bounds
