"""Progress output stays readable in logs (issue 15): complete lines when the stream is not a terminal, one line
redrawn with carriage returns when it is."""

from __future__ import annotations

import io

from dlrcore.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_complete_lines_without_carriage_returns():
    log = io.StringIO()
    with Progress(10, "rows", stream=log, interval=0.0, log_interval=0.0) as bar:
        for _ in range(5):
            bar.advance(2)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 5 and all(line.startswith("rows [") for line in lines)
    assert "10/10" in lines[-1]


def test_a_log_gets_at_most_one_line_per_interval_and_the_final_state():
    log = io.StringIO()
    with Progress(1000, "rows", stream=log) as bar:  # default: a line every 10 s in a log
        for _ in range(1000):
            bar.advance(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "1/1000" in lines[0] and "1000/1000" in lines[1]


def test_a_terminal_gets_one_redrawn_line():
    term = Terminal()
    with Progress(4, "rows", stream=term, interval=0.0) as bar:
        for _ in range(4):
            bar.advance(1)
    text = term.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1


def test_short_passes_stay_silent_with_a_delay():
    for stream in (io.StringIO(), Terminal()):
        with Progress(3, "collect", stream=stream, delay=60.0) as bar:
            bar.advance(3)
        assert stream.getvalue() == ""
