"""Where tensors live: ``cpu``, ``cuda`` or ``cuda:N`` for training, conversion and simulation.

:func:`resolve_device` turns a user's ``--device`` into a ``torch.device`` or a one-line error, before
any data is loaded. Asking for ``cpu`` touches nothing CUDA-related (no CUDA initialisation cost on a
CPU-only machine).
"""
from __future__ import annotations

import torch

from snnconv.errors import SnnconvError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``torch.device(name)`` (``None``: cpu), or a clear error when that device is not present here."""
    if name is None:
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SnnconvError(f"unknown device {name!r} (expected cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise SnnconvError(f"device {name!r}: only cpu and cuda are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SnnconvError(f"device {name!r} requested but this torch build sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SnnconvError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
