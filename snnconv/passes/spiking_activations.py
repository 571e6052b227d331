r"""Smooth activations -> function neurons: SiLU, GELU, sigmoid, tanh, hardswish and hardsigmoid in a
CNN become spiking neurons (:class:`snnconv.ir.FunctionNeuron`) instead of real-valued operator nodes.

Method: the expectation compensation of Huang et al. (ACM MM 2024, "Towards High-performance Spiking
Transformers from ANN to SNN Conversion", arXiv:2502.21193), written as a neuron. Each activation node
:math:`y = f(x)` becomes a signed multi-level neuron that integrates its input current and, at every
step t, emits the integer number of threshold-sized spikes that brings its emitted total to
:math:`t\,f(\bar x_t)` (:math:`\bar x_t` the running mean of its input), so the running mean of its
output converges to :math:`f` of the running mean of its input, with error at most :math:`\theta/(2t)`.
``levels`` = 1 gives binary (signed) spikes, more levels graded spikes (their multi-threshold neuron).

Thresholds are data-based, like the ReLU thresholds of Rueckauer et al. (2017): :math:`\theta` = the
``percentile`` of :math:`|f(x)|` on the calibration images (per channel or per layer) divided by
``levels``, so one step can carry the bulk of the activation range and rare outliers are carried over
to later steps by the neuron's memory instead of being clipped.

``threshold_balance`` (binary spikes) and ``sfn`` (graded, ``levels`` per step) call
:func:`convert_smooth_activations` after converting the ReLU-like clips, so every CNN recipe turns a SiLU,
GELU or hardswish network into neurons; this pass does the same step alone for explicit pipelines. A
graph without smooth activations is returned unchanged. The transformer recipe keeps its own treatment
(GELU as an operator feeding signed neurons, ``spiking_transformer``).
"""
from __future__ import annotations

from dataclasses import dataclass

from snnconv.ir import FunctionNeuron, Graph
from snnconv.ir.function_neuron import FUNCTIONS
from snnconv.passes.activation_stats import activation_scales
from snnconv.passes.base import Pass, PassContext, check_config, register_pass


def smooth_activations(graph: Graph) -> list[str]:
    """The activation nodes a function neuron can replace."""
    return [k for k, n in graph.nodes.items() if n.kind == "activation" and n.fn in FUNCTIONS]


def convert_smooth_activations(graph: Graph, ctx: PassContext, pass_name: str, percentile: float = 99.9,
                               per_channel: bool = True, levels: int = 1, max_samples: int = 2_000_000) -> dict[str, str]:
    """Replace every smooth activation of ``graph`` (in place) by a function neuron with data-based
    thresholds, logged under ``pass_name`` when there were any; returns ``{node: fn}`` of what was converted."""
    acts = smooth_activations(graph)
    if not acts:
        return {}
    # per channel only where dim 1 is a channel axis (conv maps [C, H, W] and features [F])
    by_channel = [a for a in acts if per_channel and len(graph.nodes[a].shape) in (1, 3)]
    by_layer = [a for a in acts if a not in by_channel]
    scales = {}
    for names, channel in ((by_channel, True), (by_layer, False)):
        if names:
            scales.update(activation_scales(graph, ctx.calibration_batches(), names, "percentile", percentile,
                                            channel, max_samples, device=ctx.device, absolute=True))
    converted = {}
    for a in acts:
        node = graph.nodes[a]
        graph.replace(a, FunctionNeuron(node.fn, (scales[a] / levels).float(), levels))
        converted[a] = node.fn
    ctx.log(pass_name, f"{len(converted)} smooth activation(s) -> function neurons "
                       f"({', '.join(sorted(set(converted.values())))}; thresholds from p{percentile} of |f(x)|, "
                       f"+-{levels} spike(s) per step)", converted=converted)
    return converted


@register_pass
class SpikingActivations(Pass):
    name = "spiking_activations"

    @dataclass
    class Config:
        percentile: float = 99.9  # of |f(x)| on the calibration data
        granularity: str = "channel"  # "layer" or "channel" (dim 1)
        levels: int = 1  # spikes of either sign per step (1: binary)
        max_samples: int = 2_000_000

        def validate(self, where: str) -> None:
            check_config(where, [(0 < self.percentile <= 100, "percentile must be in (0, 100]"),
                                 (self.granularity in ("layer", "channel"), "granularity must be 'layer' or 'channel'"),
                                 (isinstance(self.levels, int) and self.levels >= 1, "levels must be a positive integer")])

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        c = self.config
        if not convert_smooth_activations(graph, ctx, self.name, c.percentile, c.granularity == "channel", c.levels,
                                          c.max_samples):
            ctx.log(self.name, "no smooth activations", converted={})
        return graph
