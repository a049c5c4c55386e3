"""dlrcore.dask: row-chunked Dask arrays and files read by Dask workers, threaded and on a LocalCluster."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import dlrcore
import dlrcore.dask as ddlr
from dlrcore import DLRInputError, DLRSketch, DLRStats

TOL = 1e-10


def problem(n=1000, p=12, C=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) + rng.normal(size=p)
    f = x @ rng.normal(size=(p, C)) + rng.normal(size=C) + 0.3 * rng.normal(size=(n, C))
    classes = rng.integers(0, 3, n)
    targets = rng.normal(size=(n, 2))
    return x, f, classes, targets


def assert_same(got: DLRStats, want: DLRStats) -> None:
    assert isinstance(got, DLRStats)
    assert got.n == want.n and got.label_kind == want.label_kind
    assert abs(got.result().value - want.result().value) <= TOL
    mg, mw = got.moments(), want.moments()
    assert mg.keys() == mw.keys()
    for k, w in mw.items():
        g = mg[k]
        if w is None:
            assert g is None, k
        elif k == "n":
            assert g == w
        else:
            scale = max(1.0, float(np.max(np.abs(w))))
            np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL * scale, err_msg=k)


# ---------------------------------------------------------------------------------------------- threaded scheduler


def test_import_dlrcore_does_not_import_dask():
    code = "import sys, dlrcore; assert 'dask' not in sys.modules; import dlrcore.dask, dask.array; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert ddlr.da.__name__ == "dask.array"  # the module's own `import dask` is the real package


@pytest.mark.parametrize(
    "x_chunks, f_chunks",
    [
        ((1000, 12), (1000, 3)),  # one chunk
        ((97, 12), (250, 3)),  # uneven, outputs chunked differently
        (((300, 1, 450, 249), (5, 7)), ((500, 500), (1, 2))),  # explicit uneven rows, column chunks
        ((64, 4), (1000, 1)),  # many blocks, column chunks of both arrays
    ],
)
@pytest.mark.parametrize("labels", ["none", "classes", "targets"])
def test_stats_threaded_equals_numpy(x_chunks, f_chunks, labels):
    x, f, classes, targets = problem()
    y = {"none": None, "classes": classes, "targets": targets}[labels]
    dy = None if y is None else da.from_array(y, chunks=333 if y.ndim == 1 else (333, 1))
    got = ddlr.stats(
        da.from_array(x, chunks=x_chunks), da.from_array(f, chunks=f_chunks), dy, scheduler="threads"
    )
    assert_same(got, DLRStats().update(x, f, labels=y))


def test_stats_outputs_1d_and_class_ids_need_num_classes():
    x, f, classes, _ = problem(C=1)
    f1 = f[:, 0]
    got = ddlr.stats(
        da.from_array(x, chunks=150), da.from_array(f1, chunks=400), da.from_array(classes, chunks=90),
        num_classes=3, split_every=2, scheduler="threads",
    )
    assert_same(got, DLRStats(num_classes=3).update(x, f1, labels=classes))
    assert got.C == 1
    with pytest.raises(DLRInputError, match="num_classes"):
        ddlr.stats(da.from_array(x, chunks=500), da.from_array(f1, chunks=500), classes, scheduler="threads")


def test_stats_numpy_outputs_and_labels_are_wrapped_and_zero_row_chunks_skipped():
    x, f, classes, _ = problem(n=600)
    dx = da.from_array(x, chunks=((0, 200, 0, 400), (12,)))
    got = ddlr.stats(dx, f, classes, scheduler="synchronous")
    assert_same(got, DLRStats().update(x, f, labels=classes))


def test_stats_float32_and_precision():
    x, f, _, _ = problem(n=800, seed=3)
    x32, f32 = x.astype(np.float32), f.astype(np.float32)
    got = ddlr.stats(da.from_array(x32, chunks=300), da.from_array(f32, chunks=300), scheduler="threads")
    want = DLRStats().update(x32, f32)
    assert abs(got.result().value - want.result().value) <= 1e-7
    got = ddlr.stats(
        da.from_array(x32, chunks=300), da.from_array(f32, chunks=300), precision="float32", scheduler="threads"
    )
    assert got.result().precision == "float32"


def test_graph_scales_with_chunks_and_ends_in_one_merged_object():
    x, f, _, _ = problem(n=1000)
    for rows, split in ((100, 8), (10, 3), (1000, 8)):
        lazy = ddlr.stats(
            da.from_array(x, chunks=rows), da.from_array(f, chunks=rows), split_every=split, compute=False
        )
        keys = [str(k) for k in dict(lazy.__dask_graph__())]
        parts = [k for k in keys if k.startswith("dlr-partial-")]
        merges = [k for k in keys if k.startswith("dlr-merge-")]
        nb = 1000 // rows
        assert len(parts) == nb
        expect, m = 0, nb
        while m > 1:
            m = -(-m // split)
            expect += m
        assert len(merges) == expect
        out = lazy.compute(scheduler="threads")
        assert isinstance(out, DLRStats) and out.n == 1000
        assert_same(out, DLRStats().update(x, f))


def test_misaligned_row_chunks_are_rechunked_to_the_features():
    x, f, _, targets = problem(n=500)
    dx = da.from_array(x, chunks=(120, 12))
    df = da.from_array(f, chunks=(77, 3))
    dy = da.from_array(targets, chunks=(499, 1))
    lazy = ddlr.stats(dx, df, dy, compute=False)
    assert sum(str(k).startswith("dlr-partial-") for k in dict(lazy.__dask_graph__())) == len(dx.chunks[0])
    assert_same(lazy.compute(scheduler="threads"), DLRStats().update(x, f, labels=targets))


def test_refusals_name_the_problem():
    x, f, _, _ = problem(n=300)
    dx, df = da.from_array(x, chunks=100), da.from_array(f, chunks=100)
    with pytest.raises(DLRInputError, match=r"features: expected a dask.array.Array, got numpy.ndarray"):
        ddlr.stats(x, df)
    with pytest.raises(DLRInputError, match=r"outputs: expected .* got builtins.list"):
        ddlr.stats(dx, f.tolist())
    with pytest.raises(DLRInputError, match=r"outputs: 299 rows but features have 300"):
        ddlr.stats(dx, df[:299])
    with pytest.raises(DLRInputError, match=r"labels: 301 rows"):
        ddlr.stats(dx, df, np.zeros(301, int))
    with pytest.raises(DLRInputError, match=r"features: expected a 2-D array, got ndim=3"):
        ddlr.stats(da.zeros((300, 4, 2), chunks=100), df)
    with pytest.raises(DLRInputError, match=r"outputs: expected a 1-D or 2-D array, got ndim=3"):
        ddlr.stats(dx, da.zeros((300, 3, 1), chunks=100))
    with pytest.raises(DLRInputError, match="unknown chunk sizes"):
        ddlr.stats(dx[dx[:, 0] > 0], df)
    with pytest.raises(DLRInputError, match="complex"):
        ddlr.stats(dx.astype(np.complex128), df)
    with pytest.raises(DLRInputError, match="outputs: required"):
        ddlr.stats(dx, None)
    with pytest.raises(ValueError, match="split_every"):
        ddlr.stats(dx, df, split_every=1)
    with pytest.raises(DLRInputError, match="non-finite"):
        ddlr.stats(dx, da.where(df > 1, np.nan, df), scheduler="threads")


def sequential_sketch(x, f, bounds, **params):
    sk = DLRSketch(**params)
    for a, b in bounds:
        sk.update(x[a:b], f[a:b])
    return sk


def test_sketch_threaded_equals_sequential_sketch():
    x, f, _, _ = problem(n=1200, p=60, C=3, seed=5)
    params = {"rank": 8, "oversample": 4, "probes": 8, "seed": 7}
    got = ddlr.sketch(da.from_array(x, chunks=(250, 30)), da.from_array(f, chunks=400), **params, scheduler="threads")
    want = sequential_sketch(x, f, [(i, min(i + 250, 1200)) for i in range(0, 1200, 250)], **params)
    assert isinstance(got, DLRSketch) and got.n == 1200
    assert abs(got.result().value - want.result().value) <= TOL
    with pytest.raises(ValueError, match="probes"):
        ddlr.sketch(da.from_array(x, chunks=250), da.from_array(f, chunks=250), probes=2)


# ---------------------------------------------------------------------------------------------- files, threaded


@pytest.fixture
def files(tmp_path):
    x, f, classes, _ = problem(n=1100, seed=2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "f.npy", f)
    np.save(tmp_path / "y.npy", classes)
    np.savez(tmp_path / "run.npz", phi=x, logits=f)
    return tmp_path, x, f, classes


def test_stats_from_files_threaded(files, capsys):
    d, x, f, classes = files
    got = ddlr.stats_from_files(
        str(d / "x.npy"), str(d / "f.npy"), str(d / "y.npy"), chunk_rows=300, scheduler="threads", progress=True
    )
    assert_same(got, DLRStats().update(x, f, labels=classes))
    assert "1100/1100" in capsys.readouterr().err
    got = ddlr.stats_from_files(f"{d / 'run.npz'}:phi", f"{d / 'run.npz'}:logits", chunk_rows=256)
    assert_same(got, DLRStats().update(x, f))
    got = ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"))  # default chunking: one block here
    assert_same(got, DLRStats().update(x, f))


def test_stats_from_files_sketch_auto_and_weights(files):
    d, x, f, _ = files
    params = {"rank": 6, "probes": 6, "seed": 3}
    got = ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"), method="sketch", chunk_rows=400, **params)
    want = sequential_sketch(x, f, [(0, 400), (400, 800), (800, 1100)], oversample=16, **params)
    assert isinstance(got, DLRSketch)
    assert abs(got.result().value - want.result().value) <= TOL
    assert isinstance(ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"), method="auto"), DLRStats)
    rng = np.random.default_rng(9)
    w, b = rng.normal(size=(5, x.shape[1])), rng.normal(size=5)
    np.save(d / "w.npy", w)
    np.save(d / "b.npy", b)
    got = ddlr.stats_from_files(str(d / "x.npy"), weight=str(d / "w.npy"), bias=str(d / "b.npy"), chunk_rows=500)
    want = DLRStats(weight=w, bias=b).update(x)
    assert got.weights_mode and abs(got.result().value - want.result().value) <= TOL


def test_stats_from_files_refusals(files):
    d, _x, f, _ = files
    np.save(d / "short.npy", f[:-1])
    np.save(d / "cube.npy", np.zeros((4, 2, 2)))
    with pytest.raises(DLRInputError, match="row counts differ"):
        ddlr.stats_from_files(str(d / "x.npy"), str(d / "short.npy"))
    with pytest.raises(DLRInputError, match="expected a 2-D n x p array"):
        ddlr.stats_from_files(str(d / "cube.npy"), str(d / "f.npy"))
    with pytest.raises(DLRInputError, match="give outputs"):
        ddlr.stats_from_files(str(d / "x.npy"))
    with pytest.raises(DLRInputError, match="labels are not supported"):
        ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"), str(d / "y.npy"), method="sketch")
    with pytest.raises(FileNotFoundError):
        ddlr.stats_from_files(str(d / "missing.npy"), str(d / "f.npy"))
    with pytest.raises(DLRInputError, match="chunk_rows"):
        ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"), chunk_rows=0)


# ---------------------------------------------------------------------------------------------- LocalCluster


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


def get_task_stream(client):
    from distributed import get_task_stream

    return get_task_stream(client)


def test_cluster_stats(client):
    x, f, classes, _ = problem(n=2000, seed=4)
    got = ddlr.stats(
        da.from_array(x, chunks=(300, 6)), da.from_array(f, chunks=700), da.from_array(classes, chunks=512),
        split_every=3, scheduler=client,
    )
    assert_same(got, DLRStats().update(x, f, labels=classes))
    with client.as_current(), get_task_stream(client) as ts:  # the active client, without scheduler=
        got = ddlr.stats(da.from_array(x, chunks=500), da.from_array(f, chunks=500))
    assert_same(got, DLRStats().update(x, f))
    assert sum("dlr-partial-" in str(t["key"]) for t in ts.data) == 4  # ran on the cluster


def test_cluster_stats_from_files(client, files, capsys):
    d, x, f, classes = files
    addr = client.scheduler.address
    got = ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"), str(d / "y.npy"), scheduler=addr, chunk_rows=200)
    assert_same(got, DLRStats().update(x, f, labels=classes))
    got = ddlr.stats_from_files(
        f"{d / 'run.npz'}:phi", f"{d / 'run.npz'}:logits", scheduler=addr, chunk_rows=300, split_every=2,
        progress=True,
    )
    assert_same(got, DLRStats().update(x, f))
    assert "1100/1100" in capsys.readouterr().err
    # no address: the active client runs it and stays open
    with client.as_current(), get_task_stream(client) as ts:
        got = ddlr.stats_from_files(str(d / "x.npy"), str(d / "f.npy"), chunk_rows=500, progress=True)
    assert_same(got, DLRStats().update(x, f))
    assert sum("dlr-partial-" in str(t["key"]) for t in ts.data) == 3
    assert "1100/1100" in capsys.readouterr().err
    assert client.status == "running"
    with pytest.raises(DLRInputError, match="row counts differ"):
        np.save(d / "short.npy", f[:-1])
        ddlr.stats_from_files(str(d / "x.npy"), str(d / "short.npy"), scheduler=addr)


def test_cluster_sketch(client, files):
    d, _, _, _ = files
    x, f, _, _ = problem(n=1500, p=50, C=4, seed=8)
    params = {"rank": 8, "oversample": 4, "probes": 8, "seed": 11}
    got = ddlr.sketch(da.from_array(x, chunks=(400, 25)), da.from_array(f, chunks=300), **params, scheduler=client)
    want = sequential_sketch(x, f, [(0, 400), (400, 800), (800, 1200), (1200, 1500)], **params)
    assert isinstance(got, DLRSketch) and got.n == 1500
    assert abs(got.result().value - want.result().value) <= TOL
    np.save(d / "xs.npy", x)
    np.save(d / "fs.npy", f)
    got = ddlr.stats_from_files(
        str(d / "xs.npy"), str(d / "fs.npy"), method="sketch", chunk_rows=400, scheduler=client.scheduler.address,
        **params,
    )
    assert abs(got.result().value - want.result().value) <= TOL
    assert abs(got.result().value - dlrcore.dlr(x, f).value) <= got.result().error_estimate
