"""Frontends: how a model reference becomes an IR graph. Registered plug-ins, like passes and exports.

A :class:`Frontend` says which model references it takes (:meth:`Frontend.matches`: ``hf:<folder>``, a
``.onnx`` file, a checkpoint, a zoo name), loads the model (:meth:`Frontend.load`: the model object, its
per-sample input shape and where its weights came from) and ingests it (:meth:`Frontend.ingest`: the IR
graph and the op-coverage table). :func:`frontend_for` picks the first registered frontend that matches a
reference; :func:`frontend_of` the one whose :meth:`Frontend.accepts` takes an already loaded model object.
A new frontend is one module with one :class:`Frontend` subclass and its ``@register_frontend`` line,
listed in :data:`FRONTEND_MODULES` (the zoo and checkpoint frontends are registered by :mod:`snnconv.api`,
which owns training for ``--train-if-missing``).
"""
from __future__ import annotations

import importlib
from typing import Any

FRONTENDS: dict[str, "Frontend"] = {}
#: modules that register frontends, imported on first use (they load torch/onnx/transformers lazily)
FRONTEND_MODULES = ("snnconv.frontends.hf", "snnconv.frontends.onnx", "snnconv.frontends.torch")


def register_frontend(cls):
    FRONTENDS[cls.name] = cls()
    return cls


class Frontend:
    name = "frontend"
    #: whether the dataset fixes the input shape (image models) or the model does (hf:)
    shape_from_dataset = True

    def matches(self, ref: str) -> bool:
        """Whether this frontend loads the model reference ``ref`` (``--model``)."""
        return False

    def load(self, cfg, shape, log_fn) -> tuple[Any, tuple[int, ...], dict]:
        """``(model, per-sample input shape, source)`` for run config ``cfg``; ``shape`` is the dataset's sample
        shape (None when :attr:`shape_from_dataset` is False)."""
        raise NotImplementedError

    def accepts(self, model) -> bool:
        """Whether :meth:`ingest` takes this loaded model object."""
        return False

    def ingest(self, model, shape) -> tuple[Any, str]:
        """``(IR graph, op-coverage table)``."""
        raise NotImplementedError


def _registered() -> dict[str, Frontend]:
    for module in FRONTEND_MODULES:
        importlib.import_module(module)
    return FRONTENDS


def frontend_for(ref: str) -> Frontend | None:
    """The first registered frontend that loads ``ref``, or None."""
    return next((f for f in _registered().values() if f.matches(ref)), None)


def frontend_of(model) -> Frontend | None:
    """The first registered frontend that ingests the loaded ``model``, or None."""
    return next((f for f in _registered().values() if f.accepts(model)), None)
