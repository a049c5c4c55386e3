"""Atomic ``.npz`` files with a type marker and a format version, for every saved statistics object."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import DLRInputError

__all__ = ["atomic_savez", "read_npz"]


def atomic_savez(path: str | os.PathLike[str], magic: str, version: int, arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` to ``path`` (``.npz`` added if missing) so that a good file is never half-overwritten.

    The data go to a temporary file in the same folder, are flushed and fsynced, and the file is renamed over
    ``path`` in one step; on any error the temporary file is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, os
    >>> p = atomic_savez(os.path.join(tempfile.mkdtemp(), "s"), "demo", 1, {"x": np.arange(3)})
    >>> p.name, read_npz(p, "demo", 1)["x"].tolist()
    ('s.npz', [0, 1, 2])
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    payload = {"magic": np.array(magic), "format_version": np.array(version), **arrays}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_npz(path: str | os.PathLike[str], magic: str, version: int) -> dict[str, np.ndarray]:
    """Read a file written by :func:`atomic_savez`, checking its marker and that its version is not newer.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    DLRInputError
        If the file is not an ``.npz`` of this kind or has a newer format version.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise DLRInputError(f"{path}: not a {magic} file ({type(exc).__name__}: {exc})") from exc
    if str(data.get("magic", "")) != magic:
        raise DLRInputError(f"{path}: not a {magic} file (no {magic} marker)")
    found = int(data["format_version"])
    if found > version:
        raise DLRInputError(
            f"{path}: {magic} format version {found} is newer than this dlrcore reads ({version}); upgrade dlrcore"
        )
    return data
