"""Reading feature and output matrices from files (``.npy``, ``.npz``, ``.safetensors``) in row batches.

A file argument is ``PATH`` or ``PATH:KEY`` (the key of an array inside an ``.npz`` or ``.safetensors`` file;
optional when the file holds exactly one array). ``.npy`` files are memory-mapped so they stream from disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import DLRInputError

__all__ = ["ArraySource", "open_array"]


@dataclass
class ArraySource:
    """A 2-D (or 1-D) array on disk that can be read in row batches."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    _get: Any  # callable(start, stop) -> ndarray

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

    def batches(self, batch_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rows)`` pairs covering the array in order."""
        for start in range(0, self.rows, batch_rows):
            yield start, self.read(start, min(start + batch_rows, self.rows))


def _split_key(spec: str) -> tuple[Path, str | None]:
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


def open_array(spec: str) -> ArraySource:
    """Open ``PATH`` or ``PATH:KEY`` for batched reading.

    Parameters
    ----------
    spec : str
        File name, optionally followed by ``:KEY`` for ``.npz`` and ``.safetensors`` files.

    Returns
    -------
    ArraySource

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DLRInputError
        If the file cannot be read as an array or the key is missing or ambiguous.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "x.npy"); np.save(f, np.ones((5, 2)))
    >>> open_array(f).shape
    (5, 2)
    """
    path, key = _split_key(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if key is not None:
                raise DLRInputError(f"{path}: a .npy file holds one array; drop ':{key}'")
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            return ArraySource(str(path), a.shape, a.dtype, lambda i, j: a[i:j])
        if suffix == ".npz":
            z = np.load(path, allow_pickle=False)
            k = _pick(list(z.files), key, path)
            a = z[k]
            return ArraySource(f"{path}:{k}", a.shape, a.dtype, lambda i, j: a[i:j])
        if suffix == ".safetensors":
            try:
                from safetensors import safe_open
            except ImportError as exc:
                raise DLRInputError(
                    f"{path}: reading .safetensors needs the optional dependency: pip install 'dlrcore[safetensors]'"
                ) from exc
            fh = safe_open(str(path), framework="numpy")
            k = _pick(list(fh.keys()), key, path)
            sl = fh.get_slice(k)
            shape = tuple(sl.get_shape())
            dtype = np.dtype(fh.get_tensor(k).dtype) if not shape or shape[0] == 0 else np.asarray(sl[0:1]).dtype
            return ArraySource(f"{path}:{k}", shape, dtype, lambda i, j: sl[i:j])
    except DLRInputError:
        raise
    except Exception as exc:  # damaged files: ValueError, zipfile.BadZipFile, OSError, safetensors errors
        raise DLRInputError(f"{path}: cannot read as {suffix or 'an array file'} ({type(exc).__name__}: {exc})") from exc
    raise DLRInputError(f"{path}: unsupported file type {suffix!r} (use .npy, .npz or .safetensors)")
