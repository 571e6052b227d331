"""Export targets: what ``snnconv convert --export F`` writes into the run folder and ``snnconv export --format F``
writes alone. A target is a registered :class:`ExportTarget` (one line below) naming the backend module that
implements it; the module provides ``check_export(snn)`` (the cheap one-line refusal, run right after conversion,
before the slow simulation), ``write_export(path, snn, ann, input_shape, dataset, data_dir, log_fn, timesteps)``
(``timesteps``: the run's largest T, for a format whose network is run for a fixed number of steps), and
optionally ``check_network(snn)`` (the same refusal without checking that the format's tools are installed here):

* ``onnx`` -> ``ann.onnx``: the ANN before conversion (:mod:`snnconv.backends.onnx_export`, checked with
  ``onnx.checker`` and onnxruntime).
* ``nir`` -> ``snn.nir``: the converted SNN lowered exactly to NIR form (:mod:`snnconv.backends.nir`), with the
  snnconv-dynamics metadata when its neurons need it: the exported network is the converted one.
* ``lava`` -> ``lava/``: the converted SNN as one integer Lava network for Loihi 2, its hardware report and a
  Lava run compared with snnconv (:mod:`snnconv.backends.lava`).

An export whose written network runs the converted neurons itself (``supports``: the neuron features it keeps,
the names of ``snnconv.interop.Target.supports``) is also a deployment target of ``snnconv convert --target``
(:func:`deployment_targets`); ``lava`` is one.

:func:`write_exports` is called inside the run's atomic folder: if an export fails, the whole run folder is
discarded. This module imports nothing heavy (the config validates export names against it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from snnconv.errors import SnnconvError


@dataclass(frozen=True)
class ExportTarget:
    name: str
    file: str  # file or folder name inside a run folder
    module: str  # the backend module with check_export(snn) and write_export(...)
    help: str
    #: the neuron features the written network runs as converted, when it is a deployment target of its own
    supports: frozenset | None = None

    def backend(self):
        return importlib.import_module(self.module)

    def check_network(self, snn) -> None:
        """The backend's ``check_network(snn)`` when it has one (whether the network maps, not whether the
        target's tools are installed here), else its ``check_export``."""
        b = self.backend()
        getattr(b, "check_network", b.check_export)(snn)


EXPORT_TARGETS: dict[str, ExportTarget] = {}


def register_export(target: ExportTarget) -> ExportTarget:
    EXPORT_TARGETS[target.name] = target
    return target


register_export(ExportTarget("onnx", "ann.onnx", "snnconv.backends.onnx_export", "the ANN before conversion (ONNX)"))
register_export(ExportTarget("nir", "snn.nir", "snnconv.backends.nir", "the converted SNN in NIR (docs/nir.md)"))
register_export(ExportTarget("lava", "lava", "snnconv.backends.lava", "the converted SNN as a Lava network (docs/lava.md)",
                             # SnnconvIF (backends/lava_runner.py): both resets, initial membrane, leak, graded and
                             # signed spikes in Loihi 2 fixed point; no refractory period or SRP pre-run
                             supports=frozenset({"subtract", "zero", "v_init", "lif", "graded", "signed"})))


def parse_exports(v, where: str = "export") -> list[str]:
    """``"nir,lava"``, ``["nir", "lava"]`` or ``None`` -> ``["nir", "lava"]`` (each once, order kept)."""
    if v is None:
        return []
    known = ", ".join(EXPORT_TARGETS)
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise SnnconvError(f"{where}: expected export formats ({known}), got {v!r}")
    out = []
    for i in (i.strip() for i in items if i.strip()):
        if i not in EXPORT_TARGETS:
            raise SnnconvError(f"{where}: unknown export format {i!r} (known: {known})")
        if i not in out:
            out.append(i)
    return out


def check_exports(formats, snn) -> None:
    """Raise the backend's :class:`SnnconvError` now if ``snn`` cannot be written in one of ``formats``."""
    for fmt in parse_exports(list(formats), "export"):
        EXPORT_TARGETS[fmt].backend().check_export(snn)


def write_exports(folder: str | Path, formats, snn, ann, input_shape: tuple, dataset: str, data_dir=None,
                  log_fn=print, timesteps: int | None = None) -> list[str]:
    """Write each of ``formats`` into ``folder``; returns the names written."""
    folder = Path(folder)
    written = []
    for fmt in parse_exports(list(formats), "export"):
        t = EXPORT_TARGETS[fmt]
        t.backend().write_export(folder / t.file, snn, ann, input_shape, dataset, data_dir, log_fn, timesteps=timesteps)
        written.append(t.file)
    return written


def deployment_targets() -> dict[str, frozenset]:
    """Every target ``snnconv convert --target`` can deliver to, with the neuron features its own neurons run
    as converted: the frameworks of :mod:`snnconv.interop` (through the NIR file) and the export targets whose
    written network runs the neurons itself (``ExportTarget.supports``, e.g. Lava). Nothing heavy is imported."""
    from snnconv.interop import TARGETS

    out = {name: t.supports for name, t in TARGETS.items()}
    out.update({name: e.supports for name, e in EXPORT_TARGETS.items() if e.supports is not None})
    return out


def deployment_export(target: str) -> str:
    """The export format that carries a network to ``target``: its own (Lava), else the NIR file."""
    return target if target in EXPORT_TARGETS else "nir"


def check_deployment_target(name: str) -> None:
    """A one-line error for a name that is not a deployment target, listing them."""
    if name not in deployment_targets():
        raise SnnconvError(f"unknown target '{name}' (known: {', '.join(deployment_targets())})")
