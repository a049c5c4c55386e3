"""The sample-size study behind the guidance in docs/uncertainty.md and the too-few-samples warning: at one sample
per feature the reading is off by more than the tolerated bias somewhere, and from the stated number of samples per
feature on it is not, in any setting (synthetic isotropic and decaying spectra, a trained network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dlrcore.exact import SAMPLES_PER_FEATURE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("sample_size", ROOT / "examples" / "sample_size.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(["--quick", "--out", str(tmp_path_factory.mktemp("ss"))])


def test_one_sample_per_feature_is_not_enough(report):
    tol = report["tolerated_bias"]
    worst = max(max(abs(r["span_bias"]), abs(r["sqrt_bias"])) for s in report["settings"] for r in s["rows"][:1])
    assert worst > tol


def test_the_guidance_settles_every_setting(report):
    need = report["samples_per_feature_needed"]
    assert need is not None and need <= SAMPLES_PER_FEATURE
    tol = report["tolerated_bias"]
    for s in report["settings"]:
        for r in s["rows"]:
            if r["n"] / s["p"] >= SAMPLES_PER_FEATURE:
                assert abs(r["span_bias"]) < tol and abs(r["sqrt_bias"]) < tol, (s["setting"], r)


def test_the_jackknife_error_is_reported_and_shrinks_with_n(report):
    """Beside the spread over seeds, each point carries the mean jackknife standard error; from 2 to 50 samples per
    feature it must shrink (by about sqrt(25) = 5 in expectation; asserted only to shrink, with 4 seeds)."""
    for s in report["settings"]:
        first, last = s["rows"][1], s["rows"][-1]
        assert 0 < last["span_stderr"] < first["span_stderr"], s["setting"]
        assert 0 < last["sqrt_stderr"] < first["sqrt_stderr"], s["setting"]
