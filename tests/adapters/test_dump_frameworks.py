"""``dump=DIR`` in the JAX, Keras and Hugging Face collectors (issue 15): ``dlr compute`` on the dumped files gives
the statistics the collector returned (the same float64 moments of the same rows, so the values agree to the
rounding of another batch split). The torch collector's dump is tested in test_dump.py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dlrcore import cli
from dlrcore.adapters.loop import host_rows
from dlrcore.npy_writer import ArrayDump

os.environ.setdefault("JAX_PLATFORMS", "cpu")
TOL = 1e-10


def _cli(capsys, folder, *extra: str) -> dict:
    capsys.readouterr()
    files = [os.path.join(folder, f) for f in ("features.npy", "outputs.npy")]
    if not os.path.exists(files[1]):
        files = [files[0], "--weight", os.path.join(folder, "weight.npy")]
        if os.path.exists(os.path.join(folder, "bias.npy")):
            files += ["--bias", os.path.join(folder, "bias.npy")]
    if os.path.exists(os.path.join(folder, "labels.npy")):
        files += ["--labels", os.path.join(folder, "labels.npy")]
    assert cli.main(["compute", *files, "--json", "--batch-size", "50", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _same(got: dict, stats, n: int) -> None:
    want = stats.result()
    assert got["n"] == want.n == n
    assert abs(got["value"] - want.value) <= TOL and abs(got["value_sqrt"] - want.value_sqrt) <= TOL
    if stats.label_kind == "classes":
        assert abs(got["nc1"]["value"] - stats.nc1().value) <= TOL * max(1.0, stats.nc1().value)


def test_jax_collect_and_collect_fn_dump(tmp_path, capsys):
    jax = pytest.importorskip("jax")
    nn = pytest.importorskip("flax.linen")
    import dlrcore.adapters.jax as dj

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="head")(nn.tanh(nn.Dense(12)(x)))

    model = MLP()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(k, 5)).astype(np.float32), rng.integers(0, 3, k)) for k in (40, 40, 17)]
    params = model.init(jax.random.PRNGKey(0), batches[0][0])
    stats = dj.collect(model.apply, params, batches, progress=False, dump=tmp_path / "jax")
    feats, outs, labels = (np.load(tmp_path / "jax" / f"{k}.npy") for k in ("features", "outputs", "labels"))
    assert feats.shape == (97, 12) and outs.shape == (97, 3) and labels.shape == (97,) and labels.dtype.kind == "i"
    _same(_cli(capsys, tmp_path / "jax"), stats, 97)

    fn = lambda x: (x, model.apply(params, x))
    st2 = dj.collect_fn(fn, batches, labels=False, progress=False, dump=tmp_path / "fn")
    assert sorted(os.listdir(tmp_path / "fn")) == ["features.npy", "outputs.npy"]
    _same(_cli(capsys, tmp_path / "fn"), st2, 97)


def test_keras_collect_dump(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    from dlrcore.adapters.keras import collect

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(4)])
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(90, 5)).astype("float32"), rng.integers(0, 4, 90)
    stats = collect(model, (x, y), batch_size=32, progress=False, dump=tmp_path / "keras")
    assert np.load(tmp_path / "keras" / "features.npy").shape == (90, 10)
    _same(_cli(capsys, tmp_path / "keras"), stats, 90)


def test_hf_classifier_dump(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from dlrcore.adapters.hf import collect_hf

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=50, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(1, 50, (12, 10), generator=g),
                "labels": torch.randint(0, 3, (12,), generator=g)} for _ in range(4)]
    stats = collect_hf(model, batches, progress=False, dump=tmp_path / "bert")
    assert sorted(os.listdir(tmp_path / "bert")) == ["features.npy", "labels.npy", "outputs.npy"]
    assert np.load(tmp_path / "bert" / "outputs.npy").shape == (48, 3)
    _same(_cli(capsys, tmp_path / "bert"), stats, 48)


def test_hf_lm_head_dump_saves_the_weights_not_the_logits(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from dlrcore.adapters.hf import collect_hf

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=300, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[:, 7:] = 0
    batches = [{"input_ids": torch.randint(0, 300, (6, 9), generator=g), "attention_mask": mask} for _ in range(3)]
    stats = collect_hf(model, batches, progress=False, dump=tmp_path / "lm")
    assert stats.weights_mode
    assert sorted(os.listdir(tmp_path / "lm")) == ["features.npy", "weight.npy"]  # GPT-2's lm_head has no bias
    assert np.load(tmp_path / "lm" / "features.npy").shape == (6 * 7 * 3, 16)  # real tokens only
    assert np.load(tmp_path / "lm" / "weight.npy").shape == (300, 16)
    _same(_cli(capsys, tmp_path / "lm"), stats, 126)


def test_row_dump_and_host_rows(tmp_path):
    torch = pytest.importorskip("torch")
    half = torch.ones(2, 3, dtype=torch.bfloat16)
    assert host_rows(half).dtype == np.float32  # bfloat16 has no NumPy dtype: widened
    with ArrayDump(tmp_path / "d") as dump:
        dump.append(np.ones((2, 3)), None, np.array([0, 1]))
        with pytest.raises(ValueError, match="some batches only"):
            dump.append(np.ones((2, 3)), np.ones((2, 1)), np.array([0, 1]))
        with pytest.raises(ValueError, match="some batches only"):
            dump.append(np.ones((2, 3)), None, None)
    assert sorted(os.listdir(tmp_path / "d")) == ["features.npy", "labels.npy"]
    assert np.load(tmp_path / "d" / "labels.npy").tolist() == [0, 1]
