"""The ``.npz`` file format of :class:`~dlrcore.DLRStats`: its header fields, written and read back validated.

A statistics file holds the header below, the folded moments (``n``, ``mean``, ``comoment``,
``scale_exponents``: :meth:`~dlrcore.folded_moments.FoldedMoments.state_arrays`) and, in weights mode, the
weight head (:meth:`~dlrcore.weights_head.WeightsHead.state_arrays`), under the magic ``dlrcore.DLRStats`` and
a format version (:mod:`dlrcore.storage` writes atomically and checks both on reading). Statistics kept in
jackknife blocks (``DLRStats(blocks=B)``) have ``blocks`` in the header and, instead of the folded moments, those
of each block under the prefix ``block<i>_`` (:meth:`~dlrcore.blocked_moments.BlockedMoments.state_arrays`); they
are written as format version 2, so that older dlrcore versions refuse them as newer instead of reading them
as damaged. Statistics without blocks are still written as version 1, unchanged.

Examples
--------
>>> h = StatsHeader(p=4, C=2, cy=0, label_kind="none", num_classes=None, work="float64", precision="auto",
...                 data_eps=2.0**-52, weights_mode=False, n=10)
>>> StatsHeader.from_arrays(h.to_arrays(), "f.npz") == h
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .inputs import DLRInputError
from .precision import PRECISIONS
from .storage import bool_field, float_field, int_field, str_field

__all__ = ["FIRST_FORMAT_VERSION", "FORMAT_VERSION", "LABEL_KINDS", "MAGIC", "StatsHeader"]

#: Newest version of the ``.npz`` statistics format, read by :meth:`DLRStats.load` and written for statistics
#: with jackknife blocks (version 2 added them).
FORMAT_VERSION = 2

#: The version statistics without jackknife blocks are written as (the format they had before blocks existed).
FIRST_FORMAT_VERSION = 1

#: The magic string of a statistics file.
MAGIC = "dlrcore.DLRStats"

#: What the label block holds: integer class ids (one-hot), target rows, or nothing.
LABEL_KINDS = ("classes", "targets", "none")


@dataclass(frozen=True)
class StatsHeader:
    """The scalar fields of a statistics file (None: not known yet, before the first batch; ``blocks`` None:
    statistics without jackknife blocks, and no ``blocks`` field is written)."""

    p: int | None
    C: int | None
    cy: int | None
    label_kind: str | None
    num_classes: int | None
    work: str | None
    precision: str
    data_eps: float
    weights_mode: bool
    n: int
    blocks: int | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as 0-d arrays (-1 and "" stand for None; ``blocks`` only when set)."""
        opt = lambda v: np.array(-1 if v is None else v)
        extra = {} if self.blocks is None else {"blocks": np.array(self.blocks, dtype=np.int64)}
        return {
            **extra,
            "p": opt(self.p),
            "C": opt(self.C),
            "cy": opt(self.cy),
            "label_kind": np.array(self.label_kind or ""),
            "num_classes": opt(self.num_classes),
            "work": np.array(self.work or ""),
            "precision": np.array(self.precision),
            "data_eps": np.array(self.data_eps),
            "weights_mode": np.array(self.weights_mode),
            "n": np.array(self.n, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], path: Any) -> StatsHeader:
        """Read every field back, checked on its own and against the others.

        Raises
        ------
        DLRInputError
            Naming the file and the damaged field.
        """

        def width(key: str) -> int | None:
            v = int_field(data, key, path, least=-1)
            return None if v < 0 else v

        n = int_field(data, "n", path, least=0)
        head = cls(
            p=width("p"),
            C=width("C"),
            cy=width("cy"),
            label_kind=str_field(data, "label_kind", path, ("", *LABEL_KINDS)) or None,
            num_classes=width("num_classes"),
            work=(str_field(data, "work", path, ("float32", "float64")) if n else None),
            precision=str_field(data, "precision", path, PRECISIONS),
            data_eps=float_field(data, "data_eps", path, least=0.0, most=1.0),
            weights_mode=bool_field(data, "weights_mode", path),
            n=n,
            blocks=int_field(data, "blocks", path, least=2) if "blocks" in data else None,
        )
        p, C, cy = head.p, head.C, head.cy
        if head.num_classes == 0:
            raise DLRInputError(f"{path}: damaged file, field 'num_classes' is 0 (a class count is at least 1)")
        if n and (p is None or p < 1 or C is None or C < 1 or cy is None or not head.label_kind):
            raise DLRInputError(f"{path}: damaged file, widths p={p}, C={C}, label width={cy} with n = {n}")
        if n and head.label_kind == "classes" and not cy:
            raise DLRInputError(f"{path}: damaged file, class labels of width {cy}")
        if head.weights_mode and (p is None or p < 1 or C is None or C < 1):
            raise DLRInputError(f"{path}: damaged file, weights mode with widths p={p}, C={C}")
        return head
