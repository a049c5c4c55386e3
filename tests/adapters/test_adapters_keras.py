"""The Keras 3 adapter against the real framework: D_LR equals dlrcore.dlr on hand-extracted arrays."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import dlrcore  # noqa: E402
from dlrcore.adapters.keras import DLRKerasCallback, collect, feature_model  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(16, activation="tanh", name="hidden"),
            keras.layers.Dense(12, activation="relu", name="penult"),
            keras.layers.Dense(4, name="head"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5)).astype(np.float32)
    y = rng.integers(0, 4, size=100)
    return model, x, y


def hand(model, x):
    """Penultimate activations and logits computed by hand from the weights."""

    def dense(h, name):
        w, b = model.get_layer(name).get_weights()
        return h @ w.astype(np.float64) + b.astype(np.float64)

    h = np.tanh(dense(x.astype(np.float64), "hidden"))
    h = np.maximum(dense(h, "penult"), 0.0)
    return h, dense(h, "head")


def test_matches_hand_extracted(setup):
    model, x, y = setup
    feats, outs = hand(model, x)
    ref = dlrcore.dlr(feats, outs).value
    stats = collect(model, x, batch_size=32, progress=False)
    assert (stats.n, stats.p, stats.C, stats.label_kind) == (100, 12, 4, "none")
    assert abs(stats.result().value - ref) < 1e-6
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(40)
    st = collect(model, ds, progress=False)
    assert st.label_kind == "classes" and st.n == 100
    assert abs(st.result().value - ref) < 1e-6


def test_labels_and_sources(setup):
    model, x, y = setup
    tup = collect(model, (x, y), batch_size=30, progress=False)
    dic = collect(model, [{"x": x[i : i + 25], "label": y[i : i + 25]} for i in range(0, 100, 25)], progress=False)
    gen = collect(model, ((x[i : i + 50], y[i : i + 50]) for i in range(0, 100, 50)), progress=False)
    assert tup.label_kind == dic.label_kind == gen.label_kind == "classes"
    assert abs(tup.result().value - dic.result().value) < 1e-9
    assert abs(tup.result().value - gen.result().value) < 1e-9
    assert collect(model, (x, y), labels=False, progress=False).label_kind == "none"
    assert collect(model, (x, y), batch_size=10, max_batches=3, progress=False).n == 30


def test_layer_by_name_and_errors(setup):
    model, x, _ = setup
    stats = collect(model, x, "penult", progress=False)
    assert (stats.p, stats.C) == (16, 12)
    assert feature_model(model)[0] == "head"
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        collect(model, x, "nope", progress=False)
    inp = keras.Input((5,))
    nodense = keras.Model(inp, keras.layers.Activation("relu")(inp))
    with pytest.raises(ValueError, match="no keras.layers.Dense"):
        collect(nodense, x, progress=False)
    with pytest.raises(ValueError, match="empty"):
        collect(model, [], progress=False)


def test_fit_with_callback(setup):
    model, x, y = setup
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    cb = DLRKerasCallback((x, y), every_n_epochs=1)
    hist = model.fit(x, y, epochs=2, batch_size=50, verbose=0, callbacks=[cb])
    assert len(hist.history["dlr"]) == 2
    assert [r["epoch"] for r in cb.records] == [1, 2]
    assert [r["step"] for r in cb.records] == [2, 4]
    assert "accuracy" in cb.records[0]
    feats, outs = hand(model, x)
    want = dlrcore.dlr(feats, outs)
    assert abs(cb.records[-1]["dlr"] - want.value) < 1e-6
    assert hist.history["dlr"][-1] == cb.records[-1]["dlr"]
    # both measures are logged beside the chosen one
    assert abs(hist.history["dlr_sqrt"][-1] - want.value_sqrt) < 1e-6
    assert hist.history["dlr_span"][-1] == hist.history["dlr"][-1]
    half = DLRKerasCallback((x, y), key="d", output_kernel="sqrt")
    hist = model.fit(x, y, epochs=1, batch_size=50, verbose=0, callbacks=[half])
    feats, outs = hand(model, x)
    assert abs(hist.history["d"][-1] - dlrcore.dlr(feats, outs).value_sqrt) < 1e-6
    assert hist.history["d"][-1] == hist.history["d_sqrt"][-1] != hist.history["d_span"][-1]
    steps = DLRKerasCallback(x, every_n_steps=3)
    model.fit(x, y, epochs=2, batch_size=50, verbose=0, callbacks=[steps])
    assert [r["step"] for r in steps.records] == [3]
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from dlrcore.plot import trajectory

    fig = trajectory(cb.records, x="epoch")
    assert fig.axes


def test_import_dlrcore_does_not_import_tf():
    code = "import sys, dlrcore; print(any(m in sys.modules for m in ('jax', 'flax', 'tensorflow', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tf_data_dicts(setup):
    model, x, y = setup
    ds = tf.data.Dataset.from_tensor_slices({"x": x, "label": y}).batch(33)
    stats = collect(model, ds, progress=False)
    ref = collect(model, (x, y), progress=False)
    assert stats.label_kind == "classes" and stats.n == 100
    assert abs(stats.result().value - ref.result().value) < 1e-9


def test_whole_tensors(setup):
    model, x, y = setup
    stats = collect(model, (tf.constant(x), tf.constant(y)), batch_size=64, progress=False)
    ref = collect(model, (x, y), progress=False)
    assert stats.n == 100 and stats.label_kind == "classes"
    assert abs(stats.result().value - ref.result().value) < 1e-9
