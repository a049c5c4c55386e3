"""D_LR statistics of row-chunked Dask arrays and of files read by Dask workers.

Each row block becomes partial statistics (a :class:`~dlrcore.DLRStats` or a :class:`~dlrcore.DLRSketch`) on the
worker that holds or reads it, and a tree of merges (``split_every`` partials per merge) reduces them to one
object: memory per task is O(chunk + (p + C)^2) (O(chunk + (p + C) s) for the sketch), and the client receives
the merged statistics only, never raw rows. The merges are exact (Chan's pairwise update), so the result equals
the one-shot NumPy result up to rounding.

This module builds the task graphs, connects to the scheduler and checks the arguments; the tasks themselves (per-block
partials, file reads, merges) are :mod:`dlrcore.dask_tasks`. It needs ``dask[array]`` (and ``distributed`` for
clusters): ``pip install "dlrcore[dask]"``. ``import dlrcore`` never imports Dask; import this module explicitly
(``import dlrcore.dask``).

Examples
--------
>>> import numpy as np, dask.array as da, dlrcore, dlrcore.dask
>>> rng = np.random.default_rng(0)
>>> phi = rng.normal(size=(1000, 8)); out = phi @ rng.normal(size=(8, 3))
>>> st = dlrcore.dask.stats(da.from_array(phi, chunks=(300, 8)), da.from_array(out, chunks=(250, 3)))
>>> abs(st.result().value - dlrcore.dlr(phi, out).value) < 1e-10
True
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback

from .arrayfiles import check_output_choice
from .checks import check_choice, check_int, check_optional_int
from .dask_tasks import (
    check_files,
    describe_files,
    file_partial_sketch,
    file_partial_stats,
    merge,
    partial_sketch,
    partial_stats,
    weights_template,
)
from .inputs import DLRInputError, as_matrix
from .progress import Progress
from .sketch import DEFAULT_OVERSAMPLE, DEFAULT_PROBES, DEFAULT_RANK, DLRSketch, method_for_widths
from .stats import DLRStats

__all__ = ["sketch", "stats", "stats_from_files"]

#: Rows per task of :func:`stats_from_files` by default: about this many bytes of all inputs together.
CHUNK_BYTES = 64 * 2**20

#: ``scheduler`` names of Dask's local schedulers; any other string is a distributed scheduler address.
LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded", "processes", "multiprocessing")

#: Seconds to wait for a distributed scheduler before giving up with a one-line error.
CONNECT_TIMEOUT_S = 10


def _check_address(address: str) -> None:
    """A distributed scheduler address is ``scheme://host:port`` (tcp, tls, ucx, inproc, ws, wss) or ``host:port``;
    anything else is refused at once instead of after a connection timeout."""
    import re

    if not re.fullmatch(r"((tcp|tls|ucx|inproc|ws|wss)://)?[A-Za-z0-9_.\-\[\]:]+:\d+(/.*)?", address):
        raise DLRInputError(
            f"scheduler {address!r} is neither a local Dask scheduler ({', '.join(LOCAL_SCHEDULERS)}) nor a "
            "distributed scheduler address such as tcp://host:8786"
        )


# ---------------------------------------------------------------------------------------------- graph helpers


def _tree(parts: Sequence[Any], split_every: int, token: str) -> Any:
    """Reduce delayed partials with ``split_every``-ary delayed merges; returns the root Delayed."""
    level = list(parts)
    depth = 0
    while len(level) > 1:
        level = [
            dask.delayed(merge, pure=True)(*level[i : i + split_every], dask_key_name=f"dlr-merge-{token}-{depth}-{j}")
            for j, i in enumerate(range(0, len(level), split_every))
        ]
        depth += 1
    return level[0]


def _reduced(parts: list, split_every: int, token: str, scheduler: Any, compute: bool) -> Any:
    """The merge tree of the array partials, computed (or its root Delayed with ``compute=False``)."""
    if not parts:
        raise DLRInputError("features: no rows (n = 0)")
    root = _tree(parts, split_every, token)
    return root.compute(scheduler=scheduler) if compute else root


def _check_split(split_every: int) -> int:
    return check_int(split_every, "split_every", minimum=2)


def _as_dask(a: Any, name: str, row_chunks: tuple[int, ...] | None, ndims: tuple[int, ...]) -> da.Array:
    """Check a dask (or, for outputs and labels, NumPy) argument and give it the features' row chunks."""
    if isinstance(a, np.ndarray) and row_chunks is not None and a.ndim in ndims and a.shape[0] == sum(row_chunks):
        a = da.from_array(a, chunks=(row_chunks, *tuple(-1 for _ in a.shape[1:])))
    elif isinstance(a, np.ndarray) and row_chunks is not None:
        a = da.from_array(a, chunks=a.shape or -1)  # one block: only for the checks and messages below
    if not isinstance(a, da.Array):
        allowed = "a dask.array.Array" + (" or a NumPy array" if row_chunks is not None else "")
        hint = "" if row_chunks is not None else " (wrap it: dask.array.from_array(a, chunks=(rows, -1)))"
        raise DLRInputError(f"{name}: expected {allowed}, got {type(a).__module__}.{type(a).__name__}{hint}")
    if a.ndim not in ndims:
        dims = " or ".join(f"{d}-D" for d in ndims)
        raise DLRInputError(f"{name}: expected a {dims} array, got ndim={a.ndim} with shape {a.shape}")
    if any(math.isnan(c) for c in a.chunks[0]):
        raise DLRInputError(f"{name}: unknown chunk sizes along the rows; call {name}.compute_chunk_sizes() first")
    as_matrix(np.empty((0,) * a.ndim, dtype=a.dtype), name, allow_1d=True)  # dtype check: complex, object, ...
    if row_chunks is None:
        return a if a.ndim == 1 or len(a.chunks[1]) == 1 else a.rechunk({1: -1})
    n = sum(row_chunks)
    if a.shape[0] != n:
        raise DLRInputError(f"{name}: {a.shape[0]} rows but features have {n} (row counts must match)")
    want = (tuple(row_chunks), *tuple((s,) for s in a.shape[1:]))
    return a if a.chunks == want else a.rechunk(want)


def _blocks(a: da.Array | None, nblocks: int) -> list[Any]:
    if a is None:
        return [None] * nblocks
    d = a.to_delayed()
    return list(d.reshape(-1)) if d.ndim > 1 else list(d)


def _row_blocks(features: Any, outputs: Any, labels: Any) -> tuple[list[Any], list[Any], list[Any], list[int]]:
    x = _as_dask(features, "features", None, (2,))
    rows = tuple(int(c) for c in x.chunks[0])
    f = None if outputs is None else _as_dask(outputs, "outputs", rows, (1, 2))
    y = None if labels is None else _as_dask(labels, "labels", rows, (1, 2))
    k = len(rows)
    return _blocks(x, k), _blocks(f, k), _blocks(y, k), list(rows)


# ---------------------------------------------------------------------------------------------- public API


def stats(
    features: Any,
    outputs: Any,
    labels: Any = None,
    *,
    num_classes: int | None = None,
    precision: str = "auto",
    split_every: int = 8,
    scheduler: Any = None,
    compute: bool = True,
) -> DLRStats | Any:
    """Exact D_LR statistics of row-chunked Dask arrays, reduced on the workers.

    Every row block becomes a partial :class:`~dlrcore.DLRStats` and a ``split_every``-ary tree of merges
    reduces them; the client receives only the merged statistics.

    Parameters
    ----------
    features : dask.array.Array
        n x p features, chunked along the rows. Column chunks are rechunked to one (``rechunk({1: -1})``): a
        task needs whole rows. A NumPy array is refused (use :class:`~dlrcore.DLRStats` directly, or wrap it with
        ``dask.array.from_array``).
    outputs : dask.array.Array or numpy.ndarray
        n x C outputs (1-D means C = 1). Rechunked to the features' row chunks when they differ (always
        correct, and cheap next to the products). A NumPy array is wrapped with ``dask.array.from_array`` in the
        features' row chunks: it then travels from the client inside the graph.
    labels : dask.array.Array or numpy.ndarray, optional
        Integer class ids (n,) or an n x C_y target matrix; chunked like ``outputs``.
    num_classes, precision
        As for :class:`~dlrcore.DLRStats`.
    split_every : int
        Partial statistics merged per task of the reduction tree (at least 2).
    scheduler : optional
        Passed to ``dask.compute``: None uses Dask's default (the threaded scheduler, or the active
        ``distributed.Client``); ``"threads"``, ``"synchronous"`` or a ``Client`` select one.
    compute : bool
        When false, return the ``dask.delayed`` object of the merged statistics instead of computing it (to
        compute it together with other collections).

    Returns
    -------
    DLRStats
        Equal, up to rounding, to ``DLRStats().update(features, outputs, labels=labels)`` on the whole arrays.

    Raises
    ------
    DLRInputError
        If an argument is not a Dask array (NumPy arrays are accepted for outputs and labels), has the wrong
        number of dimensions, unknown row chunk sizes, a row count other than the features', or a non-numeric
        dtype. Bad values (NaN, Inf) are reported when the tasks run.

    Examples
    --------
    >>> import numpy as np, dask.array as da, dlrcore
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=(600, 5)); f = x @ rng.normal(size=(5, 2)); y = rng.integers(0, 2, 600)
    >>> st = stats(da.from_array(x, chunks=100), da.from_array(f, chunks=200), y, scheduler="threads")
    >>> st.n, st.label_kind
    (600, 'classes')
    >>> abs(st.result().value - dlrcore.DLRStats().update(x, f).result().value) < 1e-10
    True
    """
    split_every = _check_split(split_every)
    template = DLRStats(num_classes=num_classes, precision=precision)
    if outputs is None:
        raise DLRInputError("outputs: required (weights mode: use dlrcore.DLRStats(weight=...) per block)")
    xs, fs, ys, rows = _row_blocks(features, outputs, labels)
    token = dask.base.tokenize(features, outputs, labels, num_classes, precision)
    tmpl = dask.delayed(template, name=f"dlr-template-{token}")
    parts = [
        dask.delayed(partial_stats, pure=True)(tmpl, x, f, y, dask_key_name=f"dlr-partial-{token}-{i}")
        for i, (x, f, y, r) in enumerate(zip(xs, fs, ys, rows))
        if r > 0
    ]
    return _reduced(parts, split_every, token, scheduler, compute)


def sketch(
    features: Any,
    outputs: Any,
    *,
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    precision: str = "auto",
    split_every: int = 8,
    scheduler: Any = None,
    compute: bool = True,
) -> DLRSketch | Any:
    """One-pass :class:`~dlrcore.DLRSketch` of row-chunked Dask arrays, reduced on the workers.

    Every row block is sketched with the same ``seed`` (hence the same test matrix), so the partial sketches
    merge exactly; memory per task is O(chunk + (p + C) s) with ``s = rank + oversample + probes``.

    Parameters
    ----------
    features, outputs
        As for :func:`stats` (no labels: the sketch does not keep them).
    rank, oversample, probes, seed, precision
        As for :class:`~dlrcore.DLRSketch`.
    split_every, scheduler, compute
        As for :func:`stats`.

    Returns
    -------
    DLRSketch

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> rng = np.random.default_rng(2)
    >>> x = rng.normal(size=(800, 40)); f = x @ rng.normal(size=(40, 3))
    >>> sk = sketch(da.from_array(x, chunks=(200, 20)), da.from_array(f, chunks=400), rank=8, probes=8)
    >>> sk.n, sk.p, sk.C
    (800, 40, 3)
    """
    split_every = _check_split(split_every)
    params: dict[str, Any] = {
        "rank": rank, "oversample": oversample, "probes": probes, "seed": seed, "precision": precision
    }
    DLRSketch(**params)  # validates the parameters on the client
    if outputs is None:
        raise DLRInputError("outputs: required")
    xs, fs, _, rows = _row_blocks(features, outputs, None)
    token = dask.base.tokenize(features, outputs, params)
    parts = [
        dask.delayed(partial_sketch, pure=True)(params, x, f, dask_key_name=f"dlr-partial-{token}-{i}")
        for i, (x, f, r) in enumerate(zip(xs, fs, rows))
        if r > 0
    ]
    return _reduced(parts, split_every, token, scheduler, compute)


def stats_from_files(
    features: str,
    outputs: str | None = None,
    labels: str | None = None,
    *,
    scheduler: str | None = None,
    chunk_rows: int | None = None,
    num_classes: int | None = None,
    precision: str = "auto",
    method: str = "exact",
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    weight: str | None = None,
    bias: str | None = None,
    split_every: int = 8,
    max_memory: int | None = None,
    progress: bool = False,
) -> DLRStats | DLRSketch:
    """D_LR statistics of arrays in files, read in row blocks by the Dask workers themselves.

    The client sends file names and row ranges only: every task opens its files with
    :func:`dlrcore.arrayfiles.open_array` (``.npy`` by positioned block reads, ``.npz``, ``.safetensors``, zarr,
    HDF5 and whatever formats that function reads) and reads rows ``[start, stop)``; the shapes are also read by a
    task. So the
    paths must name the same files on every worker (a shared or replicated file system); the client need not see
    them. Each worker process keeps its open files (one handle per file version) between tasks. ``.npz``
    members cannot be read in blocks: each worker process loads such an array whole once, so prefer ``.npy``
    (or chunked formats) for large data.

    Parameters
    ----------
    features : str
        ``PATH`` or ``PATH:KEY`` of the n x p features.
    outputs : str, optional
        The n x C outputs (1-D means C = 1); required unless ``weight`` is given.
    labels : str, optional
        Integer class ids (n,) or an n x C_y target matrix (exact method only).
    scheduler : str, optional
        Address of a distributed scheduler (``"tcp://host:8786"``): a ``distributed.Client`` is connected for the
        computation and closed afterwards. ``"threads"``, ``"synchronous"`` or ``"processes"`` pick a local Dask
        scheduler. None uses Dask's default: the threaded scheduler, or the active ``distributed.Client``.
    chunk_rows : int, optional
        Rows per task; default about 64 MiB of all inputs together per task, at least 1024 rows.
    num_classes, precision
        As for :class:`~dlrcore.DLRStats`.
    method : {"exact", "sketch", "auto"}
        ``"exact"`` gives a :class:`~dlrcore.DLRStats`, ``"sketch"`` a :class:`~dlrcore.DLRSketch` (no labels,
        no weight); ``"auto"`` chooses as ``dlr compute --method auto`` does.
    rank, oversample, probes, seed
        Sketch parameters (``method="sketch"``).
    weight, bias : str, optional
        Last-layer weight (C x p) and bias (C,) files instead of ``outputs``: outputs are never formed (see
        :class:`~dlrcore.DLRStats`). They are read whole, once, by one task.
    split_every : int
        Partial statistics merged per task of the reduction tree.
    max_memory : int, optional
        Memory budget in bytes for ``method="auto"``.
    progress : bool
        Show a progress bar on stderr (rows whose partial statistics are done).

    Returns
    -------
    DLRStats or DLRSketch

    Raises
    ------
    DLRInputError
        For unreadable files, wrong shapes or row counts that differ between the files.

    Examples
    --------
    >>> import numpy as np, os, tempfile, dlrcore
    >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(3)
    >>> x = rng.normal(size=(500, 6)); f = x @ rng.normal(size=(6, 2))
    >>> np.save(os.path.join(d, "x.npy"), x); np.save(os.path.join(d, "f.npy"), f)
    >>> st = stats_from_files(os.path.join(d, "x.npy"), os.path.join(d, "f.npy"), chunk_rows=128,
    ...                       scheduler="threads")
    >>> st.n, abs(st.result().value - dlrcore.dlr(x, f).value) < 1e-10
    (500, True)
    """
    split_every = _check_split(split_every)
    check_choice(method, "method", ("exact", "sketch", "auto"))
    check_optional_int(chunk_rows, "chunk_rows", error=DLRInputError)
    check_output_choice(outputs, weight, bias)
    specs = {"features": str(features)}
    if outputs is not None:
        specs["outputs"] = str(outputs)
    if labels is not None:
        specs["labels"] = str(labels)
    with _Runner(scheduler) as run:
        meta = run.value(dask.delayed(describe_files, pure=False)(specs))
        n, p, C = check_files(meta)
        itemsize = np.dtype(meta["features"][2]).itemsize
        if method == "auto":
            auto = method_for_widths(p, C, itemsize=itemsize, max_memory=max_memory)
            method = "exact" if weight is not None else auto
        row_bytes = sum(int(np.prod(s[1:], dtype=np.int64)) * np.dtype(t).itemsize for _, s, t in meta.values())
        step = int(chunk_rows) if chunk_rows is not None else max(1024, CHUNK_BYTES // max(row_bytes, 1))
        ranges = [(i, min(i + step, n)) for i in range(0, n, step)]
        token = uuid.uuid4().hex[:12]
        if method == "sketch":
            if labels is not None:
                raise DLRInputError("labels are not supported with the sketch method (labels are not sketched)")
            if weight is not None:
                raise DLRInputError("weight is not supported with the sketch method; give outputs")
            params: dict[str, Any] = {
                "rank": rank, "oversample": oversample, "probes": probes, "seed": seed, "precision": precision
            }
            DLRSketch(**params)
            func: Callable[..., Any] = file_partial_sketch
            first: Any = params
        else:
            template = DLRStats(num_classes=num_classes, precision=precision)  # validates them on the client
            if weight is not None:
                first = dask.delayed(weights_template, pure=False)(weight, bias, precision, num_classes)
            else:
                first = dask.delayed(template, name=f"dlr-template-{token}")
            func = file_partial_stats
        parts = [
            dask.delayed(func, pure=False)(first, specs, a, b, dask_key_name=f"dlr-partial-{token}-{i}")
            for i, (a, b) in enumerate(ranges)
        ]
        if not parts:
            raise DLRInputError(f"{meta['features'][0]}: no rows (n = 0)")
        return run.reduce(parts, [b - a for a, b in ranges], split_every, token, progress)


class _Runner:
    """Runs delayed work on a local scheduler or on a distributed cluster connected for the duration."""

    def __init__(self, scheduler: str | None) -> None:
        self.scheduler = scheduler
        self.client: Any = None
        self.owned = False  # whether the client was connected here (and is closed on exit)

    def __enter__(self) -> _Runner:
        s = self.scheduler
        if s is not None and s not in LOCAL_SCHEDULERS:
            from distributed import Client

            _check_address(s)
            try:
                self.client = Client(s, set_as_default=False, timeout=f"{CONNECT_TIMEOUT_S}s")
            except OSError as exc:  # TimeoutError and refused connections
                raise DLRInputError(
                    f"could not reach the Dask scheduler at {s!r} within {CONNECT_TIMEOUT_S} s "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            self.owned = True
        elif s is None:
            try:
                from distributed import get_client

                self.client = get_client()  # the user's active client, if any (not closed here)
            except (ImportError, ValueError):
                self.client = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None and self.owned:
            self.client.close()

    def value(self, obj: Any) -> Any:
        if self.client is not None:
            return self.client.compute(obj).result()
        return obj.compute(scheduler=self.scheduler)

    def reduce(self, parts: list, rows: list[int], split_every: int, token: str, progress: bool) -> Any:
        done_rows = dict(zip((p.key for p in parts), rows))
        with Progress(sum(rows), "dlr on dask", enabled=progress) as bar:
            if self.client is None:
                root = _tree(parts, split_every, token)
                if not progress:
                    return root.compute(scheduler=self.scheduler)
                with _RowsCallback(done_rows, bar.advance):
                    return root.compute(scheduler=self.scheduler)
            from distributed import as_completed

            futures = self.client.compute(parts)
            level: list[Any] = futures
            while len(level) > 1:
                level = [
                    self.client.submit(merge, *level[i : i + split_every], pure=False)
                    for i in range(0, len(level), split_every)
                ]
            root = level[0]
            if progress:
                done = as_completed(futures, loop=self.client.loop)
                del futures, level
                for fut in done:
                    bar.advance(done_rows.get(fut.key, 0))
            else:
                del futures, level
            return root.result()


class _RowsCallback(Callback):
    """Advance a progress bar by the rows of each partial-statistics task the local scheduler finishes."""

    def __init__(self, rows: dict, advance: Callable[[int], Any]) -> None:
        super().__init__()
        self._rows, self._advance = rows, advance

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in self._rows:
            self._advance(self._rows[key])
