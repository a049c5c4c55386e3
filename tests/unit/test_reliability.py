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

ROOT = Path(__file__).resolve().parents[2]


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
    huge[19990] = np.finfo(dtype).max / 4  # one row whose squares overflow any product of the raw values
    st.update(x, huge)  # accepted: the outputs are scaled by a power of two (dlrcore.scaling)
    assert st.n == 21000
    f64 = np.vstack([(x0 @ W).astype(dtype), huge]).astype(np.float64)
    want = dlrcore.dlr(np.vstack([x0, x]).astype(np.float64), f64)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert abs(st.result().value - want.value) <= tol


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

    assert callable(dlrcore.spectrum) and dlrcore.spectrum is importlib.import_module("dlrcore.functions").spectrum
    spectral = importlib.import_module("dlrcore.spectral")
    assert spectral.Spectrum is dlrcore.Spectrum and callable(spectral.top_eigh)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("dlrcore.spectrum")


def test_big_endian_float64_input_gets_float64_products():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(500, 140))  # p + C >= 128: float32 products for 32-bit input, not for float64
    f = x[:, :5] @ rng.normal(size=(5, 4))
    big_x, big_f = x.astype(">f8"), f.astype(">f8")
    res = dlrcore.dlr(big_x, big_f)
    assert res.precision == "float64"
    assert res.value == pytest.approx(dlrcore.dlr(x, f).value, abs=1e-13)


def test_nc1_near_collapse_is_not_negative():
    """Three classes with within-class noise 1e-9: the direct reference gives NC1 ~ 1e-18; the moment formula
    forms Sigma_W as a difference, whose rounding (about q eps of the between-class scale) once made it negative."""
    rng = np.random.default_rng(9)
    means = rng.normal(size=(3, 6)) * 3.0
    y = rng.integers(0, 3, size=600)
    x = means[y] + 1e-9 * rng.normal(size=(600, 6))
    res = dlrcore.nc1(x, y)
    assert 0.0 <= res.value <= 1e-13


# ---------------------------------------------------------------------------------------------- saved files


def _rewrite(path, out, keep_checksum=False, **changes):
    """Copy an .npz with some fields changed (or removed, with None); by default without the checksum, as a file
    crafted or written by another program would be."""
    with np.load(path) as z:
        data = dict(z)
    if not keep_checksum:
        data.pop("checksum")
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez(out, **data)
    return out


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(400, 6))
    f = x[:, :2] @ rng.normal(size=(2, 3))
    st = dlrcore.DLRStats().update(x, f, labels=rng.integers(0, 3, 400))
    return st, st.save(tmp_path / "st.npz")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n=np.array(-5)), "field 'n' = -5 is below 0"),
        (dict(n=np.array(400.7)), "field 'n' should be an integer"),
        (dict(work=np.array("object")), "field 'work' = 'object' is not one of"),
        (dict(format_version=None), "field 'format_version' is missing"),
        (dict(precision=np.array("float16")), "field 'precision'"),
        (dict(mean=np.zeros(3)), "field 'mean' should be a real array of shape"),
    ],
)
def test_crafted_statistics_files_are_refused_naming_the_field(saved, tmp_path, changes, message):
    _, path = saved
    with pytest.raises(dlrcore.DLRInputError, match=message) as err:
        dlrcore.DLRStats.load(_rewrite(path, tmp_path / "bad.npz", **changes))
    assert "bad.npz" in str(err.value)


def test_comoments_that_are_not_covariances_are_refused(saved, tmp_path):
    _, path = saved
    with np.load(path) as z:
        m = z["comoment"]
    with pytest.raises(dlrcore.DLRInputError, match="negative diagonal"):
        dlrcore.DLRStats.load(_rewrite(path, tmp_path / "neg.npz", comoment=-m))
    asym = m.copy()
    asym[0, 1] += 1.0
    with pytest.raises(dlrcore.DLRInputError, match="not symmetric"):
        dlrcore.DLRStats.load(_rewrite(path, tmp_path / "asym.npz", comoment=asym))
    big = m.copy()
    big[0, 1] = big[1, 0] = 2 * np.sqrt(m[0, 0] * m[1, 1])
    with pytest.raises(dlrcore.DLRInputError, match="not positive semi-definite"):
        dlrcore.DLRStats.load(_rewrite(path, tmp_path / "psd.npz", comoment=big))


def test_a_field_changed_after_saving_breaks_the_checksum(saved, tmp_path):
    """n doubled is a consistent file on its own; the checksum written with the file tells it was edited."""
    st, path = saved
    with np.load(path) as z:
        n = int(z["n"])
    doubled = _rewrite(path, tmp_path / "doubled.npz", keep_checksum=True, n=np.array(2 * n, dtype=np.int64))
    with pytest.raises(dlrcore.DLRInputError, match="do not match the checksum"):
        dlrcore.DLRStats.load(doubled)
    assert dlrcore.DLRStats.load(path).result() == st.result()


def test_sketch_files_with_another_test_matrix_are_refused(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 20))
    path = dlrcore.DLRSketch(rank=4, probes=6, seed=5).update(x, x[:, :2]).save(tmp_path / "sk.npz")
    with np.load(path) as z:
        omega, params = z["omega"], z["params"]
    with pytest.raises(dlrcore.DLRInputError, match="not the test matrix of seed 5"):
        dlrcore.DLRSketch.load(_rewrite(path, tmp_path / "om.npz", omega=omega * 1.01))
    other_seed = params.copy()
    other_seed[3] = 6
    with pytest.raises(dlrcore.DLRInputError, match="not the test matrix of seed 6"):
        dlrcore.DLRSketch.load(_rewrite(path, tmp_path / "seed.npz", params=other_seed))


def test_a_checkpoint_marked_complete_early_is_refused(tmp_path):
    from dlrcore.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(12)
    x = rng.normal(size=(400, 5))
    path = save_checkpoint(tmp_path / "ck", dlrcore.DLRStats().update(x, x[:, :1]), 400, 2000, {"demo": 1})
    with pytest.raises(dlrcore.DLRInputError, match="position 400 of 2000 rows with complete=True"):
        load_checkpoint(_rewrite(path, tmp_path / "early.npz", complete=np.array(True)))
    assert load_checkpoint(path).position == 400


def test_cli_plot_on_an_array_file_says_what_to_pass(tmp_path, capsys):
    from dlrcore.cli import main

    np.save(tmp_path / "features.npy", np.ones((5, 3)))
    assert main(["plot", str(tmp_path / "features.npy"), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "a single array" in err and "--save-stats" in err


def test_masked_arrays_are_refused_unless_nothing_is_masked():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(200, 6))
    f = x[:, :2] @ rng.normal(size=(2, 3))
    bad = np.ma.masked_array(x.copy(), mask=np.zeros_like(x, dtype=bool))
    bad.data[7, 2], bad.mask[7, 2] = 1e6, True
    st = dlrcore.DLRStats().update(x[:100], f[:100])
    before = snapshot(st)
    with pytest.raises(dlrcore.DLRInputError, match="features: a masked array with 1 masked entries"):
        st.update(bad, f)
    assert same(snapshot(st), before)
    clean = np.ma.masked_array(x, mask=np.zeros_like(x, dtype=bool))
    assert dlrcore.dlr(clean, f).value == dlrcore.dlr(x, f).value


def test_cli_refuses_a_bogus_scheduler_and_a_bad_memory_budget_at_once(tmp_path, capsys):
    pytest.importorskip("distributed")
    from dlrcore.cli import main

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 4)))
    np.save(tmp_path / "f.npy", np.ones((50, 2)))
    args = ["compute", str(tmp_path / "x.npy"), str(tmp_path / "f.npy")]
    assert main([*args, "--scheduler", "bogus"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a local Dask scheduler" in err[0]
    for bad in ("nan", "-1", "0"):
        with pytest.raises(SystemExit) as usage:
            main([*args, "--method", "auto", "--max-memory", bad])
        assert usage.value.code == 2
    assert "finite positive number of bytes" in capsys.readouterr().err


def test_bad_values_in_files_are_reported_at_their_file_row(tmp_path, capsys):
    from dlrcore.cli import main

    rng = np.random.default_rng(14)
    x = rng.normal(size=(1000, 5))
    x[497, 2] = -np.inf
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "f.npy", rng.normal(size=(1000, 2)))
    assert main(["compute", str(tmp_path / "x.npy"), str(tmp_path / "f.npy"), "--batch-size", "100"]) == 1
    err = capsys.readouterr().err
    assert "-Inf first at row 497 of the files, column 2" in err, err
