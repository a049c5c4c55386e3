"""Atomic ``.npz`` files with a type marker, a format version and a checksum, for every saved statistics object,
and the field checks every ``load`` runs on what it reads back.

The checksum (SHA-256 over every array's name, dtype, shape and bytes) is written with the file and verified on
reading, so a field changed after saving (a doubled ``n``, an edited test matrix, a flipped ``complete`` flag) is
refused as damage. Files written before checksums existed still load; their fields are checked one by one, which
every file also goes through: types, signs, shapes, symmetry and consistency.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import DLRInputError

__all__ = [
    "array_field",
    "atomic_savez",
    "bool_field",
    "check_comoment",
    "float_field",
    "int_array_field",
    "int_field",
    "read_npz",
    "str_field",
]


def _digest(arrays: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[key]))
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


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
    payload["checksum"] = np.array(_digest(payload))
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


def read_npz(
    path: str | os.PathLike[str], magic: str, version: int, *, former: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Read a file written by :func:`atomic_savez`, checking its marker and that its version is not newer.

    Every dlrcore file kind is marked ``dlrcore.<Kind>``; ``former`` lists markers that older versions wrote for
    the same kind, still read.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    DLRInputError
        If the file is not an ``.npz`` of this kind or has a newer format version.
    """
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
        raise DLRInputError(f"{path}: not a {magic} file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DLRInputError(
            f"{path}: not a {magic} file but a single array; save statistics with .save() or "
            "dlr compute ... --save-stats FILE.npz, and pass arrays to dlr compute instead"
        )
    try:
        with z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DLRInputError(f"{path}: damaged {magic} file ({type(exc).__name__}: {exc})") from exc
    if str(data.get("magic", "")) not in (magic, *former):
        raise DLRInputError(f"{path}: not a {magic} file (no {magic} marker)")
    if "checksum" in data:
        stored = str(data.pop("checksum"))
        if stored != _digest(data):
            raise DLRInputError(
                f"{path}: damaged {magic} file: its contents do not match the checksum written with them "
                "(a field was changed after saving, or the file was corrupted)"
            )
    found = int_field(data, "format_version", path, least=1)
    if found > version:
        raise DLRInputError(
            f"{path}: {magic} format version {found} is newer than this dlrcore reads ({version}); upgrade dlrcore"
        )
    return data


def _scalar(data: dict[str, np.ndarray], key: str, path: Any) -> np.ndarray:
    if key not in data:
        raise DLRInputError(f"{path}: damaged file, field {key!r} is missing")
    a = np.asarray(data[key])
    if a.shape != ():
        raise DLRInputError(f"{path}: damaged file, field {key!r} should be a single value, has shape {a.shape}")
    return a


def int_field(data: dict[str, np.ndarray], key: str, path: Any, *, least: int | None = None) -> int:
    """An integer field (stored as an integer, at least ``least``)."""
    a = _scalar(data, key, path)
    if a.dtype.kind not in "iu":
        raise DLRInputError(f"{path}: damaged file, field {key!r} should be an integer, got {a!r}")
    v = int(a)
    if least is not None and v < least:
        raise DLRInputError(f"{path}: damaged file, field {key!r} = {v} is below {least}")
    return v


def bool_field(data: dict[str, np.ndarray], key: str, path: Any) -> bool:
    """A True/False field (stored as a NumPy bool)."""
    a = _scalar(data, key, path)
    if a.dtype != np.bool_:
        raise DLRInputError(f"{path}: damaged file, field {key!r} should be True or False, got {a!r}")
    return bool(a)


def int_array_field(
    data: dict[str, np.ndarray], key: str, path: Any, length: int, *, least: int | None = None,
    most: int | None = None,
) -> list[int]:
    """``length`` integers (each within ``[least, most]``)."""
    a = np.asarray(data.get(key))
    if (key not in data or a.shape != (length,) or a.dtype.kind not in "iu"
            or (length and least is not None and a.min() < least) or (length and most is not None and a.max() > most)):
        bound = "" if least is None and most is None else f", each within [{least}, {most}]"
        raise DLRInputError(f"{path}: damaged file, field {key!r} should be {length} integers{bound}, got {a!r}")
    return [int(v) for v in a]


#: Largest magnitude of a stored power-of-two exponent: data span 2**-1074..2**1024, and a state read from a file
#: may be brought into the window by as much again.
SCALE_EXPONENT_LIMIT = 2200


def scale_exponents_field(data: dict[str, np.ndarray], path: Any, blocks: int) -> list[int] | None:
    """The blocks' power-of-two ``scale_exponents`` (:mod:`dlrcore.scaling`); None in files written before they
    existed, whose moments are unscaled."""
    if "scale_exponents" not in data:
        return None
    lim = SCALE_EXPONENT_LIMIT
    return int_array_field(data, "scale_exponents", path, blocks, least=-lim, most=lim)


def float_field(
    data: dict[str, np.ndarray], key: str, path: Any, *, least: float | None = None, most: float | None = None
) -> float:
    """A finite real field within ``[least, most]``."""
    a = _scalar(data, key, path)
    if a.dtype.kind not in "fiu" or not np.isfinite(a):
        raise DLRInputError(f"{path}: damaged file, field {key!r} should be a finite number, got {a!r}")
    v = float(a)
    if (least is not None and v < least) or (most is not None and v > most):
        raise DLRInputError(f"{path}: damaged file, field {key!r} = {v!r} is outside [{least}, {most}]")
    return v


def str_field(data: dict[str, np.ndarray], key: str, path: Any, choices: Iterable[str] | None = None) -> str:
    """A text field, one of ``choices`` when given."""
    a = _scalar(data, key, path)
    if a.dtype.kind != "U":
        raise DLRInputError(f"{path}: damaged file, field {key!r} should be text, got {a!r}")
    v = str(a)
    if choices is not None and v not in set(choices):
        raise DLRInputError(f"{path}: damaged file, field {key!r} = {v!r} is not one of {sorted(set(choices))}")
    return v


def array_field(data: dict[str, np.ndarray], key: str, path: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float64 array of exactly ``shape``."""
    if key not in data:
        raise DLRInputError(f"{path}: damaged file, field {key!r} is missing")
    a = np.asarray(data[key])
    if a.dtype.kind not in "fiu" or a.shape != tuple(shape):
        raise DLRInputError(
            f"{path}: damaged file, field {key!r} should be a real array of shape {tuple(shape)}, "
            f"got {a.dtype} {a.shape}"
        )
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DLRInputError(f"{path}: damaged file, field {key!r} holds NaN or Inf")
    return a


def check_comoment(m: np.ndarray, key: str, path: Any) -> None:
    """A centered co-moment (or Gram) matrix must be symmetric and positive semi-definite; checked as symmetry to
    rounding, a non-negative diagonal and ``|m_ij| <= sqrt(m_ii m_jj)`` (to rounding), O(q^2)."""
    scale = float(np.abs(m).max(initial=0.0))
    if m.size and float(np.abs(m - m.T).max()) > 1e-10 * scale:
        raise DLRInputError(f"{path}: damaged file, field {key!r} is not symmetric")
    d = np.diagonal(m)
    if np.any(d < -1e-12 * scale):
        raise DLRInputError(f"{path}: damaged file, field {key!r} has a negative diagonal (not a co-moment matrix)")
    root = np.sqrt(np.clip(d, 0.0, None))
    if np.any(np.abs(m) > np.outer(root, root) * (1 + 1e-6) + 1e-12 * scale):
        raise DLRInputError(
            f"{path}: damaged file, field {key!r} is not positive semi-definite (an entry exceeds the geometric "
            "mean of its diagonal entries)"
        )


def check_bounded(a: np.ndarray, bound: np.ndarray | float, key: str, path: Any, why: str) -> None:
    """Every ``|a_ij|`` within ``bound`` (broadcast; a Cauchy-Schwarz bound from other fields), to rounding."""
    with np.errstate(over="ignore"):
        ok = np.abs(a) <= np.asarray(bound) * (1.0 + 1e-6) + 1e-300
    if not np.all(ok):
        raise DLRInputError(f"{path}: damaged file, field {key!r} breaks {why} (the fields cannot come from data)")
