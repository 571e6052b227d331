"""Shared test setup: one thread, an isolated model cache, no progress bars, the data-dir fixture."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Every test (and every CLI subprocess, which inherits os.environ) uses a fresh, empty model
    cache, so nothing is read from or written to ~/.cache; progress bars are off."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SNNCONV_CACHE_DIR", str(tmp_path_factory.mktemp("snnconv-cache")))
    mp.setenv("SNNCONV_NO_PROGRESS", "1")
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("mplconfig")))
    yield
    mp.undo()


def _data_root() -> Path:
    env = os.environ.get("SNNCONV_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the real datasets ($SNNCONV_DATA_DIR, else <repo>/../shared/datasets); skips if absent."""
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root}")
    return root
