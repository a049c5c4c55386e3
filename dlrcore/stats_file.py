"""Saving and loading :class:`~dlrcore.DLRStats`: one portable ``.npz`` file, written atomically and read back
validated (the format is :mod:`dlrcore.stats_format`).

A mixin in the scikit-learn manner: it declares the state of :class:`~dlrcore.DLRStats` it reads and writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from .blocked_moments import BlockedMoments, block_chunk_bytes
from .concurrency import locked
from .jackknife import check_jackknife_memory
from .moments import Moments
from .stats_format import FIRST_FORMAT_VERSION, FORMAT_VERSION, MAGIC, StatsHeader
from .storage import array_field, atomic_savez, check_comoment, read_npz, scale_exponents_field
from .weights_head import WeightsHead

__all__ = ["StatsFile"]

S = TypeVar("S", bound="StatsFile")


class StatsFile:
    """Mixin of :class:`~dlrcore.DLRStats`: :meth:`save` and :meth:`load`."""

    precision: str
    num_classes: int | None
    blocks: int | None
    _p: int | None
    _C: int | None
    _cy: int | None
    _label_kind: str | None
    _data_eps: float
    _weights: bool
    _mom: Moments | None
    _blocked: BlockedMoments | None
    _head: WeightsHead | None

    if TYPE_CHECKING:  # supplied by DLRStats and DeviceBatches; declared for the type checker only, so that no stub
        # here can shadow the real methods whatever the order of DLRStats' bases

        def _sync(self) -> None: ...

        @property
        def _work(self) -> np.dtype | None: ...

        @property
        def _c_out(self) -> int: ...

    @locked
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the statistics to one portable ``.npz`` file, atomically.

        The file is written next to ``path`` under a temporary name, flushed to disk and renamed over ``path``,
        so an interrupted save never leaves a half-written file in place of a good one.

        Returns
        -------
        pathlib.Path
            The path written (``.npz`` is appended when missing).
        """
        self._sync()
        work = self._work
        header = StatsHeader(
            p=self._p, C=self._C, cy=self._cy, label_kind=self._label_kind, num_classes=self.num_classes,
            work=None if work is None else work.name, precision=self.precision, data_eps=self._data_eps,
            weights_mode=self._weights, n=0 if self._blocked is None else self._blocked.rows, blocks=self.blocks,
        )
        meta: dict[str, Any] = header.to_arrays()
        if self._mom is not None:
            meta.update(self._mom.state_arrays())
        if self._blocked is not None:
            meta.update(self._blocked.state_arrays())
        if self._head is not None:
            meta.update(self._head.state_arrays())
        # statistics without blocks keep the first format, which every dlrcore version reads
        return atomic_savez(path, MAGIC, FIRST_FORMAT_VERSION if self.blocks is None else FORMAT_VERSION, meta)

    @classmethod
    def load(cls: type[S], path: str | os.PathLike[str]) -> S:
        """Read statistics written by :meth:`save`.

        Raises
        ------
        DLRInputError
            If the file is not a dlrcore statistics file, is damaged, or has a newer format version; or, for
            statistics saved with ``blocks``, if they would not fit in half of the memory available.
        """
        data = read_npz(path, MAGIC, FORMAT_VERSION)
        h = StatsHeader.from_arrays(data, path)
        st = cast(Any, cls)(precision=h.precision, num_classes=h.num_classes, blocks=h.blocks)
        st._p, st._C, st._cy, st._label_kind = h.p, h.C, h.cy, h.label_kind
        st._data_eps, st._weights = h.data_eps, h.weights_mode
        if h.weights_mode and h.C is not None and h.p is not None:  # widths checked by from_arrays
            st._head = WeightsHead.from_state(data, path, h.C, h.p)
        if h.n and h.p and h.cy is not None and h.blocks is not None:
            widths = [h.p, st._c_out, h.cy]
            work = np.dtype(h.work)
            check_jackknife_memory(widths, h.blocks, work.itemsize)
            st._blocked = BlockedMoments.from_state(
                data, path, widths, blocks=h.blocks, n=h.n, work=work, exact_block=1 if st._c_out else None,
                chunk_bytes=block_chunk_bytes(sum(widths), work, h.blocks),
            )
        elif h.n and h.p and h.cy is not None:
            c = st._c_out
            q = h.p + c + h.cy
            mean = array_field(data, "mean", path, (q,))
            comoment = array_field(data, "comoment", path, (q, q))
            check_comoment(comoment, "comoment", path)
            st._mom = Moments([h.p, c, h.cy], work=np.dtype(h.work), exact_block=1 if c else None)
            st._mom.load_arrays(h.n, mean, comoment, scale_exponents_field(data, path, 3))
        return cast(S, st)
