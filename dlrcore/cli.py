"""The ``dlr`` command line: ``dlr compute`` on array files and ``dlr demo`` on a built-in network.

Exit codes: 0 on success, 1 on bad input (one line on stderr naming the problem), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .arrayfiles import open_array
from .inputs import DLRInputError
from .progress import Progress
from .stats import DLRStats

__all__ = ["main"]

#: Files above this size show a progress bar on an interactive terminal.
PROGRESS_BYTES = 256 * 2**20


def _batch_rows(row_bytes: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise DLRInputError(f"--batch-size must be at least 1, got {requested}")
        return requested
    return max(1024, (64 * 2**20) // max(row_bytes, 1))


def _compute(args: argparse.Namespace) -> int:
    feats = open_array(args.features)
    if args.weight is None and args.outputs is None:
        raise DLRInputError("give OUTPUTS, or --weight (and --bias) to derive outputs from the last layer")
    if args.weight is not None and args.outputs is not None:
        raise DLRInputError("give either OUTPUTS or --weight, not both")
    if args.weight is not None:
        w = open_array(args.weight).read(0, open_array(args.weight).rows)
        b = open_array(args.bias).read(0, open_array(args.bias).rows) if args.bias else None
        stats = DLRStats(weight=w, bias=b, precision=args.precision)
        outs = None
    else:
        if args.bias:
            raise DLRInputError("--bias needs --weight")
        stats = DLRStats(precision=args.precision)
        outs = open_array(args.outputs)
        if outs.rows != feats.rows:
            raise DLRInputError(
                f"row counts differ: {feats.name} has {feats.rows} rows, {outs.name} has {outs.rows}"
            )
    if len(feats.shape) != 2:
        raise DLRInputError(f"{feats.name}: expected a 2-D n x p array, got shape {feats.shape}")
    row_bytes = feats.nbytes // max(feats.rows, 1) + (outs.nbytes // max(outs.rows, 1) if outs else 0)
    rows = _batch_rows(row_bytes, args.batch_size)
    total_bytes = feats.nbytes + (outs.nbytes if outs else 0)
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and total_bytes > PROGRESS_BYTES)
    with Progress(feats.rows, "dlr compute", enabled=show) as bar:
        for start, x in feats.batches(rows):
            stop = start + x.shape[0]
            if outs is None:
                stats.update(x)
            else:
                stats.update(x, outs.read(start, stop))
            bar.advance(x.shape[0])
    if args.save_stats:
        stats.save(args.save_stats)
    res = stats.result(rtol=args.rtol)
    if args.json:
        print(res.to_json(indent=2))
    else:
        print(res)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(seed=args.seed, quick=args.quick, progress=not args.no_progress)
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

    c = sub.add_parser(
        "compute",
        help="exact D_LR of a features file against an outputs file",
        description="Exact D_LR of FEATURES (n x p) against OUTPUTS (n x C), streamed in row batches. "
        "Files are .npy (memory-mapped), .npz or .safetensors; name an array inside with PATH:KEY.",
    )
    c.add_argument("features", metavar="FEATURES")
    c.add_argument("outputs", metavar="OUTPUTS", nargs="?")
    c.add_argument("--weight", metavar="FILE", help="last-layer weight (C x p) instead of OUTPUTS")
    c.add_argument("--bias", metavar="FILE", help="last-layer bias (C,), with --weight")
    c.add_argument("--rtol", type=float, default=None, help="relative singular-value tolerance of the output span")
    c.add_argument("--precision", choices=("auto", "float32", "float64"), default="auto")
    c.add_argument("--batch-size", type=int, default=None, help="rows per batch (default: about 64 MiB)")
    c.add_argument("--save-stats", metavar="FILE.npz", help="also save the sufficient statistics")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    prog = c.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    c.set_defaults(func=_compute)

    d = sub.add_parser(
        "demo",
        help="train a small NumPy network rich and lazy and compare D_LR",
        description="Train a small NumPy network on a synthetic task twice (all layers: rich; last layer only: "
        "lazy) and print D_LR and accuracy for both.",
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quick", action="store_true", help="smaller, faster run")
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
    except (DLRInputError, FileNotFoundError, ValueError, TypeError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"dlr: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dlr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
