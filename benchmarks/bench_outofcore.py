"""Out-of-core streaming of ``.npy`` files: peak memory stays flat as n grows, throughput against the read floor.

Run ``python benchmarks/bench_outofcore.py --quick`` for a quick look (n = 2e4 and 1e5); the default sizes are
n = 1e5, 1e6 and 4e6 at p = 1024 (float32 features, 16 GiB on disk at 4e6: check the free space first).

For each n it writes float32 features (n x p, a decaying spectrum plus a mean) and float32 outputs (n x C,
``F = Phi W + b + noise``) as ``.npy`` files in ``--dir`` (default: a temporary folder, deleted afterwards unless
``--keep``), then runs each of these in its own fresh Python process, so that the peak resident set is that run's:

* ``floor``: one pass over both files in the same row blocks ``dlr compute`` reads (positioned reads,
  ``dlrcore.arrayfiles.open_array``), summing each block in float64: the least time any one-pass method needs;
* ``floor-mmap``: the same pass over ``np.load(mmap_mode="r")`` memory maps (only to show how mapped pages count);
* ``exact``: ``dlr compute FEATURES OUTPUTS --json`` (``dlrcore.cli.main`` in the child process);
* ``sketch``: the same with ``--method sketch`` (rank 64, 32 probes).

Each child reports its wall time, its peak resident set (``VmHWM`` of ``/proc/self/status``, falling back to
``ru_maxrss``) and the resident set right after start-up (imports done, no data read), so ``peak - base`` is
the memory the pass itself needed. Throughput is the bytes of both files divided by the wall time of the pass.
Files just written are usually still in the page cache: the numbers are then those of a warm cache (the floor sees
the same cache state), not of the disk; page-cache pages belong to the kernel, not to the process, except those a
process maps, which is why ``floor-mmap`` shows a resident set that grows with n while the others stay flat.

``--json PATH`` saves the rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see bench_sketch.py

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SIZES = "1e5,1e6,4e6"
QUICK_SIZES = "2e4,1e5"
RUNS = ("floor", "floor-mmap", "exact", "sketch")


# ---------------------------------------------------------------------------------------------- child process


def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    hwm = _rss_mb("VmHWM")
    if hwm is not None:
        return hwm
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024 if sys.platform != "darwin" else ru / 2**20


def child(kind: str, features: str, outputs: str, batch_rows: int) -> dict:
    """One measured run inside a fresh process (``--child KIND``); the pytest-benchmark suite
    (``benchmarks/test_bench_outofcore.py``) calls it in its own process, for the time alone."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from dlrcore.arrayfiles import open_array
    from dlrcore.cli import main

    base = _rss_mb("VmRSS") or _peak_mb()
    t0 = time.perf_counter()
    extra: dict = {}
    if kind in ("floor", "floor-mmap"):
        srcs = [open_array(f, mmap=kind == "floor-mmap") for f in (features, outputs)]
        total = 0.0
        for start in range(0, srcs[0].rows, batch_rows):
            stop = min(start + batch_rows, srcs[0].rows)
            for s in srcs:
                total += float(s.read(start, stop).sum(dtype=np.float64))
        extra["checksum"] = total
    else:
        import contextlib
        import io

        args = ["compute", features, outputs, "--json", "--batch-size", str(batch_rows), "--no-progress"]
        if kind == "sketch":
            args += ["--method", "sketch"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(args)
        if code != 0:
            raise SystemExit(f"dlr compute failed with exit code {code}")
        res = json.loads(buf.getvalue())
        extra["value"] = res["value"]
        extra["error_estimate"] = res.get("error_estimate")
    wall = time.perf_counter() - t0
    return {
        "kind": kind,
        "wall_s": wall,
        "base_rss_mb": base,
        "peak_rss_mb": _peak_mb(),
        "rss_file_mb": _rss_mb("RssFile"),
        **extra,
    }


# ---------------------------------------------------------------------------------------------- data


def write_npy(path: Path, n: int, cols: int, make, block: int = 65536) -> None:
    """Write an n x cols float32 ``.npy`` file block by block (never the whole array in memory)."""
    with open(path, "wb") as fh:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (n, cols),
        }
        np.lib.format.write_array_header_2_0(fh, header)
        for start in range(0, n, block):
            fh.write(np.ascontiguousarray(make(start, min(start + block, n)), dtype=np.float32).tobytes())


def make_data(folder: Path, n: int, p: int, C: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, p + 1))).astype(np.float32)
    mean = rng.normal(size=p).astype(np.float32)
    W = (rng.normal(size=(p, C)) / np.sqrt(p)).astype(np.float32)
    b = rng.normal(size=C).astype(np.float32)
    feats, outs = folder / f"phi_{n}.npy", folder / f"out_{n}.npy"

    def block_rng(start: int) -> np.random.Generator:
        return np.random.default_rng([seed, start])

    def phi(i: int, j: int) -> np.ndarray:
        return block_rng(i).standard_normal((j - i, p), dtype=np.float32) * scale + mean

    def out(i: int, j: int) -> np.ndarray:
        noise = np.random.default_rng([seed, i, 1]).standard_normal((j - i, C), dtype=np.float32)
        return phi(i, j) @ W + b + 0.1 * noise

    write_npy(feats, n, p, phi)
    write_npy(outs, n, C, out)
    return feats, outs


# ---------------------------------------------------------------------------------------------- driver


def run_child(kind: str, feats: Path, outs: Path, batch_rows: int, timeout: float) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--features",
        str(feats),
        "--outputs",
        str(outs),
        "--batch-rows",
        str(batch_rows),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{kind} failed: {r.stderr[-2000:]}")
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t0
    return row


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help=f"comma-separated n (default {DEFAULT_SIZES})")
    ap.add_argument("--quick", action="store_true", help=f"n = {QUICK_SIZES}")
    ap.add_argument("--p", type=int, default=1024)
    ap.add_argument("--C", type=int, default=10)
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    ap.add_argument("--batch-rows", type=int, default=None, help="rows per block (default: dlr compute's, ~64 MiB)")
    ap.add_argument("--dir", default=None, help="folder for the data files (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the data files")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--features", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--outputs", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.features, args.outputs, args.batch_rows)))
        return 0

    sys.path.insert(0, str(ROOT))
    from dlrcore.arrayfiles import batch_rows_for

    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    runs = [r for r in args.runs.split(",") if r]
    bad = set(runs) - set(RUNS)
    if bad:
        ap.error(f"unknown runs {sorted(bad)}")
    p, C = args.p, args.C
    batch_rows = batch_rows_for(4 * (p + C), args.batch_rows)
    made_dir = args.dir is None
    folder = Path(tempfile.mkdtemp(prefix="dlr-outofcore-") if made_dir else args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    print(f"p = {p}, C = {C}, float32, {batch_rows} rows per block, data in {folder}", flush=True)
    print(
        f"{'n':>9} {'run':>10} {'GB':>7} {'wall s':>8} {'GB/s':>6} {'x floor':>8} {'peak MB':>8} "
        f"{'base MB':>8} {'extra MB':>9}",
        flush=True,
    )
    try:
        for n in sizes:
            t0 = time.perf_counter()
            feats, outs = make_data(folder, n, p, C)
            write_s = time.perf_counter() - t0
            nbytes = feats.stat().st_size + outs.stat().st_size
            floor_s = None
            for kind in runs:
                r = run_child(kind, feats, outs, batch_rows, args.timeout)
                if kind == "floor":
                    floor_s = r["wall_s"]
                r.update(
                    n=n,
                    p=p,
                    C=C,
                    gb=nbytes / 1e9,
                    gb_per_s=nbytes / 1e9 / r["wall_s"],
                    write_s=write_s,
                    batch_rows=batch_rows,
                    x_floor=None if floor_s is None else r["wall_s"] / floor_s,
                    extra_rss_mb=r["peak_rss_mb"] - r["base_rss_mb"],
                )
                rows.append(r)
                xf = "" if r["x_floor"] is None else f"{r['x_floor']:.2f}"
                print(
                    f"{n:>9} {kind:>10} {r['gb']:7.2f} {r['wall_s']:8.2f} {r['gb_per_s']:6.2f} {xf:>8} "
                    f"{r['peak_rss_mb']:8.0f} {r['base_rss_mb']:8.0f} {r['extra_rss_mb']:9.0f}",
                    flush=True,
                )
            if not args.keep:
                feats.unlink()
                outs.unlink()
    finally:
        if made_dir and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        meta = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "batch_rows": batch_rows,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
