"""Shared pieces of the pytest-benchmark suites (``benchmarks/test_bench_*.py``): timing, the data cache, the sizes
to run and the accuracy tolerances. See docs/benchmarks.md, "pytest-benchmark suites".

Tolerances. Every member that computes D_LR is checked against an independent float64 value in the same test, with
a tolerance derived from how that member computes, never fitted to a measured error:

* ``U32``, ``U64``: unit roundoffs, 2**-24 and 2**-53.
* dlrcore's exact path on float32 input multiplies in float32 and folds the products into float64; its documented
  accuracy is "an absolute error of about 1e-6, the tests allow 1e-5" (docs/dlr.md, "Precision"):
  :data:`DLRCORE_EXACT_TOL`. With float64 products (p + C < 128) it is far below that.
* dlrcore's randomized and sketch estimators report ``error_estimate``, a 99.73 % two-sided interval (docs/sketch.md);
  the seed and the data are fixed, so ``|err| <= error_estimate`` is a deterministic check here.
* A plain float32 route (NumPy or a library on float32 arrays) forms inner products of length n in float32. By the
  probabilistic rounding analysis of Higham and Mary (SIAM J. Sci. Comput. 2019), each such product has a relative
  error below ``lam sqrt(n) u`` with probability at least ``1 - 2 exp(-lam^2 / 2)``; ``lam = 10`` leaves a failure
  probability below 1e-21. D_LR = 1 - A / (N L) combines about four such quantities (A, N, L and the centering),
  each relative error moves D_LR by at most ``(1 - D_LR) <= 1`` times itself, so
  ``|err| <= 4 * 10 * sqrt(n) * u``: :func:`tol_float32`, :func:`tol_float64` (the float64 route against a float64
  reference: twice that of one route, both carry it).
"""

from __future__ import annotations

import gc
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

U32 = 2.0**-24
U64 = 2.0**-53
LAMBDA = 10.0  # probabilistic rounding bound, Higham and Mary 2019: failure probability < 2 exp(-50) ~ 4e-22
DLRCORE_EXACT_TOL = 1e-5  # docs/dlr.md: float32 products, "about 1e-6 measured, the tests allow 1e-5"

# a call longer than this (in its untimed warm-up) is timed with benchmark.pedantic and few rounds
PEDANTIC_ABOVE_S = 0.2
SIZES_ENV = "DLRCORE_BENCH_SIZES"


def tol_float32(n: int) -> float:
    """|D_LR error| bound of a plain float32 route with inner products of length n (see the module docstring)."""
    return 4 * LAMBDA * math.sqrt(n) * U32


def tol_float64(n: int) -> float:
    """|D_LR error| bound of a float64 route against an independent float64 reference (both carry a rounding
    error of ``4 lam sqrt(n) u64``)."""
    return 2 * 4 * LAMBDA * math.sqrt(n) * U64


def sizes(available: Iterable[str], default: list[str], allowed: Iterable[str] | None = None) -> list[str]:
    """The sizes a suite runs: ``$DLRCORE_BENCH_SIZES`` (comma-separated names of the script's sizes, for example
    ``tiny`` for a smoke run or ``small,medium``) where this suite has them, else ``default``."""
    names = [s for s in available if allowed is None or s in set(allowed)]
    env = os.environ.get(SIZES_ENV)
    if not env:
        return list(default)
    return [s for s in env.split(",") if s in names]


def slug(label: str) -> str:
    """A test id from a method label: 'dlrcore sketch k=64 m=32' -> 'dlrcore-sketch-k64-m32'."""
    s = label.lower().replace("=", "").replace("^", "")
    return re.sub(r"[^a-z0-9.]+", "-", s).strip("-")


def measure(benchmark: Any, fn: Callable[[], Any]) -> Any:
    """Time ``fn`` with pytest-benchmark and return its result (that of the last round).

    One untimed call first (lazy imports, Numba compilation or its cache, first touch of new memory); a call that
    took more than :data:`PEDANTIC_ABOVE_S` is then timed with ``benchmark.pedantic`` (5 rounds, 3 above 1 s,
    one call each), a shorter one with ``benchmark(fn)``, which calibrates the rounds to
    ``--benchmark-max-time``. With ``--benchmark-disable`` it is called once, untimed.
    """
    if benchmark.disabled:
        return benchmark(fn)
    gc.collect()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    gc.collect()
    if dt <= PEDANTIC_ABOVE_S:
        return benchmark(fn)
    return benchmark.pedantic(fn, rounds=5 if dt < 1.0 else 3, iterations=1)


class CaseCache:
    """The data of one case at a time, shared by the members of its group (the tests of a group are adjacent), and
    freed before the next case's data are made."""

    def __init__(self) -> None:
        self.key: Any = None
        self.value: Any = None

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if key != self.key:
            self.key = self.value = None
            gc.collect()
            self.value = make()
            self.key = key
        return self.value

    def clear(self) -> None:
        self.key = self.value = None
        gc.collect()


def record(benchmark: Any, **info: Any) -> None:
    """Put plain JSON values into the benchmark's ``extra_info`` (saved with ``--benchmark-json``/autosave)."""
    for k, v in info.items():
        if hasattr(v, "item"):
            v = v.item()
        benchmark.extra_info[k] = v
