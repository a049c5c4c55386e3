"""The tasks Dask runs for :mod:`dlrcore.dask`, on the workers: partial statistics of one row block (given, or read
from files by the task itself) and the exact merge of partials.

They are module-level functions, so that the distributed scheduler pickles them by reference, and this module does
not import Dask: a task needs only NumPy, the statistics and :mod:`dlrcore.arrayfiles`. Graph building, the
scheduler connection and the public functions live in :mod:`dlrcore.dask`.

Examples
--------
>>> import numpy as np
>>> from dlrcore import DLRStats
>>> rng = np.random.default_rng(0); x = rng.normal(size=(40, 3)); f = x @ rng.normal(size=(3, 2))
>>> parts = [partial_stats(DLRStats(), x[i : i + 10], f[i : i + 10], None) for i in range(0, 40, 10)]
>>> merge(*parts).n
40
"""

from __future__ import annotations

import functools
import os
from typing import Any, TypeVar

import numpy as np

from .arrayfiles import ArraySource, open_array, split_key
from .inputs import DLRInputError
from .sketch import DLRSketch
from .stats import DLRStats

__all__ = [
    "check_files",
    "describe_files",
    "file_partial_sketch",
    "file_partial_stats",
    "merge",
    "partial_sketch",
    "partial_stats",
    "weights_template",
]

#: The statistics a task returns: exact statistics or a sketch (the two kinds never mix in one reduction).
Partial = TypeVar("Partial", DLRStats, DLRSketch)


# ---------------------------------------------------------------------------------------------- row blocks
def partial_stats(template: DLRStats, x: np.ndarray, f: np.ndarray | None, y: np.ndarray | None) -> DLRStats:
    """Statistics of one row block (``template`` carries the options and, in weights mode, ``W^T W``)."""
    st = template.copy()
    if x.shape[0]:
        st.update(x, f, labels=y)
    return st.copy()  # folded in, without the staging buffer: the partial holds O((p + C)^2) only


def partial_sketch(params: dict[str, Any], x: np.ndarray, f: np.ndarray) -> DLRSketch:
    """Sketch of one row block (every block with the same parameters and seed, so that the sketches merge)."""
    sk = DLRSketch(**params)
    if x.shape[0]:
        sk.update(x, f)
    return sk


def merge(*parts: Partial) -> Partial:
    """Merge into a new object; the inputs are left untouched (a retried task sees them unchanged)."""
    out = parts[0].copy()
    for other in parts[1:]:
        out.merge(other)
    return out


# ---------------------------------------------------------------------------------------------- files
@functools.lru_cache(maxsize=16)
def _open_cached(spec: str, stamp: tuple[int, int]) -> ArraySource:
    """One :class:`~dlrcore.arrayfiles.ArraySource` per (file, version) and worker process."""
    return open_array(spec)


def _source(spec: str) -> ArraySource:
    path = split_key(spec)[0]
    try:
        st = os.stat(path)
        stamp = (int(st.st_mtime_ns), int(st.st_size))
    except OSError:
        return open_array(spec)  # raises the precise error (missing file, ...)
    return _open_cached(spec, stamp)


def describe_files(specs: dict[str, str]) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """Name, shape and dtype of each file (run where the files are: on a worker when a cluster is used)."""
    out = {}
    for role, spec in specs.items():
        src = _source(spec)
        out[role] = (src.name, tuple(int(s) for s in src.shape), str(src.dtype))
    return out


def check_files(meta: dict[str, tuple[str, tuple[int, ...], str]]) -> tuple[int, int, int]:
    """``(n, p, C)`` of the files :func:`describe_files` described; refuses wrong shapes and row counts."""
    name, shape, _ = meta["features"]
    if len(shape) != 2:
        raise DLRInputError(f"{name}: expected a 2-D n x p array, got shape {shape}")
    n, p = shape
    C = 1
    for role in ("outputs", "labels"):
        if role not in meta:
            continue
        other, oshape, _ = meta[role]
        if len(oshape) not in (1, 2):
            raise DLRInputError(f"{other}: expected a 1-D or 2-D {role} array, got shape {oshape}")
        if oshape[0] != n:
            raise DLRInputError(f"row counts differ: {name} has {n} rows, {other} has {oshape[0]}")
        if role == "outputs":
            C = 1 if len(oshape) == 1 else oshape[1]
    return n, p, C


def _read(spec: str, start: int, stop: int) -> np.ndarray:
    return _source(spec).read(start, stop)


def file_partial_stats(template: DLRStats, specs: dict[str, str], start: int, stop: int) -> DLRStats:
    """:func:`partial_stats` of rows ``[start, stop)`` of the files ``specs`` (features, outputs, labels)."""
    f, y = specs.get("outputs"), specs.get("labels")
    return partial_stats(
        template,
        _read(specs["features"], start, stop),
        None if f is None else _read(f, start, stop),
        None if y is None else _read(y, start, stop),
    )


def file_partial_sketch(params: dict[str, Any], specs: dict[str, str], start: int, stop: int) -> DLRSketch:
    """:func:`partial_sketch` of rows ``[start, stop)`` of the files ``specs`` (features, outputs)."""
    return partial_sketch(params, _read(specs["features"], start, stop), _read(specs["outputs"], start, stop))


def weights_template(weight: str, bias: str | None, precision: str, num_classes: int | None) -> DLRStats:
    """Empty statistics in weights mode, the weight (and bias) read whole from their files."""
    w = _source(weight)
    b = None if bias is None else _source(bias)
    return DLRStats(
        weight=w.read(0, w.rows),
        bias=None if b is None else b.read(0, b.rows),
        precision=precision,
        num_classes=num_classes,
    )
