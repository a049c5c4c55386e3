"""Exact streaming D_LR against its cost floor and against the NumPy code a user would write.

Run ``python benchmarks/bench_exact.py`` (add ``--sizes small`` for a quick look, ``--json out.json`` to save).
For each (n, p, C) it times, interleaved in one process on the same float32 data:

* ``floor``: one ``scipy.linalg.blas.ssyrk`` Gram of the pre-concatenated n x (p + C) matrix ``[features,
  outputs]`` (the concatenation is not timed): the cost any exact method pays;
* ``dlrcore stream``: ``DLRStats.update`` over row batches, then ``result()``;
* ``dlrcore one-shot``: ``dlrcore.dlr(features, outputs)``;
* ``numpy naive``: center, ``numpy.linalg.qr`` of the outputs, Frobenius norms (what one writes from the paper).

It reports medians, the ratio to the floor, the peak of extra memory during the call (``tracemalloc``, which sees
NumPy's allocations, in a separate untimed run) and ``|D_LR - reference|`` against an independent float64
computation (float64 centering, ``scipy.linalg.qr`` of the outputs, float64 Gram, in row blocks).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
from scipy.linalg import blas

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dlrcore, not an installed copy
import dlrcore

SIZES = {
    "tiny": (2_000, 64, 5),  # a smoke test of the script itself
    "small": (20_000, 512, 10),
    "medium": (50_000, 2_048, 100),
    "large": (100_000, 4_096, 1_000),
}


def make_data(n: int, p: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features with a decaying spectrum and an offset, and noisy linear outputs with a bias."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p), dtype=np.float32)
    x *= (1.0 / np.sqrt(np.arange(1, p + 1, dtype=np.float32)))[None, :]
    x += np.float32(0.5)
    w = rng.standard_normal((p, C), dtype=np.float32) / np.float32(math.sqrt(p))
    f = x @ w
    f += rng.standard_normal((n, C), dtype=np.float32) * np.float32(0.1)
    f += rng.standard_normal(C, dtype=np.float32)
    return x, f


def reference_dlr(x: np.ndarray, f: np.ndarray, block: int = 8192) -> float:
    """Independent float64 D_LR: float64 centering, QR of the outputs, float64 Gram in row blocks."""
    n, p = x.shape
    mu = np.zeros(p)
    for i in range(0, n, block):
        mu += x[i : i + block].sum(axis=0, dtype=np.float64)
    mu /= n
    f64 = f.astype(np.float64)
    q, r = scipy.linalg.qr(f64, mode="economic", check_finite=False)
    d = np.abs(np.diag(r))
    q = q[:, d > 1e-10 * d.max()]
    gram = np.zeros((p, p))
    qtx = np.zeros((q.shape[1], p))
    for i in range(0, n, block):
        xc = x[i : i + block].astype(np.float64) - mu
        gram += xc.T @ xc
        qtx += q[i : i + block].T @ xc
    a = float(np.sum(q.sum(axis=0) ** 2) / n)
    rk = q.shape[1]
    return 1.0 - float(np.sum(qtx**2)) / (np.linalg.norm(gram) * math.sqrt(rk - 2 * a + a * a))


def naive_numpy(x: np.ndarray, f: np.ndarray) -> float:
    """The straightforward implementation: center, QR, Frobenius norms."""
    n = x.shape[0]
    xc = x - x.mean(axis=0)
    q, _ = np.linalg.qr(f)
    inner = np.linalg.norm(q.T @ xc) ** 2
    a = np.linalg.norm(q.T @ np.ones(n)) ** 2 / n
    norm_k = np.linalg.norm(xc.T @ xc)
    return float(1.0 - inner / (norm_k * math.sqrt(q.shape[1] - 2 * a + a * a)))


def naive_numpy_float64(x: np.ndarray, f: np.ndarray) -> float:
    """The same straightforward implementation on float64 copies of the data (the copies are part of its cost)."""
    return naive_numpy(x.astype(np.float64), f.astype(np.float64))


FLOOR = "floor (ssyrk of [X, F])"


def build_methods(x: np.ndarray, f: np.ndarray, batch_rows: int) -> dict[str, Callable[[], float]]:
    """label -> zero-argument call returning D_LR (NaN for the floor), on these arrays.

    The floor's input ``[features, outputs]`` is concatenated here, once, outside any timing.
    """
    n = x.shape[0]
    z = np.concatenate([x, f], axis=1)

    def floor() -> float:
        blas.ssyrk(1.0, z.T, trans=0, lower=0)
        return float("nan")

    def stream() -> float:
        st = dlrcore.DLRStats()
        for i in range(0, n, batch_rows):
            st.update(x[i : i + batch_rows], f[i : i + batch_rows])
        return st.result().value

    def oneshot() -> float:
        return dlrcore.dlr(x, f).value

    return {
        FLOOR: floor,
        "dlrcore stream": stream,
        "dlrcore one-shot": oneshot,
        "numpy naive": lambda: naive_numpy(x, f),
    }


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} threads={i.get('num_threads')}"
            for i in threadpool_info()
        )
    except ImportError:
        return "threadpoolctl not installed (pip install 'dlrcore[bench]')"


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    gc.collect()
    t0 = time.perf_counter()
    v = fn()
    return time.perf_counter() - t0, v


def peak_mb(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def run_case(name: str, n: int, p: int, C: int, repeats: int, batch_rows: int) -> list[dict]:
    x, f = make_data(n, p, C)
    ref = reference_dlr(x, f)
    methods = build_methods(x, f, batch_rows)
    times: dict[str, list[float]] = {k: [] for k in methods}
    values: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, so that machine noise hits every method alike
        for k, fn in methods.items():
            t, v = timed(fn)
            times[k].append(t)
            values[k] = v
    floor_t = statistics.median(times[FLOOR])
    rows = []
    for k, fn in methods.items():
        med = statistics.median(times[k])
        rows.append(
            {
                "case": name,
                "n": n,
                "p": p,
                "C": C,
                "method": k,
                "median_s": med,
                "times_s": times[k],
                "ratio_to_floor": med / floor_t,
                "peak_extra_mb": peak_mb(fn),
                "dlr": values[k],
                "abs_error": abs(values[k] - ref) if not math.isnan(values[k]) else None,
                "reference": ref,
            }
        )
    methods = fn = x = f = None  # free the arrays before the next case (the closures above hold them)
    gc.collect()
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'case':7} {'(n, p, C)':>22} {'method':26} {'median s':>9} {'x floor':>8} {'peak MB':>8} {'|err|':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        err = "-" if r["abs_error"] is None else f"{r['abs_error']:.1e}"
        shape = f"({r['n']}, {r['p']}, {r['C']})"
        print(
            f"{r['case']:7} {shape:>22} {r['method']:26} {r['median_s']:9.3f} {r['ratio_to_floor']:8.2f} "
            f"{r['peak_extra_mb']:8.0f} {err:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,medium,large", help="comma-separated subset of " + ",".join(SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=10_000, help="rows per DLRStats.update in the stream case")
    ap.add_argument("--json", metavar="PATH", help="write the rows and the environment as JSON")
    args = ap.parse_args(argv)
    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "dlrcore": dlrcore.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "blas": blas_info(),
    }
    print(f"# {env['blas']}")
    rows: list[dict] = []
    for name in args.sizes.split(","):
        n, p, C = SIZES[name]
        case_rows = run_case(name, n, p, C, args.repeats, args.batch_rows)
        print_table(case_rows)
        print()
        rows += case_rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
