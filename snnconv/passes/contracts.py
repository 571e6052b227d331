"""Pass contracts: what a pass needs of its input graph and what it guarantees of its output.

Each :class:`snnconv.passes.base.Pass` declares ``requires`` and ``ensures`` (tuples of
:class:`Contract`); :class:`snnconv.passes.base.Pipeline` checks them around every pass and stops at
the first violated one with a one-line error naming the pass, its position and the contract, so
ordering rules are declared, not described in prose. Passes run on the pipeline's own copy of the
graph; ``mutates_input = False`` (the default) additionally promises that a pass called directly
leaves the graph it was given unchanged (``run`` copies it first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from snnconv.ir import Graph


@dataclass(frozen=True)
class Contract:
    text: str  # what must hold, as it reads in an error ("... requires <text>")
    check: Callable[[Graph], bool]
    hint: str = ""  # how to satisfy it


def _neurons(g: Graph) -> bool:
    return any(n.spiking for n in g.nodes.values())


def _relu_clips(g: Graph) -> bool:
    return any(n.kind == "clip" and n.lo == 0.0 for n in g.nodes.values())


HAS_NEURONS = Contract("spiking neurons", _neurons, "put it after threshold_balance or sfn")
NO_NEURONS = Contract("a graph not yet converted to neurons", lambda g: not _neurons(g),
                      "put it before threshold_balance / sfn")
NO_RELU_CLIPS = Contract("no ReLU-like activation left unconverted", lambda g: not _relu_clips(g))


def violated(contracts, graph: Graph):
    """The first contract in ``contracts`` that ``graph`` breaks, or None."""
    return next((c for c in contracts if not c.check(graph)), None)
