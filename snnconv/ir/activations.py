r"""ANN activations: the ReLU family as a clip node.

``relu`` is clip(0, inf), ``relu6`` is clip(0, 6), ``hardtanh`` is clip(-1, 1) and ``clamp`` is
clip(lo, hi). One node type keeps conversion to one rewrite rule: clip(0, hi) -> IF neuron.
With ``levels = L > 0`` the clip is quantized to L steps (the QCFS activation of Bu et al.,
ICLR 2022): :math:`y = \frac{hi}{L}\,\mathrm{clip}(\lfloor x L / hi + shift \rfloor, 0, L)`.
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
    levels: int = 0  # 0: continuous; L > 0: quantized to L steps of hi / L
    shift: float = 0.5  # QCFS shift phi (only used when levels > 0)

    def __post_init__(self):
        if self.levels < 0:
            raise ValueError("levels must be >= 0")
        if self.levels and (self.lo != 0.0 or not math.isfinite(self.hi) or self.hi <= 0):
            raise ValueError("a quantized clip needs lo = 0 and a finite hi > 0")
