"""ReLU -> IF neuron conversion with data-based threshold balancing.

Every clip(0, hi) activation (ReLU, ReLU6, clamp(0, hi)) becomes an integrate-and-fire neuron
whose threshold is the activation scale measured on calibration data: the maximum
(Diehl et al. 2015; Rueckauer et al. 2017 "data-based normalisation") or a robust percentile
such as 99.9 / 99.99 (Rueckauer et al. 2017, §2.2.1), per layer or per channel (Kim et al.
2020, "Spiking-YOLO" channel-wise normalisation). Setting the threshold (with spike amplitude
theta) instead of rescaling the weights is the equivalent threshold-balancing form
(Sengupta et al. 2019); weights stay those of the ANN. A clip with a finite upper bound caps the
threshold at that bound. Reset by subtraction is the default (Rueckauer et al. 2017; Han et al.
2020 "RMP-SNN"), reset to zero is available. Activations with a negative lower bound cannot be
represented by a non-negative rate and are refused with their location.

Smooth activations (SiLU, GELU, sigmoid, tanh, hardswish) become binary signed function neurons
(:mod:`snnconv.passes.spiking_activations`, expectation compensation of Huang et al. 2024) with thresholds
from the same percentile of :math:`|f(x)|`, so a SiLU CNN converts to a spiking network too.

Defaults (99.9th percentile, per channel, v_init = theta/2): among max / 99.9 / 99.99 and layer / channel,
99.9 per channel has the best validation accuracy at T = 1, 4, 8 and 16 (MNIST CNN trained on the 55k
training part, 5,000 validation images; docs/benchmarks/percentile_choice.md; 99.99 per channel is ahead at
T = 2 and 32); starting
the membrane at half threshold turns the floor of the spike-count quantiser into rounding, which
halves the expected conversion error at small T (Bu et al., ICLR 2022, Theorem 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnconv.errors import UnsupportedOpError
from snnconv.ir import Graph, SpikingNeuron
from snnconv.passes.activation_stats import activation_scales
from snnconv.passes.contracts import NO_NEURONS
from snnconv.passes.base import Pass, PassContext, check_config, register_pass
from snnconv.passes.spiking_activations import convert_smooth_activations


def rate_clips(graph: Graph) -> list[str]:
    """The clip nodes of ``graph``; raises :class:`UnsupportedOpError` naming every clip with a
    negative lower bound, which a non-negative spike rate cannot represent."""
    clips = [n for n, node in graph.nodes.items() if node.kind == "clip"]
    bad = [(f"clip[{graph.nodes[n].source} lo={graph.nodes[n].lo}]", f"node '{n}'") for n in clips
           if graph.nodes[n].lo != 0.0]
    if bad:
        raise UnsupportedOpError(bad)
    return clips


@register_pass
class ThresholdBalance(Pass):
    name = "threshold_balance"
    requires = (NO_NEURONS,)

    @dataclass
    class Config:
        method: str = "percentile"  # "max" or "percentile"
        percentile: float = 99.9
        granularity: str = "channel"  # "layer" or "channel"
        reset: str = "subtract"  # "subtract" or "zero"
        neuron: str = "if"
        leak: float = 1.0
        v_init: float = 0.5  # initial membrane potential as a fraction of the threshold
        max_samples: int = 2_000_000

        def validate(self, where: str) -> None:
            checks = [(self.method in ("max", "percentile"), "method must be 'max' or 'percentile'"),
                      (0 < self.percentile <= 100, "percentile must be in (0, 100]"),
                      (self.granularity in ("layer", "channel"), "granularity must be 'layer' or 'channel'"),
                      (self.reset in ("subtract", "zero"), "reset must be 'subtract' or 'zero'"),
                      (self.neuron in ("if", "lif"), "neuron must be 'if' or 'lif'")]
            check_config(where, checks)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        clips = rate_clips(graph)
        smooth = convert_smooth_activations(graph, ctx, self.name, 100.0 if c.method == "max" else c.percentile,
                                            c.granularity == "channel", 1, c.max_samples)
        if not clips:
            if not smooth:
                ctx.log(self.name, "no activations to convert")
            return graph
        # A QCFS (quantized) clip already carries its threshold: theta = lambda, v_init = phi * theta
        # (Bu et al. 2022, Theorem 2); only continuous clips need calibration statistics.
        quantized = [n for n in clips if graph.nodes[n].levels]
        measured = [n for n in clips if not graph.nodes[n].levels]
        scales = activation_scales(graph, ctx.calibration_batches(), measured, c.method, c.percentile,
                                   c.granularity == "channel", c.max_samples, device=ctx.device) if measured else {}
        summary = {}
        for n in clips:
            clip = graph.nodes[n]
            if clip.levels:
                th, v_init = torch.tensor(float(clip.hi)), clip.shift
            else:
                th, v_init = torch.clamp(scales[n], max=clip.hi).float(), c.v_init
            graph.replace(n, SpikingNeuron(th, model=c.neuron, leak=c.leak, reset=c.reset, v_init=v_init))
            summary[n] = float(th.mean())
        if quantized:
            ctx.log(self.name, f"{len(quantized)} QCFS activation(s): threshold = trained lambda, v_init = shift")
        ctx.log(self.name, f"{len(clips)} activation(s) -> {c.neuron.upper()} neurons "
                           f"({c.method}{'' if c.method == 'max' else f' {c.percentile}'}, per {c.granularity}, "
                           f"reset {c.reset})", thresholds=summary)
        return graph
