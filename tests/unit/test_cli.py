"""End-to-end tests of the ``dlr`` command on temporary files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dlrcore
from dlrcore import DLRStats
from dlrcore.cli import main

from ..conftest import gaussian_problem


@pytest.fixture
def files(tmp_path, rng):
    phi, out = gaussian_problem(rng, n=3000, p=10, C=3)
    phi, out = phi.astype(np.float32), out.astype(np.float32)
    np.save(tmp_path / "phi.npy", phi)
    np.save(tmp_path / "out.npy", out)
    np.savez(tmp_path / "both.npz", features=phi, outputs=out)
    return tmp_path, phi, out


def run_json(args, capsys):
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_compute_streams_npy_in_batches_and_matches_the_api(files, capsys):
    d, phi, out = files
    ref = dlrcore.dlr(phi, out)
    got = run_json(["compute", str(d / "phi.npy"), str(d / "out.npy"), "--json", "--batch-size", "257"], capsys)
    assert got["n"] == 3000 and got["p"] == 10 and got["C"] == 3
    assert got["value"] == pytest.approx(ref.value, abs=1e-6)


def test_compute_reads_npz_keys_and_rtol(files, capsys):
    d, phi, out = files
    got = run_json(["compute", f"{d}/both.npz:features", f"{d}/both.npz:outputs", "--json", "--rtol", "0.5"], capsys)
    ref = dlrcore.dlr(phi, out, rtol=0.5)
    assert got["rtol"] == 0.5 and got["output_rank"] == ref.output_rank
    assert got["value"] == pytest.approx(ref.value, abs=1e-6)


def test_compute_reads_safetensors(files, capsys):
    st = pytest.importorskip("safetensors.numpy")
    d, phi, out = files
    st.save_file({"phi": phi, "out": out}, str(d / "t.safetensors"))
    args = ["compute", f"{d}/t.safetensors:phi", f"{d}/t.safetensors:out", "--json", "--batch-size", "100"]
    got = run_json(args, capsys)
    assert got["value"] == pytest.approx(dlrcore.dlr(phi, out).value, abs=1e-6)


def test_compute_from_weights_and_save_stats(files, capsys, rng):
    d, phi, _ = files
    w, b = rng.normal(size=(50, 10)), rng.normal(size=50)
    np.save(d / "w.npy", w)
    np.save(d / "b.npy", b)
    got = run_json(
        ["compute", str(d / "phi.npy"), "--weight", str(d / "w.npy"), "--bias", str(d / "b.npy"), "--json",
         "--save-stats", str(d / "s.npz")],
        capsys,
    )
    assert got["method"] == "exact-weights" and got["C"] == 50
    assert got["value"] == pytest.approx(dlrcore.dlr_from_weights(phi, w, b).value, abs=1e-6)
    assert DLRStats.load(d / "s.npz").n == 3000


def test_compute_prints_a_readable_block_and_progress(files, capsys):
    d, _, _ = files
    assert main(["compute", str(d / "phi.npy"), str(d / "out.npy"), "--progress", "--batch-size", "500"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("D_LR = ") and "output rank r = 3" in cap.out
    assert "3000/3000" in cap.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["compute", "{d}/missing.npy", "{d}/out.npy"], "no such file"),
        (["compute", "{d}/phi.npy", "{d}/out_short.npy"], "row counts differ"),
        (["compute", "{d}/both.npz", "{d}/out.npy"], "holds 2 arrays"),
        (["compute", "{d}/both.npz:nope", "{d}/out.npy"], "no array named 'nope'"),
        (["compute", "{d}/nan.npy", "{d}/out.npy"], "NaN"),
        (["compute", "{d}/text.npy", "{d}/out.npy"], "cannot read"),
        (["compute", "{d}/phi.npy"], "give OUTPUTS"),
        (["compute", "{d}/phi.npy", "{d}/out.npy", "--rtol", "2"], "rtol"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(files, capsys, args, message):
    d, phi, out = files
    np.save(d / "out_short.npy", out[:-1])
    bad = phi.copy()
    bad[5, 2] = np.nan
    np.save(d / "nan.npy", bad)
    (d / "text.npy").write_text("not an array")
    code = main([a.format(d=d) for a in args])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("dlr: error:") and message in err and err.count("\n") == 1


def test_console_script_is_installed_and_exit_codes_propagate(files):
    d, _, _ = files
    env = dict(os.environ)
    ok = subprocess.run(
        [sys.executable, "-m", "dlrcore", "compute", str(d / "phi.npy"), str(d / "out.npy"), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert 0.0 <= json.loads(ok.stdout)["value"] <= 1.0
    bad = subprocess.run(
        [sys.executable, "-m", "dlrcore", "compute", str(d / "nope.npy"), str(d / "out.npy")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 1 and "no such file" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "dlrcore"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2


def test_demo_quick_separates_rich_from_lazy(capsys):
    assert main(["demo", "--quick", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {"rich", "lazy"}
    assert runs["rich"]["dlr"] < runs["lazy"]["dlr"] - 0.1
    assert 0.0 <= runs["rich"]["dlr"] <= 1.0 and 0.0 <= runs["lazy"]["dlr"] <= 1.0
    assert runs["rich"]["dlr_sqrt"] < runs["lazy"]["dlr_sqrt"] - 0.1 and report["config"]["loss"] == "mse"


def test_demo_cross_entropy_reads_d_half(capsys):
    """dlr demo --loss ce: both networks trained with cross-entropy; the conclusion reads D_half (seeds 0 and 1:
    0.003-0.006 rich against 0.74-0.77 lazy), and the table shows both measures."""
    assert main(["demo", "--quick", "--no-progress", "--loss", "ce"]) == 0
    out = capsys.readouterr().out
    assert "cross-entropy" in out and "D_half" in out and "D_LR" in out and "train ce" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["rich"], ["lazy"])}
    # columns from the right: D_half, test acc, train acc, train ce, time (s)
    rich_half, lazy_half = float(rows["rich"][-5]), float(rows["lazy"][-5])
    assert rich_half < 0.1 and lazy_half > rich_half + 0.4, out
    assert "markedly richer dynamics (lower D_half)" in out


@pytest.fixture
def class_files(tmp_path, rng):
    y = rng.integers(0, 4, size=1500)
    x = np.eye(4)[y] @ rng.normal(size=(4, 20)) * 2 + rng.normal(size=(1500, 20))
    f = np.eye(4)[y] + 0.1 * rng.normal(size=(1500, 4))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "f.npy", f)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, f, y


def test_compute_with_labels_reports_nc1(class_files, capsys):
    d, x, f, y = class_files
    got = run_json(["compute", str(d / "x.npy"), str(d / "f.npy"), "--labels", str(d / "y.npy"), "--json",
                    "--batch-size", "400"], capsys)
    assert got["value"] == pytest.approx(dlrcore.dlr(x, f).value, rel=1e-9)
    assert got["nc1"]["value"] == pytest.approx(dlrcore.nc1(x, y).value, rel=1e-9)
    assert got["nc1"]["classes_present"] == 4


def test_spectrum_command_matches_the_api_and_saves_stats(class_files, capsys):
    d, x, f, y = class_files
    got = run_json(["spectrum", str(d / "x.npy"), str(d / "f.npy"), "--labels", str(d / "y.npy"), "--json",
                    "--k", "5", "--save-stats", str(d / "s.npz")], capsys)
    ref = dlrcore.spectrum(x, f, y, k=5)
    assert got["k"] == 5
    np.testing.assert_allclose(got["cumulative_utilization"], ref.cumulative_utilization, rtol=1e-9)
    np.testing.assert_allclose(got["cumulative_quality"], ref.cumulative_quality, rtol=1e-9)
    # the saved statistics alone reproduce the spectrum
    again = DLRStats.load(d / "s.npz").spectrum(5)
    np.testing.assert_allclose(again.eigenvalues, ref.eigenvalues, rtol=1e-9)


def test_labels_with_wrong_row_count_are_refused(class_files, capsys):
    d, _, _, y = class_files
    np.save(d / "y_short.npy", y[:-3])
    assert main(["compute", str(d / "x.npy"), str(d / "f.npy"), "--labels", str(d / "y_short.npy")]) == 1
    assert "row counts differ" in capsys.readouterr().err


def test_plot_command_redraws_saved_statistics(class_files, capsys):
    pytest.importorskip("matplotlib")
    d, x, f, y = class_files
    for name, feats in (("rich", x), ("lazy", np.random.default_rng(1).normal(size=x.shape))):
        DLRStats(num_classes=4).update(feats, f, labels=y).save(d / f"{name}.npz")
    out = d / "fig.png"
    assert main(["plot", str(d / "rich.npz"), str(d / "lazy.npz"), "-o", str(out), "--names", "rich,lazy"]) == 0
    text = capsys.readouterr().out
    assert "rich: D_LR" in text and "lazy: D_LR" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert main(["plot", str(d / "rich.npz"), "-o", str(out), "--names", "a,b"]) == 1
    assert "2 names for 1" in capsys.readouterr().err


def test_spectrum_command_draws_a_figure(class_files, capsys):
    pytest.importorskip("matplotlib")
    d, _, _, _ = class_files
    out = d / "sp.png"
    assert main(["spectrum", str(d / "x.npy"), str(d / "f.npy"), "--labels", str(d / "y.npy"), "--plot", str(out)]) == 0
    assert "figure written" in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_spectrum_and_plot_randomized_modes(class_files, capsys):
    """--modes randomized: the top --k modes of the exact statistics, never above the full decomposition's
    eigenvalues and within the reported bound of them; without --k the command says what is missing."""
    d, x, f, y = class_files
    got = run_json(["spectrum", str(d / "x.npy"), str(d / "f.npy"), "--labels", str(d / "y.npy"), "--json",
                    "--k", "4", "--modes", "randomized", "--seed", "3"], capsys)
    full = dlrcore.spectrum(x, f, y)
    assert got["method"] == "randomized" and got["k"] == 4
    below = full.eigenvalues[:4] - np.asarray(got["eigenvalues"])
    assert np.all(below >= -1e-9 * full.eigenvalues[0]) and np.all(below <= got["eigenvalue_error"] + 1e-9)
    assert main(["spectrum", str(d / "x.npy"), str(d / "f.npy"), "--modes", "randomized"]) == 1
    assert "--modes randomized needs --k" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    DLRStats(num_classes=4).update(x, f, labels=y).save(d / "s.npz")
    out = d / "top.png"
    assert main(["plot", str(d / "s.npz"), "-o", str(out), "--k", "4", "--modes", "randomized"]) == 0
    assert "4 modes" in capsys.readouterr().out and out.read_bytes()[:4] == b"\x89PNG"
