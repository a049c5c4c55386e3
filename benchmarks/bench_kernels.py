"""Staging pass of Moments: NumPy (subtract + sum(axis=0) + BLAS dot) against the fused kernel shift_into.

Same process, interleaved, median of repeats (see docs PERF-NOTES: single runs vary by 10-20%). The NumPy side is
exactly what ``Moments._stage_rows`` did before the kernel: ``np.subtract(x, K, out=stage, casting="unsafe")``,
``stage.sum(axis=0, dtype=work)`` and ``np.dot(flat, flat)``. GB/s counts the bytes of ``x`` read plus the
stage written once (the minimum traffic of either method). Numba compile times (cold: empty cache directory, in
a subprocess; cached: a second subprocess) are measured apart and never enter the steady-state timings.

    python benchmarks/bench_kernels.py [--repeats 7] [--rows 100000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dlrcore import kernels

SIZES = [(16384, 512), (16384, 2048), (8192, 4096)]

_COMPILE_PROBE = """
import time, json, numpy as np
t0 = time.perf_counter()
from dlrcore import kernels
t1 = time.perf_counter()
x = np.ones((64, 8), np.float32); o = np.empty_like(x); s = np.zeros(8, np.float32)
t2 = time.perf_counter(); kernels._shift_into_numba(x, s, o); t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2}))
"""


def numpy_staging(x: np.ndarray, shift: np.ndarray, stage: np.ndarray) -> tuple[np.ndarray, float]:
    """The pre-kernel staging of Moments._stage_rows (one block filling the whole stage)."""
    np.subtract(x, shift, out=stage, casting="unsafe")
    ssum = stage.sum(axis=0, dtype=stage.dtype).astype(np.float64)
    flat = stage.reshape(-1)
    return ssum, float(np.dot(flat, flat))


def copy_floor(x: np.ndarray, shift: np.ndarray, stage: np.ndarray) -> None:
    """The least traffic of either method: one read of ``x`` and one write of the stage (``shift`` unused)."""
    np.copyto(stage, x, casting="unsafe")


def make_segment(n: int, p: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, shift, stage): float32 rows with a per-column offset, the shift of ``Moments`` (mean of the first 1024
    rows) and an empty stage of the same shape."""
    x = rng.standard_normal((n, p), dtype=np.float32)
    x += rng.standard_normal(p, dtype=np.float32)
    shift = x[:1024].mean(axis=0)
    return x, shift, np.empty_like(x)


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    return [
        {k: d.get(k) for k in ("user_api", "internal_api", "version", "num_threads", "architecture", "filepath")}
        for d in threadpool_info()
    ]


def compile_times() -> dict:
    if kernels.BACKEND != "numba":
        return {"backend": kernels.BACKEND}
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=root)
        for label in ("cold", "cached"):
            res = subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, capture_output=True, text=True)
            out[label] = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else res.stderr[-500:]
    return out


def timeit(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def bench_segment(n: int, p: int, repeats: int, rng: np.random.Generator) -> dict:
    x, shift, stage = make_segment(n, p, rng)
    kernels.shift_into(x[:64], shift, stage[:64])  # compile (if needed) outside the timings
    numpy_staging(x, shift, stage)
    kernels.shift_into(x, shift, stage)
    t_np, t_k = [], []
    for r in range(repeats):
        order = [(numpy_staging, t_np), (kernels.shift_into, t_k)]
        for fn, ts in order if r % 2 == 0 else order[::-1]:
            ts.append(timeit(fn, x, shift, stage))
    s1, q1 = numpy_staging(x, shift, stage)
    s2, q2 = kernels.shift_into(x, shift, stage)
    return _record(f"{n} x {p}", 2 * x.nbytes, t_np, t_k) | {
        "colsum_max_rel_diff": float(np.max(np.abs(s1 - s2)) / max(np.max(np.abs(s2)), 1e-300)),
        "sumsq_rel_diff": abs(q1 - q2) / q2,
    }


def bench_full(rows: int, p: int, seg: int, repeats: int, rng: np.random.Generator) -> dict:
    """A whole rows x p float32 matrix staged segment by segment into one reused stage buffer."""
    x = np.empty((rows, p), dtype=np.float32)
    for r in range(0, rows, seg):
        x[r : r + seg] = rng.standard_normal((min(seg, rows - r), p), dtype=np.float32)
    shift = x[:1024].mean(axis=0)
    stage = np.empty((seg, p), dtype=np.float32)

    def run(fn):
        for r in range(0, rows, seg):
            m = min(seg, rows - r)
            fn(x[r : r + m], shift, stage[:m])

    run(numpy_staging)
    run(kernels.shift_into)
    t_np, t_k = [], []
    for r in range(repeats):
        order = [(numpy_staging, t_np), (kernels.shift_into, t_k)]
        for fn, ts in order if r % 2 == 0 else order[::-1]:
            ts.append(timeit(run, fn))
    return _record(f"{rows} x {p} in {seg}-row segments", 2 * x.nbytes, t_np, t_k)


def _record(label: str, nbytes: int, t_np: list, t_k: list) -> dict:
    a, b = float(np.median(t_np)), float(np.median(t_k))
    return {
        "case": label,
        "numpy_s": a,
        "kernel_s": b,
        "numpy_GBps": nbytes / a / 1e9,
        "kernel_GBps": nbytes / b / 1e9,
        "ratio": a / b,
        "numpy_all_s": t_np,
        "kernel_all_s": t_k,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rows", type=int, default=100000, help="rows of the full pass (0: skip it)")
    ap.add_argument("--full-cols", type=int, default=4096)
    ap.add_argument("--segment", type=int, default=8192, help="rows per segment of the full pass")
    ap.add_argument("--sizes", default=None, help="segments as NxP,NxP (default: the three standard sizes)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")] if args.sizes else SIZES

    info = {
        "backend": kernels.BACKEND,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "blas": blas_info(),
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
        info["numba_threading_layer_config"] = numba.config.THREADING_LAYER
    except ImportError:
        info["numba"] = None
    info["compile"] = compile_times()

    # a fresh generator per segment: each size's data do not depend on the sizes before it (the pytest-benchmark
    # suite, benchmarks/test_bench_kernels.py, generates the same arrays)
    results = [bench_segment(n, p, args.repeats, np.random.default_rng(0)) for n, p in sizes]
    if args.rows:
        results.append(bench_full(args.rows, args.full_cols, args.segment, max(3, args.repeats // 2),
                                  np.random.default_rng(1)))
    info["loadavg_end"] = os.getloadavg()

    print(f"backend {info['backend']}, numba {info.get('numba')}, threads {info.get('numba_threads')}")
    for d in info["blas"]:
        print(f"BLAS: {d.get('internal_api')} {d.get('version')} threads={d.get('num_threads')} "
              f"{d.get('architecture')}")
    print(f"compile: {json.dumps(info['compile'])}")
    print(f"load average start {info['loadavg_start']}, end {info['loadavg_end']}")
    print(f"{'case':<34}{'numpy s':>10}{'kernel s':>10}{'numpy GB/s':>12}{'kernel GB/s':>12}{'ratio':>8}")
    for r in results:
        print(
            f"{r['case']:<34}{r['numpy_s']:>10.4f}{r['kernel_s']:>10.4f}"
            f"{r['numpy_GBps']:>12.1f}{r['kernel_GBps']:>12.1f}{r['ratio']:>8.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
