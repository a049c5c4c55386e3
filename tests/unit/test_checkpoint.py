"""Checkpoint and resume of a long accumulation over files (dlrcore.checkpoint, accumulate_files, dlr compute)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dlrcore import DLRSketch, DLRStats
from dlrcore.arrayfiles import ArraySource, accumulate_files
from dlrcore.checkpoint import load_checkpoint, save_checkpoint
from dlrcore.cli import main
from dlrcore.inputs import DLRInputError

from ..conftest import gaussian_problem

N, P, C, BATCH = 24_000, 16, 4, 400  # 60 batches


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(7)
    phi, out = gaussian_problem(rng, n=N, p=P, C=C)
    np.save(tmp_path / "phi.npy", phi)
    np.save(tmp_path / "out.npy", out)
    return tmp_path, phi, out


def cli(d, *extra):
    return [
        sys.executable,
        "-m",
        "dlrcore",
        "compute",
        str(d / "phi.npy"),
        str(d / "out.npy"),
        "--json",
        "--batch-size",
        str(BATCH),
        *extra,
    ]


def arrays_of(stats_file):
    with np.load(stats_file, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if z[k].dtype.kind == "f" and z[k].ndim > 0}


def position(ck):
    try:
        return load_checkpoint(ck).position
    except (FileNotFoundError, DLRInputError):
        return 0


# `dlr compute ARGS...` in a child process that stops for good before reading the feature rows from BLOCK_ROW on
# (the checkpoint then holds exactly the rows before them, with --checkpoint-every 1) and creates READY to say so.
BLOCKING_COMPUTE = """
import sys, time
from pathlib import Path
from dlrcore.arrayfiles import ArraySource
from dlrcore.cli import main

block_row, ready, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
read = ArraySource.read

def blocking_read(self, start, stop):
    if "phi" in self.name and start >= block_row:
        ready.touch()
        while True:
            time.sleep(60)  # until the test kills this process
    return read(self, start, stop)

ArraySource.read = blocking_read
sys.exit(main(argv))
"""


def run_and_kill(cmd, ck, block_row):
    """Run ``cmd`` (a ``dlr compute`` command line) until it blocks before row ``block_row``, SIGKILL it there and
    return the checkpoint's position."""
    ready = ck.parent / f"ready-{block_row}"
    child = [sys.executable, "-c", BLOCKING_COMPUTE, str(block_row), str(ready), *cmd[3:]]
    proc = subprocess.Popen(child, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not ready.exists():
            time.sleep(0.01)
        assert ready.exists() and proc.poll() is None, f"the run did not block: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return position(ck)


@pytest.mark.parametrize("method", ["exact", "sketch"])
def test_sigkill_and_resume_equals_an_uninterrupted_run(data, method):
    d, _, _ = data
    ck = d / "ck.npz"
    common = ["--method", method, "--save-stats"]
    ref = subprocess.run(cli(d, *common, str(d / "ref.npz")), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    want = json.loads(ref.stdout)

    cmd = cli(d, *common, str(d / "got.npz"), "--checkpoint", str(ck), "--checkpoint-every", "1")
    assert cmd[1:4] == ["-m", "dlrcore", "compute"]
    assert run_and_kill(cmd, ck, 3 * BATCH) == 3 * BATCH  # killed after 3 batches
    assert run_and_kill(cmd, ck, 7 * BATCH) == 7 * BATCH  # killed again while resuming, 4 batches later

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["n"] == N == want["n"]  # no rows counted twice, none lost
    assert got["value"] == pytest.approx(want["value"], rel=1e-12, abs=0)
    a, b = arrays_of(d / "ref.npz"), arrays_of(d / "got.npz")
    assert a.keys() == b.keys() and a
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12 * np.abs(a[k]).max(), err_msg=k)
    final = load_checkpoint(ck)
    assert final.complete and final.position == N and final.stats.n == N
    cls = DLRSketch if method == "sketch" else DLRStats
    assert isinstance(DLRSketch.load(d / "got.npz") if method == "sketch" else DLRStats.load(d / "got.npz"), cls)


class Interrupt(Exception):
    pass


def interrupted(monkeypatch, after_batches):
    """Make the (after_batches + 1)-th read of the features raise, as a crash would."""
    calls = {"n": 0}
    orig = ArraySource.read

    def read(self, i, j):
        if "phi" in self.name:
            calls["n"] += 1
            if calls["n"] > after_batches:
                raise Interrupt
        return orig(self, i, j)

    monkeypatch.setattr(ArraySource, "read", read)


@pytest.mark.parametrize("every", [1, 3])
def test_checkpoint_every_n_batches_and_resume_in_process(data, monkeypatch, every):
    d, _phi, _out = data
    ck = d / "ck"  # .npz appended
    kw = dict(batch_rows=1000, checkpoint=ck, checkpoint_every=every)
    ref = accumulate_files(d / "phi.npy", d / "out.npy", batch_rows=1000)
    with monkeypatch.context() as m:
        interrupted(m, 7)
        with pytest.raises(Interrupt):
            accumulate_files(d / "phi.npy", d / "out.npy", **kw)
    state = load_checkpoint(d / "ck.npz")
    assert state.position == 1000 * (7 // every * every) and not state.complete
    st = accumulate_files(d / "phi.npy", d / "out.npy", **kw)
    assert st.n == N
    assert st.result().value == pytest.approx(ref.result().value, rel=1e-12)
    assert load_checkpoint(ck).complete
    # a finished checkpoint answers without reading the inputs again
    with monkeypatch.context() as m:
        interrupted(m, 0)
        again = accumulate_files(d / "phi.npy", d / "out.npy", **kw)
    assert again.n == N and again.result().value == st.result().value


def test_resume_is_refused_on_changed_inputs_or_parameters(data, monkeypatch, capsys):
    d, phi, out = data
    ck = d / "ck.npz"
    with monkeypatch.context() as m:
        interrupted(m, 5)
        with pytest.raises(Interrupt):
            accumulate_files(d / "phi.npy", d / "out.npy", batch_rows=1000, checkpoint=ck, checkpoint_every=2)
    assert load_checkpoint(ck).position == 4000

    def refused(*args, **kw):
        base = dict(batch_rows=1000, checkpoint=ck, checkpoint_every=2)
        with pytest.raises(DLRInputError, match="other inputs or parameters") as exc:
            accumulate_files(*args, **{**base, **kw})
        return str(exc.value)

    assert "batch_rows: 1000 then, 500 now" in refused(d / "phi.npy", d / "out.npy", batch_rows=500)
    assert "precision" in refused(d / "phi.npy", d / "out.npy", precision="float64")
    assert "method" in refused(d / "phi.npy", d / "out.npy", method="sketch")
    np.save(d / "out2.npy", out)
    assert "outputs.path" in refused(d / "phi.npy", d / "out2.npy")
    np.save(d / "phi.npy", phi[:-1])
    np.save(d / "out.npy", out[:-1])
    assert f"features.shape: [{N}, {P}] then, [{N - 1}, {P}] now" in refused(d / "phi.npy", d / "out.npy")
    np.save(d / "out.npy", out)
    np.save(d / "phi.npy", phi * 2)  # same name and shape, new contents
    msg = refused(d / "phi.npy", d / "out.npy")
    assert "features.mtime_ns" in msg or "features.bytes" in msg
    # the command line says the same in one line, and --no-resume starts over
    args = ["compute", str(d / "phi.npy"), str(d / "out.npy"), "--batch-size", "1000", "--checkpoint", str(ck)]
    assert main([*args, "--json"]) == 1
    err = capsys.readouterr().err
    assert "--no-resume" in err and err.count("\n") == 1
    assert main([*args, "--json", "--no-resume"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == N and load_checkpoint(ck).complete


def test_sketch_parameters_are_part_of_the_fingerprint(data, monkeypatch):
    d, _, _ = data
    ck = d / "ck.npz"
    kw = dict(method="sketch", batch_rows=1000, checkpoint=ck, checkpoint_every=1, rank=8, probes=8)
    with monkeypatch.context() as m:
        interrupted(m, 3)
        with pytest.raises(Interrupt):
            accumulate_files(d / "phi.npy", d / "out.npy", **kw)
    for change in ({"seed": 1}, {"rank": 9}, {"probes": 4}):
        with pytest.raises(DLRInputError, match="other inputs or parameters"):
            accumulate_files(d / "phi.npy", d / "out.npy", **{**kw, **change})
    sk = accumulate_files(d / "phi.npy", d / "out.npy", **kw)
    ref = accumulate_files(d / "phi.npy", d / "out.npy", **{**kw, "checkpoint": None})
    assert isinstance(sk, DLRSketch) and sk.n == N
    assert sk.result().value == pytest.approx(ref.result().value, rel=1e-12)


def test_leftover_temporary_files_are_ignored_and_removed(data, monkeypatch):
    d, _, _ = data
    ck = d / "ck.npz"
    with monkeypatch.context() as m:
        interrupted(m, 4)
        with pytest.raises(Interrupt):
            accumulate_files(d / "phi.npy", d / "out.npy", batch_rows=1000, checkpoint=ck, checkpoint_every=2)
    # what a kill in the middle of a checkpoint write leaves: half-written temporaries beside the good file
    junk = [d / ".ck.npz.abc123.tmp", d / ".ck.npz.state.npz", d / "..ck.npz.state.npz.xyz.tmp"]
    for f in junk:
        f.write_bytes(b"PK\x03\x04 half a zip file")
    other = d / ".unrelated.tmp"
    other.write_bytes(b"keep me")
    assert load_checkpoint(ck).position == 4000
    st = accumulate_files(d / "phi.npy", d / "out.npy", batch_rows=1000, checkpoint=ck, checkpoint_every=2)
    assert st.n == N
    assert not any(f.exists() for f in junk) and other.exists()


def test_a_damaged_checkpoint_is_reported_clearly(data, capsys):
    d, _, _ = data
    ck = d / "ck.npz"
    ck.write_bytes(b"PK\x03\x04 truncated")
    args = ["compute", str(d / "phi.npy"), str(d / "out.npy"), "--checkpoint", str(ck)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "ck.npz" in err and "checkpoint" in err and err.count("\n") == 1
    assert main([*args, "--no-resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == N


def test_checkpoint_file_round_trip_and_consistency_check(tmp_path, rng):
    x, f = gaussian_problem(rng, n=300, p=5, C=2)
    st = DLRStats(num_classes=3).update(x, f, labels=rng.integers(0, 3, 300))
    p = save_checkpoint(tmp_path / "c.npz", st, 300, 300, {"a": [1, 2]})
    ck = load_checkpoint(p)
    assert ck.complete and ck.fingerprint == {"a": [1, 2]} and ck.stats.num_classes == 3
    assert ck.stats.result().value == st.result().value and ck.stats.nc1().value == st.nc1().value
    save_checkpoint(tmp_path / "bad.npz", st, 200, 300, {})  # position that disagrees with the statistics
    with pytest.raises(DLRInputError, match="damaged checkpoint"):
        load_checkpoint(tmp_path / "bad.npz")
    with pytest.raises(DLRInputError, match="not a dlrcore.Checkpoint"):
        load_checkpoint(st.save(tmp_path / "stats.npz"))
    assert sorted(os.listdir(tmp_path)) == ["bad.npz", "c.npz", "stats.npz"]  # no temporaries left


def test_checkpoint_and_scheduler_are_exclusive_and_dask_errors_are_clear(data, capsys, monkeypatch):
    d, _, _ = data
    base = ["compute", str(d / "phi.npy"), str(d / "out.npy")]
    assert main([*base, "--scheduler", "tcp://127.0.0.1:1", "--checkpoint", str(d / "ck.npz")]) == 1
    assert "mutually exclusive" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "dlrcore.dask", None)  # as if the module or Dask were missing
    assert main([*base, "--scheduler", "tcp://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "dlrcore[dask]"' in err and err.count("\n") == 1


def test_scheduler_runs_dlrcore_dask_and_agrees(data, capsys):
    pytest.importorskip("dask")
    pytest.importorskip("dlrcore.dask")
    d, _, _ = data
    base = ["compute", str(d / "phi.npy"), str(d / "out.npy"), "--json", "--batch-size", "5000"]
    assert main(base) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main([*base, "--scheduler", "synchronous"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == N and got["value"] == pytest.approx(ref["value"], rel=1e-10)


def test_checkpoint_with_weights_and_labels(tmp_path, rng, capsys):
    x, _ = gaussian_problem(rng, n=5000, p=6, C=3)
    w, b, y = rng.normal(size=(3, 6)), rng.normal(size=3), rng.integers(0, 3, 5000)
    for name, a in dict(x=x, w=w, b=b, y=y).items():
        np.save(tmp_path / f"{name}.npy", a)
    args = [
        "compute",
        str(tmp_path / "x.npy"),
        "--weight",
        str(tmp_path / "w.npy"),
        "--bias",
        str(tmp_path / "b.npy"),
        "--labels",
        str(tmp_path / "y.npy"),
        "--batch-size",
        "700",
        "--json",
    ]
    assert main(args) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main([*args, "--checkpoint", str(tmp_path / "ck.npz"), "--checkpoint-every", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["value"] == pytest.approx(ref["value"], rel=1e-12) and got["nc1"] == pytest.approx(ref["nc1"])
    assert main(["spectrum", *args[1:], "--checkpoint", str(tmp_path / "ck.npz")]) == 0  # same data options


def test_every_file_kind_is_marked_dlrcore_dot_kind_and_old_checkpoints_still_read(tmp_path, monkeypatch):
    """One naming for the file markers (issue 14); checkpoints written with dlrcore 0.1's marker still load."""
    from dlrcore import checkpoint, measures, sketch, stats_format

    marks = [checkpoint.MAGIC, sketch.MAGIC, measures.CKA_MAGIC, stats_format.MAGIC]
    assert all(m.startswith("dlrcore.") and m.count(".") == 1 for m in marks), marks
    rng = np.random.default_rng(3)
    st = DLRStats().update(rng.normal(size=(50, 4)), rng.normal(size=(50, 2)))
    monkeypatch.setattr(checkpoint, "MAGIC", "dlrcore-checkpoint")
    save_checkpoint(tmp_path / "old.npz", st, 50, 50, {"a": 1})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "old.npz").stats.n == 50
