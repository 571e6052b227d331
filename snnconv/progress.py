"""Progress bars that stay quiet when stderr is not a terminal (CI, logs)."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    """A tqdm bar, disabled off-terminal or when ``SNNCONV_NO_PROGRESS`` is set."""
    quiet = not sys.stderr.isatty() or bool(os.environ.get("SNNCONV_NO_PROGRESS")) or os.environ.get("CI") == "true"
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=quiet, **kwargs)
