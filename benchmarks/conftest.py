"""pytest-benchmark suites over the cases of the benchmark scripts (docs/benchmarks.md, "pytest-benchmark suites").

    python -m pytest benchmarks --benchmark-only                      # all suites (a few minutes on 2 cores)
    python -m pytest benchmarks --benchmark-autosave                  # ... saved under .benchmarks/
    python -m pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:50%

They are not part of the default test run (``testpaths`` in pyproject.toml are ``tests`` and ``dlrcore``).
"""

from __future__ import annotations

import os
import sys

# On 2 cores the OpenBLAS builds of numpy and scipy spin against each other after each call; a short thread timeout
# avoids it (docs PERF-NOTES, bench_sketch.py). Only effective if numpy is not loaded yet; an explicit value wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_NUMPY_WAS_LOADED = "numpy" in sys.modules

import importlib.util
import platform
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the suites import the scripts (bench_*.py) and _suite.py as modules
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # this checkout's dlrcore (the scripts do the same)

# --doctest-modules (pyproject's addopts) would import every module here: the scripts and the helper have no
# doctests, and they are imported by the suites anyway.
collect_ignore_glob = ["bench_*.py", "_suite.py", "suite_table.py"]
_HAVE_PYTEST_BENCHMARK = importlib.util.find_spec("pytest_benchmark") is not None
if not _HAVE_PYTEST_BENCHMARK:  # the suites need its fixture and marker: pip install ".[bench]"
    collect_ignore_glob.append("test_*.py")


_LOAD_AT_START = list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _machine() -> dict:
    """What stays fixed on one machine and checkout (``machine_info``, which ``--benchmark-compare`` checks)."""
    info: dict = {
        "cpus": os.cpu_count(),
        "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "OPENBLAS_THREAD_TIMEOUT_effective": not _NUMPY_WAS_LOADED,
        "processor": platform.processor(),
    }
    try:
        import dlrcore
        from dlrcore import kernels

        info["dlrcore"] = dlrcore.__version__
        info["dlrcore_path"] = str(Path(dlrcore.__file__).parent)
        info["kernels_backend"] = kernels.BACKEND
    except Exception as exc:  # report, do not fail the run's header
        info["dlrcore"] = f"not importable: {type(exc).__name__}: {exc}"
    return info


def _blas() -> list[dict] | str:
    """BLAS builds and their threads loaded now (docs PERF-NOTES: report which BLAS and how many threads ran)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install '.[bench]')"
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture")
    return sorted(({k: d.get(k) for k in keys} for d in threadpool_info()), key=lambda d: str(sorted(d.items())))


def pytest_report_header(config):
    if not _HAVE_PYTEST_BENCHMARK:
        return ["benchmarks/: pytest-benchmark is not installed (pip install '.[bench]'): no suite is collected"]
    info, blas = _machine(), _blas()
    if isinstance(blas, list):
        blas = "; ".join(f"{d['internal_api']} {d['version']} {d['architecture'] or ''} threads={d['num_threads']}"
                         for d in blas)
    return [
        f"benchmarks/: dlrcore {info.get('dlrcore')} from {info.get('dlrcore_path')}, "
        f"kernels {info.get('kernels_backend')}, {info['cpus']} CPUs, load {_LOAD_AT_START}",
        f"benchmarks/: BLAS {blas}; OPENBLAS_THREAD_TIMEOUT={info['OPENBLAS_THREAD_TIMEOUT']}"
        + ("" if info["OPENBLAS_THREAD_TIMEOUT_effective"] else " (numpy loaded before: set it in the environment)"),
    ]


# hooks of pytest-benchmark (optionalhook: unknown to pytest without it). The load and the BLAS builds loaded by
# the end of the run go into the saved JSON but not into machine_info, which --benchmark-compare checks for equality.
@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["dlrcore_benchmarks"] = _machine()


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["dlrcore_run"] = {
        "loadavg_start": _LOAD_AT_START,
        "loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "blas": _blas(),
    }


@pytest.fixture
def measure(benchmark):
    """``measure(fn)``: time ``fn`` (see ``_suite.measure``) and return its result."""
    import _suite

    return lambda fn: _suite.measure(benchmark, fn)


@pytest.fixture(scope="session")
def case_cache():
    """One case's data at a time (arrays, references), shared by the members of its group."""
    import _suite

    cache = _suite.CaseCache()
    yield cache
    cache.clear()
