"""Conversion recipes: a conversion method is an object that owns its pass list and states what its
input must have and what it guarantees. Registered by name (``@register_recipe``); ``--method`` and
the YAML key ``conversion.method`` select one; ``snnconv methods`` lists them with their pipelines.

Every recipe builds ``fold_batchnorm -> remove_identity -> <its neuron pass>`` and the shared,
option-driven tail (``leak_compensation`` for LIF, ``signed_neurons`` with ``signed``, Li et al.'s
``calibration`` with ``calibrate``), so methods compose with the options instead of forking the
converter. :meth:`Recipe.check` runs on the ingested graph before any pass: a recipe whose input
requirement is not met is a one-line error instead of silently becoming another method.
"""
from __future__ import annotations

from snnconv.errors import SnnconvError

RECIPES: dict[str, "Recipe"] = {}


def register_recipe(cls):
    RECIPES[cls.name] = cls()
    return cls


def get_recipe(name: str) -> "Recipe":
    if name not in RECIPES:
        raise SnnconvError(f"unknown conversion method '{name}' (known: {', '.join(RECIPES)})")
    return RECIPES[name]


class Recipe:
    name = "recipe"
    summary = ""  # the method in one line, with its citation
    requires = "ReLU-like activations (ReLU, ReLU6, clamp(0, hi))"
    guarantees = ""
    #: what a zoo network is trained with for this recipe (``snnconv train --activation A --levels L``): what
    #: ``--train-if-missing`` trains and the "no trained weights" message suggests
    trained_as: tuple[str, int] = ("relu", 0)

    def neuron_pass(self, c) -> dict:
        return {"name": "threshold_balance", "method": "percentile", "percentile": c.percentile,
                "granularity": c.granularity, "reset": c.reset, "neuron": c.neuron, "v_init": c.v_init,
                "leak": c.leak if c.neuron == "lif" else 1.0}

    def calibrates(self, c) -> bool:
        return bool(c.calibrate)

    def passes(self, c) -> list:
        """The pipeline spec for conversion settings ``c`` (a ``ConversionConfig``)."""
        passes = ["fold_batchnorm", "remove_identity", self.neuron_pass(c)]
        if c.qcfs_as_clip and self.name != "qcfs":
            passes.insert(2, "dequantize_clips")
        if c.neuron == "lif" and c.leak_compensation:
            passes.append("leak_compensation")
        if c.signed:
            passes.append("signed_neurons")
        if c.maxpool not in ("count", "tree"):  # the IR's default max-pool mode is count
            passes.append({"name": "maxpool_mode", "mode": c.maxpool})
        if self.calibrates(c):
            if self.name == "sfn":
                raise SnnconvError("conversion.calibrate: not available for method sfn (graded spikes are exact at "
                                   "T=1 on QCFS nets)")
            # after signed_neurons: the calibration measures the neurons that will run; a QCFS-trained net
            # computes clip(0, lambda), not ReLU: calibrate towards that function
            passes.append({"name": "calibration", "mode": c.calibration, "timesteps": c.calibration_timesteps,
                           "target": "clip" if c.qcfs_as_clip or self.name == "qcfs" else "relu"})
        if c.maxpool == "tree":  # last: calibration compares neurons with ANN layers, the tree's have none
            passes.append("maxpool_tree")
        return passes

    def check(self, graph, c) -> None:
        """Raise a one-line error when ``graph`` does not meet :attr:`requires`."""


@register_recipe
class Max(Recipe):
    name = "max"
    summary = "IF neurons, thresholds = the maximum calibration activation (Diehl et al. 2015)"
    guarantees = "no activation saturates on the calibration data; slower convergence than percentile"

    def neuron_pass(self, c) -> dict:
        return {**super().neuron_pass(c), "method": "max"}


@register_recipe
class Percentile(Recipe):
    name = "percentile"
    summary = ("IF neurons, thresholds = a percentile (default 99.9) of the calibration activations "
               "(Rueckauer et al. 2017)")
    guarantees = "rate of each neuron -> clip(ANN activation, 0, theta) as T grows"


@register_recipe
class Calibration(Recipe):
    name = "calibration"
    summary = "percentile conversion + layer-wise bias or potential calibration for a target T (Li et al. 2021)"
    guarantees = "each layer's mean SNN output matches the ANN's at calibration_timesteps"

    def calibrates(self, c) -> bool:
        return True


@register_recipe
class Qcfs(Recipe):
    name = "qcfs"
    summary = ("thresholds = the trained QCFS lambda, initial membrane = the trained shift "
               "(Bu et al., ICLR 2022)")
    requires = "QCFS-trained activations (snnconv train --activation qcfs, or finetune)"
    trained_as = ("qcfs", 4)
    guarantees = "the SNN's expected output equals the QCFS ANN's at every T (no calibration data needed)"

    def check(self, graph, c) -> None:
        if c.qcfs_as_clip:
            return
        clips = [n for n in graph.nodes.values() if n.kind == "clip" and n.lo == 0.0]
        if clips and not any(getattr(n, "levels", 0) for n in clips):
            raise SnnconvError("method qcfs needs a network trained with QCFS activations (snnconv train "
                               "--activation qcfs, or snnconv finetune); this one has plain ReLU activations: use "
                               "--method percentile or calibration")


@register_recipe
class Sfn(Recipe):
    name = "sfn"
    summary = ("scale-and-fire multi-level neurons: T = 1 inference with graded spikes (exact on QCFS nets; "
               "percentile thresholds and `levels` otherwise)")
    guarantees = "on a QCFS net, the SNN at T=1 computes the QCFS ANN exactly"
    trained_as = ("qcfs", 4)

    def neuron_pass(self, c) -> dict:
        return {"name": "sfn", "levels": c.levels, "method": "percentile", "percentile": c.percentile,
                "granularity": c.granularity}


@register_recipe
class SpikingTransformer(Recipe):
    name = "spiking_transformer"
    summary = ("transformers: signed multi-level IF neurons on every weight-layer input and attention-matmul "
               "operand, operator nodes for softmax / layer norm / GELU (after SpikeZIP-TF, You et al., ICML 2024); "
               "the recipe of hf: models")
    requires = "a transformer graph (the hf: frontend), or any graph with weight layers"
    guarantees = "every weight layer is driven by spikes; the census says which nodes are operators"

    def passes(self, c) -> list:
        return ["remove_identity", "spiking_transformer"]


def describe(c) -> list[dict]:
    """Every recipe with its pipeline for settings ``c`` (``snnconv methods``)."""
    out = []
    for r in RECIPES.values():
        try:
            pipeline = r.passes(c)
        except SnnconvError as e:
            pipeline = [f"({e})"]
        out.append({"name": r.name, "summary": r.summary, "requires": r.requires, "guarantees": r.guarantees,
                    "pipeline": pipeline})
    return out
