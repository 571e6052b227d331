"""Progress bars that stay quiet when stderr is not a terminal (CI, logs)."""
from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm


def _silenced() -> bool:
    return bool(os.environ.get("SNNCONV_NO_PROGRESS"))


def _bars_off() -> bool:
    return not sys.stderr.isatty() or _silenced() or os.environ.get("CI") == "true"


def progress(iterable=None, **kwargs):
    """A tqdm bar, disabled off-terminal or when ``SNNCONV_NO_PROGRESS`` is set."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=_bars_off(), **kwargs)


class ProgressLines:
    """Progress of long work where no bar is shown (stderr not a terminal, CI): a log line every ``every``
    of ``total`` steps and at least every ``max_seconds``, with elapsed time, ETA and a running value (when
    given). Does nothing on a terminal (the bar shows it) or with ``SNNCONV_NO_PROGRESS``, and nothing in the
    first ``quiet_seconds`` (short work stays silent)."""

    def __init__(self, log, desc: str, total: int, start: int = 0, every: float = 0.05, max_seconds: float = 120.0,
                 quiet_seconds: float = 0.0):
        self.active = _bars_off() and not _silenced()
        self.log, self.desc, self.total, self.start = log, desc, total, start
        self.t0 = self.last_t = time.time()
        self.step_every = max(1, int(total * every))
        self.max_seconds, self.quiet_seconds = max_seconds, quiet_seconds

    def update(self, done: int, loss: float | None = None) -> None:
        now = time.time()
        if not self.active or now - self.t0 < self.quiet_seconds or \
                (done % self.step_every and now - self.last_t < self.max_seconds and done != self.total):
            return
        self.last_t = now
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        self.log(f"{self.desc}: {100 * done / self.total:.0f}% ({done}/{self.total} batches), "
                 f"{(now - self.t0) / 60:.1f} min, ETA {eta / 60:.1f} min" + ("" if loss is None else f", loss {loss:.3f}"))
