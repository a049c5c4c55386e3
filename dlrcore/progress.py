"""A dependency-free progress display on stderr for long passes over data (CLI and adapters).

On a terminal the display redraws one line in place (``\r``). When the stream is not a terminal (a log file, a
pipe, a batch job's output) it writes plain, complete lines instead, at most one every ``log_interval`` seconds
plus a last one when the pass ends, so that logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Report progress of a pass over ``total`` units on a stream, at most a few times a second.

    Parameters
    ----------
    total : int or None
        Units of work in all (None when unknown: a counter is shown instead of a bar).
    label : str
        Text in front of the bar.
    enabled : bool
        When false nothing is printed.
    stream : file, optional
        Where to print (stderr by default).
    interval : float
        Least seconds between redraws.
    delay : float
        Nothing is shown before the pass has run this long (short passes stay silent).
    unit : str
        Name of the units counted.
    log_interval : float
        Least seconds between lines when the stream is not a terminal.

    Examples
    --------
    >>> import io
    >>> buf = io.StringIO()
    >>> with Progress(10, "rows", stream=buf, interval=0.0) as bar:
    ...     bar.advance(10)
    >>> "10/10" in buf.getvalue()
    True
    >>> buf = io.StringIO()
    >>> with Progress(None, "collect", stream=buf, interval=0.0, unit="batches") as bar:
    ...     bar.advance(3, note="120 samples")
    >>> "3 batches, 120 samples" in buf.getvalue()
    True
    """

    def __init__(
        self,
        total: int | None,
        label: str = "",
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 0.25,
        delay: float = 0.0,
        unit: str = "",
        log_interval: float = 10.0,
    ) -> None:
        self.total = None if total is None else max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.delay = delay
        self.unit = unit
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.log_interval = log_interval
        self.done = 0
        self.note = ""
        self._start = time.perf_counter()
        self._last = -1e9
        self.drawn = False

    def advance(self, k: int, note: str = "", *, final: bool = False) -> None:
        """Count ``k`` more units done (``note``: extra text such as a sample count) and redraw if due."""
        self.done += int(k)
        self.note = note or self.note
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._start < self.delay:
            return
        complete = final or (self.total is not None and self.done >= self.total)
        if complete and not self.drawn and self.delay > 0:
            return  # a pass that ended before the delay stays silent
        every = self.interval if self.tty else max(self.interval, self.log_interval)
        if now - self._last >= every or (complete and self.tty):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        unit = f" {self.unit}" if self.unit else ""
        note = f", {self.note}" if self.note else ""
        if self.total is not None:
            frac = min(self.done / self.total, 1.0)
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
            text = f"[{bar}] {100 * frac:5.1f}% {self.done}/{self.total}{unit}{note} {elapsed:6.1f}s eta {eta:5.1f}s"
        else:
            text = f"{self.done}{unit}{note}, {elapsed:.1f}s"
        self.stream.write(f"\r{self.label} {text}" if self.tty else f"{self.label} {text}\n")
        self.stream.flush()
        self.drawn = True
        self._shown = self.done

    def close(self) -> None:
        """End the display: on a terminal end the line; in a log write the final state unless it is shown."""
        if not self.enabled:
            return
        if self.tty:
            if self.drawn:
                self.stream.write("\n")
                self.stream.flush()
        else:
            now = time.perf_counter()
            started = self.drawn or (now - self._start >= self.delay and self.done > 0)
            if started and getattr(self, "_shown", None) != self.done:
                self._draw(now)
        self.drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
