"""The one-home policies of the arrays and state layers: parameter checks, the precision rule, Chan's step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrcore.chan import chan_step
from dlrcore.checks import check_choice, check_int, check_optional_int
from dlrcore.precision import FLOAT32_MIN_WIDTH, work_dtype


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, True, "3", None])
def test_check_int_rejects_with_one_wording(bad):
    with pytest.raises(ValueError, match=r"^rank must be a positive integer, got "):
        check_int(bad, "rank")


def test_check_int_accepts_numpy_integers_and_states_the_minimum():
    assert check_int(np.int64(4), "probes", minimum=4) == 4
    assert type(check_int(np.int32(2), "k")) is int
    with pytest.raises(ValueError, match=r"probes must be an integer >= 4 \(needs a variance\), got 3"):
        check_int(3, "probes", minimum=4, why="needs a variance")
    with pytest.raises(ValueError, match="non-negative integer"):
        check_int(-1, "oversample", minimum=0)
    assert check_optional_int(None, "num_classes") is None
    with pytest.raises(ValueError, match="positive integer or None"):
        check_optional_int(0, "num_classes")


def test_check_choice_names_the_options():
    with pytest.raises(ValueError, match=r"method must be one of \('exact', 'sketch'\), got 'fast'"):
        check_choice("fast", "method", ("exact", "sketch"))
    with pytest.raises(ValueError):
        check_choice(["exact"], "method", ("exact",))


@pytest.mark.parametrize(
    ("dtypes", "precision", "width", "want"),
    [
        ([np.float32], "auto", FLOAT32_MIN_WIDTH, np.float32),
        ([np.float32], "auto", FLOAT32_MIN_WIDTH - 1, np.float64),  # narrow: float64 is cheap
        ([np.float16, np.float32], "auto", 1000, np.float32),
        ([np.float32, np.dtype(">f8")], "auto", 1000, np.float64),  # any 8-byte input, any byte order
        ([np.float64], "float32", 10, np.float32),  # forced
        ([np.float32], "float64", 1000, np.float64),
        ([np.float32], "auto", None, np.float32),  # width unknown: the width rule is skipped
    ],
)
def test_one_precision_rule(dtypes, precision, width, want):
    assert work_dtype(dtypes, precision=precision, width=width) == np.dtype(want)


def test_precision_rule_is_the_same_on_every_path():
    """The sketch and the device paths follow the width rule too (issue 14: it was missing in the sketch)."""
    import dlrcore

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    f = (x @ rng.normal(size=(8, 3))).astype(np.float32)
    assert dlrcore.DLRStats().update(x, f).result().precision == "float64"
    assert dlrcore.DLRSketch(rank=4).update(x, f).result().precision == "float64"
    assert dlrcore.randomized_dlr(x, f, rank=4).precision == "float64"
    wide = rng.normal(size=(200, 200)).astype(np.float32)
    assert dlrcore.DLRSketch(rank=4).update(wide, f).result().precision == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        dlrcore.DLRSketch(precision="half")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_chan_step_matches_the_mean_and_comoment_of_the_union(n_a, n_b, seed):
    """Against a plain float64 reference: the union's mean and centered comoment. Tolerance: a few ulps of the
    data's scale times n (the reference and the merge round differently)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n_a, 3)) + 5.0, rng.normal(size=(n_b, 3)) - 2.0
    ma, mb = a.mean(0), b.mean(0)
    m_a, m_b = (a - ma).T @ (a - ma), (b - mb).T @ (b - mb)
    step = chan_step(n_a, ma, n_b, mb)
    merged = m_a + m_b + step.weight * np.outer(step.delta, step.delta)
    both = np.vstack([a, b])
    ref = both - both.mean(0)
    tol = 64 * (n_a + n_b) * np.finfo(float).eps * 50.0
    assert step.n == n_a + n_b
    np.testing.assert_allclose(step.mean, both.mean(0), rtol=0, atol=tol)
    np.testing.assert_allclose(merged, ref.T @ ref, rtol=0, atol=tol * 50.0)
    d2, mean2 = step.also(ma[:2], mb[:2])
    np.testing.assert_allclose(mean2, both.mean(0)[:2], rtol=0, atol=tol)
    np.testing.assert_array_equal(d2, step.delta[:2])


def test_chan_step_refuses_two_empty_sets():
    with pytest.raises(ValueError, match="two empty"):
        chan_step(0, np.zeros(2), 0, np.zeros(2))


def test_package_namespace_is_re_exports_and_old_names_still_import():
    import ast
    from pathlib import Path

    import dlrcore
    from dlrcore import DEFAULT_RANK, choose_method, exact_arrays, sketch_arrays  # names it carried before
    from dlrcore.device_exact import exact_arrays as home
    from dlrcore.sketch import DEFAULT_RANK as rank

    assert exact_arrays is home and rank == DEFAULT_RANK and callable(choose_method) and callable(sketch_arrays)
    assert dlrcore.METHODS == ("exact", "randomized", "sketch", "auto")
    tree = ast.parse(Path(dlrcore.__file__).read_text())
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == ["__getattr__"], f"dlrcore/__init__.py should hold re-exports only, defines {defined}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dlrcore.nope  # noqa: B018
