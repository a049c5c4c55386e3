"""dlrcore on GPU arrays: exact, randomized and one-pass sketch D_LR with the heavy work on the device.

For a session that is lent a GPU (``benchmarks/gpu_check.sh`` runs it with the CuPy tests). The data are those of
``bench_sketch.py`` (float32 features with a flat or a 1/sqrt(j) spectrum plus an offset, noisy linear outputs),
generated on the host and copied to the device once. Rows, timed interleaved in one process (medians of
``--repeats``):

* ``device exact``: ``dlrcore.dlr(X, F)`` on the device arrays (moments accumulated on the device);
* ``device sketch`` / ``device randomized``: ``dlr(..., method="sketch" | "randomized", ...)`` on the device;
* ``host exact`` / ``host sketch``: the same calls on the host copies (the CPU paths, for the speedup), the exact
  one only up to ``--host-exact-max-p``;
* ``device copy``: ``xp.asarray`` of the host arrays (what moving the data costs, for scale).

Accuracy is against ``reference_dlr`` of ``bench_exact.py`` (float64, host, independent of dlrcore) up to
``--reference-max-p``; ``GPU MB`` is the growth of CuPy's memory pool during one untimed call (blocks are cached,
so the pool's size after the call is its high-water mark). ``--backend numpy`` runs the same code on the host
(a smoke test of this script where no GPU is present).

Examples
--------
python benchmarks/bench_gpu.py --sizes large,wide16k --json gpu.json
python benchmarks/bench_gpu.py --backend numpy --sizes tiny --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
if (HERE.parent / "dlrcore" / "__init__.py").exists():
    sys.path.insert(0, str(HERE.parent))  # benchmark this checkout's dlrcore, not an installed copy
import dlrcore

sys.path.insert(0, str(HERE))
from bench_exact import reference_dlr
from bench_sketch import make_data

SIZES = {
    "tiny": (3_000, 128, 10),
    "small": (20_000, 1_024, 100),  # the pytest-benchmark suite's size (benchmarks/test_bench_gpu.py)
    "large": (100_000, 4_096, 1_000),
    "wide16k": (50_000, 16_384, 1_000),
}
SKETCHES = [dict(rank=16, probes=24, oversample=8), dict(rank=64, probes=64)]
RANDOMIZED = [dict(rank=32, oversample=8, power_iters=0, probes=32)]


def backend(name: str) -> ModuleType:
    if name == "numpy":
        return np
    if name == "cupy":
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()  # raises without a GPU
        except Exception as exc:  # ImportError, or CUDA's own errors without a driver or a device
            raise SystemExit(f"bench_gpu: no usable CuPy GPU here ({type(exc).__name__}: {exc}); "
                             "--backend numpy runs the same code on the host") from None
        return cupy
    raise ValueError(f"unknown backend {name!r}")


def sync(xp: ModuleType) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def pool_growth(xp: ModuleType, fn: Callable[[], object]) -> float | None:
    """MB by which the device memory pool grew during one call (None on the host)."""
    if xp is np:
        return None
    pool = xp.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.total_bytes()
    fn()
    sync(xp)
    return (pool.total_bytes() - before) / 2**20


def result_row(res) -> dict:
    est = getattr(res, "error_estimate", None)
    return {"value": float(res.value), "error_estimate": None if est is None else float(est),
            "result_method": res.method}


def tag(params: dict) -> str:
    return " ".join(f"{k[0] if k != 'power_iters' else 'q'}={v}" for k, v in params.items())


def build_methods(x, f, xd, fd, host_exact_max_p: int, seed: int) -> dict[str, tuple[str, Callable[[], dict]]]:
    """label -> (where, zero-argument call returning :func:`result_row`) on the host arrays ``x, f`` and their
    device copies ``xd, fd``. The calls do not synchronize the device: the caller does, around each timing."""
    p = x.shape[1]
    methods: dict[str, tuple[str, Callable[[], dict]]] = {
        "device exact": ("device", lambda: result_row(dlrcore.dlr(xd, fd))),
    }
    for s in SKETCHES:
        methods[f"device sketch {tag(s)}"] = ("device", lambda s=s: result_row(
            dlrcore.dlr(xd, fd, method="sketch", seed=seed, **s)))
    for r in RANDOMIZED:
        methods[f"device randomized {tag(r)}"] = ("device", lambda r=r: result_row(
            dlrcore.dlr(xd, fd, method="randomized", seed=seed, **r)))
    if p <= host_exact_max_p:
        methods["host exact"] = ("host", lambda: result_row(dlrcore.dlr(x, f)))
    s = SKETCHES[-1]
    methods[f"host sketch {tag(s)}"] = ("host", lambda: result_row(dlrcore.dlr(x, f, method="sketch", seed=seed, **s)))
    return methods


def warm_up(xp: ModuleType, x, f, xd, fd) -> None:
    """Untimed calls on a slice of every path (kernel compilation, cuBLAS handles, numba)."""
    m = min(x.shape[0], 2000)
    for a, b in ((xd[:m], fd[:m]), (x[:m], f[:m])):
        dlrcore.dlr(a, b)
        dlrcore.dlr(a, b, method="sketch", rank=4, probes=4)
    sync(xp)


def run_case(xp: ModuleType, name: str, spectrum: str, repeats: int, reference_max_p: int,
             host_exact_max_p: int, seed: int) -> list[dict]:
    n, p, C = SIZES[name]
    t0 = time.perf_counter()
    x, f = make_data(n, p, C, spectrum, seed)
    gen_s = time.perf_counter() - t0
    ref = reference_dlr(x, f) if p <= reference_max_p else None
    t0 = time.perf_counter()
    xd, fd = xp.asarray(x), xp.asarray(f)
    sync(xp)
    copy_s = time.perf_counter() - t0
    print(f"# {name} {spectrum}: (n, p, C) = ({n}, {p}, {C}), data {gen_s:.1f} s, copy to device {copy_s:.2f} s, "
          + (f"reference {ref:.6f}" if ref is not None else "no reference"), flush=True)

    methods = build_methods(x, f, xd, fd, host_exact_max_p, seed)
    warm_up(xp, x, f, xd, fd)

    times: dict[str, list[float]] = {k: [] for k in methods}
    outs: dict[str, dict] = {}
    for _ in range(repeats):
        for label, (_, fn) in methods.items():
            gc.collect()
            sync(xp)
            t0 = time.perf_counter()
            outs[label] = fn()
            sync(xp)
            times[label].append(time.perf_counter() - t0)
    dev_exact = statistics.median(times["device exact"])
    rows = []
    for label, (where, fn) in methods.items():
        out = outs[label]
        med = statistics.median(times[label])
        rows.append({
            "case": name, "spectrum": spectrum, "n": n, "p": p, "C": C, "method": label, "where": where,
            "backend": xp.__name__, "median_s": med, "times_s": times[label], "ratio_to_device_exact": med / dev_exact,
            "gpu_pool_mb": pool_growth(xp, fn) if where == "device" else None,
            "dlr": out["value"], "reference": ref, "abs_error": None if ref is None else abs(out["value"] - ref),
            "error_estimate": out["error_estimate"], "result_method": out["result_method"],
            "copy_to_device_s": copy_s,
        })
    methods = fn = xd = fd = None  # free the device arrays before the next case (the closures above hold them)
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'method':42} {'median s':>9} {'x dev exact':>11} {'GPU MB':>8} {'D_LR':>9} {'|err|':>8} {'est err':>8}"
    print(head)
    print("-" * len(head))
    fmt = (lambda v, spec: "-" if v is None else format(v, spec))
    for r in rows:
        print(f"{r['method']:42} {r['median_s']:9.3f} {r['ratio_to_device_exact']:11.3f} "
              f"{fmt(r['gpu_pool_mb'], '8.0f'):>8} {r['dlr']:9.5f} {fmt(r['abs_error'], '8.1e'):>8} "
              f"{fmt(r['error_estimate'], '8.1e'):>8}")


def environment(xp: ModuleType) -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__, "dlrcore": dlrcore.__version__,
           "backend": xp.__name__}
    if xp is not np:
        props = xp.cuda.runtime.getDeviceProperties(0)
        env.update(cupy=xp.__version__, gpu=props["name"].decode() if isinstance(props["name"], bytes)
                   else str(props["name"]), cuda_runtime=xp.cuda.runtime.runtimeGetVersion())
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["cupy", "numpy"], default="cupy")
    ap.add_argument("--sizes", default="large,wide16k", help="comma-separated among " + ",".join(SIZES))
    ap.add_argument("--spectra", default="flat,decaying")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-max-p", type=int, default=4096)
    ap.add_argument("--host-exact-max-p", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows and the environment to this file")
    args = ap.parse_args(argv)
    for s in args.sizes.split(","):
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; choose from {','.join(SIZES)}")
    xp = backend(args.backend)
    env = environment(xp)
    print("# " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    rows: list[dict] = []
    for name in args.sizes.split(","):
        for spectrum in args.spectra.split(","):
            case = run_case(xp, name, spectrum, args.repeats, args.reference_max_p, args.host_exact_max_p, args.seed)
            print_table(case)
            print(flush=True)
            rows += case
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
