"""Conversion tasks: what a ``snnconv convert`` run loads and measures for a kind of model.

One :func:`snnconv.api.run_convert` drives every kind of model (output folder checks, pipeline,
recipe contract, conversion, spiking check, exports, report). What differs between kinds is only

* :meth:`Task.prepare`: the model through its frontend, the evaluation data and the calibration data
  (returned as a :class:`Job`);
* :meth:`Task.score`: the ANN reference and the SNN's score at every T (report fields), with the
  simulator statistics every report shares (firing rates, SynOps, energy).

A task is registered by name with :func:`register_task`; :func:`task_for` picks the first registered
task whose :meth:`Task.handles` accepts the run config (``hf:`` models: the embedding task; everything
else: the image-classification task registered by :mod:`snnconv.api`). A new kind of model is one module with one
:class:`Task` subclass and its ``@register_task`` line, listed in :data:`TASK_MODULES`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from snnconv.errors import SnnconvError

#: modules that register tasks, imported on first use (the classification task lives in snnconv.api)
TASK_MODULES = ("snnconv.tasks.embedding",)

TASKS: dict[str, "Task"] = {}


def register_task(cls):
    TASKS[cls.name] = cls()
    return cls


@dataclass
class Job:
    """What :meth:`Task.prepare` loaded: the ANN graph and the data the run converts and scores it on."""

    graph: Any  # the ingested ANN (snnconv.ir.Graph)
    coverage: str  # the frontend's op-coverage table
    calibration: list  # calibration input batches (never the evaluation data)
    dataset: str  # what the report calls the evaluation data
    samples: int  # evaluation samples
    labelled: Callable | None = None  # labelled training batches for search passes (HSEO), or None
    data: dict = field(default_factory=dict)  # task-specific: evaluation tensors, model source, input shape...


class Task:
    name = "task"
    exportable = True  # whether --export targets apply to the converted graph
    metric = ""  # what the report's per-T score is

    def handles(self, cfg) -> bool:
        raise NotImplementedError

    def recipe(self, cfg) -> str:
        """The conversion recipe (snnconv.recipes) used when the config names no explicit passes."""
        return cfg.conversion.method

    def prepare(self, cfg, log_fn) -> Job:
        raise NotImplementedError

    def score(self, job: Job, snn, cfg, log_fn) -> dict:
        """Report fields: the ANN reference, the SNN score at every T, firing rates and energy per T."""
        raise NotImplementedError


def task_for(cfg) -> Task:
    for module in TASK_MODULES:
        importlib.import_module(module)
    for task in TASKS.values():
        if task.handles(cfg):
            return task
    raise SnnconvError(f"no conversion task handles model '{cfg.model}' (known tasks: {', '.join(TASKS)})")


def energy_fields(stats, timesteps) -> dict:
    """The per-T SynOps, MACs and energy and the firing rates every report carries (from SimStats)."""
    synops, macs, energy = stats.synops_per_sample(), stats.macs_per_sample(), stats.energy_uj()
    return {"energy": {str(t): {"synops": synops[t - 1], "macs": macs[t - 1], "energy_uj": energy[t - 1]}
                       for t in timesteps},
            "firing_rates": stats.firing_rates()}
