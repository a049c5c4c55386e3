"""Repository-level pytest configuration: skip collecting optional-framework modules whose framework is absent."""

from __future__ import annotations

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:  # the torch adapter's doctests need torch
    collect_ignore.append("dlrcore/adapters/torch.py")
if importlib.util.find_spec("matplotlib") is None:  # the plot module's doctests draw figures
    collect_ignore.append("dlrcore/plot.py")
