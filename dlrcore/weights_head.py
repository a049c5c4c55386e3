"""The last layer's weight and bias as the statistics D_LR needs from them: :class:`WeightsHead`.

With outputs ``F = Phi W^T + 1 b^T`` (``W`` C x p), D_LR and D_half need only ``W^T W``, ``W^T b``, ``b^T b`` and
the class-centered ``W^T (I - 1 1^T / C) W`` (p x p at most: never a C x C matrix, never all of ``W`` in float64),
so language-model heads with C = 50k to 256k are cheap. ``W`` and ``b`` are each stored scaled by a power of two
(:mod:`dlrcore.scaling`), so that the products stay inside the float64 range.

Examples
--------
>>> import numpy as np
>>> w, b = np.arange(6.0).reshape(3, 2), np.ones(3)
>>> head = WeightsHead.from_arrays(w, b)
>>> wtw, wtb, btb, _ = head.scaled(0)
>>> bool(np.allclose(wtw, w.T @ w)), bool(np.allclose(wtb, w.T @ b)), btb
(True, True, 3.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.linalg import blas

from .chan import chan_step
from .inputs import DLRInputError, as_matrix, check_finite
from .moments import symmetric
from .scaling import max_abs, new_exponent, out_of_window, scale_array
from .storage import SCALE_EXPONENT_LIMIT, array_field, check_comoment, float_field, int_array_field

__all__ = ["WeightsHead"]

#: Rows of ``W`` converted to float64 at a time (about this many bytes).
_BLOCK_BYTES = 64 * 2**20


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the rounding of how ``W^T W`` was summed (dlrcore versions sum it in different orders)."""
    return a.shape == b.shape and bool(np.abs(a - b).max(initial=0.0) <= 1e-12 * np.abs(a).max(initial=0.0))


@dataclass(frozen=True)
class WeightsHead:
    """``W^T W``, ``W^T b``, ``b^T b`` and the class-centered ``W^T W`` of ``W 2**-e_W`` and ``b 2**-e_b``."""

    C: int
    p: int
    wtw: np.ndarray
    wtb: np.ndarray
    btb: float
    wtw_centered: np.ndarray | None
    exponents: tuple[int, int] = (0, 0)  # (e_W, e_b)
    eps: float = 0.0  # machine epsilon of the weight's dtype

    @classmethod
    def from_arrays(cls, weight: Any, bias: Any = None) -> WeightsHead:
        """Check ``weight`` (C x p) and ``bias`` (C,) and reduce them, in one pass over ``W``.

        Raises
        ------
        DLRInputError
            For a weight that is not a finite C x p matrix, or a bias that does not match it.
        """
        w = as_matrix(weight, "weight")
        if w.shape[0] < 1 or w.shape[1] < 1:
            raise DLRInputError(f"weight: expected a C x p matrix with C, p >= 1, got shape {w.shape}")
        check_finite(w, "weight")
        C, p = w.shape
        b: np.ndarray
        if bias is None:
            b = np.zeros(C)
        else:
            b = as_matrix(bias, "bias", allow_1d=True)
            if b.shape[1] != 1 or b.shape[0] != C:
                raise DLRInputError(f"bias: expected shape ({C},) to match weight {w.shape}, got {b.shape}")
            check_finite(b, "bias")
            b = b[:, 0].astype(np.float64)
        ew = new_exponent(max_abs(w), 0, np.float64, fixed=False)
        eb = new_exponent(max_abs(b), 0, np.float64, fixed=False)
        b = scale_array(b, eb)
        # each block's rows about the block's own mean, merged by Chan's update into the class-centered
        # W^T (I - 1 1^T / C) W; then W^T W = that + C m m^T with m the mean row, a sum of positive semi-definite
        # terms (no cancellation either way)
        step = max(1, _BLOCK_BYTES // (8 * p))
        m, seen = np.zeros(p), 0
        wtw_c, wtb = np.zeros((p, p)), np.zeros(p)
        for i in range(0, C, step):
            wi = scale_array(np.asarray(w[i : i + step], dtype=np.float64), ew)
            mb = wi.mean(axis=0)
            wtw_c += symmetric(blas.dsyrk(1.0, (wi - mb).T, trans=0, lower=0))
            merged = chan_step(seen, m, wi.shape[0], mb)
            wtw_c += merged.weight * np.outer(merged.delta, merged.delta)
            m, seen = merged.mean, merged.n
            wtb += wi.T @ b[i : i + step]
        return cls(C=C, p=p, wtw=wtw_c + C * np.outer(m, m), wtb=wtb, btb=float(b @ b), wtw_centered=wtw_c,
                   exponents=(ew, eb), eps=float(np.finfo(w.dtype).eps))

    def same_as(self, other: WeightsHead) -> bool:
        """Whether ``other`` holds the same weight and bias (up to the order ``W^T W`` was summed in)."""
        return _same(self.wtw, other.wtw) and _same(self.wtb, other.wtb) and self.exponents == other.exponents

    def copy(self) -> WeightsHead:
        return replace(self, wtw=self.wtw.copy(), wtb=self.wtb.copy(),
                       wtw_centered=None if self.wtw_centered is None else self.wtw_centered.copy())

    def scaled(self, e: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
        """``W^T W``, ``W^T b``, ``b^T b`` and the class-centered ``W^T W`` for features stored scaled by ``2**-e``.

        With the weight and bias stored as ``W_s = W 2**-e_W`` and ``b_s = b 2**-e_b``,
        ``F 2**-(e + e_W + d) = (Phi 2**-e) (W_s 2**-d)^T + 1 (b_s 2**(g - d))^T`` with ``g = e_b - e - e_W``:
        the bias is scaled against the features and the weight, and ``d >= 0`` scales the weight down only as far
        as keeps the bias inside the float64 range (a bias that large dwarfs ``W^T W``, which may then round to
        zero, as it should).
        """
        ew, eb = self.exponents
        g = eb - e - ew
        d = max(0, g - 128) if self.btb > 0 else 0
        with np.errstate(under="ignore"):
            wtw = np.ldexp(self.wtw, np.int32(-2 * d))
            wtw_c = None if self.wtw_centered is None else np.ldexp(self.wtw_centered, np.int32(-2 * d))
            return wtw, np.ldexp(self.wtb, np.int32(g - 2 * d)), math.ldexp(self.btb, 2 * (g - d)), wtw_c

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The fields :meth:`from_state` reads back."""
        out = dict(wtw=self.wtw, wtb=self.wtb, btb=np.array(self.btb), weight_exponents=np.array(self.exponents))
        if self.wtw_centered is not None:
            out["wtw_centered"] = self.wtw_centered
        return out

    @classmethod
    def from_state(cls, data: dict[str, np.ndarray], path: Any, C: int, p: int) -> WeightsHead:
        """Read and validate the fields written by :meth:`state_arrays`, brought into the window exactly.

        Raises
        ------
        DLRInputError
            Naming the damaged field.
        """
        wtw = array_field(data, "wtw", path, (p, p))
        check_comoment(wtw, "wtw", path)
        wtb = array_field(data, "wtb", path, (p,))
        btb = float_field(data, "btb", path, least=0.0)
        exponents = (0, 0)
        if "weight_exponents" in data:  # absent in files written before the weights were scaled
            lim = SCALE_EXPONENT_LIMIT
            ew, eb = int_array_field(data, "weight_exponents", path, 2, least=-lim, most=lim)
            exponents = (ew, eb)
        wtw_c = None
        if "wtw_centered" in data:
            wtw_c = array_field(data, "wtw_centered", path, (p, p))
            check_comoment(wtw_c, "wtw_centered", path)
        head = cls(C=C, p=p, wtw=wtw, wtb=wtb, btb=btb, wtw_centered=wtw_c, exponents=exponents)._normalized()
        bound = np.sqrt(np.clip(np.diagonal(head.wtw), 0.0, None)) * math.sqrt(head.btb)
        if not np.all(np.abs(head.wtb) <= bound * (1.0 + 1e-6) + 1e-300):
            raise DLRInputError(
                f"{path}: damaged file, field 'wtb' breaks |W^T b| <= |W| |b| against 'wtw' and 'btb' (these "
                "cannot come from one weight and bias)"
            )
        return head

    def _normalized(self) -> WeightsHead:
        """The same head with ``W^T W`` and ``b^T b`` brought into the window (exactly, by powers of two)."""
        dw = out_of_window(math.sqrt(max(float(np.max(np.diagonal(self.wtw))), 0.0))) if self.wtw.size else 0
        db = out_of_window(math.sqrt(self.btb))
        if not (dw or db):
            return self
        return replace(
            self,
            wtw=np.ldexp(self.wtw, np.int32(-2 * dw)),
            wtw_centered=None if self.wtw_centered is None else np.ldexp(self.wtw_centered, np.int32(-2 * dw)),
            wtb=np.ldexp(self.wtb, np.int32(-dw - db)),
            btb=math.ldexp(self.btb, -2 * db),
            exponents=(self.exponents[0] + dw, self.exponents[1] + db),
        )
