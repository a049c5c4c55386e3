"""One dict/JSON protocol for every result (issue 14): round trips, float(), and validation of every field on
loading (the results a user saves are read back as trustworthy as computed ones)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dlrcore
from dlrcore import CKAResult, DLRInputError, DLRResult, NC1Result, Spectrum
from dlrcore.result import Baseline


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(300, 12)) * np.linspace(3, 0.2, 12)
    y = rng.integers(0, 3, size=300)
    out = phi[:, :3] @ rng.normal(size=(3, 3))
    return {
        "dlr": dlrcore.dlr(phi, out, baseline=True),
        "sketch": dlrcore.dlr(phi, out, method="sketch", rank=4),
        "spectrum": dlrcore.spectrum(phi, out, y, num_classes=3),
        "cka": dlrcore.cka(phi, out),
        "nc1": dlrcore.nc1(phi, y),
    }


@pytest.mark.parametrize("key", ["dlr", "sketch", "spectrum", "cka", "nc1"])
def test_every_result_round_trips_through_json_and_reads_as_a_float(results, key):
    res = results[key]
    back = type(res).from_json(res.to_json())
    assert float(back) == float(res) == res.value
    for name, v in res.to_dict().items():
        got = back.to_dict()[name]
        assert got == v or (v != v and got != got), name  # NaN fields stay NaN
    assert json.loads(res.to_json())  # plain JSON
    assert str(res)  # prints


def test_spectrum_value_is_the_measure_it_carries(results):
    sp = results["spectrum"]
    assert sp.value == sp.dlr == results["dlr"].value


@pytest.mark.parametrize(
    ("cls", "change", "match"),
    [
        (DLRResult, {"n": "300"}, r"DLRResult.n: expected an integer"),
        (DLRResult, {"n": True}, r"DLRResult.n: expected an integer"),
        (DLRResult, {"value": "0.3"}, r"DLRResult.value: expected a number"),
        (DLRResult, {"warnings": "careful"}, r"DLRResult.warnings: expected a list"),
        (DLRResult, {"warnings": [1]}, r"DLRResult.warnings\[0\]: expected a string"),
        (DLRResult, {"baseline": {"draws": 2}}, r"Baseline: missing field"),
        (DLRResult, {"colour": 1}, r"DLRResult: unknown field\(s\) \['colour'\]"),
        (DLRResult, {"logits_centered": 1}, r"DLRResult.logits_centered: expected true or false"),
        (Spectrum, {"eigenvalues": ["a"]}, r"Spectrum.eigenvalues: expected a list of numbers"),
        (CKAResult, {"p_x": 1.5}, r"CKAResult.p_x: expected an integer"),
        (NC1Result, {"precision": "float64"}, r"NC1Result: unknown field"),
    ],
)
def test_loading_validates_every_field(results, cls, change, match):
    key = {DLRResult: "dlr", Spectrum: "spectrum", CKAResult: "cka", NC1Result: "nc1"}[cls]
    d = {**results[key].to_dict(), **change}
    with pytest.raises(DLRInputError, match=match):
        cls.from_dict(d)


def test_missing_required_fields_and_non_dicts_are_refused(results):
    d = results["cka"].to_dict()
    del d["n"]
    with pytest.raises(DLRInputError, match=r"missing field\(s\) \['n'\]"):
        CKAResult.from_dict(d)
    with pytest.raises(DLRInputError, match="expected a dict"):
        NC1Result.from_dict([1, 2])
    with pytest.raises(DLRInputError, match="not JSON"):
        NC1Result.from_json("{nope")


def test_nested_baseline_comes_back_as_a_baseline(results):
    back = DLRResult.from_dict(json.loads(results["dlr"].to_json()))
    assert isinstance(back.baseline, Baseline) and back.baseline == results["dlr"].baseline
    assert float(back.baseline) == back.baseline.sqrt_mean


def test_jackknife_interval_is_the_bias_corrected_value_plus_minus_students_t():
    from scipy.stats import t

    rng = np.random.default_rng(3)
    phi = rng.normal(size=(2000, 8)) * np.linspace(2, 0.3, 8)
    out = phi[:, :3] @ rng.normal(size=(3, 3)) + 0.3 * rng.normal(size=(2000, 3))
    res = dlrcore.DLRStats(blocks=10).update(phi, out).result(output_kernel="sqrt")
    lo, hi = res.interval()
    half = t.ppf(0.975, 9) * res.stderr_sqrt
    assert lo == pytest.approx(res.value_sqrt - res.bias_sqrt - half, abs=1e-15)
    assert hi == pytest.approx(res.value_sqrt - res.bias_sqrt + half, abs=1e-15)
    lo90, hi90 = res.interval(0.90)
    assert lo < lo90 < hi90 < hi
    cka = dlrcore.CKAStats(blocks=10).update(phi, out).result()
    assert cka.interval()[0] < cka.value - cka.bias < cka.interval()[1]
    assert dlrcore.dlr(phi, out).interval() is None
    with pytest.raises(ValueError, match="level"):
        res.interval(1.5)
