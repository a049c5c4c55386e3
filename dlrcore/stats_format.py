"""The ``.npz`` file format of :class:`~dlrcore.DLRStats`: its header fields, written and read back validated.

A statistics file holds the header below, the folded moments (``n``, ``mean``, ``comoment``,
``scale_exponents``: :meth:`~dlrcore.folded_moments.FoldedMoments.state_arrays`) and, in weights mode, the
weight head (:meth:`~dlrcore.weights_head.WeightsHead.state_arrays`), under the magic ``dlrcore.DLRStats`` and
:data:`FORMAT_VERSION` (:mod:`dlrcore.storage` writes atomically and checks both on reading).

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

__all__ = ["FORMAT_VERSION", "LABEL_KINDS", "MAGIC", "StatsHeader"]

#: Version of the ``.npz`` statistics format written by :meth:`DLRStats.save`.
FORMAT_VERSION = 1

#: The magic string of a statistics file.
MAGIC = "dlrcore.DLRStats"

#: What the label block holds: integer class ids (one-hot), target rows, or nothing.
LABEL_KINDS = ("classes", "targets", "none")


@dataclass(frozen=True)
class StatsHeader:
    """The scalar fields of a statistics file (None: not known yet, before the first batch)."""

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

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as 0-d arrays (-1 and "" stand for None)."""
        opt = lambda v: np.array(-1 if v is None else v)
        return {
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
