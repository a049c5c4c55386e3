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
    """``features.npy``, ``outputs.npy`` and (when given) ``labels.npy`` in one folder, row-appended per batch.

    ``dlr compute DIR/features.npy DIR/outputs.npy [--labels DIR/labels.npy]`` then measures the same rows, and
    ``dlr spectrum`` and ``dlr plot`` work on them too.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.features = NpyRowWriter(self.folder / "features.npy")
        self.outputs = NpyRowWriter(self.folder / "outputs.npy")
        self.labels: NpyRowWriter | None = None

    def append(self, features: Any, outputs: Any, labels: Any = None) -> None:
        """Write one batch of rows (NumPy arrays or CPU tensors; labels 1-D class ids or a target matrix)."""
        self.features.append(np.asarray(features))
        self.outputs.append(np.asarray(outputs))
        if labels is not None:
            if self.labels is None:
                if self.features.rows != np.asarray(labels).shape[0]:
                    raise DLRInputError("labels appeared after batches without them; dump all batches with labels")
                self.labels = NpyRowWriter(self.folder / "labels.npy")
            self.labels.append(np.asarray(labels))

    def close(self) -> None:
        """Write the headers (class ids stay a 1-D array, which ``dlr compute --labels`` reads as classes)."""
        self.features.close()
        self.outputs.close()
        if self.labels is not None:
            self.labels.close()
