"""The coverage simulation behind docs/uncertainty.md, at the test's size: where there are at least ten samples
per feature (the guidance), 95 % t intervals from ten jackknife blocks cover the population value in at least 85 %
of 60 seeds (binomial SD about 0.03 at the nominal 0.95, so 0.85 is more than 3 SD below it), and the mean standard
error matches the spread of the values over seeds within 30 % (the SD of 60 values is itself uncertain by ~9 %)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("jackknife_coverage", ROOT / "examples" / "jackknife_coverage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(["--quick", "--out", str(tmp_path_factory.mktemp("jk"))])


def test_intervals_cover_where_there_are_enough_samples(report):
    rows = [r for r in report["rows"] if r["n"] >= 10 * r["p"]]
    assert rows
    for r in rows:
        assert r["coverage_span"] >= 0.85 and r["coverage_sqrt"] >= 0.85, r


def test_the_standard_error_measures_the_spread_of_the_values(report):
    for r in report["rows"]:
        assert 0.7 <= r["mean_stderr_span"] / r["sd_value_span"] <= 1.3, r
        assert 0.7 <= r["mean_stderr_sqrt"] / r["sd_value_sqrt"] <= 1.3, r
