"""Tests for dlrcore.plot: rendered PNGs, panel contents, legends, axes and input errors."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import dlrcore

pytest.importorskip("matplotlib")
import matplotlib
import matplotlib.image

import dlrcore.plot as dplot

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
C = 5


# ----------------------------------------------------------------------------------------------------------------
# fixtures and helpers


def _problem(rich: bool, seed: int, n: int = 300, p: int = 48, with_labels: bool = True, name: str = ""):
    """Rich: features near the C-dimensional span the outputs use. Lazy: isotropic random features."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, C))
    if rich:
        phi = z @ rng.normal(size=(C, p)) + 0.05 * rng.normal(size=(n, p))
    else:
        phi = rng.normal(size=(n, p))
    out = phi @ rng.normal(size=(p, C))
    labels = z.argmax(1) if with_labels else None
    return dlrcore.spectrum(phi, out, labels=labels, num_classes=C if with_labels else None, name=name)


@pytest.fixture(scope="module")
def rich() -> dlrcore.Spectrum:
    return _problem(True, 1, name="rich")


@pytest.fixture(scope="module")
def lazy() -> dlrcore.Spectrum:
    return _problem(False, 2, name="lazy")


@pytest.fixture(scope="module")
def lazy_nolabels() -> dlrcore.Spectrum:
    return _problem(False, 3, with_labels=False, name="unlabelled")


@pytest.fixture(autouse=True)
def _fixed_rc():
    # the expected pixel sizes and colours assume matplotlib's defaults, whatever a user's matplotlibrc says
    with matplotlib.rc_context(rc=matplotlib.rcParamsDefault):
        yield


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.int16)


def _png_pixels(path: Path) -> np.ndarray:
    img = matplotlib.image.imread(path)
    assert img.dtype.kind == "f" and img.shape[-1] in (3, 4)
    return np.round(255 * img[..., :3]).astype(np.int16)


def _inside(fig, ax, buf: np.ndarray, margin: int = 4) -> np.ndarray:
    """Pixels strictly inside an axes' frame (display coordinates have their origin at the bottom)."""
    bb = ax.get_window_extent()
    height = buf.shape[0]
    r0, r1 = int(height - bb.y1) + margin, int(height - bb.y0) - margin
    c0, c1 = int(bb.x0) + margin, int(bb.x1) - margin
    assert r1 - r0 > 20 and c1 - c0 > 20, "axes unexpectedly small"
    return buf[r0:r1, c0:c1]


def _count_color(region: np.ndarray, color: str, tol: int = 25) -> int:
    rgb = np.array([int(255 * c) for c in matplotlib.colors.to_rgb(color)], dtype=np.int16)
    return int((np.abs(region - rgb).max(axis=-1) <= tol).sum())


def _data_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_gid() != dplot.K_EQUALS_C_GID]


def _kc_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_gid() == dplot.K_EQUALS_C_GID]


def _legend_texts(fig) -> list[str]:
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _axes_texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


# ----------------------------------------------------------------------------------------------------------------
# spectrum figure


def test_synthetic_rich_is_richer_than_lazy(rich, lazy):
    # guards the fixtures: the figure tests below rely on the two runs looking different
    assert rich.dlr < 0.3 < lazy.dlr
    assert rich.utilization_at(C) > 0.95 > 0.5 > lazy.utilization_at(C)
    assert rich.relative_eigenvalue[C] < 1e-3 < lazy.relative_eigenvalue[C]


def test_spectrum_png_size_and_nonblank_panels(tmp_path, rich, lazy):
    path = tmp_path / "spectrum.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no layout, log-axis or dlrcore warnings
        fig = dplot.spectrum([rich, lazy], path, figsize=(9, 3.5))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert _png_size(path) == (900, 350)
    # read the saved file back: the axes' display boxes are in its pixels (same dpi, no tight bbox)
    buf = _png_pixels(path)
    assert buf.shape[:2] == (350, 900)
    assert buf.std() > 10  # not a blank canvas

    assert len(fig.axes) == 3
    c_rich, c_lazy = (ln.get_color() for ln in _data_lines(fig.axes[0]))
    for ax in fig.axes:
        region = _inside(fig, ax, buf)
        assert region.var() > 0
        assert _count_color(region, c_rich) > 40, f"rich curve missing in {ax.get_title()!r}"
        assert _count_color(region, c_lazy) > 40, f"lazy curve missing in {ax.get_title()!r}"


def test_spectrum_pixels_in_panel_follow_the_data(rich):
    # the third panel of a label-less spectrum has no coloured curve, only the note
    fig = dplot.spectrum([rich, _problem(False, 4, with_labels=False, name="nolab")], figsize=(9, 3.5))
    buf = _pixels(fig)
    c_nolab = _data_lines(fig.axes[0])[1].get_color()
    assert _count_color(_inside(fig, fig.axes[1], buf), c_nolab) > 40
    assert _count_color(_inside(fig, fig.axes[2], buf), c_nolab) == 0


def test_spectrum_axes_scales_labels_and_data(rich, lazy):
    fig = dplot.spectrum([rich, lazy], title="rich vs lazy")
    ax_eig, ax_util, ax_qual = fig.axes
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log", "log"]
    assert ax_eig.get_yscale() == "log"
    assert ax_util.get_yscale() == ax_qual.get_yscale() == "linear"
    assert all(ax.get_xlabel() == "mode k" for ax in fig.axes)
    assert "relative eigenvalue" in ax_eig.get_ylabel()
    assert "utilization" in ax_util.get_ylabel() and "quality" in ax_qual.get_ylabel()
    assert fig.get_suptitle() == "rich vs lazy"
    assert ax_eig.get_ylim()[1] >= 1.0 and ax_eig.get_ylim()[0] <= 1e-2

    for ax, field in ((ax_eig, "relative_eigenvalue"), (ax_util, "cumulative_utilization"),
                      (ax_qual, "cumulative_quality")):
        lines = _data_lines(ax)
        assert len(lines) == 2
        for line, sp in zip(lines, (rich, lazy)):
            np.testing.assert_array_equal(line.get_xdata(), sp.modes)
            expected = np.asarray(getattr(sp, field), dtype=float)
            if field == "relative_eigenvalue":
                expected = np.where(expected > sp.rank_tol, expected, np.nan)
            np.testing.assert_allclose(line.get_ydata(), expected)
        # the same run has the same colour in every panel
        assert [ln.get_color() for ln in lines] == [ln.get_color() for ln in _data_lines(ax_eig)]
    assert _data_lines(ax_eig)[0].get_color() != _data_lines(ax_eig)[1].get_color()


def test_spectrum_legend_names_and_both_values(rich, lazy):
    def vals(s):
        return f"D_LR {s.dlr_span:.3f}, D_half {s.dlr_sqrt:.3f}"

    assert rich.dlr == rich.dlr_span and rich.dlr_sqrt != rich.dlr_span  # the two numbers differ on these data
    texts = _legend_texts(dplot.spectrum([rich, lazy]))
    assert texts[0] == f"rich ({vals(rich)})"
    assert texts[1] == f"lazy ({vals(lazy)})"
    assert texts[2] == f"k = C = {C}"
    # labels override the names, the values stay
    texts = _legend_texts(dplot.spectrum([rich, lazy], labels=["epoch 10", "epoch 20"]))
    assert texts[:2] == [f"epoch 10 ({vals(rich)})", f"epoch 20 ({vals(lazy)})"]
    # one spectrum, a string label, or no name at all
    assert _legend_texts(dplot.spectrum(rich, labels="only"))[0] == f"only ({vals(rich)})"
    assert _legend_texts(dplot.spectrum(rich.with_name("")))[0] == vals(rich)
    assert _legend_texts(dplot.spectrum([rich.with_name(""), lazy.with_name("")]))[:2] == [
        f"spectrum 1 ({vals(rich)})",
        f"spectrum 2 ({vals(lazy)})",
    ]
    # a spectrum saved before D_half existed (no dlr_sqrt) shows its D_LR alone
    old = {k: v for k, v in rich.to_dict().items() if k not in ("dlr_span", "dlr_sqrt", "output_kernel")}
    assert _legend_texts(dplot.spectrum(old))[0] == f"rich (D_LR {rich.dlr:.3f})"


def test_spectrum_k_equals_c_line(rich, lazy):
    fig = dplot.spectrum([rich, lazy])
    for ax in fig.axes:
        (line,) = _kc_lines(ax)
        assert list(line.get_xdata()) == [C, C]
        assert line.get_linestyle() == ":"
    # distinct output widths get one line each; a C beyond the plotted modes gets none
    rng = np.random.default_rng(5)
    phi = rng.normal(size=(200, 12))
    c2 = dlrcore.spectrum(phi, phi @ rng.normal(size=(12, 2)), name="C=2")
    c20 = dlrcore.spectrum(phi, phi @ rng.normal(size=(12, 20)), name="C=20")
    fig = dplot.spectrum([rich, c2])
    assert sorted(ln.get_xdata()[0] for ln in _kc_lines(fig.axes[1])) == [2, C]
    assert [t for t in _legend_texts(fig) if t.startswith("k = C")] == ["k = C = 2", f"k = C = {C}"]
    fig = dplot.spectrum([c2, c20])  # 12 modes: k = 20 is off the axis
    assert [ln.get_xdata()[0] for ln in _kc_lines(fig.axes[1])] == [2]
    assert fig.axes[1].get_xlim() == (1.0, 12.0)


def test_spectrum_without_quality_says_so(lazy_nolabels):
    assert lazy_nolabels.cumulative_quality is None
    fig = dplot.spectrum(lazy_nolabels)
    ax_qual = fig.axes[2]
    assert _data_lines(ax_qual) == []
    note = _axes_texts(ax_qual)
    assert "no quality curve" in note and "labels" in note
    assert _axes_texts(fig.axes[0]) == _axes_texts(fig.axes[1]) == ""
    # a figure with quality has no such note
    assert "no quality" not in _axes_texts(dplot.spectrum(_problem(True, 7)).axes[2])


def test_spectrum_mixed_quality_names_the_unlabelled_run(rich, lazy_nolabels):
    fig = dplot.spectrum([rich, lazy_nolabels])
    ax_qual = fig.axes[2]
    assert len(_data_lines(ax_qual)) == 1
    note = _axes_texts(ax_qual)
    assert "unlabelled" in note and "rich" not in note


def test_spectrum_many_checkpoints(rich, lazy):
    checkpoints = [(rich if i % 2 else lazy).with_name(f"step {i}") for i in range(12)]
    fig = dplot.spectrum(checkpoints)
    for ax in fig.axes:
        assert len(_data_lines(ax)) == 12
    colors = {tuple(np.round(matplotlib.colors.to_rgba(ln.get_color()), 6)) for ln in _data_lines(fig.axes[0])}
    assert len(colors) == 12
    assert _legend_texts(fig)[11] == f"step 11 (D_LR {rich.dlr_span:.3f}, D_half {rich.dlr_sqrt:.3f})"


def test_spectrum_accepts_dicts_and_streaming_stats(tmp_path, rich):
    fig = dplot.spectrum([rich.to_dict()])
    np.testing.assert_allclose(_data_lines(fig.axes[1])[0].get_ydata(), rich.cumulative_utilization)
    rng = np.random.default_rng(8)
    st = dlrcore.DLRStats()
    for _ in range(3):
        phi = rng.normal(size=(50, 6))
        st.update(phi, phi @ rng.normal(size=(6, 2)))
    sp = st.spectrum(name="stream")
    fig = dplot.spectrum(sp, tmp_path / "s.PNG")  # suffixes are case-insensitive
    assert _png_size(tmp_path / "s.PNG") == (1200, 400)  # default size
    assert _legend_texts(fig)[0].startswith("stream (D_LR ")
    assert len(_data_lines(fig.axes[0])[0].get_xdata()) == 6


def test_spectrum_zero_eigenvalues_are_not_plotted_on_log_axis(rich):
    d = rich.to_dict()
    rel = np.array(d["relative_eigenvalue"])
    rel[10:] = 0.0
    d["relative_eigenvalue"] = rel
    fig = dplot.spectrum(dlrcore.Spectrum.from_dict(d))
    y = _data_lines(fig.axes[0])[0].get_ydata()
    assert np.isfinite(y[:10]).all() and np.isnan(y[10:]).all()
    # all-zero: no log axis, a note instead
    d["relative_eigenvalue"] = np.zeros_like(rel)
    fig = dplot.spectrum(dlrcore.Spectrum.from_dict(d))
    assert fig.axes[0].get_yscale() == "linear"
    assert "no nonzero eigenvalues" in _axes_texts(fig.axes[0])
    fig.canvas.draw()  # renders without a log-scale error


def test_spectrum_single_mode():
    rng = np.random.default_rng(9)
    phi = rng.normal(size=(40, 1))
    fig = dplot.spectrum(dlrcore.spectrum(phi, 3 * phi))
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 1 < hi
    fig.canvas.draw()


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_spectrum_formats_by_suffix(tmp_path, rich, suffix, magic):
    path = tmp_path / f"fig{suffix}"
    dplot.spectrum(rich, str(path))
    assert path.read_bytes().startswith(magic)


def test_spectrum_bad_input(tmp_path, rich, lazy):
    with pytest.raises(ValueError, match="empty"):
        dplot.spectrum([])
    with pytest.raises(TypeError, match=r"spectra\[1\] must be a dlrcore.Spectrum"):
        dplot.spectrum([rich, np.ones(3)])
    with pytest.raises(TypeError, match="spectra must be"):
        dplot.spectrum("rich")
    with pytest.raises(TypeError, match="spectra must be"):
        dplot.spectrum(3)
    with pytest.raises(TypeError, match="not a Spectrum.to_dict"):
        dplot.spectrum([{"dlr": 0.1}])
    with pytest.raises(ValueError, match="labels has 1 entries for 2 spectra"):
        dplot.spectrum([rich, lazy], labels=["a"])
    with pytest.raises(ValueError, match="suffix"):
        dplot.spectrum(rich, tmp_path / "figure")
    with pytest.raises(ValueError, match="suffix"):
        dplot.spectrum(rich, tmp_path / "figure.docx")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# trajectory figure

RECORDS = [
    {"step": 0, "dlr": 0.9, "train_acc": 0.1, "test_acc": 0.1, "loss": 2.3},
    {"step": 200, "dlr": 0.85, "train_acc": 0.9},  # no test accuracy at this step
    {"step": 100, "dlr": 0.88, "train_acc": 0.6, "test_acc": None},  # out of order; None = not measured
    {"step": 400, "train_acc": 1.0, "test_acc": 0.5},  # no D_LR at this step
    {"step": 800, "dlr": 0.2, "train_acc": 1.0, "test_acc": float("nan")},
    {"step": 1600, "dlr": 0.15, "train_acc": 1.0, "test_acc": 0.97},
]


def test_trajectory_png_twin_axis_and_data(tmp_path):
    path = tmp_path / "grok.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = dplot.trajectory(RECORDS, path, title="grokking", figsize=(6, 4))
    assert _png_size(path) == (600, 400)
    assert len(fig.axes) == 2
    ax, ax2 = fig.axes
    assert ax.get_shared_x_axes().joined(ax, ax2)
    (dline,) = ax.get_lines()
    assert dline.get_label() == "D_LR"
    np.testing.assert_array_equal(dline.get_xdata(), [0, 100, 200, 800, 1600])
    np.testing.assert_allclose(dline.get_ydata(), [0.9, 0.88, 0.85, 0.2, 0.15])
    lines = {ln.get_label(): ln for ln in ax2.get_lines()}
    assert list(lines) == ["train_acc", "test_acc"]  # "loss" has no "acc" in its name
    np.testing.assert_array_equal(lines["train_acc"].get_xdata(), [0, 100, 200, 400, 800, 1600])
    np.testing.assert_array_equal(lines["test_acc"].get_xdata(), [0, 400, 1600])
    np.testing.assert_allclose(lines["test_acc"].get_ydata(), [0.1, 0.5, 0.97])
    assert ax.get_xlabel() == "step" and "D_LR" in ax.get_ylabel() and ax2.get_ylabel() == "accuracy"
    assert ax.get_title() == "grokking"
    assert _legend_texts(fig) == ["D_LR", "train_acc", "test_acc"]
    assert ax.get_ylim() == ax2.get_ylim() == (-0.02, 1.02)  # both in [0, 1]: a common scale

    region = _inside(fig, ax, _png_pixels(path))
    assert region.var() > 0
    assert _count_color(region, "black", tol=40) > 100
    assert _count_color(region, lines["test_acc"].get_color()) > 30


def test_trajectory_keys_options():
    recs = [{"epoch": e, "D": 1.0 / (e + 1), "Accuracy": e / 10, "val_acc": e / 20} for e in range(1, 6)]
    fig = dplot.trajectory(recs, x="epoch", dlr="D", logx=True)
    ax, ax2 = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "epoch"
    assert [ln.get_label() for ln in ax2.get_lines()] == ["Accuracy", "val_acc"]  # case-insensitive "acc"
    fig = dplot.trajectory(recs, x="epoch", dlr="D", accuracy_keys=["val_acc"])
    assert [ln.get_label() for ln in fig.axes[1].get_lines()] == ["val_acc"]
    # no accuracy: a single axis
    fig = dplot.trajectory(recs, x="epoch", dlr="D", accuracy_keys=[])
    assert len(fig.axes) == 1 and _legend_texts(fig) == ["D_LR"]
    fig = dplot.trajectory([{"step": 1, "dlr": np.array(0.5)}, {"step": np.int64(2), "dlr": np.float32(0.4)}])
    assert len(fig.axes) == 1
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [0.5, 0.4])
    # percentages are not squeezed into [0, 1]
    fig = dplot.trajectory([{"step": s, "dlr": 0.5, "acc": 10.0 * s} for s in range(1, 5)])
    assert fig.axes[1].get_ylim()[1] > 30


def test_trajectory_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        dplot.trajectory([])
    with pytest.raises(ValueError, match=r"records\[1\] has no 'step'"):
        dplot.trajectory([{"step": 1, "dlr": 0.5}, {"epoch": 2, "dlr": 0.4}])
    with pytest.raises(ValueError, match="no 'epoch'"):
        dplot.trajectory([{"step": 1, "dlr": 0.5}], x="epoch")
    with pytest.raises(ValueError, match="no record has the D_LR key 'dlr'"):
        dplot.trajectory([{"step": 1, "acc": 0.5}])
    with pytest.raises(ValueError, match="None or NaN"):
        dplot.trajectory([{"step": 1, "dlr": None}])
    with pytest.raises(ValueError, match="occur in no record"):
        dplot.trajectory([{"step": 1, "dlr": 0.5}], accuracy_keys=["test_acc"])
    with pytest.raises(TypeError, match="list of dicts"):
        dplot.trajectory({"step": [1, 2], "dlr": [0.5, 0.4]})
    with pytest.raises(TypeError, match=r"records\[0\] must be a dict"):
        dplot.trajectory([(1, 0.5)])
    with pytest.raises(TypeError, match=r"records\[0\]\['dlr'\] must be a number"):
        dplot.trajectory([{"step": 1, "dlr": "0.5"}])
    with pytest.raises(TypeError, match="must be a number"):
        dplot.trajectory([{"step": True, "dlr": 0.5}])
    with pytest.raises(TypeError, match="must be a single number"):
        dplot.trajectory([{"step": 1, "dlr": np.array([0.5, 0.4])}])
    with pytest.raises(ValueError, match="not a finite number"):
        dplot.trajectory([{"step": float("inf"), "dlr": 0.5}])
    with pytest.raises(ValueError, match="logx needs positive"):
        dplot.trajectory([{"step": 0, "dlr": 0.5}, {"step": 10, "dlr": 0.4}], logx=True)
    with pytest.raises(ValueError, match="suffix"):
        dplot.trajectory([{"step": 1, "dlr": 0.5}], tmp_path / "x.unknown")


# ----------------------------------------------------------------------------------------------------------------
# optional dependency


def test_import_does_not_import_matplotlib_and_missing_matplotlib_is_explained():
    code = textwrap.dedent(
        """
        import sys
        import dlrcore.plot
        assert "matplotlib" not in sys.modules, "importing dlrcore.plot imported matplotlib"
        fig = dlrcore.plot.trajectory([{"step": 1, "dlr": 0.5, "acc": 0.2}])
        assert "matplotlib.figure" in sys.modules
        assert "matplotlib.pyplot" not in sys.modules, "pyplot (global figure state) was imported"
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            sys.modules[name] = None  # as if matplotlib were not installed
        try:
            dlrcore.plot.trajectory([{"step": 1, "dlr": 0.5}])
        except ImportError as err:
            assert "pip install 'dlrcore[plot]'" in str(err), err
            assert "matplotlib" in str(err)
        else:
            raise AssertionError("no ImportError without matplotlib")
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_trajectory_draws_a_band_of_1_96_standard_errors_where_records_carry_them():
    """Records with jackknife standard errors (statistics built with blocks=) get a +- 1.96 SE band per curve,
    exactly at the recorded values; records without them draw no band."""
    recs = [
        {"step": s, "dlr": v, "dlr_span": v, "dlr_sqrt": v - 0.1, "dlr_span_stderr": 0.02, "dlr_sqrt_stderr": 0.01}
        for s, v in ((0, 0.9), (10, 0.6), (20, 0.4))
    ]
    fig = dplot.trajectory(recs)
    bands = fig.axes[0].collections
    assert len(bands) == 2
    for band, (value_key, se) in zip(bands, (("dlr_span", 0.02), ("dlr_sqrt", 0.01))):
        ys = band.get_paths()[0].vertices[:, 1]
        values = np.array([r[value_key] for r in recs])
        assert np.isclose(ys.max(), values.max() + 1.96 * se) and np.isclose(ys.min(), values.min() - 1.96 * se)
    plain = dplot.trajectory([{k: v for k, v in r.items() if not k.endswith("stderr")} for r in recs])
    assert not plain.axes[0].collections


def test_spectrum_of_blocked_statistics_draws_bands_on_all_three_panels():
    """A spectrum with jackknife errors (DLRStats(blocks=...)) gets a +- 1.96 SE band on each panel that has a
    curve; one without errors gets none."""
    import dlrcore

    rng = np.random.default_rng(2)
    phi = rng.normal(size=(2000, 10)) * np.linspace(3, 0.3, 10)
    y = rng.integers(0, 3, size=2000)
    out = phi[:, :3] @ rng.normal(size=(3, 3))
    blocked = dlrcore.DLRStats(blocks=10).update(phi, out, labels=y).spectrum()
    fig = dplot.spectrum(blocked)
    assert [len(ax.collections) for ax in fig.axes[:3]] == [1, 1, 1]
    band = fig.axes[1].collections[0].get_paths()[0].vertices[:, 1]
    top = np.max(blocked.cumulative_utilization + 1.96 * blocked.stderr_cumulative_utilization)
    assert np.isclose(band.max(), top)
    plain = dplot.spectrum(dlrcore.DLRStats().update(phi, out, labels=y).spectrum())
    assert [len(ax.collections) for ax in plain.axes[:3]] == [0, 0, 0]
