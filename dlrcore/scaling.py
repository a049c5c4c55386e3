"""Power-of-two scaling of column blocks, so that every measure is correct from about 1e-300 to 1e300.

D_LR, D_half, CKA and NC1 do not change when one block of columns (the features, the outputs, ...) is multiplied by
a positive number. Products of raw values do: squares of 1e-200 underflow to zero, squares of 1e200 overflow, and
float32 products lose everything below about 1e-19 or above 1e19. So each block carries an exponent ``e``, and the
statistics hold the moments of ``x * 2**-e``: multiplying by a power of two is exact in binary floating point, so
the stored moments are the exact moments of the raw data up to that factor, and merging two states brings both to
the larger exponent exactly.

The rule (:func:`new_exponent`): a block keeps ``e = 0`` while its values lie in the *window*
``[2**-L, 2**L]`` of its product precision (``L = 32`` for float32 products, 64 for float64, so that squares,
fourth powers and sums of them stay far inside the range); data outside it get ``e`` such that the largest scaled
magnitude lies in ``[0.5, 1)``. Once a block holds non-zero values its exponent never decreases (values far below
the ones already accumulated are negligible next to them, to rounding), and it increases, with the state scaled
down exactly, when later values would leave the window above.

Detection costs nothing on the common path: the staging pass already sums the squares of the centered values, and
only a sum outside ``count * 2**(+-2L)`` triggers an exact max-abs pass (:func:`max_abs`) over the rows concerned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["max_abs", "new_exponent", "out_of_window", "scale_array", "suspicious", "window_exponent"]


def window_exponent(work: Any) -> int:
    """``L`` of the window ``[2**-L, 2**L]`` for products in ``work`` (float32: 32, otherwise 64).

    Examples
    --------
    >>> window_exponent(np.float32), window_exponent(np.float64)
    (32, 64)
    """
    try:
        wide = np.dtype(work).itemsize > 4
    except TypeError:  # an array-API dtype object
        wide = "64" in str(getattr(work, "name", work))
    return 64 if wide else 32


def suspicious(sq: float, count: int, work: Any, *, fixed: bool) -> bool:
    """Whether a block's sum of squares ``sq`` of ``count`` scaled, centered values calls for an exact look.

    True when ``sq`` is not finite, when the root mean square exceeds ``2**L``, or, for a block whose exponent is
    not yet ``fixed`` by non-zero data, when it is below ``2**-L`` (which includes a block constant so far).
    """
    if count <= 0:
        return False
    if not math.isfinite(sq):
        return True
    big = 2.0 ** (2 * window_exponent(work))
    if sq > count * big:
        return True
    return not fixed and sq < count / big


def max_abs(a: Any, xp: Any = np) -> float:
    """Largest magnitude in ``a`` as a Python float (NaN if ``a`` holds NaN, 0 for an empty array), without an
    ``abs`` temporary: two reductions."""
    if a.size == 0:
        return 0.0
    hi, lo = float(xp.max(a)), float(xp.min(a))
    if math.isnan(hi) or math.isnan(lo):
        return math.nan
    return max(abs(hi), abs(lo))


def new_exponent(amax: float, exponent: int, work: Any, *, fixed: bool) -> int:
    """The exponent a block should have after seeing raw values of largest magnitude ``amax`` (finite).

    Examples
    --------
    >>> new_exponent(1.0, 0, np.float64, fixed=False), new_exponent(1e-300, 0, np.float64, fixed=False)
    (0, -996)
    >>> new_exponent(1e300, 0, np.float64, fixed=True), new_exponent(1e-300, 0, np.float64, fixed=True)
    (997, 0)
    """
    if not amax > 0:
        return exponent
    big = window_exponent(work)
    top = math.frexp(amax)[1]  # amax lies in [2**(top - 1), 2**top)
    if fixed:
        return top if top - exponent > big else exponent
    if exponent == 0 and 2.0**-big <= amax <= 2.0**big:
        return 0
    return top


def out_of_window(magnitude: float, work: Any = np.float64) -> int:
    """The power of two to divide a stored block by so that ``magnitude`` (its largest mean or standard deviation,
    as read from a file) lies in the window; 0 when it already does or is 0.

    Examples
    --------
    >>> out_of_window(1e300), out_of_window(3.0), out_of_window(0.0)
    (997, 0, 0)
    """
    big = window_exponent(work)
    if not magnitude > 0 or 2.0**-big <= magnitude <= 2.0**big:
        return 0
    return math.frexp(magnitude)[1]


def scale_array(a: Any, exponent: int, xp: Any = np) -> Any:
    """``a * 2**-exponent`` (``a`` itself when the exponent is 0), exact unless a value falls below the range."""
    if exponent == 0:
        return a
    if xp is np:
        return np.ldexp(a, np.int32(-exponent))  # keeps a float32 array float32
    # array-API namespaces: two exact multiplications by powers of two keep each factor inside the range
    half = -exponent // 2
    return (a * (2.0**half)) * (2.0 ** (-exponent - half))
