r"""Scale-and-fire (multi-threshold, graded-spike) neurons: T = 1 inference of a quantized ANN.

A QCFS activation with :math:`L` levels (Bu et al., ICLR 2022),
:math:`\hat a = \frac{\lambda}{L}\,\mathrm{clip}(\lfloor zL/\lambda + \varphi\rfloor, 0, L)`, is computed in one
step by a neuron that integrates :math:`v = z + \varphi\theta`, emits the spike *count*
:math:`s = \mathrm{clip}(\lfloor v/\theta\rfloor, 0, L)` as one graded spike, and resets by subtraction, with
:math:`\theta = \lambda / L`. Its output :math:`\theta s` equals :math:`\hat a` exactly at T = 1, and for
T > 1 it is an IF neuron with :math:`L` thresholds per step (:math:`L\cdot T` output levels).

This is the multi-threshold neuron (MTN) / scale-and-fire neuron (SFN) of "One-Timestep is
Enough: Achieving High-performance ANN-to-SNN Conversion via Scale-and-Fire Neurons"
(arXiv:2510.23383, 2025): :math:`o = \theta_M\,\mathrm{clip}(\lfloor h/\theta_M\rfloor, 0, N)` with
:math:`\theta_M = \theta/T` and :math:`v_M(0) = v(0)/T` reproduces in one step an IF neuron run for
:math:`T` steps (their Theorem 1); here :math:`N = L`, :math:`\theta_M = \lambda/L`, :math:`v_M(0) = \varphi\theta_M`.
(Their adaptive scaling of the SFN and the transformer variant are not implemented.)

On a plain ReLU/clip network (no trained quantization) the pass sets :math:`\theta = \text{scale}/L` with
the scale from calibration data (max or percentile, per layer or channel, as in
:mod:`snnconv.passes.threshold_balance`) and ``v_init = 1/2`` (rounding).

**Hardware.** Every neuron sends an integer payload of :math:`\lceil\log_2(L+1)\rceil` bits per
step (graded spikes). Loihi 2 supports graded spikes with an integer payload (up to 24 bits);
binary-spike hardware (Loihi 1, TrueNorth, SpiNNaker 1 without software payloads) cannot run these
graphs without unrolling each step into :math:`L` binary sub-steps. The run report marks such graphs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.ir import Graph, SpikingNeuron
from snnconv.passes.activation_stats import activation_scales
from snnconv.passes.contracts import NO_NEURONS
from snnconv.passes.base import Pass, PassContext, check_config, register_pass
from snnconv.passes.threshold_balance import rate_clips
from snnconv.passes.spiking_activations import convert_smooth_activations


@register_pass
class ScaleAndFire(Pass):
    name = "sfn"
    requires = (NO_NEURONS,)

    @dataclass
    class Config:
        levels: int = 4  # L for clips that are not already quantized (plain ReLU networks)
        method: str = "percentile"  # scale of plain clips: "max" or "percentile"
        percentile: float = 99.9
        granularity: str = "channel"  # "layer" or "channel"
        v_init: float = 0.5  # initial membrane (fraction of theta) for plain clips
        max_samples: int = 2_000_000

        def validate(self, where: str) -> None:
            checks = [(isinstance(self.levels, int) and self.levels >= 1, "levels must be an integer >= 1"),
                      (self.method in ("max", "percentile"), "method must be 'max' or 'percentile'"),
                      (0 < self.percentile <= 100, "percentile must be in (0, 100]"),
                      (self.granularity in ("layer", "channel"), "granularity must be 'layer' or 'channel'")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        clips = rate_clips(graph)
        smooth = convert_smooth_activations(graph, ctx, self.name, 100.0 if c.method == "max" else c.percentile,
                                            c.granularity == "channel", c.levels, c.max_samples)
        if not clips:
            if not smooth:
                ctx.log(self.name, "no activations to convert")
            return graph
        plain = [n for n in clips if not graph.nodes[n].levels]
        scales = activation_scales(graph, ctx.calibration_batches(), plain, c.method, c.percentile,
                                   c.granularity == "channel", c.max_samples, device=ctx.device) if plain else {}
        summary, max_levels = {}, 0
        for n in clips:
            clip = graph.nodes[n]
            if clip.levels:  # trained QCFS: exact at T = 1
                levels, th, v_init = clip.levels, torch.tensor(float(clip.hi) / clip.levels), clip.shift
            else:
                levels, v_init = c.levels, c.v_init
                th = (torch.clamp(scales[n], max=clip.hi) / levels).float()
            graph.replace(n, SpikingNeuron(th, levels=levels, v_init=v_init))
            summary[n] = {"threshold": float(th.mean()), "levels": levels}
            max_levels = max(max_levels, levels)
        ctx.log(self.name, f"{len(clips)} activation(s) -> scale-and-fire neurons ({len(clips) - len(plain)} from "
                           f"QCFS levels, {len(plain)} with L={c.levels}); graded spikes up to {max_levels} per step",
                layers=summary, graded_levels=max_levels)
        return graph


def graded_spikes(graph: Graph) -> dict:
    """What a graph needs from hardware: the largest spike payload per step and signed spikes."""
    neurons = [n for n in graph.nodes.values() if n.kind in ("neuron", "function_neuron")]
    levels = max((n.levels for n in neurons), default=1)
    signed = any(getattr(n, "signed", False) or n.kind == "function_neuron" for n in neurons)
    bits = max(1, int(levels).bit_length()) + (1 if signed else 0)
    return {"graded": levels > 1, "max_levels": levels, "signed": signed, "payload_bits": bits}
