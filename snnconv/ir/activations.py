"""ANN activations: the ReLU family as a clip node.

``relu`` is clip(0, inf), ``relu6`` is clip(0, 6), ``hardtanh`` is clip(-1, 1) and ``clamp`` is
clip(lo, hi). One node type keeps conversion to one rewrite rule: clip(0, hi) -> IF neuron.
"""
from __future__ import annotations

import dataclasses
import math

from snnconv.ir.node import Node, register_node


@register_node
@dataclasses.dataclass(eq=False)
class Clip(Node):
    r""":math:`y = \min(\max(x, lo), hi)`; ``source`` records the original op (relu, relu6, ...)."""

    kind = "clip"
    lo: float = 0.0
    hi: float = math.inf
    source: str = "relu"
