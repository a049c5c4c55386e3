"""Regression tests for the reliability promises (issue 13): atomic updates, accumulated-state bounds, threads,
fork and pickling of every state object.

"Unchanged" means bit for bit: the moments (n, means, co-moments) are compared with ``np.array_equal`` after
``moments()`` has flushed everything staged. Values that must be accepted are checked against float64 products
on the same (float32-representable) values, to 1e-5 relative for float32 products (their rounding, documented in
docs/dlr.md) and 1e-10 for float64 products.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import dlrcore

ROOT = Path(__file__).resolve().parents[1]


def snapshot(st: dlrcore.DLRStats) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.moments().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or np.array_equal(a[k], b[k]) for k in a
    )


# ---------------------------------------------------------------------------------------------- atomic updates


@pytest.mark.parametrize("dtype, chunk_bytes", [(np.float32, 0), (np.float64, 1 << 16)])
def test_a_rejected_batch_leaves_no_row_behind(dtype, chunk_bytes):
    """A batch spanning many stages whose late rows are bad (NaN, or one row too large for the products) is
    refused whole, the error names the array and the batch row, and the state is unchanged bit for bit."""
    rng = np.random.default_rng(0)
    p, C = 200, 4
    W = rng.normal(size=(p, C))
    x0 = rng.normal(size=(1000, p)).astype(dtype)
    st = dlrcore.DLRStats(chunk_bytes=chunk_bytes).update(x0, (x0 @ W).astype(dtype))
    before = snapshot(st)
    x = rng.normal(size=(20000, p)).astype(dtype)
    f = (x @ W).astype(dtype)
    nan = x.copy()
    nan[17321, 5] = np.nan
    with pytest.raises(dlrcore.DLRInputError, match=r"features: contains 1 non-finite .*NaN first at row 17321"):
        st.update(nan, f)
    assert st.n == 1000 and same(snapshot(st), before)
    huge = f.copy()
    huge[19990] = np.finfo(dtype).max / 4  # one row whose squares overflow any product
    with pytest.raises(dlrcore.DLRInputError, match=r"outputs: values up to .* \(rows 19\d\d\d-19\d\d\d of this"):
        st.update(x, huge)
    assert st.n == 1000 and same(snapshot(st), before)
    st.update(x, f)  # and the statistics still work
    assert st.n == 21000


@pytest.mark.parametrize("chunk_bytes", [0, 1 << 16])
def test_large_finite_rows_are_accepted_whatever_the_staging(chunk_bytes):
    """Rows of 5e15 (float32, p = 200): each fits float32 products, many together do not. They are staged fewer
    at a time, so the outcome does not depend on the stage size, and the value matches float64 products."""
    rng = np.random.default_rng(1)
    p, C = 200, 4
    W = rng.normal(size=(p, C))
    x = rng.normal(size=(30000, p)).astype(np.float32)
    x[-6000:] = 5e15 * np.sign(rng.normal(size=(6000, p)))
    f = (x.astype(np.float64) @ W).astype(np.float32)
    st = dlrcore.DLRStats(chunk_bytes=chunk_bytes).update(x[:1000], f[:1000]).update(x[1000:], f[1000:])
    want = dlrcore.dlr(x.astype(np.float64), f.astype(np.float64))
    got = st.result()
    assert got.precision == "float32" and st.n == 30000
    assert got.value == pytest.approx(want.value, rel=1e-5)
    assert got.value_sqrt == pytest.approx(want.value_sqrt, rel=1e-5)


def test_many_small_large_updates_do_not_poison_the_statistics():
    """3000 single-row float32 updates of +-2e17 (p + C = 130) are each fine, but their float32 Gram summed in
    the product precision would overflow; the pending Gram is folded into float64 before it can, so later batches
    and results still work and match float64 products."""
    rng = np.random.default_rng(2)
    rows = (2e17 * np.sign(rng.normal(size=(3000, 130)))).astype(np.float32)
    good = rng.normal(size=(2000, 130)).astype(np.float32)
    st = dlrcore.DLRStats()
    for r in rows:
        st.update(r[None, :126], r[None, 126:])
    st.update(good[:, :126], good[:, 126:])
    every = np.vstack([rows, good]).astype(np.float64)
    want = dlrcore.dlr(every[:, :126], every[:, 126:]).value
    assert st.result().value == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------------------------- threads


def _state_objects():
    return {
        "DLRStats": lambda: dlrcore.DLRStats(),
        "DLRSketch": lambda: dlrcore.DLRSketch(rank=8, probes=8, seed=3),
        "CKAStats": lambda: dlrcore.CKAStats(),
    }


@pytest.mark.parametrize("kind", list(_state_objects()))
def test_threads_updating_one_object_lose_nothing(kind):
    """Four threads feed one object 2000-row blocks of their own share of the rows; the result equals that of
    one thread fed every row (up to the rounding of a different merge order: 1e-10)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64000, 40)) * np.linspace(3, 0.2, 40) + 1.0
    f = x[:, :6] @ rng.normal(size=(6, 5)) + 0.1 * rng.normal(size=(64000, 5))
    make = _state_objects()[kind]
    shared = make()
    errors: list[BaseException] = []

    def work(part: int) -> None:
        try:
            for i in range(part * 16000, (part + 1) * 16000, 2000):
                shared.update(x[i : i + 2000], f[i : i + 2000])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    alone = make().update(x, f)
    assert shared.n == alone.n == 64000
    assert shared.result().value == pytest.approx(alone.result().value, abs=1e-10)


def test_crossed_merges_from_two_threads_do_not_deadlock():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4000, 10))
    a = dlrcore.DLRStats().update(x[:2000], x[:2000, :2])
    b = dlrcore.DLRStats().update(x[2000:], x[2000:, :2])
    done = []

    def merge(u, v):
        for _ in range(50):
            u.copy().merge(v)
            u.merge(dlrcore.DLRStats())
        done.append(True)

    ts = [threading.Thread(target=merge, args=(a, b)), threading.Thread(target=merge, args=(b, a))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert done == [True, True]


# ---------------------------------------------------------------------------------------------- pickling, processes


@pytest.mark.parametrize("kind", list(_state_objects()))
def test_every_state_object_pickles_and_keeps_working(kind):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3000, 20))
    f = x[:, :3] + 0.1 * rng.normal(size=(3000, 3))
    obj = _state_objects()[kind]().update(x[:2000], f[:2000])
    back = pickle.loads(pickle.dumps(obj))
    assert back.result().value == obj.result().value
    back.update(x[2000:], f[2000:])  # its lock and state are its own
    obj.update(x[2000:], f[2000:])
    assert back.result().value == pytest.approx(obj.result().value, abs=1e-12)


def test_a_sketch_of_array_api_arrays_pickles():
    xs = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(500, 20))
    sk = dlrcore.DLRSketch(rank=4, probes=6).update(xs.asarray(x), xs.asarray(x[:, :2]))
    back = pickle.loads(pickle.dumps(sk))
    assert back.result().value == sk.result().value


def _sketch_of(seed: int) -> dlrcore.DLRSketch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 12))
    return dlrcore.DLRSketch(rank=4, probes=6).update(x, x[:, :2])


def test_a_worker_process_returns_a_sketch():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.map(_sketch_of, [0, 1], chunksize=1)
    assert got[0].n == 400 and (got[0] + got[1]).n == 800
    assert got[0].result().value == _sketch_of(0).result().value


FORK_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys
    import numpy as np
    import dlrcore

    def child(seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(4000, 64)).astype(np.float32)  # large enough for the kernel's threads
        return dlrcore.dlr(x, x[:, :3]).value

    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8000, 200)).astype(np.float32)
        parent = dlrcore.dlr(x, x[:, :4]).value  # the parent has used every kernel before forking
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map(child, range(4))
        assert got == [child(s) for s in range(4)], got
        print("ok", parent)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method is POSIX only")
def test_a_fork_pool_after_dlrcore_calls_completes(tmp_path):
    """Python 3.11's default start method on Linux: a fork pool created after dlrcore ran in the parent must not
    hang (Numba's OpenMP layer made it hang before; the kernel now runs on Python threads, dropped at fork)."""
    script = tmp_path / "fork_pool.py"
    script.write_text(FORK_SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr[-2000:]
    assert "OpenMP" not in run.stderr


def test_the_spectrum_function_and_the_spectral_module_do_not_clash():
    """dlrcore.spectrum is the function; the module behind it is dlrcore.spectral (importable, with top_eigh)."""
    import importlib

    assert callable(dlrcore.spectrum) and dlrcore.spectrum.__module__ == "dlrcore"
    spectral = importlib.import_module("dlrcore.spectral")
    assert spectral.Spectrum is dlrcore.Spectrum and callable(spectral.top_eigh)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("dlrcore.spectrum")
