"""D_half (the square-root output kernel) in dlrcore against the NumPy code a user would write, and its cost.

Run ``python benchmarks/bench_output_kernel.py`` (``--sizes small`` for a quick look, ``--json out.json`` to save).
For each (n, p, C) it times, interleaved in one process on the same float32 data:

* ``dlrcore dlr()``: ``dlrcore.dlr(features, outputs)``, which returns the literal D_LR and D_half together;
* ``finish, both kernels``: the finishing step alone, ``dlrcore.exact.dlr_from_moments`` on moments already
  accumulated and extracted (both kernels from one product of the stacked C x r maps with ``Fc^T Phic``);
* ``finish, literal only``: the same moments finished for the literal value alone (``output_span`` and
  ``||Q^T Phic||``, what the finishing step computed before D_half), so that the difference between the two rows
  is D_half's own cost;
* ``numpy svd``: what one writes from the definition: center in float32, ``numpy.linalg.svd`` of the centered
  outputs (n x C), ``<K, L_half> = ||S^(1/2) U^T Phic||_F^2``, ``||L_half||_F^2 = sum S^2`` and
  ``||K||_F = ||Phic^T Phic||_F``.

It reports medians over interleaved repeats, ratios to ``dlrcore dlr()``, and ``|D_half - reference|`` against the
same SVD formula computed in float64 in row blocks (independent of dlrcore's moment algebra).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dlrcore, not an installed copy
import dlrcore
from dlrcore.exact import FEATURE_RANK_MAX_P, dlr_from_moments, output_span

try:
    from dlrcore.eigen import eigen_rank  # the feature-rank rule of dlrcore.exact
except ImportError:  # a dlrcore from before dlrcore.eigen
    from dlrcore.exact import _eigen_rank as eigen_rank

SIZES = {
    "tiny": (2_000, 64, 5),  # a smoke test of the script itself
    "small": (20_000, 1_024, 100),
    "medium": (20_000, 2_048, 1_000),
    "large": (20_000, 4_096, 1_000),
}


def make_data(n: int, p: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features with a decaying spectrum and an offset; anisotropic linear outputs with noise and a bias."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p), dtype=np.float32)
    x *= (1.0 / np.sqrt(np.arange(1, p + 1, dtype=np.float32)))[None, :]
    x += np.float32(0.5)
    w = rng.standard_normal((p, C), dtype=np.float32) * np.geomspace(1.0, 1e-2, C).astype(np.float32)
    f = x @ w + rng.standard_normal((n, C), dtype=np.float32) * np.float32(0.01)
    f += rng.standard_normal(C, dtype=np.float32)
    return x, f


def svd_d_half(x: np.ndarray, f: np.ndarray, dtype: type = np.float32, block: int = 8192) -> float:
    """D_half from the thin SVD of the centered outputs, the products in ``dtype`` (float64: the reference)."""
    xc = x.astype(dtype) - x.astype(np.float64).mean(0).astype(dtype)
    fc = f.astype(dtype) - f.astype(np.float64).mean(0).astype(dtype)
    u, s, _ = np.linalg.svd(fc, full_matrices=False)
    keep = s > s[0] * 1e-7
    us = u[:, keep] * np.sqrt(s[keep]).astype(dtype)
    inner = 0.0
    gram = np.zeros((x.shape[1], x.shape[1]))
    for i in range(0, x.shape[0], block):
        a = us[i : i + block].T @ xc[i : i + block]
        inner = inner + a.astype(np.float64)
        gram += (xc[i : i + block].T @ xc[i : i + block]).astype(np.float64)
    inner_v = float(np.sum(inner * inner))
    return 1.0 - inner_v / (math.sqrt(float(np.sum(gram * gram))) * math.sqrt(float(np.sum(s[keep] ** 2))))


def literal_only_finish(m: dict) -> float:
    """The finishing step for the literal value alone, as it was computed before D_half (with the feature rank up
    to p = 1024, as there; it was a pivoted Cholesky then, an eigenvalue count now)."""
    if m["features_features"].shape[0] <= FEATURE_RANK_MAX_P:
        eigen_rank(m["features_features"], 1e-5)
    span = output_span(n=m["n"], m_ff=m["outputs_outputs"], mean_f=m["mean_outputs"], rtol=None,
                       data_eps=float(np.finfo(np.float32).eps))
    t = span.basis.T @ m["outputs_features"]
    mpp = m["features_features"]
    return 1.0 - float(np.sum(t * t)) / (math.sqrt(float(np.sum(mpp * mpp))) * math.sqrt(span.norm_l2))


def both_kernels_finish(m: dict) -> float:
    """The finishing step for both kernels on the same moments (what ``DLRStats.result`` runs)."""
    return dlr_from_moments(
        n=m["n"], m_pp=m["features_features"], m_fp=m["outputs_features"], m_ff=m["outputs_outputs"],
        mean_f=m["mean_outputs"], rtol=None, data_eps=float(np.finfo(np.float32).eps), feature_rel_tol=1e-5,
        precision="float32", work_eps=float(np.finfo(np.float32).eps),
    ).value_sqrt


def elapsed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


LITERAL_ONLY = "finish, literal only"  # the one call that returns the literal D_LR, not D_half


def build_methods(x: np.ndarray, f: np.ndarray) -> dict[str, Callable[[], float]]:
    """label -> zero-argument call on these arrays (the moments of the finishing rows are accumulated here, once)."""
    moments = dlrcore.DLRStats().update(x, f).moments()
    return {
        "dlrcore dlr()": lambda: dlrcore.dlr(x, f).value_sqrt,
        "finish, both kernels": lambda: both_kernels_finish(moments),
        LITERAL_ONLY: lambda: literal_only_finish(moments),
        "numpy svd": lambda: svd_d_half(x, f, np.float32),
    }


def run(size: str, repeats: int) -> list[dict]:
    n, p, C = SIZES[size]
    x, f = make_data(n, p, C)
    ref = svd_d_half(x, f, np.float64)
    calls = build_methods(x, f)
    values = {name: fn() for name, fn in calls.items()}  # warm-up, and the values whose accuracy is reported
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):  # interleaved
        for name, fn in calls.items():
            times[name].append(elapsed(fn))
    base = statistics.median(times["dlrcore dlr()"])
    rows = []
    for name in calls:
        med = statistics.median(times[name])
        row = {"size": size, "n": n, "p": p, "C": C, "method": name, "median_s": med, "x dlr()": med / base,
               "repeats": repeats}
        if name != LITERAL_ONLY:
            row["abs_error"] = abs(values[name] - ref)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,medium,large", help=f"comma-separated, of {sorted(SIZES)}")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        ap.error(f"unknown sizes {unknown}; choose from {sorted(SIZES)}")
    rows = []
    for size in sizes:
        for row in run(size, args.repeats):
            rows.append(row)
            err = f"{row['abs_error']:.1e}" if "abs_error" in row else "-"
            print(f"{size:6} n={row['n']} p={row['p']} C={row['C']}  {row['method']:20} {row['median_s']:8.3f} s  "
                  f"{row['x dlr()']:6.3f} x dlr()  |D_half - ref| {err}", flush=True)
    if args.json:
        doc = {"benchmark": "output kernel", "machine": platform.processor() or platform.machine(),
               "numpy": np.__version__, "rows": rows}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
