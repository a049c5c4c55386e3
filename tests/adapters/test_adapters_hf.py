"""collect_hf with tiny randomly initialised Hugging Face transformers models (no downloads, no mocks)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import dlrcore  # noqa: E402
from dlrcore.adapters.torch import collect_hf  # noqa: E402

torch.set_num_threads(1)
VOCAB = 1000


@pytest.fixture(scope="module")
def gpt2() -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def bert() -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=4,
    )
    return transformers.BertForSequenceClassification(cfg)


def _batches(seed: int, n_batches: int = 3, b: int = 6, t: int = 12, left: bool = False) -> list[dict]:
    """Token batches with random lengths, padded on the right (or left) with attention_mask 0."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(0, VOCAB, (b, t), generator=g)
        lengths = torch.randint(3, t + 1, (b,), generator=g)
        pos = torch.arange(t).expand(b, t)
        mask = (pos >= t - lengths[:, None]) if left else (pos < lengths[:, None])
        out.append({"input_ids": ids, "attention_mask": mask.long(), "labels": torch.randint(0, 4, (b,), generator=g)})
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _gpt2_rows(model, batches, pooling: str) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for bt in batches:
            h = model.transformer(input_ids=bt["input_ids"], attention_mask=bt["attention_mask"]).last_hidden_state
            m = bt["attention_mask"].bool()
            for i in range(h.shape[0]):
                real = torch.nonzero(m[i]).flatten()
                if pooling == "tokens":
                    rows.append(h[i, real])
                elif pooling == "mean":
                    rows.append(h[i, real].double().mean(dim=0, keepdim=True))
                elif pooling == "last":
                    rows.append(h[i, real[-1:]])
                else:
                    rows.append(h[i, real[:1]])
    return np.concatenate([_np(r) for r in rows])


@pytest.mark.parametrize("pooling", ["tokens", "mean", "last", "cls"])
@pytest.mark.parametrize("left", [False, True])
def test_gpt2_lm_head_weights_path(gpt2, pooling, left):
    batches = _batches(1, left=left)
    gpt2.train()
    fired = []
    probe = gpt2.lm_head.register_forward_hook(lambda *a: fired.append(1))
    try:
        st = collect_hf(gpt2, batches, pooling=pooling, progress=False)
    finally:
        probe.remove()
    assert not fired, "the LM head must not be run (no n x vocab logits)"
    assert gpt2.training and all(m.training for m in gpt2.modules())  # modes restored
    assert not gpt2.lm_head._forward_pre_hooks and not gpt2.lm_head._forward_hooks  # hooks removed
    assert st.weights_mode and st.C == VOCAB and st.p == 32
    gpt2.eval()  # hand extraction without dropout
    feats = _gpt2_rows(gpt2, batches, pooling)
    n_real = int(sum(bt["attention_mask"].sum() for bt in batches))
    assert st.n == (n_real if pooling == "tokens" else 18) == feats.shape[0]
    want = dlrcore.dlr_from_weights(feats, _np(gpt2.lm_head.weight), None)
    assert abs(st.result().value - want.value) < 1e-6
    if pooling == "tokens":  # same as the explicit logits of the real tokens
        with torch.no_grad():
            logits = np.concatenate(
                [_np(gpt2(**{k: v for k, v in bt.items() if k != "labels"}).logits[bt["attention_mask"].bool()])
                 for bt in batches]
            )
        assert abs(st.result().value - dlrcore.dlr(feats, logits).value) < 1e-6


def test_gpt2_padding_tokens_excluded(gpt2):
    batches = _batches(2)
    st = collect_hf(gpt2, batches, progress=False)
    # other ids at the padded positions change nothing (causal model, right padding, padding skipped)
    changed = []
    for bt in batches:
        ids = bt["input_ids"].clone()
        ids[bt["attention_mask"] == 0] = 7
        changed.append({**bt, "input_ids": ids})
    st2 = collect_hf(gpt2, changed, progress=False)
    assert st2.n == st.n
    assert abs(st2.result().value - st.result().value) < 1e-6
    # and without the mask every position counts
    no_mask = [{"input_ids": bt["input_ids"]} for bt in batches]
    assert collect_hf(gpt2, no_mask, progress=False).n == sum(bt["input_ids"].numel() for bt in batches)


def test_bert_sequence_classification(bert):
    batches = _batches(3)
    bert.eval()
    st = collect_hf(bert, batches, progress=False, num_classes=4)
    assert not st.weights_mode and st.n == 18 and st.C == 4 and st.label_kind == "classes"
    with torch.no_grad():
        feats = np.concatenate(
            [_np(bert.bert(input_ids=bt["input_ids"], attention_mask=bt["attention_mask"]).pooler_output)
             for bt in batches]
        )
        logits = np.concatenate(
            [_np(bert(input_ids=bt["input_ids"], attention_mask=bt["attention_mask"]).logits) for bt in batches]
        )
    assert abs(st.result().value - dlrcore.dlr(feats, logits).value) < 1e-6
    # the weights-aware path on the classifier gives the same value
    w, b = bert.classifier.weight, bert.classifier.bias
    st_w = collect_hf(bert, batches, weights=True, progress=False)
    assert st_w.weights_mode
    assert abs(st_w.result().value - dlrcore.dlr_from_weights(feats, _np(w), _np(b)).value) < 1e-6
    assert abs(st_w.result().value - st.result().value) < 1e-6
    # labels: class ids picked up per sequence, NC1 available
    labels = np.concatenate([bt["labels"].numpy() for bt in batches])
    want_nc1 = dlrcore.nc1(feats, labels).value
    assert abs(st.nc1().value - want_nc1) < 1e-6 * max(1.0, abs(want_nc1))


def test_bert_head_error_leaves_model_clean(bert):
    bert.train()
    bad = [{"input_ids": torch.full((2, 5), VOCAB + 5)}]  # out-of-range ids: the embedding raises
    with pytest.raises((IndexError, RuntimeError)):
        collect_hf(bert, bad, progress=False)
    assert bert.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in bert.modules())


def test_max_batches_and_arguments(gpt2):
    batches = _batches(4, n_batches=3)
    st = collect_hf(gpt2, batches, max_batches=1, progress=False)
    assert st.n == int(batches[0]["attention_mask"].sum())
    with pytest.raises(ValueError):
        collect_hf(gpt2, batches, pooling="max")
    with pytest.raises(ValueError):
        collect_hf(gpt2, [], progress=False)
    # a plain input_ids tensor is accepted
    assert collect_hf(gpt2, [batches[0]["input_ids"]], progress=False).n == batches[0]["input_ids"].numel()


def test_batch_encoding_batches(gpt2):
    batches = _batches(5, n_batches=2)
    enc = [transformers.BatchEncoding(dict(bt)) for bt in batches]
    a = collect_hf(gpt2, enc, progress=False)
    b = collect_hf(gpt2, batches, progress=False)
    assert a.n == b.n and abs(a.result().value - b.result().value) < 1e-12
