"""Figures: the paper's three-panel eigen-visualisation and D_LR over training.

matplotlib is an optional dependency (``pip install 'dlrcore[plot]'``). It is imported only when a function
here is called, and only through its object-oriented API (:class:`matplotlib.figure.Figure` with an Agg canvas):
no pyplot state, no open-figure registry, nothing that needs a display. The returned figures are ordinary
objects; drop them and they are garbage collected.

* :func:`spectrum`: relative eigenvalue, cumulative utilization and cumulative quality against the mode index k,
  for one or several :class:`~dlrcore.Spectrum` (rich vs lazy, checkpoints over training).
* :func:`trajectory`: D_LR over training steps with optional accuracy curves on a twin axis (the grokking figure).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .inputs import DLRInputError
from .spectral import Spectrum

if TYPE_CHECKING:  # pragma: no cover - typing only, never imported at run time
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["spectrum", "trajectory"]

_MISSING_MPL = "dlrcore.plot needs matplotlib: pip install 'dlrcore[plot]'"

#: Text shown in the quality panel when no spectrum carries a quality curve.
NO_QUALITY_NOTE = "no quality curve:\npass labels= to dlrcore.spectrum\nor DLRStats.update"

#: ``gid`` of the dotted vertical lines drawn at k = C (for finding them in a figure).
K_EQUALS_C_GID = "dlrcore-k=C"


#: Width of the drawn jackknife error bands in standard errors (a 95 % normal interval; docs/uncertainty.md).
BAND_Z = 1.96

def _new_figure(figsize: Iterable[float] | None, default: tuple[float, float]) -> Figure:
    """A headless Figure with an Agg canvas, importing matplotlib lazily; ``figsize`` may be any sequence (a list
    read from JSON, say), None gives ``default``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # tested in a subprocess with matplotlib blocked
        raise ImportError(_MISSING_MPL) from err
    # a tuple as matplotlib wants it: (width, height), or (width, height, unit) with matplotlib >= 3.10
    size = default if figsize is None else cast("tuple[float, float]", tuple(figsize))
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> None:
    if path is None:
        return
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(
            f"cannot tell the image format from {path!r}: use a suffix among "
            f"{', '.join('.' + s for s in sorted(supported))} (for example .png, .pdf, .svg)"
        )
    fig.savefig(path, format=suffix)


def _format_dlr(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else str(value)


def _legend_columns(texts: Sequence[str], fig: Figure, most: int = 4) -> int:
    """As many legend columns (at most ``most``) as fit the figure's width: about 12 characters per inch at the
    default font size, plus room for each entry's line sample."""
    width_chars = 12.0 * float(fig.get_size_inches()[0])
    longest = max((len(t) for t in texts), default=1) + 8
    return max(1, min(len(texts), most, int(width_chars // longest)))


def _values_label(s: Spectrum) -> str:
    """``D_LR 0.281, D_half 0.016`` (D_half only where the spectrum carries it)."""
    half = getattr(s, "dlr_sqrt", math.nan)
    literal = s.dlr_span if math.isfinite(getattr(s, "dlr_span", math.nan)) else s.dlr
    text = f"D_LR {_format_dlr(literal)}"
    return text + (f", D_half {_format_dlr(half)}" if math.isfinite(half) else "")


def _as_spectra(spectra: Any) -> list[Spectrum]:
    if isinstance(spectra, (Spectrum, Mapping)):
        spectra = [spectra]
    elif isinstance(spectra, (str, bytes)) or not isinstance(spectra, Iterable):
        raise TypeError(f"spectra must be a dlrcore.Spectrum or a list of them, got {type(spectra).__name__}")
    out: list[Spectrum] = []
    for i, s in enumerate(spectra):
        if isinstance(s, Mapping):  # Spectrum.to_dict() output, for example read back from JSON
            try:
                s = Spectrum.from_dict(dict(s))
            except DLRInputError as err:
                raise TypeError(f"spectra[{i}] is a dict but not a Spectrum.to_dict() result: {err}") from None
        if not isinstance(s, Spectrum):
            raise TypeError(
                f"spectra[{i}] must be a dlrcore.Spectrum (from dlrcore.spectrum or DLRStats.spectrum), "
                f"got {type(s).__name__}"
            )
        if s.k < 1 or len(s.relative_eigenvalue) != s.k or len(s.cumulative_utilization) != s.k:
            raise ValueError(f"spectra[{i}] is inconsistent: k = {s.k} but curves of other lengths")
        out.append(s)
    if not out:
        raise ValueError("spectra is empty: pass at least one dlrcore.Spectrum")
    return out


def _legend_names(spectra: list[Spectrum], labels: Any) -> list[str]:
    if labels is None:
        if len(spectra) == 1 and not spectra[0].name:
            return [""]
        return [s.name or f"spectrum {i + 1}" for i, s in enumerate(spectra)]
    if isinstance(labels, str):
        labels = [labels]
    labels = [str(lab) for lab in labels]
    if len(labels) != len(spectra):
        raise ValueError(f"labels has {len(labels)} entries for {len(spectra)} spectra")
    return labels


def _colors(count: int) -> list[Any]:
    import matplotlib

    if count <= 10:
        cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color") or [f"C{i}" for i in range(10)]
        return [cycle[i % len(cycle)] for i in range(count)]
    # many runs (checkpoints over training): a sequential colour map reads as an ordering
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(t) for t in np.linspace(0.0, 0.9, count)]


def spectrum(
    spectra: Spectrum | Sequence[Spectrum],
    path: str | os.PathLike[str] | None = None,
    labels: str | Sequence[str] | None = None,
    *,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The paper's three-panel eigen-visualisation of one or several spectra.

    Panels, each against the mode index k on a log x axis: the relative eigenvalue ``rho_k / rho_1`` (log y),
    the cumulative utilization of the learned function and the cumulative quality (share of the centered
    targets expressed by the top-k feature directions). A rich network drops steeply after about C modes and
    reaches utilization near 1 by k = C, marked by a dotted vertical line; a lazy one decays gently and spreads
    its utilization over many modes.

    Parameters
    ----------
    spectra : Spectrum or sequence of Spectrum
        From :func:`dlrcore.spectrum` or :meth:`dlrcore.DLRStats.spectrum`; several are overlaid (for example
        rich vs lazy, or checkpoints over training). ``Spectrum.to_dict()`` dicts are accepted too.
    path : str or path-like, optional
        Where to save the figure; the format follows the suffix (``.png``, ``.pdf``, ``.svg``, ...).
    labels : str or sequence of str, optional
        Legend names replacing ``Spectrum.name``, one per spectrum. Each legend entry also shows its literal D_LR
        and D_half.
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Figure size in inches, default ``(12, 4)``.

    Returns
    -------
    matplotlib.figure.Figure
        With three axes (``fig.axes[0:3]``) and a figure legend below them.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    ValueError
        For an empty list, labels of the wrong length or a path without a known image suffix.
    TypeError
        For entries that are not spectra.

    Notes
    -----
    Modes whose relative eigenvalue is at or below the spectrum's ``rank_tol`` (numerical zeros) are left out
    of the log-scaled eigenvalue panel. Without labels a spectrum has no quality curve; when none has one the
    third panel says so. The k = C line is drawn for each distinct C within the plotted modes.

    Examples
    --------
    >>> import numpy as np, tempfile, os, dlrcore, dlrcore.plot
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(200, 16)); out = phi @ rng.normal(size=(16, 3))
    >>> sp = dlrcore.spectrum(phi, out, labels=out.argmax(1), name="lazy")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = dlrcore.plot.spectrum(sp, os.path.join(d, "spectrum.png"))
    ...     os.path.getsize(os.path.join(d, "spectrum.png")) > 0
    True
    >>> [ax.get_xscale() for ax in fig.axes]
    ['log', 'log', 'log']
    """
    items = _as_spectra(spectra)
    names = _legend_names(items, labels)
    fig = _new_figure(figsize, (12.0, 4.0))
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax_eig, ax_util, ax_qual = fig.subplots(1, 3)
    colors = _colors(len(items))
    marker = "o" if max(s.k for s in items) <= 30 else None
    style = dict(linewidth=1.6, marker=marker, markersize=3.5)

    for s, name, color in zip(items, names, colors):
        label = f"{name} ({_values_label(s)})" if name else _values_label(s)
        k = s.modes
        rel = np.asarray(s.relative_eigenvalue, dtype=np.float64)
        rel = np.where(rel > s.rank_tol, rel, np.nan)  # numerical zeros have no place on a log axis
        ax_eig.plot(k, rel, color=color, label=label, **style)
        ax_util.plot(k, s.cumulative_utilization, color=color, **style)
        if s.cumulative_quality is not None:
            ax_qual.plot(k, s.cumulative_quality, color=color, **style)
        # jackknife bands (statistics built with blocks=): +- 1.96 SE of each curve, mode by mode
        for ax, curve, se in ((ax_eig, rel, s.stderr_relative_eigenvalue),
                              (ax_util, s.cumulative_utilization, s.stderr_cumulative_utilization),
                              (ax_qual, s.cumulative_quality, s.stderr_cumulative_quality)):
            if curve is not None and se is not None:
                mid = np.asarray(curve, dtype=np.float64)
                lo = mid - BAND_Z * se
                if ax is ax_eig:  # a log axis: keep the band above zero
                    lo = np.where(lo > 0, lo, np.nan)
                ax.fill_between(k, lo, mid + BAND_Z * se, color=color, alpha=0.18, linewidth=0)

    k_max = max(s.k for s in items)
    for ax, ylabel, panel in (
        (ax_eig, r"relative eigenvalue $\rho_k / \rho_1$", "eigenvalue decay"),
        (ax_util, "cumulative utilization", "utilization of the learned function"),
        (ax_qual, "cumulative quality", "quality (targets expressed)"),
    ):
        ax.set_xscale("log")
        if k_max > 1:
            ax.set_xlim(1.0, k_max)
        else:
            ax.set_xlim(0.5, 2.0)
        # mode indices read better as 1, 2, 5, 10, ... than as powers of ten
        ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0) if k_max <= 300 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel("mode k")
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    positive = [s.relative_eigenvalue[s.relative_eigenvalue > s.rank_tol] for s in items]
    if any(v.size for v in positive):
        ax_eig.set_yscale("log")
        # whole decades, at least two of them, so that a gentle (lazy) decay looks gentle
        lowest = min(float(v.min()) for v in positive if v.size)
        ax_eig.set_ylim(min(10.0 ** math.floor(math.log10(lowest)), 1e-2), 1.5)
    else:  # all-constant features: nothing a log axis could show
        ax_eig.text(0.5, 0.5, "no nonzero eigenvalues", transform=ax_eig.transAxes, ha="center", va="center")
    for ax in (ax_util, ax_qual):
        ax.set_ylim(-0.02, 1.02)

    missing = [name or "this spectrum" for s, name in zip(items, names) if s.cumulative_quality is None]
    if len(missing) == len(items):
        ax_qual.text(
            0.5, 0.5, NO_QUALITY_NOTE, transform=ax_qual.transAxes, ha="center", va="center", color="0.3",
            bbox=dict(boxstyle="round,pad=0.5", facecolor="white", edgecolor="0.7"), zorder=5,
            gid="dlrcore-no-quality",
        )
    elif missing:
        ax_qual.text(
            0.98, 0.02, "no labels: " + ", ".join(missing), transform=ax_qual.transAxes, ha="right",
            va="bottom", fontsize="small", color="0.3", gid="dlrcore-no-quality",
        )

    for c in sorted({s.C for s in items if 1 <= s.C <= k_max}):
        for ax in (ax_eig, ax_util, ax_qual):
            ax.axvline(
                c, color="0.35", linestyle=":", linewidth=1.3, gid=K_EQUALS_C_GID,
                label=f"k = C = {c}" if ax is ax_eig else None,
            )

    handles, texts = ax_eig.get_legend_handles_labels()
    fig.legend(handles, texts, loc="outside lower center", ncols=_legend_columns(texts, fig), frameon=False)
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def _number(value: Any, key: str, index: int) -> float | None:
    """A record's value as float; None (or NaN) means not measured at that point."""
    if value is None:
        return None
    # plain numbers, numpy scalars and 0-d arrays, framework scalars (a 0-d torch tensor has __float__)
    if isinstance(value, (bool, np.bool_, str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"records[{index}][{key!r}] must be a number, got {type(value).__name__}")
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"records[{index}][{key!r}] must be a single number: {err}") from None
    return None if math.isnan(v) else v


def _series(records: list[Mapping[str, Any]], xs: list[float], key: str) -> tuple[np.ndarray, np.ndarray]:
    px, py = [], []
    for i, (r, xv) in enumerate(zip(records, xs)):
        if key in r:
            v = _number(r[key], key, i)
            if v is not None:
                px.append(xv)
                py.append(v)
    order = np.argsort(np.asarray(px, dtype=np.float64), kind="stable")
    return np.asarray(px, dtype=np.float64)[order], np.asarray(py, dtype=np.float64)[order]


def _band(records: list[Mapping[str, Any]], xs: list[float], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x, value - z SE, value + z SE`` where a record holds both ``key`` and ``<key>_stderr`` (jackknife)."""
    px, lo, hi = [], [], []
    for i, (r, xv) in enumerate(zip(records, xs)):
        v = _number(r[key], key, i) if key in r else None
        se = _number(r[f"{key}_stderr"], f"{key}_stderr", i) if f"{key}_stderr" in r else None
        if v is not None and se is not None:
            px.append(xv)
            lo.append(v - BAND_Z * se)
            hi.append(v + BAND_Z * se)
    order = np.argsort(np.asarray(px, dtype=np.float64), kind="stable")
    return tuple(np.asarray(a, dtype=np.float64)[order] for a in (px, lo, hi))  # type: ignore[return-value]


def _unit_ylim(ax: Axes, values: Iterable[np.ndarray]) -> None:
    """Fix the y range to [0, 1] (with a margin) when every value lies there, so curves stay comparable."""
    vals = [v for v in values if v.size]
    if vals and all(float(v.min()) >= 0.0 and float(v.max()) <= 1.0 for v in vals):
        ax.set_ylim(-0.02, 1.02)


def trajectory(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    *,
    x: str = "step",
    dlr: str = "dlr",
    accuracy_keys: Sequence[str] | None = None,
    title: str | None = None,
    logx: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """D_LR over training, with optional accuracy curves on a twin y axis (the paper's grokking figure).

    Parameters
    ----------
    records : sequence of dict
        One dict per evaluation, for example ``{"step": 100, "dlr": 0.4, "test_acc": 0.2}``. Every record
        needs the ``x`` key; other keys may be missing or None (or NaN) and that point is skipped for that
        curve. Points are drawn in order of ``x``.
    path : str or path-like, optional
        Where to save the figure; the format follows the suffix (``.png``, ``.pdf``, ``.svg``, ...).
    x : str
        Key of the x values (training step, epoch, ...).
    dlr : str
        Key of the D_LR values, drawn on the left axis; at least one record must have it. When records also hold
        ``<dlr>_span`` and ``<dlr>_sqrt`` (as :class:`dlrcore.adapters.torch.Tracker` writes them), both the
        literal D_LR and D_half are drawn. A drawn key ``k`` with ``k_stderr`` values (the jackknife standard
        error of statistics built with ``blocks=``) gets a band of +- 1.96 standard errors.
    accuracy_keys : sequence of str, optional
        Keys drawn on the right (twin) axis. Default: every key whose name contains "acc" (case-insensitive),
        in order of first appearance; none gives a single-axis figure. Explicit keys must occur in some record.
    title : str, optional
        Figure title.
    logx : bool
        Log-scaled x axis (grokking runs span decades of steps); needs positive x values.
    figsize : (float, float), optional
        Figure size in inches, default ``(7, 4)``.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]`` holds the D_LR line, ``fig.axes[1]`` (when there are accuracy curves) the accuracies;
        one figure legend below the axes lists them all.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    ValueError
        For no records, a record without ``x``, no D_LR value at all, an unknown accuracy key, non-positive x
        with ``logx`` or a path without a known image suffix.
    TypeError
        For records that are not dicts or values that are not numbers.

    Examples
    --------
    >>> import tempfile, os, dlrcore.plot
    >>> log = [{"step": 0, "dlr": 0.9, "test_acc": 0.1}, {"step": 500, "dlr": 0.6},
    ...        {"step": 1000, "dlr": 0.2, "test_acc": 0.95}]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = dlrcore.plot.trajectory(log, os.path.join(d, "grokking.svg"))
    ...     os.path.getsize(os.path.join(d, "grokking.svg")) > 0
    True
    >>> [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    ['D_LR', 'test_acc']
    """
    if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Iterable):
        raise TypeError(
            f"records must be a list of dicts such as {{'step': 100, 'dlr': 0.4}}, got {type(records).__name__}"
        )
    recs = list(records)
    if not recs:
        raise ValueError("records is empty: pass at least one dict such as {'step': 100, 'dlr': 0.4}")
    for i, r in enumerate(recs):
        if not isinstance(r, Mapping):
            raise TypeError(f"records[{i}] must be a dict, got {type(r).__name__}")
        if x not in r or r[x] is None:
            raise ValueError(f"records[{i}] has no {x!r} value (x={x!r}); its keys are {sorted(map(str, r))}")
    numbers = [_number(r[x], x, i) for i, r in enumerate(recs)]
    bad = [i for i, v in enumerate(numbers) if v is None or not math.isfinite(v)]
    if bad:
        raise ValueError(f"records[{bad[0]}][{x!r}] is not a finite number")
    xs = [v for v in numbers if v is not None]  # all of them, by the check above
    if logx and min(xs) <= 0:
        raise ValueError(f"logx needs positive {x!r} values, got {min(xs)}")
    if not any(dlr in r for r in recs):
        raise ValueError(f"no record has the D_LR key {dlr!r}")

    if accuracy_keys is None:
        keys: list[str] = []
        for r in recs:
            for key in r:
                if isinstance(key, str) and "acc" in key.lower() and key not in (x, dlr) and key not in keys:
                    keys.append(key)
    else:
        keys = [accuracy_keys] if isinstance(accuracy_keys, str) else list(accuracy_keys)
        unknown = [key for key in keys if not any(key in r for r in recs)]
        if unknown:
            raise ValueError(f"accuracy key(s) {unknown} occur in no record")

    dx, dy = _series(recs, xs, dlr)
    if dy.size == 0:
        raise ValueError(f"every {dlr!r} value is None or NaN: nothing to plot")
    acc = [(key, *_series(recs, xs, key)) for key in keys]
    lines = [("D_half" if dlr.endswith("_sqrt") else "D_LR", "black", dx, dy)]
    drawn = [dlr]
    both = [(name, color, f"{dlr}_{kind}") for name, color, kind in (("D_LR", "black", "span"),
                                                                      ("D_half", "tab:red", "sqrt"))]
    if all(any(r.get(key) is not None for r in recs) for _, _, key in both):
        lines = [(name, color, *_series(recs, xs, key)) for name, color, key in both]
        drawn = [key for *_, key in both]

    fig = _new_figure(figsize, (7.0, 4.0))
    ax = fig.subplots()
    for (name, color, lx, ly), key in zip(lines, drawn):
        ax.plot(lx, ly, color=color, linewidth=2.0, marker="o" if lx.size <= 40 else None, markersize=3.5,
                label=name)
        bx, lo, hi = _band(recs, xs, key)
        if bx.size:
            ax.fill_between(bx, lo, hi, color=color, alpha=0.18, linewidth=0, label=f"{name} +- 1.96 SE")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{' and '.join(name for name, *_ in lines)} (lower = richer)")
    ax.grid(True, alpha=0.3)
    if logx:
        ax.set_xscale("log")
    _unit_ylim(ax, [ly for *_, ly in lines])
    if acc:
        ax2 = ax.twinx()
        colors = _colors(len(acc))
        for (key, ax_, ay), color in zip(acc, colors):
            ax2.plot(ax_, ay, color=color, linestyle="--", linewidth=1.6, label=key)
        ax2.set_ylabel("accuracy")
        _unit_ylim(ax2, [ay for _, _, ay in acc])
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    # below the axes: a legend inside would hide part of some curve whatever its corner
    texts = [str(h.get_label()) for h in handles]
    fig.legend(handles, texts, loc="outside lower center", ncols=_legend_columns(texts, fig), frameon=False)
    if title:
        ax.set_title(title)
    _save(fig, path)
    return fig
