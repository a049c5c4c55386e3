"""The JAX / Flax adapter against the real frameworks: D_LR equals dlrcore.dlr on hand-extracted arrays."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax = pytest.importorskip("jax")
jax.config.update("jax_platforms", "cpu")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")

import dlrcore  # noqa: E402
import dlrcore.adapters.jax as dj  # noqa: E402


class MLP(nn.Module):
    hidden: int = 16
    classes: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(self.hidden)(x))
        h = nn.relu(nn.Dense(self.hidden, name="penult")(h))
        return nn.Dense(self.classes, name="head")(h)


class NoDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(), (x.shape[-1], 3))
        return x @ w


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(8)(x))


class Nested(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = Block(name="block")(x)
        return nn.Dense(3)(h)


@pytest.fixture(scope="module")
def setup():
    model = MLP()
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(32, 5)).astype(np.float32) for _ in range(3)] + [
        rng.normal(size=(7, 5)).astype(np.float32)
    ]
    ys = [rng.integers(0, 4, size=len(x)) for x in xs]
    variables = model.init(jax.random.PRNGKey(0), xs[0])
    return model, variables, xs, ys


def hand(model, variables, xs):
    """Penultimate activations and logits computed by hand from the parameters."""
    p = variables["params"]
    x = np.concatenate(xs).astype(np.float64)

    def dense(h, name):
        return h @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"], np.float64)

    h = np.tanh(dense(x, "Dense_0"))
    h = np.maximum(dense(h, "penult"), 0.0)
    return h, dense(h, "head")


def test_matches_hand_extracted(setup):
    model, variables, xs, _ys = setup
    stats = dj.collect(model.apply, variables, xs, progress=False)
    feats, outs = hand(model, variables, xs)
    assert (stats.n, stats.p, stats.C) == (103, 16, 4)
    assert stats.label_kind == "none"
    assert abs(stats.result().value - dlrcore.dlr(feats, outs).value) < 1e-6


def test_labels_from_tuples_and_dicts(setup):
    model, variables, xs, ys = setup
    tup = dj.collect(model.apply, variables, list(zip(xs, ys)), progress=False)
    dic = dj.collect(model.apply, variables, [{"image": x, "label": y} for x, y in zip(xs, ys)], progress=False)
    assert tup.label_kind == dic.label_kind == "classes"
    assert abs(tup.result().value - dic.result().value) < 1e-12
    assert dj.collect(model.apply, variables, list(zip(xs, ys)), labels=False, progress=False).label_kind == "none"
    assert dj.collect(model.apply, variables, list(zip(xs, ys)), max_batches=2, progress=False).n == 64


def test_layer_by_name_and_last_dense(setup):
    model, variables, xs, _ = setup
    assert dj.last_dense(model.apply, variables, xs[0]) == "head"
    stats = dj.collect(model.apply, variables, xs, layer="penult", progress=False)
    assert (stats.p, stats.C) == (16, 16)
    nested = Nested()
    v = nested.init(jax.random.PRNGKey(1), xs[0])
    assert dj.last_dense(nested.apply, v, xs[0]) == "Dense_0"
    assert dj.collect(nested.apply, v, xs, layer="block/Dense_0", progress=False).p == 5
    assert dj.collect(nested.apply, v, xs, layer=("block", "Dense_0"), progress=False).C == 8


def test_errors(setup):
    model, variables, xs, _ = setup
    with pytest.raises(ValueError, match="no module with path 'nope'"):
        dj.collect(model.apply, variables, xs, layer="nope", progress=False)
    nd = NoDense()
    v = nd.init(jax.random.PRNGKey(0), xs[0])
    with pytest.raises(ValueError, match="no flax.linen.Dense"):
        dj.collect(nd.apply, v, xs, progress=False)
    with pytest.raises(ValueError, match="empty"):
        dj.collect(model.apply, variables, [], progress=False)
    with pytest.raises(ValueError, match="input key"):
        dj.collect(model.apply, variables, [{"foo": xs[0]}], progress=False)


def test_collect_fn_matches(setup):
    model, variables, xs, ys = setup
    feats, outs = hand(model, variables, xs)

    def fo(x):
        p = variables["params"]
        h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        h = nn.relu(h @ p["penult"]["kernel"] + p["penult"]["bias"])
        return h, h @ p["head"]["kernel"] + p["head"]["bias"]

    stats = dj.collect_fn(fo, list(zip(xs, ys)), progress=False)
    assert stats.label_kind == "classes"
    assert abs(stats.result().value - dlrcore.dlr(feats, outs).value) < 1e-6
    assert abs(dj.collect_fn(jax.jit(fo), xs, progress=False).result().value - stats.result().value) < 1e-12


def test_import_dlrcore_does_not_import_jax():
    code = "import sys, dlrcore; print(any(m in sys.modules for m in ('jax', 'flax', 'tensorflow', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class Twice(nn.Module):
    @nn.compact
    def __call__(self, x):
        d = nn.Dense(5)
        return d(d(x))


class TokenHead(nn.Module):
    @nn.compact
    def __call__(self, x):  # (batch, seq, 5) -> (batch, seq, 3)
        return nn.Dense(3)(nn.relu(nn.Dense(6)(x)))


def test_ambiguous_tokens_and_batch_to_input():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    tw = Twice()
    v = tw.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="ambiguous"):
        dj.collect(tw.apply, v, [x], progress=False)
    seq = rng.normal(size=(4, 7, 5)).astype(np.float32)
    th = TokenHead()
    v = th.init(jax.random.PRNGKey(0), seq)
    tok_labels = rng.integers(0, 3, size=(4, 7))
    stats = dj.collect(th.apply, v, [(seq, tok_labels)], progress=False)
    assert (stats.n, stats.p, stats.C, stats.label_kind) == (28, 6, 3, "classes")
    stats2 = dj.collect(th.apply, v, [{"tokens": seq}], batch_to_input=lambda b: b["tokens"], progress=False)
    assert abs(stats2.result().value - stats.result().value) < 1e-12
