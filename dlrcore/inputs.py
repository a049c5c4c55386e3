"""Conversion and validation of user arrays.

Everything that enters dlrcore goes through :func:`as_matrix`: it accepts NumPy arrays, objects exposing
``__array__`` or ``__dlpack__`` (a CPU ``torch.Tensor``, a JAX array, ...) without importing their framework,
and turns them into a 2-D floating NumPy array, or raises :class:`DLRInputError` naming the problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DLRInputError", "as_matrix", "check_batch", "check_finite", "check_finite_and_bound", "label_targets", "one_hot",
]


class DLRInputError(ValueError):
    """Raised for data that D_LR cannot be computed from (shape, dtype, NaN/Inf, empty, ...)."""


# Low-precision float types that NumPy knows only through extensions (ml_dtypes: bfloat16, float8...).
_EXTENSION_FLOAT_NAMES = ("bfloat16", "float8", "float4", "float6")


def from_framework(x: Any, name: str) -> np.ndarray:
    """Turn a framework tensor into a NumPy array through its own methods (no framework import)."""
    # torch: tensors that require grad refuse both __array__ and __dlpack__; detach() is the tensor's own method.
    detach = getattr(x, "detach", None)
    if callable(detach) and type(x).__module__.startswith("torch"):
        x = detach()
        if str(getattr(x, "dtype", "")) in ("torch.bfloat16",) or "float8" in str(getattr(x, "dtype", "")):
            x = x.float()  # NumPy has no bfloat16; widen on the tensor's own device first
        device = getattr(x, "device", None)
        if device is not None and getattr(device, "type", "cpu") != "cpu":
            raise DLRInputError(
                f"{name}: tensor lives on device {device!s}; move it to the host with .cpu() "
                "(GPU arrays go through the CuPy path, not the NumPy core)"
            )
    if hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError, ValueError) as exc:
            raise DLRInputError(f"{name}: could not import array through DLPack: {exc}") from exc
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        if hasattr(x, "__dlpack__"):
            try:
                return np.from_dlpack(x)
            except (BufferError, TypeError, RuntimeError, ValueError):
                pass
        raise DLRInputError(f"{name}: cannot convert {type(x).__name__} to an array: {exc}") from exc


def as_matrix(x: Any, name: str, *, allow_1d: bool = False) -> np.ndarray:
    """Return ``x`` as a 2-D real floating NumPy array (no copy when it already is one).

    Parameters
    ----------
    x : array_like
        NumPy array, or any object exposing ``__array__`` or ``__dlpack__``.
    name : str
        What the array is (``"features"``, ``"outputs"``...), used in error messages.
    allow_1d : bool
        If true a 1-D array of length n is read as an n x 1 column.

    Returns
    -------
    numpy.ndarray
        float16, float32 or float64 array of ndim 2. Integer and boolean input becomes float64;
        bfloat16 and other extension floats become float32.

    Raises
    ------
    DLRInputError
        If ``x`` is not numeric, is complex, has the wrong number of dimensions, or is a masked array with masked
        entries (their values would be read).

    Examples
    --------
    >>> as_matrix([1.0, 2.0, 3.0], "outputs", allow_1d=True).shape
    (3, 1)
    """
    a = x if isinstance(x, np.ndarray) else from_framework(x, name)
    if isinstance(a, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(a))
        if masked:
            raise DLRInputError(
                f"{name}: a masked array with {masked} masked entries; the statistics would read the values under "
                "the mask. Pass only the rows to keep (for example x[~np.ma.getmaskarray(x).any(axis=1)]) or fill "
                "the masked entries first"
            )
        a = np.ma.getdata(a)
    dt = a.dtype
    if dt.kind == "c":
        raise DLRInputError(f"{name}: complex dtype {dt} is not supported; D_LR is defined for real arrays")
    if dt.kind in "biu":
        a = a.astype(np.float64)
    elif dt.kind == "f":
        if dt.itemsize > 8:  # longdouble
            a = a.astype(np.float64)
    elif any(dt.name.startswith(s) for s in _EXTENSION_FLOAT_NAMES):
        a = a.astype(np.float32)
    else:
        raise DLRInputError(f"{name}: non-numeric dtype {dt} (expected a real floating or integer array)")
    if a.ndim == 1 and allow_1d:
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        expect = "1-D or 2-D (n x C)" if allow_1d else "2-D (n x p)"
        raise DLRInputError(f"{name}: expected a {expect} array, got ndim={a.ndim} with shape {a.shape}")
    return a


#: The warning for class ids passed as outputs (see :func:`looks_like_class_ids`).
CLASS_ID_OUTPUTS = (
    "outputs look like class ids (one integer column): D_LR compares the features with the network's outputs, "
    "the n x C logits or predictions of its last linear layer; pass class ids as labels=... instead"
)


def looks_like_class_ids(outputs: Any) -> bool:
    """Whether ``outputs`` is one column of integers or booleans (NumPy, list, or a framework tensor's dtype)."""
    dt = getattr(outputs, "dtype", None)
    if dt is None:
        try:
            dt = np.asarray(outputs).dtype
        except (TypeError, ValueError):
            return False
    name = str(dt)
    integral = dt.kind in "iub" if isinstance(dt, np.dtype) else ("int" in name or "bool" in name)
    shape = tuple(getattr(outputs, "shape", np.shape(outputs)))
    return integral and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))


def check_batch(
    x_shape: tuple[int, ...],
    f_shape: tuple[int, ...] | None,
    *,
    p: int | None = None,
    C: int | None = None,
    names: tuple[str, str] = ("features", "outputs"),
    widths: tuple[str, str] = ("p", "C"),
) -> None:
    """One wording for the shape checks of every batch: rows, columns, and the widths of earlier batches.

    ``f_shape`` None skips the second array (statistics built from a weight). ``p`` and ``C`` are the widths of
    earlier batches (None: no earlier batch); ``names`` and ``widths`` are how messages call the arrays and widths.

    Raises
    ------
    DLRInputError
        Naming the array and the mismatch.

    Examples
    --------
    >>> check_batch((5, 3), (4, 2))
    Traceback (most recent call last):
    ...
    dlrcore.inputs.DLRInputError: outputs: 4 rows but features have 5 (mismatched n: row counts must match)
    """
    xn, fn = names
    if x_shape[0] == 0:
        raise DLRInputError(f"{xn}: empty batch (0 rows)")
    if x_shape[1] == 0:
        raise DLRInputError(f"{xn}: zero columns ({widths[0]} = 0)")
    if p is not None and x_shape[1] != p:
        raise DLRInputError(f"{xn}: {x_shape[1]} columns, but earlier batches had {widths[0]} = {p}")
    if f_shape is None:
        return
    if f_shape[0] != x_shape[0]:
        raise DLRInputError(f"{fn}: {f_shape[0]} rows but {xn} have {x_shape[0]} (mismatched n: row counts must match)")
    if f_shape[1] == 0:
        raise DLRInputError(f"{fn}: zero columns ({widths[1]} = 0)")
    if C is not None and f_shape[1] != C:
        raise DLRInputError(f"{fn}: {f_shape[1]} columns, but earlier batches had {widths[1]} = {C}")


def one_hot(ids: np.ndarray, n_rows: int, num_classes: int) -> np.ndarray:
    """The n x ``num_classes`` one-hot float64 targets of integer class ids, checked: 1-D, ``n_rows`` long, each
    in ``[0, num_classes)``.

    Raises
    ------
    DLRInputError
        Naming ``labels`` and what is wrong (shape, length, or the ids' range).

    Examples
    --------
    >>> one_hot(np.array([0, 2]), 2, 3)
    array([[1., 0., 0.],
           [0., 0., 1.]])
    """
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DLRInputError(f"labels: expected 1-D integer class ids, got dtype {ids.dtype} and shape {ids.shape}")
    if ids.shape[0] != n_rows:
        raise DLRInputError(f"labels: {ids.shape[0]} rows but features have {n_rows}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise DLRInputError(
            f"labels: class ids must lie in [0, {num_classes}), got range [{ids.min()}, {ids.max()}]"
        )
    y = np.zeros((n_rows, num_classes))
    y[np.arange(n_rows), ids] = 1.0
    return y


def label_targets(labels: Any, n_rows: int, num_classes: int | None) -> tuple[np.ndarray, str]:
    """Labels as an n x C_y target matrix and their kind: ``"classes"`` for 1-D integer class ids (one-hot with
    ``num_classes`` columns), ``"targets"`` for anything else numeric (taken as target rows).

    Raises
    ------
    DLRInputError
        For class ids without a class count, ids out of range, or a row count other than ``n_rows``.

    Examples
    --------
    >>> label_targets(np.array([1, 0]), 2, 2)[1], label_targets(np.ones((2, 3)), 2, None)[0].shape
    ('classes', (2, 3))
    """
    raw = np.asarray(labels if isinstance(labels, np.ndarray) else from_framework(labels, "labels"))
    if raw.ndim == 1 and raw.dtype.kind in "iu":
        if num_classes is None:
            raise DLRInputError("labels: integer class ids need num_classes (DLRStats(num_classes=...)) when C = 1")
        return one_hot(raw, n_rows, num_classes), "classes"
    y = as_matrix(raw, "labels", allow_1d=True)
    if y.shape[0] != n_rows:
        raise DLRInputError(f"labels: {y.shape[0]} rows but features have {n_rows}")
    return y, "targets"


def rejected_batch(
    block: int, rows: tuple[int, int], arrays: Sequence[Any], names: Sequence[str], work: np.dtype
) -> DLRInputError:
    """The error for a batch whose staging failed in rows ``rows`` of array ``block`` (the state is unchanged),
    naming the array and the batch rows."""
    name, a = names[block], arrays[block]
    r0, r1 = rows
    try:
        check_finite_and_bound(a[r0:r1], name, work, row_offset=r0)  # NaN/Inf, or entries too large: own words
    except DLRInputError as exc:
        return exc
    advice = " or use precision='float64'" if np.dtype(work) == np.float32 else ""
    return DLRInputError(
        f"{name}: rows {r0}-{r1 - 1} of this batch are too large for {np.dtype(work)} products (their squares, "
        f"centered about the running mean, exceed its range); the statistics were left unchanged. Rescale the data "
        f"(D_LR is scale invariant){advice}"
    )


def in_file_rows(exc: DLRInputError, start: int) -> DLRInputError:
    """The same error with the batch rows it names (``row N``, ``rows A-B of this batch``) counted from ``start``,
    the batch's first row in the files it was read from."""
    import re

    msg = re.sub(
        r"\brows (\d+)-(\d+) of this batch",
        lambda m: f"rows {int(m[1]) + start}-{int(m[2]) + start} of the files",
        str(exc),
    )
    msg = re.sub(r"\bfirst at row (\d+)", lambda m: f"first at row {int(m[1]) + start} of the files", msg)
    return DLRInputError(msg)


def check_finite(a: np.ndarray, name: str, row_offset: int = 0) -> None:
    """Raise :class:`DLRInputError` naming the first NaN/Inf of ``a`` (its row counted from ``row_offset``), if any.

    Magnitude is not checked: the statistics scale each block by a power of two (:mod:`dlrcore.scaling`).
    """
    if a.size:
        _finite_range(a, name, int(row_offset))


def _finite_range(a: np.ndarray, name: str, offset: int) -> tuple[float, float]:
    """``(max, min)`` of a non-empty ``a``, or the error naming its first non-finite value."""
    hi = float(np.max(a))
    lo = float(np.min(a))
    if not (np.isfinite(hi) and np.isfinite(lo)):
        bad = ~np.isfinite(a)
        rows, cols = np.nonzero(bad.reshape(a.shape[0], -1))
        first = a.reshape(a.shape[0], -1)[rows[0], cols[0]]
        kind = "NaN" if np.isnan(first) else ("-Inf" if first < 0 else "Inf")
        raise DLRInputError(
            f"{name}: contains {int(bad.sum())} non-finite value(s) ({kind} first at row {rows[0] + offset}, "
            f"column {cols[0]}); the statistics were left unchanged"
        )
    return hi, lo


def check_finite_and_bound(a: np.ndarray, name: str, work: np.dtype, row_offset: int | None = None) -> None:
    """Raise if ``a`` holds NaN/Inf, or values so large that the centered Gram would overflow ``work``.

    Uses two reductions (max and min), which propagate NaN, and no n x p temporary. With ``row_offset`` (the
    position of ``a`` in a larger batch) rows are reported as rows of that batch.
    """
    offset = 0 if row_offset is None else int(row_offset)
    if a.size == 0:
        return
    limit = float(np.finfo(work).max) / 8.0
    if a.dtype.itemsize >= 4:
        # one BLAS pass: a finite sum of squares rules out NaN, Inf and overflow of any Gram entry
        flat = a.ravel(order="K")
        with np.errstate(over="ignore", invalid="ignore"):
            sq = float(np.dot(flat, flat))
        if np.isfinite(sq) and sq <= limit / 8.0:
            return
    hi, lo = _finite_range(a, name, offset)
    bound = max(abs(hi), abs(lo))
    # centered entries are at most 2*bound; a Gram entry sums n of their products
    # (2 bound)^2 n > limit, written so that it cannot overflow Python floats
    if bound > 0 and bound > 0.5 * math.sqrt(limit / max(a.shape[0], 1)):
        advice = " or use precision='float64'" if np.dtype(work) == np.float32 else ""
        where = "" if row_offset is None else f" (rows {offset}-{offset + a.shape[0] - 1} of this batch)"
        raise DLRInputError(
            f"{name}: values up to {bound:.3g} would overflow {np.dtype(work)} products over {a.shape[0]} rows"
            f"{where}; the statistics were left unchanged. Rescale the data (D_LR is scale invariant){advice}"
        )
