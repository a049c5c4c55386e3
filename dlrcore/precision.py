"""The precision policy, in one place: which dtype the products are formed in, and the machine epsilons.

``precision="float64"`` and ``"float32"`` force the product dtype. ``"auto"`` takes float32 when every input is
stored in 32 bits or fewer *and* the stacked width (features + outputs + label columns) is at least
:data:`FLOAT32_MIN_WIDTH`; float64 otherwise. Below that width the products are cheap next to the passes over
the data, and float64 keeps D_LR near 0 accurate. Every path (host exact, device exact, sketch, randomized)
applies this rule through :func:`work_dtype`; state is always accumulated in float64.

Examples
--------
>>> import numpy as np
>>> work_dtype([np.float32], width=200).name
'float32'
>>> work_dtype([np.float32], width=4).name
'float64'
>>> work_dtype([np.float32, np.float64], width=500).name
'float64'
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

import numpy as np

from .checks import check_choice

__all__ = ["EPS64", "FLOAT32_MIN_WIDTH", "PRECISIONS", "check_precision", "dtype_eps", "dtype_name", "work_dtype"]

#: The precision names every estimator accepts.
PRECISIONS = ("auto", "float32", "float64")

#: Below this many stacked columns (p + C + label columns) "auto" multiplies in float64 even for float32 data.
FLOAT32_MIN_WIDTH = 128

#: Machine epsilon of float64, the precision of every accumulated statistic.
EPS64 = float(np.finfo(np.float64).eps)


def check_precision(precision: object) -> str:
    """``precision`` when it is one of :data:`PRECISIONS` (``ValueError`` naming the choices otherwise)."""
    return check_choice(precision, "precision", PRECISIONS)


def dtype_name(dtype: Any) -> str:
    """``"float32"``-style name of a dtype of any namespace (NumPy, CuPy, array-API, ml_dtypes)."""
    try:
        return str(np.dtype(dtype).name)
    except TypeError:
        return str(getattr(dtype, "name", dtype)).split(".")[-1]  # array-API dtype objects


def dtype_eps(dtype: Any) -> float:
    """Machine epsilon of a float dtype of any namespace (bfloat16 and other 16-bit or narrower floats: 2**-8).

    Examples
    --------
    >>> dtype_eps("float32") == 2.0**-23
    True
    """
    name = dtype_name(dtype)
    return float(np.finfo(np.dtype(name)).eps) if name in ("float16", "float32", "float64") else 2.0**-8


def work_dtype(dtypes: Iterable[Any], *, precision: str = "auto", width: int | None = None,
               xp: ModuleType | None = None) -> Any:
    """The dtype the products are formed in, for inputs of ``dtypes`` stacked ``width`` columns wide.

    Returns a NumPy dtype, or ``xp.float32`` / ``xp.float64`` of the array namespace ``xp`` when one is given.
    ``width=None`` skips the width rule (the caller does not know the width yet).

    Raises
    ------
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`.
    """
    check_precision(precision)
    if precision == "auto":
        wide = any(_eight_bytes(dt) for dt in dtypes)
        want64 = wide or (width is not None and width < FLOAT32_MIN_WIDTH)
    else:
        want64 = precision == "float64"
    if xp is not None:
        return xp.float64 if want64 else xp.float32
    return np.dtype(np.float64 if want64 else np.float32)


def _eight_bytes(dtype: Any) -> bool:
    """A float (or complex) type of 8 bytes or more, in any byte order ('>f8' too) and of any namespace."""
    try:
        dt = np.dtype(dtype_name(dtype)) if not isinstance(dtype, np.dtype) else dtype
    except TypeError:
        return False
    return dt.kind in "fc" and dt.itemsize >= 8
