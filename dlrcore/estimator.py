"""The protocol every streaming estimator shares: :class:`Estimator`.

:class:`~dlrcore.DLRStats`, :class:`~dlrcore.DLRSketch` and :class:`~dlrcore.CKAStats` accumulate mergeable state
from batches. Each implements ``update``, ``merge``, ``copy``, ``result``, ``save`` and ``load``; this base class
supplies what follows from those with one wording: ``a + b`` and ``sum([...])`` through ``merge``, ``NotImplemented``
for other operands, the error for results asked of an empty estimator, a lock per object (thread safety and
pickling, :mod:`dlrcore.concurrency`) and ``repr``. ``tests/unit/test_conformance.py`` checks every estimator against
the whole protocol (splits, merge orders, ``sum``, copies, pickles, save and load, empty state).
"""

from __future__ import annotations

from typing import Any, TypeVar

from .concurrency import Locked
from .inputs import DLRInputError

__all__ = ["EMPTY_MESSAGE", "Estimator"]

#: The error of a result (or anything needing samples) asked of an estimator that holds none.
EMPTY_MESSAGE = "no samples: call update() with at least one batch first"

E = TypeVar("E", bound="Estimator")


class Estimator(Locked):
    """Base class of the streaming estimators: ``+``, ``sum``, the empty-state error and ``repr``.

    Subclasses define ``n``, ``merge``, ``copy`` and ``_repr_extra`` (further ``key=value`` pairs for ``repr``), and
    keep the widths of the two column blocks compared in ``_p`` and ``_C`` (None before the first batch) or
    override ``p`` and ``C``.
    """

    _p: int | None = None
    _C: int | None = None

    @property
    def n(self) -> int:  # pragma: no cover - every subclass defines it
        """Samples accumulated."""
        raise NotImplementedError

    @property
    def p(self) -> int | None:
        """Width of the first column block (the features), None before the first batch."""
        return self._p

    @property
    def C(self) -> int | None:
        """Width of the second column block (the outputs), None before the first batch."""
        return self._C

    def merge(self: E, other: E) -> E:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def copy(self: E) -> E:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _repr_extra(self) -> str:
        return ""

    def __add__(self: E, other: Any) -> E:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.copy().merge(other)

    def __radd__(self: E, other: Any) -> E:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:  # sum(list_of_estimators)
            return self.copy()
        return NotImplemented

    def _require_samples(self) -> None:
        """Raise :class:`~dlrcore.DLRInputError` (:data:`EMPTY_MESSAGE`) when no sample was accumulated."""
        if not self.n:
            raise DLRInputError(EMPTY_MESSAGE)

    def __repr__(self) -> str:
        extra = self._repr_extra()
        return f"{type(self).__name__}(n={self.n}, p={self.p}, C={self.C}{', ' + extra if extra else ''})"
