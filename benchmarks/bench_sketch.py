"""Randomized and one-pass sketch estimators of D_LR against the exact path and the libraries a user would reach for.

Run ``python benchmarks/bench_sketch.py --sizes small`` for a quick look; ``--json out.json`` saves the rows and
``--figure out.png`` draws |error| against time (log-log), one panel per (size, spectrum).

For each size and each feature spectrum (``flat``: isotropic Gaussian plus a mean offset; ``decaying``: column j
scaled by 1/sqrt(j), plus the offset) it generates float32 features (n x p, in row blocks) and float32 outputs
``F = Phi W + b + 0.1 noise`` (n x C, unit-variance signal per column), then times, interleaved in one process on the
same data (medians of ``--repeats``):

* ``floor``: one pass over the inputs, ``X.sum(axis=0, dtype=float64)`` and the same for F: the least time and the
  least memory (O(p + C) beyond the inputs) that any one-pass method needs;
* ``output-floor``: what every method with an exact output span shares whatever the features cost: the float64
  centered Gram ``Fc^T Fc`` (a mean pass, then row blocks) and its ``eigh``; the figure marks it plus ``floor``;
* ``exact``: ``dlrcore.dlr(features, outputs)``, the exact streaming path;
* ``randomized``: ``dlrcore.dlr(..., method="randomized", rank, oversample, power_iters, probes, seed)``;
* ``sketch``: ``dlrcore.dlr(..., method="sketch", rank, probes, seed)``, the one-pass sketch;
* ``sketch-stream``: the same through ``dlrcore.DLRSketch(...).update(batch)...result()`` over row batches;
* ``sklearn`` / ``fbpca`` / ``torch``: the top-k SVD of the explicitly centered features from
  ``sklearn.utils.extmath.randomized_svd`` (defaults: 10 oversamples, ``n_iter="auto"``, hence LU-normalized
  power iterations), ``fbpca.pca(raw=True)`` (defaults: l = k + 2, n_iter = 2, LU-normalized) and
  ``torch.svd_lowrank(q=k+10, niter=2)``, turned into D_LR the way a user would: ``||K||_F ~ sqrt(sum s_i^4)`` and
  ``<K, L> ~ ||Q^T U_k S_k||_F^2``, with the output side (float64 ``F^T F``, its eigendecomposition at dlrcore's
  default rank tolerance, ``Q = F V lam^-1/2`` never formed) computed the same way for all three; the centering,
  the SVD and the output side are all timed. A k sweep shows each library's error-against-time curve.

Accuracy is ``|D_LR - reference|`` against an independent float64 computation (``reference_dlr`` of
``bench_exact.py``: float64 centering, ``scipy.linalg.qr`` of the outputs, float64 Gram in row blocks), skipped
above ``--reference-max-p``; dlrcore's own ``error_estimate`` is reported next to it. Memory is measured in a
separate untimed run: the ``tracemalloc`` peak (sees NumPy's allocations, not torch's) and the growth of the
resident set's high-water mark (``/proc/self/clear_refs``); ``peak extra MB`` is the larger of the two, i.e.
bytes beyond the input arrays. ``x floor mem`` is the footprint ratio ``(inputs + peak extra) / (inputs + floor's
peak extra)``; the extra-only ratio is in the JSON.
"""

from __future__ import annotations

import os

# On 2 cores, the OpenBLAS builds of numpy and scipy (and libgomp of torch/sklearn) spin against each other after
# each call; a short thread timeout made one randomized SVD 2.2x faster (docs PERF-NOTES). Set before numpy loads;
# an explicit value in the environment wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import gc
import importlib.util
import inspect
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

HERE = Path(__file__).resolve().parent
if (HERE.parent / "dlrcore" / "__init__.py").exists():
    sys.path.insert(0, str(HERE.parent))  # benchmark this checkout's dlrcore, not an installed copy
import dlrcore

sys.path.insert(0, str(HERE))
from bench_exact import blas_info, reference_dlr

# name: (n, p, C, library ranks k, dlrcore randomized (rank, oversample, power_iters, probes), sketch (rank, probes))
SIZES: dict[str, dict] = {
    "tiny": dict(n=3_000, p=128, C=10, ranks=[8, 32, 96],
                 randomized=[(16, 8, 1, 16), (32, 8, 2, 32)], sketch=[(16, 16), (32, 32)]),
    "small": dict(n=20_000, p=1_024, C=100, ranks=[32, 128, 512],
                  randomized=[(64, 10, 1, 32), (128, 10, 2, 64)], sketch=[(64, 32), (128, 64), (256, 128)]),
    "large": dict(n=100_000, p=4_096, C=1_000, ranks=[64, 256, 512],
                  randomized=[(32, 8, 0, 32), (64, 16, 1, 32), (256, 10, 2, 64)],
                  sketch=[(16, 24, 8), (32, 32, 8), (64, 64), (256, 128)]),
    "large-c100": dict(n=100_000, p=4_096, C=100, ranks=[64, 256, 512],
                       randomized=[(32, 8, 0, 32), (64, 16, 1, 32), (256, 10, 2, 64)],
                       sketch=[(16, 24, 8), (32, 32, 8), (64, 64), (256, 128)]),
    "wide16k": dict(n=50_000, p=16_384, C=1_000, ranks=[64, 256, 1024],
                    randomized=[(64, 10, 1, 32), (256, 10, 2, 64)], sketch=[(64, 64), (256, 128)]),
    "wide64k": dict(n=20_000, p=65_536, C=100, ranks=[64, 256, 1024],
                    randomized=[(64, 10, 1, 32), (256, 10, 2, 64)], sketch=[(64, 64), (256, 128)]),
}
FAMILIES = ["floor", "output-floor", "exact", "randomized", "sketch", "sketch-stream", "sklearn", "fbpca", "torch"]
LIBRARIES = ["sklearn", "fbpca", "torch"]
DLRCORE_APPROX = ["randomized", "sketch", "sketch-stream"]
# wide sizes: the exact path (p x p float64 statistics, O(n p^2)) and the library baselines are left out by default
DEFAULT_FAMILIES = {"wide16k": ["floor", "randomized", "sketch", "sketch-stream"],
                    "wide64k": ["floor", "randomized", "sketch", "sketch-stream"]}
SPECTRA = ["flat", "decaying"]
TARGET_ERROR = 0.01
OFFSET = 0.5
NOISE = 0.1


# ------------------------------------------------------------------------------------------------------------- data
def block_rows(p: int, budget_bytes: int = 1 << 27) -> int:
    """Rows per block such that a float64 block of width p stays near ``budget_bytes`` (128 MB)."""
    return int(max(256, min(8192, budget_bytes // (8 * p))))


def make_data(n: int, p: int, C: int, spectrum: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features (flat or 1/sqrt(j) column scales, plus an offset) and noisy linear outputs with a bias.

    Generated in row blocks, so the peak is the two arrays themselves plus one block.
    """
    rng = np.random.default_rng(seed)
    if spectrum == "flat":
        scales = np.ones(p, dtype=np.float32)
    elif spectrum == "decaying":
        scales = (1.0 / np.sqrt(np.arange(1, p + 1, dtype=np.float64))).astype(np.float32)
    else:
        raise ValueError(f"unknown spectrum {spectrum!r}")
    # W normalised so that every output column has unit signal variance, whatever the spectrum
    signal = math.sqrt(float(np.sum(scales.astype(np.float64) ** 2)))
    w = rng.standard_normal((p, C), dtype=np.float32) / np.float32(signal)
    b = rng.standard_normal(C, dtype=np.float32)
    x = np.empty((n, p), dtype=np.float32)
    f = np.empty((n, C), dtype=np.float32)
    step = block_rows(p)
    for i in range(0, n, step):
        xb = x[i : i + step]
        rng.standard_normal(dtype=np.float32, out=xb)
        xb *= scales
        xb += np.float32(OFFSET)
        fb = f[i : i + step]
        np.matmul(xb, w, out=fb)
        fb += np.float32(NOISE) * rng.standard_normal(fb.shape, dtype=np.float32)
        fb += b
    return x, f


# ------------------------------------------------------------------------------------------------------- baselines
def output_side(f: np.ndarray) -> tuple[np.ndarray, float]:
    """``T`` (C x r) with ``Q = F T`` an orthonormal basis of span(F), and ``||L||_F``; float64, F never copied whole.

    The rank tolerance is dlrcore's default for float32 data, so the output rank r matches the exact path's.
    """
    n, C = f.shape
    g = np.zeros((C, C))
    s = np.zeros(C)
    step = block_rows(C)
    for i in range(0, n, step):
        fb = f[i : i + step].astype(np.float64)
        g += fb.T @ fb
        s += fb.sum(axis=0)
    lam, v = scipy.linalg.eigh(g, check_finite=False)
    rtol = default_rtol(C)
    keep = lam > (rtol * rtol) * lam[-1]
    t = v[:, keep] / np.sqrt(lam[keep])
    q = t.T @ s / math.sqrt(n)
    a = float(q @ q)
    r = int(keep.sum())
    return t, math.sqrt(max(r - 2.0 * a + a * a, 0.0))


def default_rtol(C: int) -> float:
    try:
        from dlrcore.exact import default_rtol as dr

        return float(dr(C, float(np.finfo(np.float32).eps)))
    except ImportError:  # pragma: no cover - an older or newer dlrcore layout
        return 1e-5


def dlr_from_truncated_svd(us: np.ndarray, s: np.ndarray, f: np.ndarray) -> float:
    """D_LR from a rank-k SVD of the centered features: ``us = U_k S_k`` (n x k float32), ``s`` the k values."""
    t, norm_l = output_side(f)
    ftus = (f.T @ us).astype(np.float64)  # C x k, float32 product of n-long sums, then float64
    inner = float(np.sum((t.T @ ftus) ** 2))
    s64 = np.asarray(s, dtype=np.float64)
    norm_k = math.sqrt(float(np.sum(s64**4)))
    return 1.0 - inner / (norm_k * norm_l)


def truncated_reference(x: np.ndarray, f: np.ndarray, ranks: list[int], block: int | None = None) -> dict[int, float]:
    """k -> the D_LR that the library rows approximate, computed exactly: the same formula as
    :func:`dlr_from_truncated_svd`, with the exact top-k eigenpairs of the float64 centered Gram instead of a
    randomized SVD. Its distance from the full reference is the truncation error of rank k alone.
    """
    n, p = x.shape
    step = block or block_rows(p)
    mu = np.zeros(p)
    for i in range(0, n, step):
        mu += x[i : i + step].sum(axis=0, dtype=np.float64)
    mu /= n
    gram = np.zeros((p, p))
    fx = np.zeros((f.shape[1], p))  # F^T Xc (= Fc^T Xc: the columns of Xc sum to zero)
    for i in range(0, n, step):
        xc = x[i : i + step].astype(np.float64) - mu
        gram += xc.T @ xc
        fx += f[i : i + step].astype(np.float64).T @ xc
    lam, v = scipy.linalg.eigh(gram, check_finite=False)
    lam, v = lam[::-1], v[:, ::-1]
    t, norm_l = output_side(f)
    out = {}
    for k in ranks:
        inner = float(np.sum((t.T @ (fx @ v[:, :k])) ** 2))  # ||Q^T U_k S_k||^2 with U_k S_k = Xc V_k
        out[k] = 1.0 - inner / (math.sqrt(float(np.sum(lam[:k] ** 2))) * norm_l)
    return out


def centered(x: np.ndarray) -> np.ndarray:
    """``x - mean`` as a new float32 array: the n x p copy every library below needs (the mean in float64)."""
    mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    return x - mu


def sklearn_dlr(x: np.ndarray, f: np.ndarray, k: int, seed: int) -> dict:
    from sklearn.utils.extmath import randomized_svd

    xc = centered(x)
    u, s, _ = randomized_svd(xc, n_components=k, n_oversamples=10, n_iter="auto", random_state=seed)
    del xc
    u *= s.astype(u.dtype)
    return {"value": dlr_from_truncated_svd(u, s, f)}


def fbpca_dlr(x: np.ndarray, f: np.ndarray, k: int, seed: int) -> dict:
    import fbpca

    np.random.seed(seed)  # noqa: NPY002 - fbpca draws from NumPy's global generator
    xc = centered(x)
    u, s, _ = fbpca.pca(xc, k=k, raw=True)  # defaults: l = k + 2, n_iter = 2 (LU-normalized)
    del xc
    us = (u * s).astype(np.float32)  # fbpca computes in float64 (it upcasts every float32 product)
    return {"value": dlr_from_truncated_svd(us, s, f)}


def torch_dlr(x: np.ndarray, f: np.ndarray, k: int, seed: int) -> dict:
    import torch

    torch.manual_seed(seed)
    xc = centered(x)
    q = min(k + 10, min(x.shape))
    with torch.no_grad():
        u, s, _ = torch.svd_lowrank(torch.from_numpy(xc), q=q, niter=2)
        us = (u[:, :k] * s[:k]).numpy()
        s = s[:k].numpy()
    del xc, u
    return {"value": dlr_from_truncated_svd(us, s, f)}


def output_floor(f: np.ndarray, rows: int) -> dict:
    """The output side that every exact-span method shares: a float64 centered Gram of F (row blocks, a mean
    pass first) and its eigendecomposition. The exact span needs it whatever the features cost."""
    mean = f.sum(axis=0, dtype=np.float64) / f.shape[0]
    gram = np.zeros((f.shape[1], f.shape[1]))
    for i in range(0, f.shape[0], rows):
        fc = f[i : i + rows].astype(np.float64)
        fc -= mean
        gram += fc.T @ fc
    scipy.linalg.eigh(gram, check_finite=False, driver="evd")
    return {"value": None}


# ---------------------------------------------------------------------------------------------------------- dlrcore
def dlrcore_methods() -> dict[str, str | None]:
    """Which dlrcore estimators this dlrcore has: family -> None when available, else the reason it is not."""
    params = inspect.signature(dlrcore.dlr).parameters
    has_method = "method" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = None if has_method else "dlrcore.dlr has no method= argument in this dlrcore"
    return {
        "randomized": missing,
        "sketch": missing,
        "sketch-stream": None if hasattr(dlrcore, "DLRSketch") else "dlrcore.DLRSketch does not exist in this dlrcore",
    }


def sketch_params(setting: tuple[int, ...], seed: int) -> dict:
    """(rank, probes) or (rank, probes, oversample) -> keyword arguments of the sketch (oversample: its default)."""
    params = dict(rank=setting[0], probes=setting[1], seed=seed)
    if len(setting) > 2:
        params["oversample"] = setting[2]
    return params


def sketch_tag(params: dict) -> str:
    tag = f"k={params['rank']} m={params['probes']}"
    return tag + (f" o={params['oversample']}" if "oversample" in params else "")


def result_dict(res) -> dict:
    est = getattr(res, "error_estimate", None)
    return {"value": float(res.value), "error_estimate": None if est is None else float(est),
            "result_method": getattr(res, "method", None)}


def library_available(name: str) -> str | None:
    module = {"sklearn": "sklearn", "fbpca": "fbpca", "torch": "torch"}[name]
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    return None


# ----------------------------------------------------------------------------------------------------- measurement
def timed(fn: Callable[[], dict]) -> tuple[float, dict]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], object]) -> tuple[float, float | None]:
    """(tracemalloc peak MB, resident high-water growth MB or None) of one untimed call."""
    gc.collect()
    rss_ok = _reset_hwm()
    rss0 = _proc_kb("VmRSS")
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _proc_kb("VmHWM")
    rss = (hwm - rss0) / 1024 if rss_ok and hwm is not None and rss0 is not None else None
    return peak / 2**20, rss


# ------------------------------------------------------------------------------------------------------------ cases
Maker = Callable[[np.ndarray, np.ndarray], Callable[[], dict]]


def method_specs(cfg: dict, families: list[str], batch_rows: int, seed: int,
                 skipped: dict[str, str] | None = None) -> dict[str, tuple[str, dict, Maker]]:
    """label -> (family, params, make), where ``make(x, f)`` returns the zero-argument call on those arrays.

    Depends only on the size's configuration (``cfg["n"]``, ``cfg["p"]``, the settings), not on the data, so the
    pytest-benchmark suites (``benchmarks/test_bench_sketch.py``) list the same methods before generating it.
    Families that this dlrcore or this environment lacks are left out and their reason put in ``skipped``; with
    ``skipped=None`` the libraries are listed whether or not they are installed (the suites skip them themselves).
    """
    n, p = cfg["n"], cfg["p"]
    have = dlrcore_methods()
    specs: dict[str, tuple[str, dict, Maker]] = {}

    def add(label: str, family: str, params: dict, make: Maker) -> None:
        specs[label] = (family, params, make)

    for fam in families:
        reason = have.get(fam) if fam in have else None
        if reason is None and fam in LIBRARIES and skipped is not None:
            reason = library_available(fam)
        if reason:
            if skipped is not None:
                skipped[fam] = reason
            continue
        if fam == "floor":
            def floor(x: np.ndarray, f: np.ndarray) -> Callable[[], dict]:
                def call() -> dict:
                    x.sum(axis=0, dtype=np.float64)
                    f.sum(axis=0, dtype=np.float64)
                    return {"value": None}

                return call

            add("floor (one pass: sum of X and F)", fam, {}, floor)
        elif fam == "output-floor":
            add("output floor (float64 Fc^T Fc + eigh)", fam, {},
                lambda x, f: lambda: output_floor(f, batch_rows))
        elif fam == "exact":
            add("dlrcore exact", fam, {}, lambda x, f: lambda: result_dict(dlrcore.dlr(x, f)))
        elif fam == "randomized":
            for k, o, q, m in cfg["randomized"]:
                params = dict(rank=k, oversample=o, power_iters=q, probes=m, seed=seed)
                add(f"dlrcore randomized k={k} o={o} q={q} m={m}", fam, params,
                    lambda x, f, params=params: lambda: result_dict(
                        dlrcore.dlr(x, f, method="randomized", **params)))
        elif fam == "sketch":
            for setting in cfg["sketch"]:
                params = sketch_params(setting, seed)
                add(f"dlrcore sketch {sketch_tag(params)}", fam, params,
                    lambda x, f, params=params: lambda: result_dict(dlrcore.dlr(x, f, method="sketch", **params)))
        elif fam == "sketch-stream":
            params = sketch_params(cfg["sketch"][-1], seed)

            def stream(x: np.ndarray, f: np.ndarray, params: dict = params) -> Callable[[], dict]:
                def call() -> dict:
                    sk = dlrcore.DLRSketch(**params)
                    for i in range(0, x.shape[0], batch_rows):
                        sk.update(x[i : i + batch_rows], f[i : i + batch_rows])
                    return result_dict(sk.result())

                return call

            add(f"dlrcore sketch-stream {sketch_tag(params)} b={batch_rows}", fam, params, stream)
        elif fam in LIBRARIES:
            fn = {"sklearn": sklearn_dlr, "fbpca": fbpca_dlr, "torch": torch_dlr}[fam]
            for k in cfg["ranks"]:
                if k >= min(n, p):
                    continue
                add(f"{fam} k={k}", fam, dict(rank=k),
                    lambda x, f, fn=fn, k=k: lambda: fn(x, f, k, seed))
        else:
            raise ValueError(f"unknown method family {fam!r}")
    return specs


def build_methods(cfg: dict, families: list[str], x: np.ndarray, f: np.ndarray, batch_rows: int,
                  seed: int, skipped: dict[str, str]) -> dict[str, tuple[str, dict, Callable[[], dict]]]:
    """label -> (family, params, zero-argument callable returning {"value": ..., ...}) on these arrays."""
    assert x.shape == (cfg["n"], cfg["p"]), (x.shape, cfg["n"], cfg["p"])
    return {label: (family, params, make(x, f))
            for label, (family, params, make) in method_specs(cfg, families, batch_rows, seed, skipped).items()}


def warm_up(x: np.ndarray, f: np.ndarray, methods: dict) -> None:
    """One untimed call of every code path on a small slice: lazy imports and first-call set-up are not timed."""
    m = min(x.shape[0], 1000)
    xs, fs = x[:m], f[:m]
    k = max(2, min(8, x.shape[1] // 4))
    calls: list[Callable[[], object]] = []
    families = {fam for fam, _, _ in methods.values()}
    if "exact" in families:
        calls.append(lambda: dlrcore.dlr(xs, fs))
    if "randomized" in families:
        calls.append(lambda: dlrcore.dlr(xs, fs, method="randomized", rank=k, oversample=2, power_iters=1, probes=4))
    if "sketch" in families:
        calls.append(lambda: dlrcore.dlr(xs, fs, method="sketch", rank=k, probes=4))
    if "sketch-stream" in families:
        calls.append(lambda: dlrcore.DLRSketch(rank=k, probes=4).update(xs, fs).result())
    for fam, fn in (("sklearn", sklearn_dlr), ("fbpca", fbpca_dlr), ("torch", torch_dlr)):
        if fam in families:
            calls.append(lambda fn=fn: fn(xs, fs, k, 0))
    for call in calls:
        try:
            call()
        except Exception:  # the timed run reports it
            pass


def run_case(name: str, spectrum: str, cfg: dict, families: list[str], repeats: int, batch_rows: int,
             reference_max_p: int, seed: int, skipped: dict[str, str]) -> list[dict]:
    n, p, C = cfg["n"], cfg["p"], cfg["C"]
    t0 = time.perf_counter()
    x, f = make_data(n, p, C, spectrum, seed)
    gen_s = time.perf_counter() - t0
    ref = None
    ref_s = None
    if p <= reference_max_p:
        t0 = time.perf_counter()
        ref = reference_dlr(x, f, block=block_rows(p))
        ref_s = time.perf_counter() - t0
    print(f"# {name} {spectrum}: (n, p, C) = ({n}, {p}, {C}), data {gen_s:.1f} s, "
          + (f"reference D_LR = {ref:.6f} ({ref_s:.1f} s)" if ref is not None else "no reference (p too large)"),
          flush=True)
    methods = build_methods(cfg, families, x, f, batch_rows, seed, skipped)
    warm_up(x, f, methods)
    times: dict[str, list[float]] = {k: [] for k in methods}
    outs: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for _ in range(repeats):  # interleaved, so that machine noise hits every method alike
        for label, (_, _, fn) in methods.items():
            if label in failed:
                continue
            try:
                t, out = timed(fn)
            except Exception as exc:  # an estimator that does not (yet) behave as documented: report, carry on
                failed[label] = f"{type(exc).__name__}: {exc}"
                print(f"#   {label} failed: {failed[label]}", flush=True)
                continue
            times[label].append(t)
            outs[label] = out
    input_mb = (x.nbytes + f.nbytes) / 2**20
    rows = []
    for label, (family, params, fn) in methods.items():
        row = {"case": name, "spectrum": spectrum, "n": n, "p": p, "C": C, "method": label, "family": family,
               "params": params, "reference": ref, "input_mb": input_mb}
        if label in failed:
            row["failed"] = failed[label]
            rows.append(row)
            continue
        tm_mb, rss_mb = peak_memory(fn)
        out = outs[label]
        value = out.get("value")
        est = out.get("error_estimate")
        row.update(
            median_s=statistics.median(times[label]),
            times_s=times[label],
            tracemalloc_peak_mb=tm_mb,
            rss_peak_delta_mb=rss_mb,
            peak_extra_mb=max(tm_mb, rss_mb or 0.0),
            dlr=value,
            abs_error=None if value is None or ref is None else abs(value - ref),
            error_estimate=est,
            result_method=out.get("result_method"),
        )
        rows.append(row)
    ok = [r for r in rows if "failed" not in r]
    floor = next((r for r in ok if r["family"] == "floor"), None)
    exact = next((r for r in ok if r["family"] == "exact"), None)
    for r in ok:
        r["ratio_to_exact"] = r["median_s"] / exact["median_s"] if exact else None
        r["ratio_to_floor_time"] = r["median_s"] / floor["median_s"] if floor else None
        if floor:
            r["footprint_ratio_to_floor"] = (input_mb + r["peak_extra_mb"]) / (input_mb + floor["peak_extra_mb"])
            r["extra_ratio_to_floor"] = r["peak_extra_mb"] / max(floor["peak_extra_mb"], 1e-3)
        else:
            r["footprint_ratio_to_floor"] = r["extra_ratio_to_floor"] = None
    del x, f
    gc.collect()
    return rows


# ----------------------------------------------------------------------------------------------------------- report
def plotted_error(r: dict) -> tuple[float | None, bool]:
    """(error to plot, True when it is dlrcore's own estimate because there is no reference)."""
    if r.get("abs_error") is not None:
        return r["abs_error"], False
    if r.get("error_estimate") is not None:
        return r["error_estimate"], True
    return None, False


def targets(rows: list[dict]) -> dict:
    """The issue's targets for one (case, spectrum): accuracy at 1/10 of exact, speed against the libraries, memory."""
    ok = [r for r in rows if "failed" not in r]
    exact = next((r for r in ok if r["family"] == "exact"), None)
    mine = [r for r in ok if r["family"] in DLRCORE_APPROX and r.get("abs_error") is not None]
    libs = [r for r in ok if r["family"] in LIBRARIES and r.get("abs_error") is not None]
    good = sorted((r for r in mine if r["abs_error"] <= TARGET_ERROR), key=lambda r: r["median_s"])
    out: dict = {"target_error": TARGET_ERROR}
    best = good[0] if good else None
    out["best_dlrcore"] = best["method"] if best else None
    out["best_dlrcore_error"] = best["abs_error"] if best else None
    out["best_dlrcore_s"] = best["median_s"] if best else None
    out["time_ratio_to_exact"] = best["median_s"] / exact["median_s"] if best and exact else None
    out["meets_exact_target"] = out["time_ratio_to_exact"] <= 0.1 if out["time_ratio_to_exact"] is not None else None
    # (a) both within the target error; (b) libraries at least as accurate as dlrcore's best row
    lib_good = sorted((r for r in libs if r["abs_error"] <= TARGET_ERROR), key=lambda r: r["median_s"])
    out["best_library_within_target"] = lib_good[0]["method"] if lib_good else None
    out["speedup_vs_library_within_target"] = (lib_good[0]["median_s"] / best["median_s"]
                                               if lib_good and best else None)
    if best:
        lib_eq = sorted((r for r in libs if r["abs_error"] <= best["abs_error"]), key=lambda r: r["median_s"])
        out["best_library_as_accurate"] = lib_eq[0]["method"] if lib_eq else None
        out["speedup_vs_library_as_accurate"] = lib_eq[0]["median_s"] / best["median_s"] if lib_eq else None
    out["most_accurate_library"] = min(libs, key=lambda r: r["abs_error"])["method"] if libs else None
    out["most_accurate_library_error"] = min(r["abs_error"] for r in libs) if libs else None
    # what no exact-span method can go below: the shared output side, and that plus one pass over the inputs
    floor = next((r for r in ok if r["family"] == "floor"), None)
    ofloor = next((r for r in ok if r["family"] == "output-floor"), None)
    out["output_floor_ratio_to_exact"] = ofloor["median_s"] / exact["median_s"] if ofloor and exact else None
    out["floors_ratio_to_exact"] = ((ofloor["median_s"] + floor["median_s"]) / exact["median_s"]
                                    if ofloor and floor and exact else None)
    sketches = [r for r in ok if r["family"] in ("sketch", "sketch-stream") and r.get("footprint_ratio_to_floor")]
    out["sketch_max_footprint_ratio_to_floor"] = max((r["footprint_ratio_to_floor"] for r in sketches), default=None)
    out["sketch_max_extra_mb"] = max((r["peak_extra_mb"] for r in sketches), default=None)
    return out


def _fmt(v, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = (f"{'method':44} {'median s':>9} {'x exact':>8} {'peak MB':>8} {'x floor mem':>11} {'D_LR':>9} "
            f"{'|err|':>8} {'est err':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "failed" in r:
            print(f"{r['method']:44} FAILED: {r['failed']}")
            continue
        print(f"{r['method']:44} {r['median_s']:9.3f} {_fmt(r['ratio_to_exact'], '8.3f'):>8} "
              f"{r['peak_extra_mb']:8.1f} {_fmt(r['footprint_ratio_to_floor'], '11.2f'):>11} "
              f"{_fmt(r['dlr'], '9.5f'):>9} {_fmt(r['abs_error'], '8.1e'):>8} {_fmt(r['error_estimate'], '8.1e'):>8}")


def print_targets(t: dict) -> None:
    print(f"targets (|err| <= {t['target_error']}):")
    if t["best_dlrcore"] is None:
        print("  no dlrcore randomized/sketch row within the target error (or no reference)")
    else:
        print(f"  fastest dlrcore row within target: {t['best_dlrcore']} ({t['best_dlrcore_s']:.3f} s, "
              f"|err| {t['best_dlrcore_error']:.1e}); time / exact = {_fmt(t['time_ratio_to_exact'], '.3f')} "
              f"(target <= 0.1: {t['meets_exact_target']})")
        print(f"  fastest library row within target: {t['best_library_within_target'] or 'none'}; "
              f"speedup {_fmt(t['speedup_vs_library_within_target'], '.1f', 'n/a')}x")
        print(f"  fastest library row as accurate as dlrcore's: {t.get('best_library_as_accurate') or 'none'}; "
              f"speedup {_fmt(t.get('speedup_vs_library_as_accurate'), '.1f', 'n/a')}x (target >= 5)")
    if t.get("output_floor_ratio_to_exact") is not None:
        print(f"  output side alone (float64 Fc^T Fc + eigh) = {t['output_floor_ratio_to_exact']:.3f} x exact; "
              f"with one pass over X and F: {_fmt(t['floors_ratio_to_exact'], '.3f')} x exact")
    if t["most_accurate_library"]:
        print(f"  most accurate library row: {t['most_accurate_library']} "
              f"(|err| {t['most_accurate_library_error']:.1e})")
    if t["sketch_max_footprint_ratio_to_floor"] is not None:
        print(f"  one-pass sketch memory: footprint <= {t['sketch_max_footprint_ratio_to_floor']:.2f} x floor "
              f"(target <= 3), peak extra <= {t['sketch_max_extra_mb']:.0f} MB")


COLORS = {"sklearn": "tab:blue", "fbpca": "tab:orange", "torch": "tab:green", "randomized": "tab:red",
          "sketch": "tab:purple", "sketch-stream": "tab:pink", "exact": "black"}
LEGEND = {"sklearn": "sklearn randomized_svd", "fbpca": "fbpca.pca", "torch": "torch.svd_lowrank",
          "randomized": "dlrcore randomized (rank/probes)", "sketch": "dlrcore sketch (rank/probes)",
          "sketch-stream": "dlrcore sketch, streamed (rank/probes)",
          "exact": "dlrcore exact"}


def write_figure(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    spectra = list(dict.fromkeys(r["spectrum"] for r in rows))
    fig, axes = plt.subplots(len(cases), len(spectra), figsize=(6.0 * len(spectra), 4.6 * len(cases)),
                             squeeze=False)
    for i, case in enumerate(cases):
        for j, spec in enumerate(spectra):
            ax = axes[i][j]
            sub = [r for r in rows if r["case"] == case and r["spectrum"] == spec and "failed" not in r]
            if not sub:
                ax.set_visible(False)
                continue
            estimated = False
            for fam in COLORS:
                pts = []
                for r in sub:
                    if r["family"] != fam:
                        continue
                    err, est = plotted_error(r)
                    if err is not None:
                        pr = r["params"]
                        tag = None if "rank" not in pr else (f"k={pr['rank']}" if "probes" not in pr
                                                             else f"{pr['rank']}/{pr['probes']}")
                        pts.append((r["median_s"], max(err, 1e-12), est, tag, pr.get("rank", 0)))
                if not pts:
                    continue
                pts.sort(key=lambda pt: (pt[4], pt[0]))  # a curve along the rank sweep
                est = any(p[2] for p in pts)
                estimated |= est
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o" if fam == "exact" else "o-",
                        color=COLORS[fam], mfc="none" if est else COLORS[fam],
                        label=LEGEND[fam] + (" (own estimate)" if est else ""))
                for t, e, _, tag, _ in pts:
                    if tag is not None:
                        ax.annotate(tag, (t, e), textcoords="offset points", xytext=(3, 3), fontsize=7,
                                    color=COLORS[fam])
            floor = next((r for r in sub if r["family"] == "floor"), None)
            if floor:
                ax.axvline(floor["median_s"], color="gray", ls="--", lw=1, label="one-pass floor (time)")
            ofloor = next((r for r in sub if r["family"] == "output-floor"), None)
            if floor and ofloor:
                ax.axvline(floor["median_s"] + ofloor["median_s"], color="tab:brown", ls="-.", lw=1,
                           label="one pass + exact output side")
            exact = next((r for r in sub if r["family"] == "exact"), None)
            if exact:
                ax.axvline(0.1 * exact["median_s"], color="black", ls=":", lw=1, label="1/10 of exact")
            ax.axhline(TARGET_ERROR, color="gray", ls=":", lw=1, label=f"|error| = {TARGET_ERROR}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            r0 = sub[0]
            ax.set_title(f"{spec} spectrum, (n, p, C) = ({r0['n']}, {r0['p']}, {r0['C']})", fontsize=10)
            ax.set_xlabel("median time (s)")
            ax.set_ylabel("|D_LR error|" + (" (open: dlrcore's own estimate)" if estimated else ""))
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clean(obj):
    """NaN and infinities become None, so that the JSON is strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,large,wide16k,wide64k",
                    help="comma-separated subset of " + ",".join(SIZES))
    ap.add_argument("--spectra", default="flat,decaying", help="comma-separated subset of " + ",".join(SPECTRA))
    ap.add_argument("--methods", default="auto",
                    help="comma-separated method families among " + ",".join(FAMILIES)
                    + "; 'auto' (default): all of them, but only floor and dlrcore's randomized/sketch "
                    "at the wide sizes")
    ap.add_argument("--ranks", help="library ranks k to sweep, e.g. 64,256,1024 (default: per size)")
    ap.add_argument("--randomized",
                    help="dlrcore randomized settings rank:oversample:power_iters:probes, comma-separated")
    ap.add_argument("--sketch", help="dlrcore sketch settings rank:probes[:oversample], comma-separated "
                    "(the last one is also streamed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=10_000, help="rows per DLRSketch.update in sketch-stream")
    ap.add_argument("--reference-max-p", type=int, default=16_384,
                    help="no float64 reference above this width (it costs an O(n p^2) float64 Gram)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (BLAS threads are reported)")
    ap.add_argument("--json", metavar="PATH", help="write the rows, the targets and the environment as JSON")
    ap.add_argument("--figure", metavar="PATH", help="write |error| against time, one panel per (size, spectrum)")
    args = ap.parse_args(argv)

    sizes = args.sizes.split(",")
    for s in sizes:
        if s not in SIZES:
            ap.error(f"unknown size {s!r}; choose from {','.join(SIZES)}")
    spectra = args.spectra.split(",")
    for s in spectra:
        if s not in SPECTRA:
            ap.error(f"unknown spectrum {s!r}; choose from {','.join(SPECTRA)}")
    if args.methods != "auto":
        for m in args.methods.split(","):
            if m not in FAMILIES:
                ap.error(f"unknown method family {m!r}; choose from {','.join(FAMILIES)}")

    torch_version = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = f"{torch.__version__} threads={torch.get_num_threads()}"

    def version(mod: str) -> str | None:
        if importlib.util.find_spec(mod) is None:
            return None
        m = __import__(mod)
        return getattr(m, "__version__", "installed")

    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "dlrcore": dlrcore.__version__,
        "dlrcore_path": str(Path(dlrcore.__file__).parent),
        "sklearn": version("sklearn"),
        "fbpca": version("fbpca"),
        "torch": torch_version,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "blas": blas_info(),
    }
    print(f"# dlrcore {env['dlrcore']} from {env['dlrcore_path']}")
    print(f"# {env['blas']}")
    print(f"# torch {env['torch']}; sklearn {env['sklearn']}; fbpca {env['fbpca']}; "
          f"OPENBLAS_THREAD_TIMEOUT={env['OPENBLAS_THREAD_TIMEOUT']}", flush=True)

    rows: list[dict] = []
    summary: list[dict] = []
    skipped: dict[str, str] = {}
    for name in sizes:
        cfg = dict(SIZES[name])
        if args.ranks:
            cfg["ranks"] = [int(k) for k in args.ranks.split(",")]
        if args.randomized:
            cfg["randomized"] = [tuple(int(v) for v in s.split(":")) for s in args.randomized.split(",")]
        if args.sketch:
            cfg["sketch"] = [tuple(int(v) for v in s.split(":")) for s in args.sketch.split(",")]
        families = (DEFAULT_FAMILIES.get(name, FAMILIES) if args.methods == "auto" else args.methods.split(","))
        for spec in spectra:
            case_rows = run_case(name, spec, cfg, families, args.repeats, args.batch_rows, args.reference_max_p,
                                 args.seed, skipped)
            print_table(case_rows)
            t = targets(case_rows)
            print_targets(t)
            print(flush=True)
            rows += case_rows
            summary.append({"case": name, "spectrum": spec, **t})
    for fam, why in skipped.items():
        print(f"# rows left out: {fam}: {why}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(_clean({"environment": env, "skipped": skipped, "targets": summary, "rows": rows}), fh,
                      indent=2)
    if args.figure:
        write_figure(rows, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
