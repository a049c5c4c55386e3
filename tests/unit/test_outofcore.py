"""Out-of-core inputs: zarr and HDF5 sources, positioned .npy reads, accumulate_files and the CLI, the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrcore
from dlrcore.arrayfiles import accumulate_files, open_array
from dlrcore.cli import main
from dlrcore.inputs import DLRInputError

from ..conftest import gaussian_problem

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def problem(rng):
    phi, out = gaussian_problem(rng, n=2500, p=9, C=3)
    return phi, out, rng.integers(0, 3, size=2500)


def write_zarr(d, phi, out, dtype):
    zarr = pytest.importorskip("zarr")
    root = zarr.open_group(str(d / "data.zarr"), mode="w")
    root.create_array("phi", data=phi.astype(dtype), chunks=(300, phi.shape[1]))
    grp = root.create_group("heads")
    grp.create_array("out", data=out.astype(dtype), chunks=(300, out.shape[1]))
    grp.create_array("out1", data=out[:, 0].astype(dtype), chunks=(300,))
    single = zarr.open_array(str(d / "single.zarr"), mode="w", shape=phi.shape, chunks=(256, phi.shape[1]), dtype=dtype)
    single[:] = phi.astype(dtype)
    return {
        "phi": f"{d}/data.zarr:phi",
        "out": f"{d}/data.zarr:heads/out",
        "out1": f"{d}/data.zarr:heads/out1",
        "single": f"{d}/single.zarr",
    }


def write_hdf5(d, phi, out, dtype):
    h5py = pytest.importorskip("h5py")
    with h5py.File(d / "data.h5", "w") as fh:
        fh.create_dataset("phi", data=phi.astype(dtype), chunks=(300, phi.shape[1]), compression="gzip")
        fh.create_dataset("heads/out", data=out.astype(dtype))
        fh.create_dataset("heads/out1", data=out[:, 0].astype(dtype))
    with h5py.File(d / "single.hdf5", "w") as fh:
        fh["only"] = phi.astype(dtype)
    return {
        "phi": f"{d}/data.h5:phi",
        "out": f"{d}/data.h5:heads/out",
        "out1": f"{d}/data.h5:/heads/out1",
        "single": f"{d}/single.hdf5",
    }


WRITERS = {"zarr": write_zarr, "hdf5": write_hdf5}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zarr_and_hdf5_match_the_in_memory_arrays(tmp_path, problem, fmt, dtype, capsys):
    phi, out, _ = problem
    spec = WRITERS[fmt](tmp_path, phi, out, dtype)
    x, f = phi.astype(dtype), out.astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    src = open_array(spec["phi"])
    assert src.shape == phi.shape and src.dtype == np.dtype(dtype) and src.kind == fmt
    np.testing.assert_array_equal(src.read(100, 433), x[100:433])
    np.testing.assert_array_equal(open_array(spec["single"]).read(0, 5), x[:5])
    for key, ref_out in (("out", f), ("out1", f[:, 0])):
        ref = dlrcore.dlr(x, ref_out).value
        st = accumulate_files(spec["phi"], spec[key], batch_rows=333)
        assert st.n == phi.shape[0]
        assert st.result().value == pytest.approx(ref, rel=tol, abs=tol)
        assert main(["compute", spec["phi"], spec[key], "--json", "--batch-size", "333"]) == 0
        assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(st.result().value, rel=1e-12)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_missing_keys_and_ambiguous_files_are_named(tmp_path, problem, fmt, capsys):
    phi, out, _ = problem
    spec = WRITERS[fmt](tmp_path, phi, out, np.float64)
    base = spec["phi"].rpartition(":")[0]
    with pytest.raises(DLRInputError, match=r"no array named 'nope'; it holds \['heads/out', 'heads/out1', 'phi'\]"):
        open_array(f"{base}:nope")
    with pytest.raises(DLRInputError, match="holds 3 arrays"):
        open_array(base)
    assert main(["compute", f"{base}:nope", spec["out"]]) == 1
    err = capsys.readouterr().err
    assert "no array named 'nope'" in err and err.count("\n") == 1


@pytest.mark.parametrize("fmt, module, extra", [("zarr", "zarr", "zarr"), ("hdf5", "h5py", "hdf5")])
def test_a_missing_extra_says_what_to_install(tmp_path, problem, fmt, module, extra, monkeypatch, capsys):
    phi, out, _ = problem
    spec = WRITERS[fmt](tmp_path, phi, out, np.float64)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(DLRInputError, match=rf'pip install "dlrcore\[{extra}\]"'):
        open_array(spec["phi"])
    assert main(["compute", spec["phi"], spec["out"]]) == 1
    assert f'pip install "dlrcore[{extra}]"' in capsys.readouterr().err


def test_npy_positioned_reads_match_the_memory_map(tmp_path, rng):
    a = rng.normal(size=(1000, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "big_endian.npy", a.astype(">f8"))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(a))
    np.save(tmp_path / "one_d.npy", a[:, 0])
    for name in ("a", "big_endian", "fortran", "one_d"):
        src, mm = open_array(str(tmp_path / f"{name}.npy")), open_array(str(tmp_path / f"{name}.npy"), mmap=True)
        assert src.shape == mm.shape and src.dtype == mm.dtype
        for i, j in ((0, 1000), (13, 512), (999, 1000), (990, 2000), (5, 5)):
            np.testing.assert_array_equal(src.read(i, j), mm.read(i, j))
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DLRInputError, match="cannot read as .npy.*truncated"):
        open_array(str(tmp_path / "cut.npy"))


def test_python_function_and_cli_agree_with_labels_and_progress(tmp_path, problem, capsys):
    phi, out, y = problem
    np.save(tmp_path / "phi.npy", phi)
    np.save(tmp_path / "out.npy", out)
    np.save(tmp_path / "y.npy", y)
    st = accumulate_files(
        tmp_path / "phi.npy",
        tmp_path / "out.npy",
        tmp_path / "y.npy",
        batch_rows=400,
        num_classes=3,
        progress=True,
        label="files",
    )
    assert "files" in capsys.readouterr().err
    ref = dlrcore.DLRStats(num_classes=3).update(phi, out, labels=y)
    assert st.result().value == pytest.approx(ref.result().value, rel=1e-12)
    assert st.nc1().value == pytest.approx(ref.nc1().value, rel=1e-10)
    args = [
        "compute",
        str(tmp_path / "phi.npy"),
        str(tmp_path / "out.npy"),
        "--labels",
        str(tmp_path / "y.npy"),
        "--num-classes",
        "3",
        "--batch-size",
        "400",
        "--json",
    ]
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["value"] == pytest.approx(st.result().value, rel=1e-12)
    sk = accumulate_files(tmp_path / "phi.npy", tmp_path / "out.npy", method="sketch", rank=4, probes=8)
    assert main([*args[:3], "--method", "sketch", "--rank", "4", "--probes", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(sk.result().value, rel=1e-12)
    np.save(tmp_path / "y_short.npy", y[:-1])
    with pytest.raises(DLRInputError, match="row counts differ"):
        accumulate_files(tmp_path / "phi.npy", tmp_path / "out.npy", tmp_path / "y_short.npy")
    with pytest.raises(DLRInputError, match="batch size must be at least 1"):
        accumulate_files(tmp_path / "phi.npy", tmp_path / "out.npy", batch_rows=0)


def test_bench_outofcore_quick_runs_and_memory_stays_flat(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_outofcore.py"),
            "--quick",
            "--json",
            str(out),
            "--dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(x["n"], x["kind"]) for x in rows} == {
        (n, k) for n in (20000, 100000) for k in ("floor", "floor-mmap", "exact", "sketch")
    }
    by = {(x["n"], x["kind"]): x for x in rows}
    assert by[(20000, "exact")]["value"] == pytest.approx(by[(100000, "exact")]["value"], abs=0.05)
    for kind in ("floor", "exact", "sketch"):  # 5x the rows, about the same peak memory (blocks of ~64 MiB)
        assert by[(100000, kind)]["extra_rss_mb"] < by[(20000, kind)]["extra_rss_mb"] + 150
    assert not list((tmp_path / "data").glob("*.npy"))  # data deleted without --keep
