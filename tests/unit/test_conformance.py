"""One conformance test for every streaming estimator (issue 14), in the manner of torchmetrics' MetricTester and
scikit-learn's estimator checks: any split of the rows, any merge order, ``sum``, copies, pickles, save and load,
the empty state and operands of other types behave the same for DLRStats, DLRSketch and CKAStats.

A new estimator costs one entry in ``ESTIMATORS``. Estimators with jackknife blocks (``blocks=``) are entries of
their own: blocks change how the state is kept (B round-robin blocks, merged on demand), so the whole protocol is
checked for them too, and their value must equal the unblocked one.

Tolerances: splits and merge orders change only the order of float64 additions in Chan's update; on these
well-conditioned problems the values then agree to about 1e-14, and 1e-10 is the bound used throughout the suite.
Pickles and save/load round trips are exact (the same float64 arrays).
"""

from __future__ import annotations

import pickle
import re
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlrcore
from dlrcore import DLRInputError
from dlrcore.estimator import EMPTY_MESSAGE, Estimator

ESTIMATORS = {
    "DLRStats": lambda: dlrcore.DLRStats(),
    "DLRSketch": lambda: dlrcore.DLRSketch(rank=6, probes=8, seed=2),
    "CKAStats": lambda: dlrcore.CKAStats(),
    "DLRStats-blocks": lambda: dlrcore.DLRStats(blocks=7),
    "CKAStats-blocks": lambda: dlrcore.CKAStats(blocks=11),
}
#: The class of each entry (an entry's name is its class name, or the class name and "-blocks").
CLASS = {kind: kind.split("-")[0] for kind in ESTIMATORS}
LOADERS = {
    kind: {"DLRStats": dlrcore.DLRStats.load, "DLRSketch": dlrcore.DLRSketch.load, "CKAStats": dlrcore.CKAStats.load}[
        CLASS[kind]
    ]
    for kind in ESTIMATORS
}

rng0 = np.random.default_rng(0)
X = rng0.normal(size=(900, 10)) * np.linspace(2, 0.3, 10) + 0.5
Y = X[:, :3] @ rng0.normal(size=(3, 4)) + 0.2 * rng0.normal(size=(900, 4))

kinds = pytest.mark.parametrize("kind", sorted(ESTIMATORS))


def fitted(kind: str, rows: slice = slice(None)) -> Estimator:
    return ESTIMATORS[kind]().update(X[rows], Y[rows])


def value(est: Estimator) -> float:
    return float(est.result().value)


@kinds
def test_is_an_estimator_with_widths_and_repr(kind):
    est = ESTIMATORS[kind]()
    assert isinstance(est, Estimator)
    assert (est.n, est.p, est.C) == (0, None, None)
    est.update(X, Y)
    assert (est.n, est.p, est.C) == (900, 10, 4)
    assert repr(est).startswith(f"{CLASS[kind]}(n=900, p=10, C=4")


@kinds
@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(1, 899), max_size=5, unique=True), order=st.randoms(use_true_random=False))
def test_any_split_and_merge_order_give_the_one_shot_value(kind, cuts, order):
    whole = value(fitted(kind))
    bounds = [0, *sorted(cuts), 900]
    streamed = ESTIMATORS[kind]()
    for a, b in pairwise(bounds):
        streamed.update(X[a:b], Y[a:b])
    parts = [fitted(kind, slice(a, b)) for a, b in pairwise(bounds)]
    order.shuffle(parts)
    merged = ESTIMATORS[kind]()
    for part in parts:
        merged.merge(part)
    for est in (streamed, merged, sum(parts)):
        assert est.n == 900
        assert abs(value(est) - whole) <= 1e-10


@kinds
def test_plus_and_sum_leave_their_operands_alone(kind):
    a, b = fitted(kind, slice(0, 400)), fitted(kind, slice(400, None))
    va, vb = value(a), value(b)
    c = a + b
    assert (a.n, b.n, c.n) == (400, 500, 900)
    assert value(a) == va and value(b) == vb
    assert abs(value(sum([a, b])) - value(c)) <= 1e-12
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(TypeError):
        1 + a
    with pytest.raises(TypeError):
        a.merge(object())


@kinds
def test_copies_are_independent(kind):
    a = fitted(kind, slice(0, 600))
    b = a.copy()
    b.update(X[600:], Y[600:])
    assert (a.n, b.n) == (600, 900)
    assert abs(value(b) - value(fitted(kind))) <= 1e-10


@kinds
def test_pickle_and_save_load_round_trips(kind, tmp_path):
    est = fitted(kind)
    back = pickle.loads(pickle.dumps(est))
    loaded = LOADERS[kind](est.save(tmp_path / "e.npz"))
    for other in (back, loaded):
        assert type(other) is type(est) and other.n == est.n and (other.p, other.C) == (est.p, est.C)
        assert value(other) == value(est)
    # each keeps working and merging on its own
    loaded.merge(fitted(kind, slice(0, 100)))
    assert loaded.n == 1000 and est.n == 900


@kinds
def test_the_empty_estimator(kind, tmp_path):
    empty = ESTIMATORS[kind]()
    with pytest.raises(DLRInputError, match=re.escape(EMPTY_MESSAGE)):
        empty.result()
    again = LOADERS[kind](empty.save(tmp_path / "empty.npz"))
    assert again.n == 0
    full = fitted(kind)
    assert value(empty.copy().merge(full)) == value(full)  # merging into an empty one takes the other's state
    assert full.merge(ESTIMATORS[kind]()).n == 900  # merging an empty one changes nothing


@kinds
def test_mismatched_widths_and_foreign_files_are_refused(kind, tmp_path):
    est = fitted(kind)
    with pytest.raises(DLRInputError):
        est.update(X[:10, :5], Y[:10])
    other = ESTIMATORS[kind]().update(X[:50, :5], Y[:50])
    with pytest.raises(DLRInputError):
        est.copy().merge(other)
    assert est.n == 900
    foreign = sorted(k for k in ESTIMATORS if CLASS[k] != CLASS[kind])[0]
    path = fitted(foreign).save(tmp_path / "foreign.npz")
    with pytest.raises(DLRInputError, match="not a"):
        LOADERS[kind](path)


@pytest.mark.parametrize("kind", ["DLRStats", "CKAStats"])
def test_blocks_keep_the_value_and_add_error_bars(kind):
    """Merging the blocks is exact up to rounding: the value equals the unblocked one (the same float64 moments,
    added in another order: about 1e-15 here, 1e-12 relative allowed), and a standard error comes with it."""
    plain, blocked = fitted(kind), fitted(f"{kind}-blocks")
    assert blocked.n == plain.n
    assert value(blocked) == pytest.approx(value(plain), rel=1e-12)
    res = blocked.result()
    assert res.blocks == blocked.blocks and res.stderr is not None and res.stderr > 0
    assert plain.result().stderr is None


@pytest.mark.parametrize("kind", ["DLRStats", "CKAStats"])
def test_blocked_and_unblocked_statistics_do_not_merge(kind):
    plain, blocked = fitted(kind, slice(0, 300)), fitted(f"{kind}-blocks", slice(300, None))
    for a, b in ((plain, blocked), (blocked, plain)):
        with pytest.raises(DLRInputError, match="jackknife blocks"):
            a.copy().merge(b)
        with pytest.raises(DLRInputError, match="jackknife blocks"):
            a + b
    other = type(blocked)(blocks=blocked.blocks + 1).update(X[:50], Y[:50])
    with pytest.raises(DLRInputError, match="different numbers of jackknife blocks"):
        blocked.copy().merge(other)
    assert (plain.n, blocked.n) == (300, 600)
