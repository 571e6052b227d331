"""Pass framework: a pass has a name, a config dataclass and ``run(graph, context) -> graph``.

Passes are registered by name so a pipeline is just an ordered list in the config, e.g.::

    passes:
      - fold_batchnorm
      - {name: threshold_balance, method: percentile, percentile: 99.99}

Every pass reports what it changed through ``context.log`` and the pipeline keeps a record of
it for the run report.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import torch

from snnconv.errors import SnnconvError
from snnconv.ir import Graph

log = logging.getLogger("snnconv")

PASSES: dict[str, type["Pass"]] = {}


def check_config(where: str, checks: list[tuple[bool, str]]) -> None:
    """Raise a one-line :class:`SnnconvError` for the first failed ``(ok, message)`` check of a pass config."""
    for ok, msg in checks:
        if not ok:
            raise SnnconvError(f"{where}: {msg}")


def register_pass(cls):
    PASSES[cls.name] = cls
    return cls


@dataclass
class PassContext:
    """What passes may use besides the graph: calibration batches and a change log."""

    calibration: Iterable[torch.Tensor] | Callable[[], Iterable[torch.Tensor]] | None = None
    records: list[dict] = field(default_factory=list)
    #: optional labelled ``(x, y)`` batches from the training split, disjoint from the calibration batches (passes
    #: that score accuracy, e.g. hseo); never test data
    labelled: Iterable[tuple[torch.Tensor, torch.Tensor]] | Callable[[], Iterable] | None = None
    #: the SNN evaluator passes simulate with: ``simulator(graph, timesteps, **options)`` returning an object
    #: with ``run`` / ``mean_outputs`` / ``stats`` (default: :data:`default_simulator`, which the package root
    #: sets to :class:`snnconv.runtime.simulator.Simulator`); passes never import the runtime simulator
    simulator: Callable[..., Any] | None = None
    default_simulator: ClassVar[Callable[..., Any] | None] = None
    #: where passes run their heavy computations (statistics, calibration simulations): a ``torch.device`` or
    #: None (the graph's own, the CPU); the graph a pass returns is on the CPU either way
    device: Any = None

    def make_simulator(self, graph, timesteps: int, **options):
        if self.device is not None:
            options.setdefault("device", self.device)
        return simulator_for(self.simulator)(graph, timesteps, **options)

    def calibration_batches(self) -> Iterable[torch.Tensor]:
        if self.calibration is None:
            raise SnnconvError("this pass needs calibration data (give --dataset or a calibration loader)")
        return self.calibration() if callable(self.calibration) else self.calibration

    def labelled_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        if self.labelled is None:
            raise SnnconvError("this pass needs labelled calibration data (a held-out split of the training set)")
        return self.labelled() if callable(self.labelled) else self.labelled

    def log(self, pass_name: str, message: str, **details: Any) -> None:
        log.info("[%s] %s", pass_name, message)
        self.records.append({"pass": pass_name, "message": message, **details})


def simulator_for(factory: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``factory``, else the registered default simulator (for pass helpers that run outside a pipeline)."""
    factory = factory or PassContext.default_simulator
    if factory is None:
        raise SnnconvError("no SNN simulator registered (import snnconv, or give PassContext(simulator=...))")
    return factory


class Pass:
    """Base class. Subclasses set ``name``, ``Config`` (a dataclass) and implement :meth:`run`, and declare
    their contracts (:mod:`snnconv.passes.contracts`): ``requires`` of the input, ``ensures`` of the output."""

    name: ClassVar[str] = "pass"
    requires: ClassVar[tuple] = ()
    ensures: ClassVar[tuple] = ()

    @dataclass
    class Config:
        pass

    def __init__(self, config: "Pass.Config | None" = None, **kwargs):
        self.config = config if config is not None else build_config(self.Config, kwargs, self.name)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:  # pragma: no cover - interface
        raise NotImplementedError


def build_config(cls, values: dict, where: str):
    """Instantiate a config dataclass, naming unknown keys and wrong types in the error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SnnconvError(f"{where}: unknown key(s) {', '.join(unknown)} (expected: {', '.join(fields)})")
    try:
        cfg = cls(**values)
    except TypeError as e:
        raise SnnconvError(f"{where}: {e}") from None
    check = getattr(cfg, "validate", None)
    if check:
        check(where)
    return cfg


def make_pass(spec: str | dict) -> Pass:
    """A pass from a pipeline entry: ``"name"`` or ``{"name": ..., <config keys>}``."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in PASSES:
        raise SnnconvError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    return PASSES[name](**spec)


class Pipeline:
    """An ordered list of passes run one after the other on a copy of the input graph."""

    def __init__(self, passes: list[Pass]):
        self.passes = passes

    @classmethod
    def from_config(cls, specs: list[str | dict]) -> "Pipeline":
        return cls([make_pass(s) for s in specs])

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        from snnconv.passes.contracts import violated

        g = graph.copy()
        for i, p in enumerate(self.passes, start=1):
            bad = violated(p.requires, g)
            if bad:
                raise SnnconvError(f"pass '{p.name}' (step {i} of the pipeline) requires {bad.text}, and its input "
                                   f"has none" + (f": {bad.hint}" if bad.hint else ""))
            before = g.kinds()
            g = p.run(g, ctx)
            g.validate()
            bad = violated(p.ensures, g)
            if bad:
                raise SnnconvError(f"pass '{p.name}' (step {i}) did not ensure {bad.text}")
            after = g.kinds()
            if before != after:
                ctx.log(p.name, "node kinds " + ", ".join(f"{k}: {before.get(k, 0)}->{after.get(k, 0)}"
                                                           for k in sorted(set(before) | set(after))
                                                           if before.get(k, 0) != after.get(k, 0)))
        return g
