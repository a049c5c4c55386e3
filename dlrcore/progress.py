"""A dependency-free progress bar on stderr for long passes over data."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Report progress of a pass over ``total`` units (rows) on a stream, at most a few times a second.

    Parameters
    ----------
    total : int
        Units of work in all.
    label : str
        Text in front of the bar.
    enabled : bool
        When false nothing is printed.
    stream : file, optional
        Where to print (stderr by default).

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> with Progress(10, "rows", stream=buf, interval=0.0) as bar:
    ...     bar.advance(10)
    >>> "10/10" in buf.getvalue()
    True
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 0.25,
    ) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self._start = time.perf_counter()
        self._last = -1e9

    def advance(self, k: int) -> None:
        """Count ``k`` more units done and redraw if due."""
        self.done += int(k)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = now - self._start
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        self.stream.write(
            f"\r{self.label} [{bar}] {100 * frac:5.1f}% {self.done}/{self.total} {elapsed:6.1f}s eta {eta:5.1f}s"
        )
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._last > -1e9:
            self.stream.write("\n")
            self.stream.flush()
