"""Run configuration: one dataclass, filled from CLI flags and/or a YAML file.

Every key is documented in ``configs/templates/base_config.yaml``. Unknown keys, wrong types,
values outside their choices and unknown or misconfigured passes raise one-line errors naming
the file, the key (dotted, e.g. ``conversion.method`` or ``passes[2].bits``) and what was expected.

Schema (validated by :func:`load_config`):

* ``model`` / ``weights``: a zoo name, a checkpoint, or whatever ``api.resolve_model`` accepts
  (``hf:<path>``, ``*.onnx``); may also be written as ``model: {name: ..., weights: ...}``.
* ``dataset`` / ``data_dir`` / ``calib_samples`` / ``eval_samples``; may also be written as
  ``dataset: {name: ..., data_dir: ..., calib_samples: ..., eval_samples: ...}``.
* ``conversion``: method, percentile, granularity, reset, neuron, leak, v_init (normalisation).
* ``passes``: the ordered pipeline; entries are ``name``, ``{name: ..., <settings>}`` or
  ``{<name>: {<settings>}}``; the entry ``conversion`` stands for the pipeline built from the
  ``conversion`` section. Names are checked against the pass registry and settings against
  each pass's config when the file is loaded.
* ``output``: ``output_dir`` and the ``output`` section (what to write).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from snnconv.backends.exports import parse_exports  # the registered export targets
from snnconv.encoders import ENCODINGS
from snnconv.errors import SnnconvError
from snnconv.runtime.lowp import KERNEL_SETS  # the simulator's kernel sets (--kernels)

from snnconv.recipes import RECIPES, get_recipe  # noqa: E402 - conversion methods are registered recipes

#: the conversion methods (registered recipes, snnconv/recipes.py)
METHODS = tuple(RECIPES)


@dataclass
class ConversionConfig:
    method: str = "percentile"  # max | percentile | calibration | qcfs | sfn
    percentile: float = 99.9
    granularity: str = "channel"  # layer | channel
    reset: str = "subtract"  # subtract | zero
    neuron: str = "if"  # if | lif
    leak: float = 0.95  # LIF decay per step (beta = exp(-dt/tau)); ignored for IF
    leak_compensation: bool = True  # LIF only: add the leaked charge back as bias
    v_init: float = 0.5  # initial membrane potential, fraction of threshold
    levels: int = 4  # sfn: spike levels per step for activations not trained with QCFS
    calibration: str = "bias"  # calibration: bias | potential (Li et al., ICML 2021)
    calibrate: bool = False  # also calibrate a max/percentile/qcfs conversion (method=calibration always does)
    calibration_timesteps: int = 4  # calibration: the T the SNN is calibrated for
    signed: bool = False  # negative spikes cancel over-firing (signed_neurons pass)
    qcfs_as_clip: bool = False  # max/percentile/calibration on QCFS weights: quantized clips as clip(0, lambda)
    # how the SNN runs max pooling: count (exact max of accumulated inputs) | tree (the count mode built from
    # signed IF neurons, exportable) | gate | wta
    maxpool: str = "count"


@dataclass
class OutputConfig:
    html: bool = True  # write report.html (self-contained) next to report.json / report.md
    graphs: bool = True  # write the converted and source graphs (snn.pt, ann.pt)
    export: list = field(default_factory=list)  # also write these formats into the run folder: onnx | nir | lava
    overwrite: bool = False  # replace an existing snnconv run folder at output_dir (never a folder of the user's)


CHOICES = {  # key -> allowed values, checked at load time
    "conversion.method": tuple(METHODS),
    "conversion.granularity": ("layer", "channel"),
    "conversion.reset": ("subtract", "zero"),
    "conversion.neuron": ("if", "lif"),
    "conversion.calibration": ("bias", "potential"),
    "conversion.maxpool": ("count", "tree", "gate", "wta"),
    "encoding": ENCODINGS,
    "kernels": KERNEL_SETS,
}
#: keys that may be written as a mapping grouping related flat keys
GROUPS = {"model": {"name": "model", "weights": "weights"},
          "dataset": {"name": "dataset", "data_dir": "data_dir", "calib_samples": "calib_samples",
                      "eval_samples": "eval_samples"}}


@dataclass
class RunConfig:
    model: str = "mnist_cnn"
    weights: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    timesteps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    calib_samples: int = 1024
    eval_samples: int | None = None  # None: the whole test set
    batch_size: int = 128
    chunk: int = 8  # timesteps simulated together (memory vs. speed)
    encoding: str = "direct"  # direct | rate | latency | delta (see snnconv.encoders)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N: where calibration, evaluation and simulation run
    kernels: str = "fp32"  # fp32 | int8: int8 runs spike-fed int8-weight layers on exact integer kernels (CPU)
    conversion: ConversionConfig = field(default_factory=ConversionConfig)
    passes: list | None = None  # explicit pipeline; None: built from `conversion`
    output_dir: str | None = None
    output: OutputConfig = field(default_factory=OutputConfig)
    train_if_missing: bool = False
    # a deployment target (spikingjelly | snntorch | norse | sinabs | lava; backends.exports.deployment_targets): the card's best
    # recipe that this target's own neurons run, and an error when the converted network needs what it lacks
    target: str | None = None

    def pipeline_spec(self, recipe: str | None = None) -> list:
        """The passes of this run: ``passes`` (its ``conversion`` entries expanded) or the recipe's pipeline;
        ``recipe`` overrides ``conversion.method`` (a task that has its own recipe, e.g. hf: models)."""
        if self.passes is not None:
            out = []
            for p in self.passes:
                out.extend(self._conversion_passes(recipe) if p == "conversion" else [p])
            return out
        return self._conversion_passes(recipe)

    def _conversion_passes(self, recipe: str | None = None) -> list:
        return get_recipe(recipe or self.conversion.method).passes(self.conversion)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ungroup(values: dict, where: str) -> dict:
    """Flatten ``model: {name, weights}`` and ``dataset: {name, ...}`` into the flat keys."""
    out = dict(values)
    for key, members in GROUPS.items():
        v = out.get(key)
        if not isinstance(v, dict):
            continue
        del out[key]
        for k, sub in v.items():
            if k not in members:
                raise SnnconvError(f"{where}: unknown key '{key}.{k}' (expected one of: {', '.join(members)})")
            if members[k] in out and members[k] != key:
                raise SnnconvError(f"{where}: key '{key}.{k}' given twice (also as '{members[k]}')")
            out[members[k]] = sub
        if key not in out:
            raise SnnconvError(f"{where}: key '{key}.name' is missing (expected a {key} name)")
    return out


def _typed(cls, values: dict, where: str, prefix: str = ""):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in values.items():
        key = prefix + str(k)
        if k not in fields:
            raise SnnconvError(f"{where}: unknown key '{key}' (expected one of: {', '.join(prefix + f for f in fields)})")
        if k in ("conversion", "output") and cls is RunConfig:
            if not isinstance(v, dict):
                raise SnnconvError(f"{where}: key '{key}' must be a mapping, got {type(v).__name__} {v!r}")
            v = _typed(ConversionConfig if k == "conversion" else OutputConfig, v, where, f"{key}.")
        elif k == "timesteps":
            v = parse_timesteps(v, f"{where}: key 'timesteps'")
        elif key == "output.export":
            v = parse_exports(v, f"{where}: key '{key}'")
        elif k == "passes":
            v = None if v is None else normalize_passes(v, where)
        else:
            v = _check_type(key, v, fields[k].type, where)
            choices = tuple(RECIPES) if key == "conversion.method" else CHOICES.get(key)  # recipes register later too
            if key == "target" and v is not None:
                from snnconv.backends.exports import deployment_targets  # registered plug-ins, like the recipes

                choices = tuple(deployment_targets())
            if choices and v not in choices:
                raise SnnconvError(f"{where}: key '{key}' expects one of {', '.join(choices)}, got {v!r}")
        out[k] = v
    return cls(**out)


def normalize_passes(v, where: str) -> list:
    """Check a ``passes`` list against the pass registry; entries become ``"name"`` or ``{"name": ..., ...}``.

    Each pass is instantiated once so its settings are validated here, before any heavy work."""
    import snnconv.passes  # noqa: F401 - registers every built-in pass
    from snnconv.passes.base import PASSES, make_pass

    if not isinstance(v, list):
        raise SnnconvError(f"{where}: key 'passes' expects a list of pass names or mappings, got {type(v).__name__} {v!r}")
    out = []
    known = ", ".join(["conversion", *sorted(PASSES)])
    for i, entry in enumerate(v):
        key = f"passes[{i}]"
        if isinstance(entry, dict) and "name" not in entry and len(entry) == 1:
            (name, settings), = entry.items()  # {quantize: {bits: 8}}
            if settings is not None and not isinstance(settings, dict):
                raise SnnconvError(f"{where}: key '{key}.{name}' expects a mapping of pass settings, got {settings!r}")
            entry = {"name": name, **(settings or {})}
        if isinstance(entry, dict):
            name = entry.get("name")
        elif isinstance(entry, str):
            name = entry
        else:
            raise SnnconvError(f"{where}: key '{key}' expects a pass name or a mapping with 'name', got {entry!r}")
        if name == "conversion":
            if entry != "conversion":
                raise SnnconvError(f"{where}: key '{key}': 'conversion' takes its settings from the 'conversion' section")
            out.append(entry)
            continue
        if name not in PASSES:
            raise SnnconvError(f"{where}: key '{key}' names unknown pass {name!r} (expected one of: {known})")
        try:
            make_pass(entry)
        except SnnconvError as e:
            raise SnnconvError(f"{where}: key '{key}' ({name}): {e}") from None
        except (TypeError, ValueError) as e:
            raise SnnconvError(f"{where}: key '{key}' ({name}): invalid settings: {e}") from None
        out.append(entry)
    return out


_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}
POSITIVE_KEYS = {"calib_samples", "eval_samples", "batch_size", "chunk", "conversion.levels",
                 "conversion.calibration_timesteps"}


def _check_type(key: str, v, annotation: str, where: str):
    """Check ``v`` against a scalar field annotation such as ``int`` or ``str | None``."""
    parts = [p.strip() for p in str(annotation).split("|")]
    if v is None:
        if "None" in parts:
            return v
        raise SnnconvError(f"{where}: key '{key}' must not be empty")
    types = [_SCALARS[p] for p in parts if p in _SCALARS]
    if float in types and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    ok = any(isinstance(v, t) and not (t is int and isinstance(v, bool)) for t in types)
    if types and not ok:
        names = " or ".join(t.__name__ for t in types)
        raise SnnconvError(f"{where}: key '{key}' expects {names}, got {type(v).__name__} {v!r}")
    if key in POSITIVE_KEYS and v < 1:
        raise SnnconvError(f"{where}: key '{key}' expects a positive integer, got {v!r}")
    return v


def parse_timesteps(v, where: str = "timesteps") -> list[int]:
    if isinstance(v, str):
        parts = [p for p in v.replace(" ", "").split(",") if p]
    elif isinstance(v, int):
        parts = [v]
    elif isinstance(v, list):
        parts = v
    else:
        raise SnnconvError(f"{where}: expected a list of positive integers")
    try:
        ts = sorted({int(p) for p in parts})
    except (TypeError, ValueError):
        raise SnnconvError(f"{where}: expected a list of positive integers, got {v!r}") from None
    if not ts or ts[0] < 1:
        raise SnnconvError(f"{where}: expected a list of positive integers, got {v!r}")
    return ts


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; one-line errors for a missing file or bad YAML."""
    p = Path(path)
    if not p.is_file():
        raise SnnconvError(f"config file {p} not found")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SnnconvError(f"{p}: invalid YAML{at}: {getattr(e, 'problem', e)}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise SnnconvError(f"{p}: top level must be a mapping of keys to values")
    return loaded


def load_config(path: str | Path | None, overrides: dict, values: dict | None = None) -> RunConfig:
    """A RunConfig from YAML ``path`` (optional; or already-read ``values`` named by ``path``) with
    ``overrides`` (CLI flags that were given) on top."""
    where = str(path) if path else "options"
    if values is None:
        values = read_yaml(path) if path is not None else {}
    values = _ungroup(values, where)
    overrides = dict(overrides)
    sections = {s: {k: v for k, v in (overrides.pop(s, None) or {}).items() if v is not None}
                for s in ("conversion", "output")}
    values.update({k: v for k, v in overrides.items() if v is not None})
    for section, over in sections.items():
        if over:
            values[section] = {**(values.get(section) or {}), **over}
    return _typed(RunConfig, values, where)
