"""The fuzz suite (issue 13): every input either gives the value of a float64 reference or a clean
``DLRInputError`` with the statistics unchanged bit for bit.

* batches of any dtype (float64 and float32 in both byte orders, float16, bfloat16, integers, booleans), scales
  from 1e-300 to 1e300, NaN/Inf anywhere and any split into batches, streamed and merged in any order;
* crafted files for every ``load`` (statistics, sketches, CKA statistics, checkpoints), written with a valid
  checksum so that the field checks themselves are what is exercised;
* damaged array files (.npy, .npz, .safetensors, HDF5) given to the reader, which raises DLRInputError, and to the
  CLI, which exits 1 with one line.

The default run is short (a few seconds per test). For a deeper search set ``DLRCORE_FUZZ_EXAMPLES`` (for example
``DLRCORE_FUZZ_EXAMPLES=3000 python -m pytest tests/unit/test_fuzz.py``), which sets every test's example count (the
worker-process test takes at most 60).

Tolerances. The data are exact in float64 (every generated value is converted once, and the reference sees the
same values scaled by exact powers of two). The stacked widths here are below 128, so the products are float64;
D_LR, D_half and their reference then differ by rounding amplified by the conditioning of these small random
problems, about 1e-12, and 1e-7 leaves a wide margin on any BLAS. Cases whose output singular values lie within a
factor 30 of the rank cut are skipped (there the two sides may legitimately keep different ranks).
"""

from __future__ import annotations

import os
import string
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dlrcore
from dlrcore import DLRInputError, cli
from dlrcore.arrayfiles import accumulate_files
from dlrcore.checkpoint import MAGIC as CHECKPOINT_MAGIC
from dlrcore.checkpoint import load_checkpoint, save_checkpoint
from dlrcore.storage import atomic_savez, read_npz

from ..references.dlr import ref_dhalf, ref_dlr

FUZZ_EXAMPLES = int(os.environ.get("DLRCORE_FUZZ_EXAMPLES", "0"))


def fuzz(default: int, most: int | None = None):
    """Settings with ``default`` examples, or ``DLRCORE_FUZZ_EXAMPLES`` (at most ``most``, for costly cases)."""
    deep = min(FUZZ_EXAMPLES, most) if most else FUZZ_EXAMPLES
    return settings(
        max_examples=deep or default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


TOL = 1e-7

try:
    import ml_dtypes

    BFLOAT16 = [np.dtype(ml_dtypes.bfloat16)]
except ImportError:  # optional: numpy has no bfloat16 of its own
    BFLOAT16 = []

FLOATS = [np.dtype("<f8"), np.dtype(">f8"), np.dtype("<f4"), np.dtype(">f4"), np.dtype("f2"), *BFLOAT16]
INTEGERS = [np.dtype("<i4"), np.dtype(">i8"), np.dtype("u1"), np.dtype(bool)]
DECADES = {8: 300, 4: 30, 2: 3}  # largest |decimal exponent| that keeps N(0, 1) data finite and normal


def _make(rng: np.random.Generator, a: np.ndarray, dtype: np.dtype, decade: int) -> np.ndarray:
    """``a`` in ``dtype``: floats scaled by 10**decade (within the dtype's range), integers rounded, booleans
    thresholded."""
    if dtype is np.dtype(bool):
        return a > 0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(a * 4 + (8 if dtype.kind == "u" else 0)), info.min, info.max).astype(dtype)
    bound = DECADES.get(dtype.itemsize, 30)
    k = max(-bound, min(bound, decade))
    with np.errstate(over="ignore", under="ignore"):
        return (a * 10.0**k).astype(dtype)


def _unit(a: np.ndarray) -> np.ndarray:
    """The same values in float64, divided by an exact power of two so that their largest magnitude is about 1."""
    a = a.astype(np.float64)
    top = np.max(np.abs(a)) if a.size else 0.0
    return a if not top > 0 else np.ldexp(a, -np.frexp(top)[1])


def _snapshot(stats: dlrcore.DLRStats) -> dict:
    """The stored state, bit for bit: n, means, co-moments and the blocks' scale exponents (``moments()`` gives
    them in the data's units, which may lie outside the float64 range here)."""
    if stats._mom is None:
        return {}
    return {k: np.array(v, copy=True) for k, v in stats._mom.state_arrays().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or np.array_equal(a[k], b[k]) for k in a
    )


@st.composite
def batches(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p, C = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    n = draw(st.integers(p + C + 4, 60))
    dx = draw(st.sampled_from(FLOATS + INTEGERS))
    df = draw(st.sampled_from(FLOATS + INTEGERS))
    kx, kf = draw(st.integers(-300, 300)), draw(st.integers(-300, 300))
    x = rng.normal(size=(n, p)) + rng.normal(size=p)
    f = x @ rng.normal(size=(p, C)) + 0.3 * rng.normal(size=(n, C)) + rng.normal(size=C)
    x, f = _make(rng, x, dx, kx), _make(rng, f, df, kf)
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=4))))
    poison = None
    if draw(st.booleans()):
        which = draw(st.sampled_from(["features", "outputs"]))
        target = x if which == "features" else f
        if target.dtype.kind == "f":
            row, col = draw(st.integers(0, n - 1)), draw(st.integers(0, target.shape[1] - 1))
            target[row, col] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            poison = (which, row)
    return x, f, [0, *cuts, n], poison


def _reference(x: np.ndarray, f: np.ndarray, rtol: float):
    xu, fu = _unit(x), _unit(f)
    sv = np.linalg.svd(fu, compute_uv=False)
    assume(sv[0] > 0)
    ratio = sv / sv[0]
    assume(not np.any((ratio > rtol / 30) & (ratio < rtol * 30)))  # no singular value near the cut
    return ref_dlr(xu, fu, rtol=rtol), ref_dhalf(xu, fu)


@fuzz(120)
@given(case=batches())
def test_any_batches_give_the_reference_value_or_a_clean_refusal(case):
    x, f, bounds, poison = case
    stats = dlrcore.DLRStats()
    kept = []
    parts = []
    for a, b in pairwise(bounds):
        before = _snapshot(stats)
        bad = poison is not None and a <= poison[1] < b
        if bad:
            with pytest.raises(DLRInputError, match=rf"{poison[0]}: .*non-finite .* row {poison[1] - a},"):
                stats.update(x[a:b], f[a:b])
            assert _same(_snapshot(stats), before)
            continue
        try:
            stats.update(x[a:b], f[a:b])
        except DLRInputError as exc:  # only for data that cannot make statistics at all
            raise AssertionError(f"a good batch was refused: {exc}") from exc
        kept.append(slice(a, b))
        parts.append(dlrcore.DLRStats().update(x[a:b], f[a:b]))
    if not kept:
        return
    xs = np.concatenate([x[s] for s in kept])
    fs = np.concatenate([f[s] for s in kept])
    try:
        res = stats.result(output_kernel="sqrt")
    except DLRInputError as exc:
        # refused for a reason the data show: too few rows, or constant features or outputs
        xu, fu = _unit(xs), _unit(fs)
        assert xs.shape[0] < 2 or np.ptp(xu, axis=0).max() == 0 or np.ptp(fu, axis=0).max() == 0, str(exc)
        return
    span, half = _reference(xs, fs, res.rtol)
    assert abs(res.value_sqrt - half.value) <= TOL
    if np.isfinite(res.value_span):
        assert abs(res.value_span - span.value) <= TOL
    merged = sum(reversed(parts)).result(output_kernel="sqrt")
    assert abs(merged.value_sqrt - res.value_sqrt) <= 1e-10
    assert merged.output_rank == res.output_rank


# ------------------------------------------------------------------------------------------ crafted files


def _saved_files(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 5))
    f = x[:, :2] @ rng.normal(size=(2, 3)) + 0.1 * rng.normal(size=(300, 3))
    labels = rng.integers(0, 3, 300)
    files = {
        "stats": (dlrcore.DLRStats().update(x, f, labels=labels).save(tmp_path / "s.npz"), dlrcore.DLRStats.load),
        "weights": (
            dlrcore.DLRStats(weight=rng.normal(size=(3, 5)), bias=rng.normal(size=3)).update(x).save(
                tmp_path / "w.npz"),
            dlrcore.DLRStats.load,
        ),
        "sketch": (dlrcore.DLRSketch(rank=4).update(x, f).save(tmp_path / "k.npz"), dlrcore.DLRSketch.load),
        "cka": (dlrcore.CKAStats().update(x, f).save(tmp_path / "c.npz"), dlrcore.CKAStats.load),
        "checkpoint": (
            save_checkpoint(tmp_path / "ck", dlrcore.DLRStats().update(x[:150], f[:150]), 150, 300, {"demo": 1}),
            lambda path: load_checkpoint(path).stats,
        ),
    }
    return files


MUTATIONS = ["drop", "nan", "negate", "scalar", "string", "shape", "huge", "zero", "float", "bool", "transpose"]


def _mutate(value: np.ndarray, how: str, rng: np.random.Generator):
    a = np.asarray(value)
    if how == "drop":
        return None
    if how == "nan":
        return np.full(a.shape, np.nan) if a.dtype.kind in "fiu" else np.array("nan")
    if how == "negate":
        return -a if a.dtype.kind in "fi" else a
    if how == "scalar":
        return np.array(rng.integers(-3, 10))
    if how == "string":
        return np.array("".join(rng.choice(list(string.ascii_letters), 6)))
    if how == "shape":
        return np.zeros(tuple(s + 1 for s in a.shape) or (2,))
    if how == "huge":
        return np.full(a.shape, 1e308) if a.size else np.array(1e308)
    if how == "zero":
        return np.zeros(a.shape, dtype=a.dtype) if a.dtype.kind != "U" else np.array("")
    if how == "float":
        return a.astype(np.float64) + 0.5 if a.dtype.kind in "fiub" else a
    if how == "bool":
        return np.ones(a.shape, dtype=bool)
    return a.T if a.ndim == 2 else a


@fuzz(60)
@given(kind=st.sampled_from(["stats", "weights", "sketch", "cka", "checkpoint"]), data=st.data())
def test_crafted_files_are_refused_or_read_right(tmp_path, kind, data):
    """A field changed in any of these ways, in a file whose checksum matches (as another program would write
    it): loading raises DLRInputError, or the loaded object's results are valid numbers or a DLRInputError."""
    path, load = _saved_files(tmp_path)[kind]
    magic = {"stats": "dlrcore.DLRStats", "weights": "dlrcore.DLRStats", "sketch": "dlrcore.DLRSketch",
             "cka": "dlrcore.CKAStats", "checkpoint": CHECKPOINT_MAGIC}[kind]
    with np.load(path) as z:
        version = int(z["format_version"])
    fields = read_npz(path, magic, version)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    changes = data.draw(st.lists(st.tuples(st.sampled_from(sorted(fields)), st.sampled_from(MUTATIONS)),
                                 min_size=1, max_size=3))
    for key, how in changes:
        new = _mutate(fields[key], how, rng) if key in fields else None
        if new is None:
            fields.pop(key, None)
        else:
            fields[key] = new
    fields.pop("magic", None)
    version = fields.pop("format_version", None)
    out = tmp_path / "crafted.npz"
    if version is None:  # written without a version: atomic_savez always writes one, so write the fields raw
        np.savez(out, magic=np.array(magic), **fields)
    else:
        try:
            ver = int(version)
        except (TypeError, ValueError):
            ver = 1
        atomic_savez(out, magic, ver, fields)
        if not np.array_equal(np.asarray(version), np.asarray(ver)):  # keep the mutated version field itself
            with np.load(out) as z:
                raw = dict(z)
            raw["format_version"] = version
            raw.pop("checksum")
            np.savez(out, **raw)
    try:
        obj = load(out)
    except DLRInputError:
        return
    try:
        res = obj.result()
    except DLRInputError:
        return
    value = getattr(res, "value", None)
    assert value is not None and (np.isnan(value) or 0.0 <= value <= 1.0)


def _write_array(path, a: np.ndarray, fmt: str) -> None:
    if fmt == "npy":
        np.save(path, a)
    elif fmt == "npz":
        np.savez(path, x=a)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file({"x": a}, str(path))
    else:
        import h5py

        with h5py.File(path, "w") as h:
            h["x"] = a


@pytest.mark.parametrize("fmt", ["npy", "npz", "safetensors", "h5"])
@fuzz(20)
@given(cut=st.integers(0, 600), flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4))
def test_damaged_array_files_are_refused_cleanly(tmp_path, capsys, fmt, cut, flips):
    """Truncated or byte-flipped array files: the reader raises DLRInputError (or reads valid values), and the CLI
    exits 1 with one line."""
    if fmt in ("safetensors", "h5"):
        pytest.importorskip("safetensors" if fmt == "safetensors" else "h5py")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    np.save(tmp_path / "f.npy", x[:, :2])
    good = tmp_path / f"good.{fmt}"
    _write_array(good, x, fmt)
    raw = bytearray(good.read_bytes())
    for pos, byte in flips:
        raw[pos % len(raw)] = byte
    bad = tmp_path / f"bad.{fmt}"
    bad.write_bytes(bytes(raw[: max(len(raw) - cut, 0)]))
    try:
        accumulate_files(str(bad), str(tmp_path / "f.npy"))
    except DLRInputError:
        pass
    capsys.readouterr()
    code = cli.main(["compute", str(bad), str(tmp_path / "f.npy")])
    err = capsys.readouterr().err
    assert code in (0, 1)
    if code == 1:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------------ threads and processes


def _objects():
    return {
        "stats": dlrcore.DLRStats,
        "sketch": lambda: dlrcore.DLRSketch(rank=4, probes=6, seed=1),
        "cka": dlrcore.CKAStats,
    }


def _shared_data(seed: int, n: int = 6000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)) * np.linspace(2, 0.2, 12) + 1.0
    return x, x[:, :3] @ rng.normal(size=(3, 4)) + 0.1 * rng.normal(size=(n, 4))


@fuzz(20)
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(sorted(_objects())),
    threads=st.integers(2, 4),
    ops=st.lists(st.sampled_from(["update", "result", "copy", "merge", "pickle", "save"]), min_size=3, max_size=10),
)
def test_threads_sharing_one_object_in_any_interleaving(tmp_path, seed, kind, threads, ops):
    """Threads update one object with their share of the rows, between reads, copies, merges of an empty object,
    pickles and saves of it; nothing is lost or raised, and the value is that of one thread fed every row (up to
    the rounding of another merge order, 1e-10)."""
    import pickle
    import threading

    x, f = _shared_data(seed)
    make = _objects()[kind]
    shared = make()
    errors: list[BaseException] = []
    blocks = [slice(i, i + 500) for i in range(0, x.shape[0], 500)]

    def work(k: int) -> None:
        mine = blocks[k::threads]
        try:
            for step, op in enumerate(ops * len(mine)):
                if op == "update" and mine:
                    sl = mine.pop()
                    shared.update(x[sl], f[sl])
                elif op == "merge":
                    shared.merge(make())
                elif op == "copy":
                    shared.copy()
                elif op == "pickle":
                    pickle.loads(pickle.dumps(shared))
                elif op == "save" and shared.n:
                    shared.save(tmp_path / f"t{k}_{step}.npz")
                elif op == "result" and shared.n > 1:
                    shared.result()
            for sl in mine:
                shared.update(x[sl], f[sl])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    alone = make().update(x, f)
    assert shared.n == x.shape[0]
    assert abs(shared.result().value - alone.result().value) <= 1e-10


def _rows_of(args):
    seed, a, b, kind = args
    x, f = _shared_data(seed)
    return _objects()[kind]().update(x[a:b], f[a:b])


def _check_merges(parts: list, seed: int, kind: str) -> None:
    x, f = _shared_data(seed)
    whole = _objects()[kind]().update(x, f)
    assert sum(parts).n == 6000
    assert abs(sum(reversed(parts)).result().value - whole.result().value) <= 1e-10


cases = st.lists(
    st.tuples(st.integers(0, 2**16), st.sampled_from(sorted(_objects())),
              st.lists(st.integers(1, 5999), min_size=1, max_size=3, unique=True)),
    min_size=1, max_size=3,
)


def _jobs(case) -> list:
    seed, kind, cuts = case
    bounds = [0, *sorted(cuts), 6000]
    return [(seed, a, b, kind) for a, b in pairwise(bounds)]


@fuzz(3, most=60)
@given(cases=cases)
def test_spawn_workers_return_statistics_that_merge_exactly(spawn_pool, cases):
    for case in cases:
        _check_merges(spawn_pool.map(_rows_of, _jobs(case), chunksize=1), case[0], case[1])


@pytest.fixture(scope="module")
def spawn_pool():
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as p:
        yield p


FORK_CASES = """
import json, multiprocessing, sys
import numpy as np
import dlrcore
from tests.unit.test_fuzz import _check_merges, _jobs, _rows_of

if __name__ == "__main__":
    dlrcore.dlr(np.random.default_rng(0).normal(size=(3000, 40)), np.eye(3000)[:, :3])  # dlrcore ran before fork
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for case in json.loads(sys.argv[1]):
            _check_merges(pool.map(_rows_of, _jobs(case), chunksize=1), case[0], case[1])
    print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method is POSIX only")
@fuzz(1, most=20)
@given(cases=cases)
def test_fork_workers_return_statistics_that_merge_exactly(tmp_path, cases):
    """In a fresh interpreter (this one may hold JAX's or torch's threads, which fork cannot copy): a fork pool
    created after dlrcore ran in the parent (Python 3.11's default start method on Linux)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "fork_cases.py"
    script.write_text(FORK_CASES)
    run = subprocess.run([sys.executable, str(script), json.dumps(cases)], capture_output=True, text=True,
                         timeout=300, check=False, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
