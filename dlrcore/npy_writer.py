"""Row-appending ``.npy`` files: :class:`NpyRowWriter` and :class:`ArrayDump`.

A ``.npy`` header states the shape, which a stream does not know until it ends. The writer reserves a header of
fixed length, appends C-ordered rows as they come, and rewrites the header with the final row count when closed,
so that memory stays at one batch whatever the number of rows. The files it writes are ordinary ``.npy`` files
that ``numpy.load`` and ``dlr compute`` read (:func:`dlrcore.arrayfiles.open_array`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import DLRInputError

__all__ = ["ArrayDump", "NpyRowWriter"]

#: Bytes reserved for the magic string, the header length and the header dict: room for any 2-D shape.
_HEADER_BYTES = 128


class NpyRowWriter:
    """Append rows (2-D arrays of one dtype and width) to a ``.npy`` file; :meth:`close` writes the final shape.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> with NpyRowWriter(path) as w:
    ...     w.append(np.ones((2, 3))); w.append(np.zeros((1, 3)))
    >>> np.load(path).shape
    (3, 3)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows = 0
        self.width: int | None = None
        self.dtype: np.dtype | None = None
        self.one_d = False  # the first rows came as a 1-D array: the file is 1-D too
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._fh.write(b"\0" * _HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        """Write ``rows`` (n x width; 1-D arrays make a 1-D file) after the rows written so far."""
        a = np.asarray(rows)
        if self.width is None:
            self.one_d = a.ndim == 1
        if a.ndim == 1:
            a = a.reshape(-1, 1)
        if a.ndim != 2:
            raise DLRInputError(f"{self.path}: rows must be 1-D or 2-D, got shape {a.shape}")
        if self.width is None:
            self.width, self.dtype = a.shape[1], a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if a.shape[1] != self.width:
            raise DLRInputError(f"{self.path}: rows of width {a.shape[1]} after rows of width {self.width}")
        self._fh.write(np.ascontiguousarray(a, dtype=self.dtype).tobytes())
        self.rows += a.shape[0]

    def close(self) -> None:
        """Write the header for the rows appended and close the file."""
        if self._fh.closed:
            return
        dtype = self.dtype if self.dtype is not None else np.dtype(np.float32)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": (self.rows,) if self.one_d and self.width == 1 else (self.rows, self.width or 0)}
        text = repr(header).encode("latin1")
        room = _HEADER_BYTES - 10  # magic (6), version (2), header length (2)
        if len(text) + 1 > room:  # pragma: no cover - a 2-D shape always fits
            raise DLRInputError(f"{self.path}: header too long")
        text = text + b" " * (room - len(text) - 1) + b"\n"
        self._fh.seek(0)
        self._fh.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
        self._fh.close()

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArrayDump:
    """``features.npy``, ``outputs.npy`` and ``labels.npy`` in one folder, appended batch by batch.

    Each file is opened by its first rows, so that ``outputs.npy`` is absent when the statistics derive the outputs
    from the head's weights (the adapter then saves ``weight.npy`` beside it) and ``labels.npy`` when the batches
    have no labels. ``dlr compute DIR/features.npy DIR/outputs.npy [--labels DIR/labels.npy]`` reads them.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with ArrayDump(d) as dump:
    ...     dump.append(np.ones((2, 3)), np.zeros((2, 1)), None)
    >>> sorted(os.listdir(d)), np.load(os.path.join(d, "features.npy")).shape
    (['features.npy', 'outputs.npy'], (2, 3))
    """

    NAMES = ("features", "outputs", "labels")

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.writers: dict[str, NpyRowWriter] = {}
        self.batches = 0

    def append(self, features: Any, outputs: Any = None, labels: Any = None) -> None:
        """Write one batch of rows (NumPy arrays or CPU tensors; labels 1-D class ids or a target matrix); None
        leaves that file out (it must then be None for every batch)."""
        for name, rows in zip(self.NAMES, (features, outputs, labels)):
            have = name in self.writers
            if rows is None and not have:
                continue
            if rows is None or (not have and self.batches):
                raise DLRInputError(f"dump: {name} appeared in some batches only; every batch must have them or none")
            if not have:
                self.writers[name] = NpyRowWriter(os.path.join(self.folder, f"{name}.npy"))
            self.writers[name].append(np.asarray(rows))
        self.batches += 1

    def close(self) -> None:
        """Write the final shapes in the headers (class ids stay a 1-D array, which ``dlr compute --labels``
        reads as classes)."""
        for w in self.writers.values():
            w.close()

    def __enter__(self) -> ArrayDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
