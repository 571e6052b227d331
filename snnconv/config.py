"""Run configuration: one dataclass, filled from CLI flags and/or a YAML file.

Every key is documented in ``configs/templates/base_config.yaml``. Unknown keys and wrong types
raise one-line errors naming the file and the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from snnconv.errors import SnnconvError

METHODS = {
    # method name -> threshold_balance settings (a method is a choice of passes, not a fork)
    "max": {"method": "max"},
    "percentile": {"method": "percentile"},
}


@dataclass
class ConversionConfig:
    method: str = "percentile"  # max | percentile
    percentile: float = 99.9
    granularity: str = "channel"  # layer | channel
    reset: str = "subtract"  # subtract | zero
    neuron: str = "if"  # if | lif
    leak: float = 0.95  # LIF decay per step (beta = exp(-dt/tau)); ignored for IF
    leak_compensation: bool = True  # LIF only: add the leaked charge back as bias
    v_init: float = 0.5  # initial membrane potential, fraction of threshold


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
    conversion: ConversionConfig = field(default_factory=ConversionConfig)
    passes: list | None = None  # explicit pipeline; None: built from `conversion`
    output_dir: str | None = None
    train_if_missing: bool = False

    def pipeline_spec(self) -> list:
        if self.passes is not None:
            return self.passes
        c = self.conversion
        if c.method not in METHODS:
            raise SnnconvError(f"unknown conversion method '{c.method}' (known: {', '.join(METHODS)})")
        tb = {"name": "threshold_balance", **METHODS[c.method], "percentile": c.percentile,
              "granularity": c.granularity, "reset": c.reset, "neuron": c.neuron, "v_init": c.v_init,
              "leak": c.leak if c.neuron == "lif" else 1.0}
        passes = ["fold_batchnorm", "remove_identity", tb]
        if c.neuron == "lif" and c.leak_compensation:
            passes.append("leak_compensation")
        return passes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _typed(cls, values: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in values.items():
        if k not in fields:
            raise SnnconvError(f"{where}: unknown key '{k}' (expected one of: {', '.join(fields)})")
        if k == "conversion":
            if not isinstance(v, dict):
                raise SnnconvError(f"{where}: key 'conversion' must be a mapping")
            v = _typed(ConversionConfig, v, f"{where}: conversion")
        elif k == "timesteps":
            v = parse_timesteps(v, f"{where}: key 'timesteps'")
        elif k == "passes" and v is not None and not isinstance(v, list):
            raise SnnconvError(f"{where}: key 'passes' must be a list of pass names or mappings")
        else:
            v = _check_type(k, v, fields[k].type, where)
        out[k] = v
    return cls(**out)


_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}
POSITIVE_KEYS = {"calib_samples", "eval_samples", "batch_size", "chunk"}


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
        raise SnnconvError(f"{where}: key '{key}' must be a positive integer, got {v!r}")
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


def load_config(path: str | Path | None, overrides: dict) -> RunConfig:
    """A RunConfig from YAML ``path`` (optional) with ``overrides`` (CLI flags that were given) on top."""
    values: dict = {}
    if path is not None:
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
        values.update(loaded)
    conv_over = {k: v for k, v in overrides.pop("conversion", {}).items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if conv_over:
        values["conversion"] = {**(values.get("conversion") or {}), **conv_over}
    return _typed(RunConfig, values, str(path) if path else "options")
