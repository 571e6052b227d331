"""Checkpoint files and the local model cache.

A checkpoint is a plain dict (model name, dataset, state_dict, metrics) so it loads with
``torch.load(weights_only=True)``: no pickled code ever runs from a checkpoint file.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from snnconv.errors import SnnconvError

BUNDLED_DIR = Path(__file__).resolve().parent / "assets"


def cache_dir() -> Path:
    """``$SNNCONV_CACHE_DIR`` or ``~/.cache/snnconv/models``."""
    return Path(os.environ.get("SNNCONV_CACHE_DIR", Path.home() / ".cache" / "snnconv" / "models"))


def cached_checkpoint(model: str, dataset: str) -> Path:
    return cache_dir() / f"{model}-{dataset}.pt"


#: checkpoints committed with the benchmarks (a source checkout has them; an installed wheel does not):
#: ``<model>-<dataset>.pt`` here is found by ``snnconv convert --model <model> --dataset <dataset>``
REPO_CHECKPOINTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "checkpoints"


def repo_checkpoint(model: str, dataset: str) -> Path | None:
    p = REPO_CHECKPOINTS / f"{model}-{dataset}.pt"
    return p if p.is_file() else None


def bundled_checkpoint(model: str, dataset: str) -> Path | None:
    p = BUNDLED_DIR / f"{model}-{dataset}.pt"
    return p if p.is_file() else None


def read_torch_file(path: str | Path, expected: str = "a checkpoint") -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors that say what the file should be."""
    path = Path(path)
    if not path.is_file():
        raise SnnconvError(f"{path} not found (expected {expected})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/unsafe files
        text = str(e).strip()
        if "Unsupported global" in text:
            glob = text.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in text else "an object"
            why = f"it holds pickled code ({glob}), which snnconv never runs (weights_only loading)"
        else:
            why = "it is not a complete torch.save file (corrupt, truncated or another format)"
        raise SnnconvError(f"cannot load {path}: expected {expected} saved with torch.save; {why}") from None


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a bare state_dict is wrapped as ``{'state_dict': ...}``."""
    path = Path(path)
    if not path.is_file():
        raise SnnconvError(f"checkpoint {path} not found")
    obj = read_torch_file(path, "a checkpoint (a dict with 'state_dict', as written by snnconv train)")
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise SnnconvError(f"checkpoint {path} holds no state_dict (expected a dict with 'state_dict', as written by "
                       f"snnconv train, or a bare state_dict)")


def apply_state_dict(model: nn.Module, ckpt: dict, source: str) -> None:
    """Load weights into ``model``, turning a shape/key mismatch into one line."""
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise SnnconvError(f"checkpoint {source} does not match the architecture: {detail[:300]}") from None


def save_checkpoint(path: str | Path, payload: dict, overwrite: bool = True) -> None:
    """Write atomically (uniquely named temporary file + rename) so an interrupted save never leaves a
    corrupt file. ``overwrite=False`` refuses an existing ``path`` (:func:`snnconv.output.atomic_file`);
    callers that write a user-named path check it with ``check_output_file`` before the work."""
    from snnconv.output import atomic_file

    with atomic_file(path, overwrite, what="checkpoint") as tmp:
        torch.save(payload, tmp)
