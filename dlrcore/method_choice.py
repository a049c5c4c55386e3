"""Which estimator fits: :func:`choose_method` ("exact" when the exact statistics fit in memory, else "sketch")."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .backend import is_device_input
from .inputs import DLRInputError
from .sketch_algebra import DEFAULT_OVERSAMPLE, DEFAULT_PROBES, DEFAULT_RANK

__all__ = ["available_memory", "choose_method", "exact_memory_bytes", "method_for_widths"]


def available_memory() -> int:
    """Bytes of memory available to this process now (``MemAvailable`` on Linux, else physical memory / 2)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def exact_memory_bytes(p: int, C: int, itemsize: int = 4) -> int:
    """Approximate peak bytes of the exact path's state for widths p and C (float64 co-moments, product-precision
    pending Gram, a copy while finishing, and the staging buffer)."""
    from .moments import stage_capacity

    q = int(p) + int(C)
    work = np.dtype(np.float32 if itemsize <= 4 else np.float64)
    return int((16 + itemsize) * q * q + stage_capacity(q, work) * (q * itemsize + 8 * int(C)))


def choose_method(
    features: Any,
    outputs: Any,
    *,
    max_memory: int | None = None,
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    probes: int = DEFAULT_PROBES,
) -> str:
    """``"exact"`` when the exact statistics fit in ``max_memory`` bytes (default half the available memory) and
    the arrays are host arrays, else ``"sketch"``.

    Examples
    --------
    >>> import numpy as np
    >>> choose_method(np.zeros((10, 100)), np.zeros((10, 3)))
    'exact'
    >>> choose_method(np.zeros((10, 100_000), np.float32), np.zeros((10, 3)), max_memory=2**30)
    'sketch'
    """
    shape_x = tuple(getattr(features, "shape", np.shape(features)))
    shape_f = tuple(getattr(outputs, "shape", np.shape(outputs)))
    if len(shape_x) != 2:
        raise DLRInputError(f"features: expected a 2-D array (samples x columns), got shape {shape_x}")
    C = int(shape_f[1]) if len(shape_f) == 2 else 1
    itemsize = int(getattr(getattr(features, "dtype", None), "itemsize", 8) or 8)
    host = not is_device_input(features)
    return method_for_widths(int(shape_x[1]), C, itemsize=itemsize, max_memory=max_memory, host=host)


def method_for_widths(p: int, C: int, *, itemsize: int = 4, max_memory: int | None = None, host: bool = True) -> str:
    """The rule of :func:`choose_method` from the widths alone (used by the command line on files)."""
    budget = int(max_memory) if max_memory is not None else available_memory() // 2
    if host and exact_memory_bytes(p, C, min(int(itemsize), 8)) <= budget:
        return "exact"
    return "sketch"
