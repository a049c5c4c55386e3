"""Checkpoints of a long accumulation over files: statistics and resume position in one atomically replaced file.

A checkpoint is one ``.npz`` file (written with :func:`dlrcore.storage.atomic_savez`: a temporary file in the same
folder, flushed, fsynced and renamed over the old checkpoint, then the folder is fsynced) holding

* ``state``: the bytes of the statistics file (exactly what :meth:`DLRStats.save` / :meth:`DLRSketch.save`
  writes), with ``kind`` naming the class,
* ``position``: the rows of the inputs already accumulated (always the end of a batch),
* ``total_rows`` and ``complete`` (true once every row is in),
* ``fingerprint``: a JSON description of the inputs (resolved paths, keys, shapes, dtypes, byte sizes and
  modification times of regular files) and of the parameters that change the statistics (batch rows, method,
  precision, number of classes, sketch rank, probes and seed).

Statistics and position live in the same file, so a process killed at any moment leaves either the previous
checkpoint or the new one, never statistics of one batch with the position of another; stray temporary files of
an interrupted write are never read (and are removed when the next run starts). Resuming compares fingerprints and
refuses, naming what differs, when the inputs or parameters changed.

:func:`dlrcore.arrayfiles.accumulate_files` (and ``dlr compute --checkpoint FILE``) writes and resumes them.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import DLRInputError
from .sketch import DLRSketch
from .stats import DLRStats
from .storage import atomic_savez, bool_field, int_field, read_npz, str_field

__all__ = [
    "Checkpoint",
    "check_fingerprint",
    "checkpoint_path",
    "describe_file",
    "fingerprint_of",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

MAGIC = "dlrcore.Checkpoint"

#: The marker dlrcore 0.1 wrote on checkpoints, still read.
FORMER_MAGIC = ("dlrcore-checkpoint",)
FORMAT_VERSION = 1
_KINDS: dict[str, type[DLRStats] | type[DLRSketch]] = {"DLRStats": DLRStats, "DLRSketch": DLRSketch}


@dataclass
class Checkpoint:
    """What a checkpoint file holds."""

    stats: DLRStats | DLRSketch
    position: int
    total_rows: int
    complete: bool
    fingerprint: dict[str, Any]


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The file a checkpoint named ``path`` lives in (``.npz`` appended when missing, like every saved file)."""
    p = Path(path)
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def _state_tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.state.npz")


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Remove temporary files an interrupted checkpoint write of ``path`` left behind; return their names."""
    path = checkpoint_path(path)
    state = _state_tmp(path)
    pats = [f".{path.name}.*.tmp", f".{state.name}.*.tmp"]
    gone = [str(state)] if state.exists() else []
    for pat in pats:
        gone += glob.glob(os.path.join(glob.escape(str(path.parent)), pat))
    for f in gone:
        try:
            os.unlink(f)
        except OSError:
            pass
    return gone


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    stats: DLRStats | DLRSketch,
    position: int,
    total_rows: int,
    fingerprint: dict[str, Any],
) -> Path:
    """Write statistics and resume position to one checkpoint file, replacing the old one atomically.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from dlrcore import DLRStats
    >>> st = DLRStats().update(np.random.default_rng(0).normal(size=(50, 4)), np.ones((50, 1)))
    >>> p = save_checkpoint(os.path.join(tempfile.mkdtemp(), "ck"), st, 50, 100, {"demo": 1})
    >>> ck = load_checkpoint(p)
    >>> ck.position, ck.complete, ck.stats.n, ck.fingerprint
    (50, False, 50, {'demo': 1})
    """
    path = checkpoint_path(path)
    kind = type(stats).__name__
    if kind not in _KINDS:
        raise TypeError(f"cannot checkpoint a {kind}")
    state = _state_tmp(path)
    try:
        stats.save(state)
        blob = np.frombuffer(state.read_bytes(), dtype=np.uint8)
    finally:
        if state.exists():
            state.unlink()
    out = atomic_savez(
        path,
        MAGIC,
        FORMAT_VERSION,
        {
            "kind": np.array(kind),
            "position": np.array(int(position), dtype=np.int64),
            "total_rows": np.array(int(total_rows), dtype=np.int64),
            "complete": np.array(int(position) >= int(total_rows)),
            "fingerprint": np.array(json.dumps(fingerprint, sort_keys=True)),
            "state": blob,
        },
    )
    _fsync_dir(out.parent)
    return out


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    DLRInputError
        If the file is not a checkpoint or is damaged.
    """
    path = checkpoint_path(path)
    data = read_npz(path, MAGIC, FORMAT_VERSION, former=FORMER_MAGIC)
    position = int_field(data, "position", path, least=0)
    total = int_field(data, "total_rows", path, least=0)
    complete = bool_field(data, "complete", path)
    if position > total or complete != (position >= total):
        raise DLRInputError(f"{path}: damaged checkpoint, position {position} of {total} rows with complete={complete}")
    try:
        cls = _KINDS[str_field(data, "kind", path, tuple(_KINDS))]
        blob = np.asarray(data["state"])
        if blob.ndim != 1 or blob.dtype != np.uint8:
            raise DLRInputError(f"field 'state' should be the bytes of saved statistics (uint8), got {blob.dtype} "
                                f"of shape {blob.shape}")
        fd, tmp = tempfile.mkstemp(suffix=".npz", prefix="dlrcore-ckstate-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob.tobytes())
            stats = cls.load(tmp)
        finally:
            os.unlink(tmp)
        ck = Checkpoint(
            stats=stats,
            position=int(data["position"]),
            total_rows=int(data["total_rows"]),
            complete=bool(data["complete"]),
            fingerprint=json.loads(str(data["fingerprint"])),
        )
    except KeyError as exc:
        raise DLRInputError(f"{path}: damaged checkpoint, missing field {exc}") from exc
    except DLRInputError as exc:
        raise DLRInputError(f"{path}: damaged checkpoint ({exc})") from exc
    except (ValueError, TypeError) as exc:
        raise DLRInputError(f"{path}: damaged checkpoint ({exc})") from exc
    if ck.stats.n != ck.position:
        raise DLRInputError(f"{path}: damaged checkpoint (statistics hold {ck.stats.n} rows, position {ck.position})")
    return ck


def describe_file(path: str | os.PathLike[str], key: str | None, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    """Fingerprint entry of one input: resolved path, key, shape, dtype, and size and mtime of a regular file."""
    p = Path(path)
    d: dict[str, Any] = {"path": str(p.resolve()), "key": key, "shape": list(shape), "dtype": np.dtype(dtype).str}
    if p.is_file():
        st = os.stat(p)
        d.update(bytes=int(st.st_size), mtime_ns=int(st.st_mtime_ns))
    return d


def fingerprint_of(inputs: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint stored in a checkpoint: the inputs (``{role: describe_file(...)}``) and the parameters."""
    return {
        "format": FORMAT_VERSION,
        "inputs": {role: inputs[role] for role in sorted(inputs)},
        "params": {k: params[k] for k in sorted(params)},
    }


def _diff(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if old == new else [f"{where}: {old!r} then, {new!r} now"]


def check_fingerprint(path: str | os.PathLike[str], stored: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise a :class:`DLRInputError` naming the differences when a checkpoint does not fit this run."""
    diffs = _diff(stored, current)
    diffs.sort(key=lambda d: ".mtime_ns:" in d or ".bytes:" in d)  # shapes, dtypes and parameters first
    if diffs:
        shown = "; ".join(d.replace("inputs.", "").replace("params.", "") for d in diffs[:3])
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise DLRInputError(
            f"{checkpoint_path(path)}: checkpoint was written for other inputs or parameters ({shown}{more}); "
            "start over with --no-resume (resume=False) or use another checkpoint file"
        )
