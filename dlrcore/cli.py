"""The ``dlr`` command line: ``dlr compute`` on array files and ``dlr demo`` on a built-in network.

Exit codes: 0 on success, 1 on bad input (one line on stderr naming the problem), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .arrayfiles import PROGRESS_BYTES, accumulate_files, batch_rows_for, check_output_choice, open_array
from .inputs import DLRInputError, in_file_rows
from .output_kernels import CENTER_LOGITS, OUTPUT_KERNELS
from .result import READING
from .sketch import DEFAULT_PROBES, DEFAULT_RANK, DLRSketch
from .spectral import Spectrum
from .stats import DLRStats

MODES_HELP = (
    "exact: decompose the whole p x p feature Gram (O(p^3)); randomized: only the top --k modes of exact statistics "
    "(O(p^2 k), with a bound on each eigenvalue's error; --seed)"
)

__all__ = ["main"]


def _accumulate(args: argparse.Namespace, label: str) -> DLRStats | DLRSketch:
    """Stream FEATURES (and OUTPUTS or --weight, and --labels) from files into statistics (one code path:
    :func:`dlrcore.arrayfiles.accumulate_files`, or ``dlrcore.dask.stats_from_files`` with --scheduler)."""
    if args.batch_size is not None and args.batch_size < 1:
        raise DLRInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if getattr(args, "blocks", None) is not None:
        stats: DLRStats | DLRSketch = _accumulate_blocked(args, label)
    elif args.scheduler:
        stats = _accumulate_dask(args)
    else:
        stats = accumulate_files(
            args.features,
            args.outputs,
            args.labels,
            weight=args.weight,
            bias=args.bias,
            method=args.method,
            batch_rows=args.batch_size,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            progress=args.progress,
            label=label,
            precision=args.precision,
            num_classes=args.num_classes,
            rank=args.rank,
            probes=args.probes,
            seed=args.seed,
            max_memory=args.max_memory,
        )
    if args.save_stats:
        stats.save(args.save_stats)
    return stats


def _accumulate_blocked(args: argparse.Namespace, label: str) -> DLRStats:
    """--blocks N: exact statistics in N jackknife blocks, streamed from the files in row batches (the exact
    method only; not with --checkpoint or --scheduler yet)."""
    if args.method != "exact":
        raise DLRInputError(
            f"--blocks needs --method exact (the default), got --method {args.method}: the jackknife leaves out "
            "blocks of exact statistics (a sketch's error_estimate bounds its approximation, not sampling noise)"
        )
    for flag, given in (("--checkpoint", args.checkpoint), ("--scheduler", args.scheduler)):
        if given:
            raise DLRInputError(f"--blocks is not supported with {flag} yet; drop one of them")
    check_output_choice(args.outputs, args.weight, args.bias, names=("OUTPUTS", "--weight", "--bias"))
    from .progress import Progress

    feats = open_array(args.features)
    if len(feats.shape) != 2:
        raise DLRInputError(f"{feats.name}: expected a 2-D n x p array, got shape {feats.shape}")
    sources = {k: open_array(v) for k, v in (("outputs", args.outputs), ("labels", args.labels)) if v is not None}
    for src in sources.values():
        if src.rows != feats.rows:
            raise DLRInputError(f"row counts differ: {feats.name} has {feats.rows} rows, {src.name} has {src.rows}")
    kw = dict(precision=args.precision, num_classes=args.num_classes, blocks=args.blocks)
    if args.weight is not None:
        w = open_array(args.weight)
        b = None if args.bias is None else open_array(args.bias)
        stats = DLRStats(weight=w.read(0, w.rows), bias=None if b is None else b.read(0, b.rows), **kw)
    else:
        stats = DLRStats(**kw)
    row_bytes = sum(s.nbytes // max(s.rows, 1) for s in [feats, *sources.values()])
    rows = batch_rows_for(row_bytes, args.batch_size)
    total = feats.nbytes + sum(s.nbytes for s in sources.values())
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and total > PROGRESS_BYTES)
    with Progress(feats.rows, label, enabled=bool(show)) as bar:
        for start, x in feats.batches(rows):
            parts = {k: s.read(start, start + x.shape[0]) for k, s in sources.items()}
            try:
                stats.update(x, parts.get("outputs"), labels=parts.get("labels"))
            except DLRInputError as exc:
                raise in_file_rows(exc, start) from None
            bar.advance(x.shape[0])
    return stats


def _accumulate_dask(args: argparse.Namespace) -> DLRStats | DLRSketch:
    """--scheduler ADDR: the statistics computed by a Dask cluster (``dlrcore.dask.stats_from_files``)."""
    if args.checkpoint:
        raise DLRInputError(
            "--checkpoint and --scheduler are mutually exclusive (a Dask run is not checkpointed; "
            "run it again, or drop --scheduler to checkpoint a local run)"
        )
    try:
        import dask  # noqa: F401

        from .dask import stats_from_files
    except ImportError as exc:
        raise DLRInputError(
            f'--scheduler needs Dask and dlrcore.dask: pip install "dlrcore[dask]" ({type(exc).__name__}: {exc})'
        ) from exc
    return stats_from_files(
        args.features,
        args.outputs,
        args.labels,
        scheduler=args.scheduler,
        chunk_rows=args.batch_size,
        num_classes=args.num_classes,
        precision=args.precision,
        method=args.method,
        rank=args.rank,
        probes=args.probes,
        seed=args.seed,
        weight=args.weight,
        bias=args.bias,
        max_memory=args.max_memory,
        progress=bool(args.progress),
    )


def _positive_bytes(text: str) -> float:
    """--max-memory: a finite positive number of bytes."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite positive number of bytes, got {text!r}")
    return v


def _blocks(text: str) -> int:
    """--blocks: an integer of at least 2."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"blocks must be an integer >= 2, got {text!r}") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"blocks must be an integer >= 2, got {v}")
    return v


def _kernel(args: argparse.Namespace) -> dict:
    """The output-kernel options of a result: which value is primary, and class-centered logits for D_half."""
    return dict(rtol=args.rtol, output_kernel=args.output_kernel, center_logits=args.center_logits)


def _compute(args: argparse.Namespace) -> int:
    stats = _accumulate(args, "dlr compute")
    if args.baseline:
        if not isinstance(stats, DLRStats):
            raise DLRInputError("--baseline needs exact statistics (the feature moments); a sketch keeps only G Omega")
        res = stats.result(baseline=True, **_kernel(args))
    else:
        res = stats.result(**_kernel(args))
    nc1 = stats.nc1() if isinstance(stats, DLRStats) and stats.label_kind == "classes" else None
    no_nc1 = None
    if args.labels and nc1 is None:
        kind = stats.label_kind if isinstance(stats, DLRStats) else "not kept by a sketch"
        no_nc1 = (
            f"NC1 is not reported: --labels {args.labels} gave {kind} labels, and NC1 needs integer class ids "
            "(save class ids as integers, for example np.save(path, labels.astype(np.int64)))"
        )
    if args.json:
        d = {**res.to_dict(), "reading": READING}
        if res.blocks is not None:  # the chosen kernel's jackknife, beside stderr_span and stderr_sqrt
            d.update(stderr=res.stderr, bias=res.bias)
        if nc1 is not None:
            d["nc1"] = nc1.to_dict()
        if no_nc1:
            d["nc1"], d["nc1_note"] = None, no_nc1
        print(json.dumps(d, indent=2))
    else:
        print(res)
        if nc1 is not None:
            print(nc1)
        if no_nc1:
            print(f"  note: {no_nc1}")
    return 0


def _spectrum_of(stats: DLRStats | DLRSketch, args: argparse.Namespace, name: str) -> Spectrum:
    """The spectrum of exact statistics (``--modes randomized``: only the top --k, O(p^2 k)) or of a sketch."""
    if args.modes == "randomized" and isinstance(stats, DLRStats):
        if args.k is None:
            raise DLRInputError("--modes randomized needs --k, the number of top modes to compute")
        return stats.spectrum(args.k, name=name, method="randomized", seed=args.seed, **_kernel(args))
    return stats.spectrum(args.k, name=name, **_kernel(args))  # a sketch's spectrum is its top modes already


def _spectrum(args: argparse.Namespace) -> int:
    stats = _accumulate(args, "dlr spectrum")
    sp = _spectrum_of(stats, args, args.name or "")
    if args.plot:
        from . import plot

        plot.spectrum([sp], path=args.plot)
    if args.json:
        print(sp.to_json(indent=2))
    else:
        print(sp)
        if args.plot:
            print(f"figure written to {args.plot}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from . import plot

    names = args.names.split(",") if args.names else [None] * len(args.stats)
    if len(names) != len(args.stats):
        raise DLRInputError(f"--names gives {len(names)} names for {len(args.stats)} statistics files")
    spectra = []
    for path, name in zip(args.stats, names):
        st = _load_any(path)
        spectra.append(_spectrum_of(st, args, name or _stem(path)))
    plot.spectrum(spectra, path=args.out, title=args.title)
    for sp in spectra:
        print(
            f"{sp.name}: D_LR = {sp.dlr_span:.4f}, D_half = {sp.dlr_sqrt:.4f} (lower = richer), "
            f"effective rank {sp.effective_rank:.2f}, {sp.k} modes"
        )
    print(f"figure written to {args.out}")
    return 0


def _load_any(path: str) -> DLRStats | DLRSketch:
    """Exact statistics or a sketch, whichever the file holds."""
    try:
        return DLRStats.load(path)
    except DLRInputError as exc:
        try:
            return DLRSketch.load(path)
        except DLRInputError:
            raise exc from None


def _stem(path: str) -> str:
    import os

    return os.path.splitext(os.path.basename(path))[0]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(seed=args.seed, quick=args.quick, progress=not args.no_progress, loss=args.loss)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dlr`` command."""
    ap = argparse.ArgumentParser(
        prog="dlr",
        description="D_LR, the dynamical low-rank measure of neural-network richness (0 rich, 1 lazy).",
    )
    ap.add_argument("--version", action="version", version=f"dlrcore {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    def kernel_args(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--output-kernel",
            choices=OUTPUT_KERNELS,
            default="span",
            help="which measure is the primary value: span (the paper's literal D_LR) or sqrt (D_half, for "
            "cross-entropy logits); both are always printed",
        )
        c.add_argument(
            "--center-logits",
            action=argparse.BooleanOptionalAction,
            default=CENTER_LOGITS,
            help="center the logits across classes before D_half (removes per-sample shifts softmax ignores)",
        )

    def data_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("features", metavar="FEATURES")
        c.add_argument("outputs", metavar="OUTPUTS", nargs="?")
        c.add_argument("--weight", metavar="FILE", help="last-layer weight (C x p) instead of OUTPUTS")
        c.add_argument("--bias", metavar="FILE", help="last-layer bias (C,), with --weight")
        c.add_argument("--labels", metavar="FILE", help="integer class ids (n,) or an n x C target matrix")
        c.add_argument("--num-classes", type=int, default=None, help="number of classes of integer labels")
        c.add_argument("--rtol", type=float, default=None, help="relative singular-value tolerance of the output span")
        kernel_args(c)
        c.add_argument("--precision", choices=("auto", "float32", "float64"), default="auto")
        c.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: about 64 MiB)")
        c.add_argument("--save-stats", metavar="FILE.npz", help="also save the sufficient statistics")
        c.add_argument(
            "--method",
            choices=("exact", "sketch", "auto"),
            default="exact",
            help="exact statistics, a one-pass sketch (O(p k) memory, with an error estimate), or auto "
            "(exact when it fits in --max-memory)",
        )
        c.add_argument("--rank", type=int, default=DEFAULT_RANK, help="sketch: directions captured exactly")
        c.add_argument("--probes", type=int, default=DEFAULT_PROBES, help="sketch: stochastic probes")
        c.add_argument("--seed", type=int, default=0, help="sketch: random seed")
        c.add_argument(
            "--max-memory", type=_positive_bytes, default=None, help="auto: byte budget (default half the free RAM)"
        )
        c.add_argument("--json", action="store_true", help="print the result as JSON")
        c.add_argument(
            "--checkpoint",
            metavar="FILE.npz",
            help="write the statistics and the rows consumed to FILE every --checkpoint-every batches (atomically) "
            "and resume from it when it exists and matches the inputs and parameters",
        )
        c.add_argument("--checkpoint-every", type=int, default=10, metavar="N", help="batches between checkpoints")
        c.add_argument(
            "--no-resume", dest="resume", action="store_false", help="ignore an existing --checkpoint and start over"
        )
        c.add_argument(
            "--scheduler",
            metavar="ADDR",
            help="compute with Dask: a cluster address (tcp://host:8786) or threads|processes|synchronous "
            "(needs dlrcore[dask]); not with --checkpoint",
        )
        prog = c.add_mutually_exclusive_group()
        prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
        prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")

    files = (
        "Files are .npy, .npz, .safetensors, zarr (PATH.zarr) or HDF5 (.h5, .hdf5), streamed in bounded memory; "
        "name an array inside with PATH:KEY."
    )
    c = sub.add_parser(
        "compute",
        help="exact D_LR of a features file against an outputs file",
        description="Exact D_LR of FEATURES (n x p) against OUTPUTS (n x C), streamed in row batches. "
        + files
        + " With --labels of class ids, NC1 is reported too.",
    )
    data_args(c)
    c.add_argument(
        "--blocks",
        type=_blocks,
        default=None,
        metavar="N",
        help="sampling error bars: keep the statistics in N round-robin blocks of rows (10-20 recommended; N times "
        "the memory) and report block-jackknife standard errors and biases (exact method only; docs/uncertainty.md)",
    )
    c.add_argument(
        "--baseline",
        action="store_true",
        help="also report both measures for random Gaussian readouts of the same features (exact statistics only)",
    )
    c.set_defaults(func=_compute)

    s = sub.add_parser(
        "spectrum",
        help="eigenvalues, utilization and quality curves (the paper's three panels)",
        description="Spectrum of the feature covariance with cumulative utilization (against OUTPUTS) and, with "
        "--labels, cumulative quality. " + files,
    )
    data_args(s)
    s.add_argument("--k", type=int, default=None, help="modes to report (default: all)")
    s.add_argument("--modes", choices=("exact", "randomized"), default="exact", help=MODES_HELP)
    s.add_argument("--plot", metavar="FIG.png", help="draw the three-panel figure (needs matplotlib)")
    s.add_argument("--name", default=None, help="legend label")
    s.set_defaults(func=_spectrum)

    pl = sub.add_parser(
        "plot",
        help="three-panel figure from saved statistics files, overlaid",
        description="Draw the three-panel figure from statistics saved with --save-stats or DLRStats.save, "
        "several files overlaid (e.g. rich vs lazy, or checkpoints over training).",
    )
    pl.add_argument("stats", metavar="STATS.npz", nargs="+")
    pl.add_argument("--out", "-o", required=True, metavar="FIG.png", help="figure file (.png, .pdf, .svg)")
    pl.add_argument("--names", default=None, help="comma-separated legend labels (default: file names)")
    pl.add_argument("--k", type=int, default=None, help="modes to draw (default: all)")
    pl.add_argument("--modes", choices=("exact", "randomized"), default="exact", help=MODES_HELP)
    pl.add_argument("--seed", type=int, default=0, help="--modes randomized: random seed")
    pl.add_argument("--rtol", type=float, default=None)
    kernel_args(pl)
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=_plot)

    d = sub.add_parser(
        "demo",
        help="train a small NumPy network rich and lazy and compare D_LR",
        description="Train a small NumPy network on a synthetic task twice (all layers: rich; last layer only: "
        "lazy) and print D_LR and accuracy for both.",
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quick", action="store_true", help="smaller, faster run")
    d.add_argument(
        "--loss",
        choices=("mse", "ce"),
        default="mse",
        help="mse: MSE on one-hot targets (read the literal D_LR); ce: cross-entropy (read D_half)",
    )
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    d.set_defaults(func=_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dlr`` console script; returns the exit code."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args))
    except (DLRInputError, FileNotFoundError, ValueError, TypeError, OSError, ImportError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"dlr: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
