"""Reading feature and output matrices from files (``.npy``, ``.npz``, ``.safetensors``, zarr, HDF5) in row batches.

A file argument is ``PATH`` or ``PATH:KEY`` (the key of an array inside an ``.npz``, ``.safetensors`` or ``.h5``
file, or of an array inside a zarr group; optional when the file holds exactly one array). Every format except
``.npz`` is read lazily, so memory stays bounded by the batch size whatever the file size:

* ``.npy`` rows are read with plain positioned reads of each row block (``open_array(spec, mmap=True)``
  memory-maps the file instead: the same speed, but mapped pages count toward the process's resident set),
* zarr (a ``PATH.zarr`` directory, ``pip install "dlrcore[zarr]"``) and HDF5 (``.h5``/``.hdf5``,
  ``pip install "dlrcore[hdf5]"``) are read by slicing, which decompresses only the chunks a batch touches.

:func:`accumulate_files` streams such files into a :class:`~dlrcore.DLRStats` or :class:`~dlrcore.DLRSketch` with a
progress bar and optional checkpoints (``dlr compute`` runs through it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import DLRInputError, in_file_rows

__all__ = [
    "DEFAULT_BATCH_BYTES", "ArraySource", "accumulate_files", "check_output_choice", "open_array", "split_key",
]

#: Bytes per batch (all inputs together) when no batch size is given.
DEFAULT_BATCH_BYTES = 64 * 2**20
#: Inputs above this size show a progress bar on an interactive terminal (when ``progress=None``).
PROGRESS_BYTES = 256 * 2**20


@dataclass
class ArraySource:
    """A 2-D (or 1-D) array on disk that can be read in row batches.

    ``spec`` is the ``PATH`` or ``PATH:KEY`` string it was opened from: other processes (Dask workers) re-open
    the source with ``open_array(source.spec)`` rather than pickling it.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    _get: Any  # callable(start, stop) -> ndarray
    spec: str = ""
    kind: str = field(default="", compare=False)  # "npy", "npz", "safetensors", "zarr", "hdf5"

    @property
    def rows(self) -> int:
        """Number of rows (samples)."""
        return int(self.shape[0]) if self.shape else 0

    @property
    def nbytes(self) -> int:
        """Size of the array in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a NumPy array."""
        return np.asarray(self._get(start, stop))

    def batches(self, batch_rows: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rows)`` pairs covering the array in order, from row ``start`` on."""
        for i in range(int(start), self.rows, batch_rows):
            yield i, self.read(i, min(i + batch_rows, self.rows))


def split_key(spec: str) -> tuple[Path, str | None]:
    """``PATH:KEY`` as ``(PATH, KEY)`` when ``PATH`` exists and the whole string does not, else ``(spec, None)``.

    Examples
    --------
    >>> path, key = split_key("no/such/file.npz:phi")  # no such file: the whole string is the path
    >>> path.name, key
    ('file.npz:phi', None)
    """
    path, key = spec, None
    if not os.path.exists(spec) and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if head and os.path.exists(head):
            path, key = head, tail
    return Path(path), key


def _pick(keys: list[str], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in keys:
            raise DLRInputError(f"{path}: no array named {key!r}; it holds {sorted(keys)}")
        return key
    if len(keys) != 1:
        raise DLRInputError(f"{path}: holds {len(keys)} arrays {sorted(keys)}; name one as {path}:KEY")
    return keys[0]


class _NpyRows:
    """Rows of a C-ordered ``.npy`` file read with positioned reads (no memory map; picklable)."""

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, int(offset), tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __call__(self, i: int, j: int) -> np.ndarray:
        i, j = max(0, int(i)), min(int(j), self.shape[0] if self.shape else 0)
        out = np.empty((max(j - i, 0), *self.shape[1:]), dtype=self.dtype)
        want = out.nbytes
        if want == 0:
            return out
        view = out.reshape(-1).view(np.uint8).data
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            got, pos = 0, self.offset + i * self.row_bytes
            while got < want:
                k = (
                    os.preadv(fd, [view[got:]], pos + got)
                    if hasattr(os, "preadv")
                    else _pread_into(fd, view[got:], pos + got)
                )
                if k <= 0:
                    raise OSError(f"{self.path}: file ends before row {j} (truncated .npy file?)")
                got += k
        finally:
            os.close(fd)
        return out


def _pread_into(fd: int, view: memoryview, pos: int) -> int:  # pragma: no cover - platforms without preadv
    os.lseek(fd, pos, os.SEEK_SET)
    data = os.read(fd, len(view))
    view[: len(data)] = data
    return len(data)


def _open_npy(path: Path, spec: str, mmap: bool) -> ArraySource:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header: tuple[tuple[int, ...], bool, np.dtype] | None = None
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if header is None or mmap or header[1] or header[2].hasobject:  # other versions, Fortran order, objects
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        return ArraySource(str(path), a.shape, a.dtype, lambda i, j: a[i:j], spec, "npy")
    shape, _, dtype = header
    size = os.path.getsize(path)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need:
        raise ValueError(f"file holds {size} bytes, the header promises {need} (truncated?)")
    return ArraySource(str(path), tuple(shape), dtype, _NpyRows(str(path), offset, shape, dtype), spec, "npy")


def _is_zarr(path: Path) -> bool:
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))


def _missing_extra(path: Path, what: str, extra: str) -> DLRInputError:
    """The error for a format whose optional dependency is not installed: what to install."""
    return DLRInputError(f'{path}: reading {what} needs the optional dependency: pip install "dlrcore[{extra}]"')


def _open_zarr(path: Path, key: str | None, spec: str) -> ArraySource:
    try:
        import zarr
    except ImportError as exc:
        raise _missing_extra(path, "zarr stores", "zarr") from exc
    node = zarr.open(store=str(path), mode="r")
    if isinstance(node, zarr.Array):
        if key is not None:
            raise DLRInputError(f"{path}: this zarr store is a single array; drop ':{key}'")
        arr, name = node, str(path)
    else:
        try:
            members = dict(node.members(max_depth=None))
        except (TypeError, AttributeError):  # zarr 2
            members = dict(node.arrays(recurse=True))  # type: ignore[call-arg]  # zarr 2 API; the stubs are zarr 3's
        arrays = {k: v for k, v in members.items() if isinstance(v, zarr.Array)}
        k = _pick(list(arrays), key.strip("/") if key is not None else None, path)
        arr, name = arrays[k], f"{path}:{k}"
    return ArraySource(name, tuple(arr.shape), np.dtype(arr.dtype), lambda i, j: arr[i:j], spec, "zarr")


def _open_hdf5(path: Path, key: str | None, spec: str) -> ArraySource:
    try:
        import h5py
    except ImportError as exc:
        raise _missing_extra(path, "HDF5 files", "hdf5") from exc
    fh = h5py.File(str(path), "r")
    names: list[str] = []
    fh.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    k = _pick(names, key.strip("/") if key is not None else None, path)
    ds = fh[k]
    return ArraySource(f"{path}:{k}", tuple(ds.shape), np.dtype(ds.dtype), lambda i, j: ds[i:j], spec, "hdf5")


def open_array(spec: str, *, mmap: bool = False) -> ArraySource:
    """Open ``PATH`` or ``PATH:KEY`` for batched reading.

    Parameters
    ----------
    spec : str
        File name, optionally followed by ``:KEY`` for ``.npz``, ``.safetensors``, HDF5 files and zarr groups
        (a key may be a path inside the file, ``group/array``).
    mmap : bool
        Memory-map ``.npy`` files instead of reading row blocks with positioned reads.

    Returns
    -------
    ArraySource

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DLRInputError
        If the file cannot be read as an array, the key is missing or ambiguous, or the optional dependency that
        reads the format is not installed.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "x.npy"); np.save(f, np.arange(10.0).reshape(5, 2))
    >>> src = open_array(f)
    >>> src.shape, src.read(1, 3).tolist()
    ((5, 2), [[2.0, 3.0], [4.0, 5.0]])
    """
    path, key = split_key(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if _is_zarr(path):
            return _open_zarr(path, key, spec)
        if suffix in (".h5", ".hdf5", ".hdf"):
            return _open_hdf5(path, key, spec)
        if suffix == ".npy":
            if key is not None:
                raise DLRInputError(f"{path}: a .npy file holds one array; drop ':{key}'")
            return _open_npy(path, spec, mmap)
        if suffix == ".npz":
            z = np.load(path, allow_pickle=False)
            k = _pick(list(z.files), key, path)
            a = z[k]
            return ArraySource(f"{path}:{k}", a.shape, a.dtype, lambda i, j: a[i:j], spec, "npz")
        if suffix == ".safetensors":
            try:
                from safetensors import safe_open
            except ImportError as exc:
                raise _missing_extra(path, ".safetensors", "safetensors") from exc
            fh = safe_open(str(path), framework="numpy")
            k = _pick(list(fh.keys()), key, path)
            sl = fh.get_slice(k)
            shape = tuple(sl.get_shape())
            dtype = np.dtype(fh.get_tensor(k).dtype) if not shape or shape[0] == 0 else np.asarray(sl[0:1]).dtype
            return ArraySource(f"{path}:{k}", shape, dtype, lambda i, j: sl[i:j], spec, "safetensors")
    except DLRInputError:
        raise
    except Exception as exc:  # damaged files: ValueError, zipfile.BadZipFile, OSError, safetensors/zarr/h5py errors
        what = "zarr" if _is_zarr(path) else (suffix or "an array file")
        raise DLRInputError(f"{path}: cannot read as {what} ({type(exc).__name__}: {exc})") from exc
    raise DLRInputError(f"{path}: unsupported file type {suffix!r} (use .npy, .npz, .safetensors, .zarr, .h5 or .hdf5)")


# ---------------------------------------------------------------------------------------------- accumulation

def _as_source(x: Any, mmap: bool) -> ArraySource:
    return x if isinstance(x, ArraySource) else open_array(os.fspath(x), mmap=mmap)


def batch_rows_for(row_bytes: int, requested: int | None = None) -> int:
    """Rows per batch: ``requested``, or about :data:`DEFAULT_BATCH_BYTES` of input (at least 1024 rows)."""
    if requested is not None:
        if int(requested) < 1:
            raise DLRInputError(f"batch size must be at least 1, got {requested}")
        return int(requested)
    return max(1024, DEFAULT_BATCH_BYTES // max(int(row_bytes), 1))


def _describe(src: ArraySource) -> dict[str, Any]:
    from .checkpoint import describe_file

    path, key = split_key(src.spec or src.name)
    if key is None and src.name != str(path):  # a key picked automatically (the only array in the file)
        key = src.name.rpartition(":")[2]
    return describe_file(path, key, src.shape, src.dtype)


def check_output_choice(
    outputs: Any, weight: Any, bias: Any, *, names: tuple[str, str, str] = ("outputs", "weight", "bias")
) -> None:
    """Refuse anything but outputs, or a weight (with an optional bias): the two ways to give the output side.

    ``names`` are the argument names shown in the messages (the command line's are ``OUTPUTS``, ``--weight``,
    ``--bias``).
    """
    out, w, b = names
    if weight is None and outputs is None:
        raise DLRInputError(f"give {out}, or {w} (and {b}) to derive outputs from the last layer")
    if weight is not None and outputs is not None:
        raise DLRInputError(f"give either {out} or {w}, not both")
    if weight is None and bias is not None:
        raise DLRInputError(f"{b} needs {w}")


def accumulate_files(
    features: Any,
    outputs: Any = None,
    labels: Any = None,
    *,
    weight: Any = None,
    bias: Any = None,
    method: str = "exact",
    batch_rows: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 10,
    resume: bool = True,
    progress: bool | None = None,
    label: str = "dlr",
    precision: str = "auto",
    num_classes: int | None = None,
    rank: int | None = None,
    probes: int | None = None,
    seed: int = 0,
    max_memory: float | None = None,
    mmap: bool = False,
) -> Any:
    """Stream features (and outputs, or a last-layer ``weight``/``bias``, and labels) from files into statistics.

    Memory stays bounded by one batch of rows plus the statistics, whatever the file sizes. With ``checkpoint``
    the statistics and the rows consumed are written to that file every ``checkpoint_every`` batches and at the
    end (atomically, see :mod:`dlrcore.checkpoint`); a later call with the same arguments resumes from it, skipping
    exactly the rows already in, so the result equals that of an uninterrupted run. A checkpoint of a finished
    run is kept, and calling again returns its statistics without reading the inputs.

    Parameters
    ----------
    features, outputs, labels : str, path or ArraySource
        ``PATH`` or ``PATH:KEY`` of ``.npy``, ``.npz``, ``.safetensors``, zarr or HDF5 arrays (see
        :func:`open_array`); features n x p, outputs n x C (or n), labels class ids (n,) or an n x C matrix.
    weight, bias : str, path or ArraySource, optional
        Last-layer weight (C x p) and bias (C,) instead of ``outputs`` (exact statistics only).
    method : {"exact", "sketch", "auto"}
        :class:`~dlrcore.DLRStats`, a one-pass :class:`~dlrcore.DLRSketch`, or exact when it fits ``max_memory``.
    batch_rows : int, optional
        Rows per batch (default: about 64 MiB of input).
    checkpoint : str or path, optional
        Checkpoint file (``.npz`` appended when missing).
    checkpoint_every : int
        Batches between checkpoints.
    resume : bool
        Resume from ``checkpoint`` when it exists (refused, with the difference named, when it was written for
        other inputs or parameters); false starts over and overwrites it.
    progress : bool, optional
        Show a progress bar on stderr (default: when stderr is a terminal and the inputs exceed 256 MiB).
    label : str
        Text in front of the progress bar.
    precision, num_classes : see :class:`~dlrcore.DLRStats`.
    rank, probes, seed : see :class:`~dlrcore.DLRSketch` (sketch only).
    max_memory : float, optional
        Byte budget of ``method="auto"``.
    mmap : bool
        Memory-map ``.npy`` inputs instead of reading row blocks (mapped pages count toward the resident set).

    Returns
    -------
    DLRStats or DLRSketch

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from dlrcore.arrayfiles import accumulate_files
    >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 8)); f = x @ rng.normal(size=(8, 3))
    >>> np.save(os.path.join(d, "x.npy"), x); np.save(os.path.join(d, "f.npy"), f)
    >>> st = accumulate_files(os.path.join(d, "x.npy"), os.path.join(d, "f.npy"), batch_rows=300,
    ...                       checkpoint=os.path.join(d, "ck.npz"), checkpoint_every=2)
    >>> st.n, os.path.exists(os.path.join(d, "ck.npz"))
    (1000, True)
    """
    from .checkpoint import (
        check_fingerprint,
        checkpoint_path,
        fingerprint_of,
        load_checkpoint,
        remove_stale_temporaries,
        save_checkpoint,
    )
    from .progress import Progress
    from .sketch import DEFAULT_PROBES, DEFAULT_RANK, DLRSketch, method_for_widths
    from .stats import DLRStats

    rank = DEFAULT_RANK if rank is None else int(rank)
    probes = DEFAULT_PROBES if probes is None else int(probes)
    if method not in ("exact", "sketch", "auto"):
        raise ValueError(f"method must be 'exact', 'sketch' or 'auto', got {method!r}")
    if checkpoint is not None and int(checkpoint_every) < 1:
        raise DLRInputError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    feats = _as_source(features, mmap)
    if len(feats.shape) != 2:
        raise DLRInputError(f"{feats.name}: expected a 2-D n x p array, got shape {feats.shape}")
    check_output_choice(outputs, weight, bias, names=("OUTPUTS", "--weight", "--bias"))
    sources: dict[str, ArraySource] = {}
    fixed: dict[str, ArraySource] = {}
    if weight is not None:
        fixed["weight"] = _as_source(weight, mmap)
        if bias is not None:
            fixed["bias"] = _as_source(bias, mmap)
        method = "exact"
    else:
        sources["outputs"] = _as_source(outputs, mmap)
    if labels is not None:
        sources["labels"] = _as_source(labels, mmap)
    for src in sources.values():
        if src.rows != feats.rows:
            raise DLRInputError(f"row counts differ: {feats.name} has {feats.rows} rows, {src.name} has {src.rows}")
    row_bytes = sum(s.nbytes // max(s.rows, 1) for s in [feats, *sources.values()])
    rows = batch_rows_for(row_bytes, batch_rows)

    ck_path = None if checkpoint is None else checkpoint_path(checkpoint)
    ck = None
    if ck_path is not None:
        remove_stale_temporaries(ck_path)
        if resume and ck_path.exists():
            ck = load_checkpoint(ck_path)
    if method == "auto":
        if ck is not None:  # the free memory may have changed since: keep the method the run started with
            method = "sketch" if isinstance(ck.stats, DLRSketch) else "exact"
        else:
            out = sources["outputs"]
            C = out.shape[1] if len(out.shape) == 2 else 1
            itemsize = max(1, feats.dtype.itemsize)
            budget = None if max_memory is None else int(max_memory)
            method = method_for_widths(feats.shape[1], C, itemsize=itemsize, max_memory=budget)
    if method == "sketch" and "labels" in sources:
        raise DLRInputError("--labels is not supported with the sketch method (labels are not sketched)")

    params: dict[str, Any] = {"method": method, "batch_rows": rows, "precision": precision}
    if method == "sketch":
        params.update(rank=rank, probes=probes, seed=seed)
    else:
        params.update(num_classes=num_classes)
    inputs = {"features": feats, **sources, **fixed}
    fingerprint = fingerprint_of({k: _describe(s) for k, s in inputs.items()}, params)

    def fresh() -> Any:
        if fixed:
            w = fixed["weight"].read(0, fixed["weight"].rows)
            b = fixed["bias"].read(0, fixed["bias"].rows) if "bias" in fixed else None
            return DLRStats(weight=w, bias=b, precision=precision, num_classes=num_classes)
        if method == "sketch":
            return DLRSketch(rank=rank, probes=probes, seed=seed, precision=precision)
        return DLRStats(precision=precision, num_classes=num_classes)

    position = 0
    if ck is not None and ck_path is not None:  # a checkpoint is only ever loaded from ck_path
        check_fingerprint(ck_path, ck.fingerprint, fingerprint)
        stats, position = ck.stats, ck.position
        if ck.complete:
            return stats
    else:
        stats = fresh()

    total_bytes = feats.nbytes + sum(s.nbytes for s in sources.values())
    show = progress if progress is not None else (sys.stderr.isatty() and total_bytes > PROGRESS_BYTES)
    every = int(checkpoint_every)
    with Progress(feats.rows, label, enabled=bool(show)) as bar:
        if position:
            bar.done, bar.note = position, f"resumed at row {position}"
        for start, x in feats.batches(rows, start=position):
            stop = start + x.shape[0]
            parts = {k: s.read(start, stop) for k, s in sources.items()}
            try:
                if isinstance(stats, DLRSketch):
                    stats.update(x, parts["outputs"])
                else:
                    stats.update(x, parts.get("outputs"), labels=parts.get("labels"))
            except DLRInputError as exc:
                raise in_file_rows(exc, start) from None
            position = stop
            bar.advance(x.shape[0])
            if ck_path is not None and (stop // rows) % every == 0 and stop < feats.rows:
                save_checkpoint(ck_path, stats, position, feats.rows, fingerprint)
    if ck_path is not None:
        save_checkpoint(ck_path, stats, position, feats.rows, fingerprint)
    return stats
