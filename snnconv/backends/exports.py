"""Exports written by ``snnconv convert --export onnx|nir|lava`` into the run folder.

Each format reuses its backend's export function (no second implementation):

* ``onnx`` -> ``ann.onnx``: the ANN before conversion (:func:`snnconv.backends.onnx_export.export_onnx`,
  checked with ``onnx.checker`` and onnxruntime).
* ``nir`` -> ``snn.nir``: the converted SNN lowered exactly to NIR form
  (:func:`snnconv.backends.nir.export_nir`, ``dt=1``, NIR ``AvgPool2d``), with the snnconv-dynamics
  metadata when its neurons need it (subtractive reset, initial membrane, graded spikes): the exported
  network is the converted one, never a reset-to-zero approximation.
* ``lava`` -> ``lava/``: the Loihi 2 fixed-point network, hardware report and a Lava run compared with
  snnconv (:func:`snnconv.backends.lava.export_lava`, 4 test samples x 16 steps).

:func:`check_exports` runs the cheap refusal checks (NIR/Loihi mapping rules, the Lava venv) right after
conversion, before the slow simulation, so a graph that cannot be exported fails fast with the backend's
one-line message. :func:`write_exports` is called inside the run's atomic folder: if an export fails,
the whole run folder is discarded.
"""
from __future__ import annotations

from pathlib import Path

from snnconv.config import EXPORT_FORMATS, parse_exports
from snnconv.errors import SnnconvError
from snnconv.ir import Graph

#: format -> file (or folder) name inside the run folder
EXPORT_FILES = {"onnx": "ann.onnx", "nir": "snn.nir", "lava": "lava"}
assert set(EXPORT_FILES) == set(EXPORT_FORMATS)  # the formats config accepts are the ones written here


def check_exports(formats, snn: Graph) -> None:
    """Raise the backend's :class:`SnnconvError` now if ``snn`` cannot be written in one of ``formats``."""
    formats = parse_exports(list(formats), "export")  # the one format check (config's), for API callers
    if "nir" in formats:
        from snnconv.backends.nir import lower_for_nir, needs_snnconv_dynamics

        try:
            import nir  # noqa: F401
        except ImportError:
            raise SnnconvError("--export nir needs the nir package: pip install 'snnconv[nir]'") from None
        lower_for_nir(snn, dynamics="snnconv" if needs_snnconv_dynamics(snn) else "nir")
    if "lava" in formats:
        from snnconv.backends.lava import check_lava, lava_python

        check_lava(snn)
        lava_python()


def write_exports(folder: str | Path, formats, snn: Graph, ann: Graph, input_shape: tuple, dataset: str,
                  data_dir=None, log_fn=print) -> list[str]:
    """Write each of ``formats`` into ``folder``; returns the names written (see :data:`EXPORT_FILES`)."""
    folder = Path(folder)
    written = []
    for fmt in formats:
        path = folder / EXPORT_FILES[fmt]
        if fmt == "onnx":
            from snnconv.backends.onnx_export import export_onnx

            info = export_onnx(ann, path, input_shape)
            log_fn(f"export onnx: {path.name} (opset {info['opset']}, {info['nodes']} nodes, onnxruntime vs "
                   f"snnconv max abs diff {info['max_abs_diff']:.1e})")
        elif fmt == "nir":
            from snnconv.backends.nir import export_nir

            info = export_nir(snn, path)
            log_fn(f"export nir: {path.name} (NIR {info['nir_version']}, {info['dynamics']} dynamics, "
                   f"{', '.join(f'{k} {v}' for k, v in info['nodes'].items())}; {info['edges']} edges)"
                   + ("; run it with snnconv.interop.load(path, target) or check it with `snnconv verify`"
                      if info["dynamics"] == "snnconv" else ""))
        else:
            from snnconv.backends.lava import export_lava

            export_lava(snn, path, dataset=dataset, data_dir=data_dir, log_fn=log_fn)
        written.append(path.name)
    return written
