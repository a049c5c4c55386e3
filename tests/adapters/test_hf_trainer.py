"""DLRTrainerCallback with a real transformers Trainer on a tiny BERT built from a config (issue 15): no downloads,
no mocks. The values must come back from ``trainer.state.log_history`` (the trainer's own log) at the steps asked
for, reach a reporter (TensorBoard) when one is configured, and leave the trainer's own loss logging alone."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

from dlrcore.adapters.hf import DLRTrainerCallback, collect_hf  # noqa: E402

torch.set_num_threads(1)
VOCAB, SEQ, CLASSES = 50, 8, 3
KEYS = ("eval_dlr", "eval_dlr_span", "eval_dlr_sqrt")


class Examples(torch.utils.data.Dataset):
    """Token-id examples with padding, a class label and a column the model does not take (``idx``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 10_000 + i)
        length = int(torch.randint(3, SEQ + 1, (1,), generator=g))
        mask = (torch.arange(SEQ) < length).long()
        return {"input_ids": torch.randint(1, VOCAB, (SEQ,), generator=g) * mask, "attention_mask": mask,
                "labels": i % CLASSES, "idx": i}


def _model() -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=VOCAB, max_position_embeddings=SEQ, num_labels=CLASSES)
    return transformers.BertForSequenceClassification(cfg)


def _trainer(tmp_path, callbacks=None, **args) -> transformers.Trainer:
    defaults = dict(output_dir=str(tmp_path / "out"), max_steps=6, logging_steps=1, report_to=[], use_cpu=True,
                    per_device_train_batch_size=8, per_device_eval_batch_size=16, save_strategy="no",
                    disable_tqdm=True, learning_rate=5e-3, seed=0)
    return transformers.Trainer(model=_model(), args=transformers.TrainingArguments(**{**defaults, **args}),
                                train_dataset=Examples(48, 1), eval_dataset=Examples(24, 2), callbacks=callbacks)


def _dlr_entries(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "eval_dlr" in e]


def test_trainer_logs_dlr_and_dhalf_every_n_steps(tmp_path):
    trainer = _trainer(tmp_path)
    held_out = Examples(40, 3)
    cb = DLRTrainerCallback(held_out, every_n_steps=2).attach(trainer)
    assert cb.attach(trainer) is cb and sum(c is cb for c in trainer.callback_handler.callbacks) == 1
    trainer.train()

    entries = _dlr_entries(trainer)
    assert [e["step"] for e in entries] == [0, 2, 4, 6]
    for e in entries:
        assert all(0.0 <= e[k] <= 1.0 for k in KEYS)
        assert e["eval_dlr"] == e["eval_dlr_span"]  # the literal D_LR is the primary value by default
        assert e["eval_dlr_output_rank"] == CLASSES and "epoch" in e
    # the trainer's own logging is untouched: a loss at every step, D_LR in entries of its own
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert not any("loss" in e for e in entries)
    # records mirror the log, and measure the held-out set (40 sequences, one [CLS] sample each)
    assert [r["step"] for r in cb.records] == [0, 2, 4, 6]
    assert all(r["n"] == 40 and r["C"] == CLASSES for r in cb.records)
    assert [r["dlr_sqrt"] for r in cb.records] == [e["eval_dlr_sqrt"] for e in entries]
    assert entries[0]["eval_dlr"] != entries[-1]["eval_dlr"]  # the model trained in between
    # the last value is what collect_hf gives on the trained model, batched the same way
    batches = [transformers.default_data_collator([{k: v for k, v in held_out[i].items() if k != "idx"}
                                                   for i in range(j, min(j + 16, 40))]) for j in range(0, 40, 16)]
    want = collect_hf(trainer.model, batches, progress=False).result()
    assert entries[-1]["eval_dlr"] == pytest.approx(want.value, abs=1e-9)
    assert entries[-1]["eval_dlr_sqrt"] == pytest.approx(want.value_sqrt, abs=1e-9)
    assert trainer.model.training  # collect_hf restored the training mode


def test_measures_after_evaluation_into_its_metrics(tmp_path):
    trainer = _trainer(tmp_path, eval_strategy="steps", eval_steps=3)
    cb = DLRTrainerCallback(Examples(32, 4), every_n_steps=None, on_evaluate=True, output_kernel="sqrt",
                            spectrum=True, batch_size=8, max_batches=3).attach(trainer)
    trainer.train()
    entries = _dlr_entries(trainer)
    assert [e["step"] for e in entries] == [3, 6]
    assert all(e["eval_dlr"] == e["eval_dlr_sqrt"] for e in entries)  # output_kernel="sqrt": D_half is primary
    assert [r["n"] for r in cb.records] == [24, 24]  # max_batches=3 of batch_size=8
    assert "spectrum" in cb.records[0] and cb.records[0]["spectrum"]["k"] >= 1
    metrics = trainer.evaluate()  # same step: not measured again, but the values join the metrics
    assert metrics["eval_dlr_sqrt"] == entries[-1]["eval_dlr_sqrt"] and len(cb.records) == 2


def test_without_the_trainer_values_reach_the_history_with_a_warning(tmp_path):
    g = torch.Generator().manual_seed(5)
    batches = [{"input_ids": torch.randint(1, VOCAB, (10, SEQ), generator=g),
                "labels": torch.randint(0, CLASSES, (10,), generator=g)} for _ in range(2)]
    cb = DLRTrainerCallback(batches, every_n_steps=3)  # a list of batches, read as it is
    trainer = _trainer(tmp_path, callbacks=[cb])
    with pytest.warns(UserWarning, match="no reporter"):
        trainer.train()
    assert [e["step"] for e in _dlr_entries(trainer)] == [0, 3, 6]
    assert [r["n"] for r in cb.records] == [20, 20, 20]


def test_reaches_the_tensorboard_reporter(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    trainer = _trainer(tmp_path, max_steps=4, report_to=["tensorboard"])  # logs under output_dir/runs/
    cb = DLRTrainerCallback(Examples(16, 6), every_n_steps=2).attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        trainer.train()
    seen: dict[str, list[tuple[int, float]]] = {}
    for path in (tmp_path / "out").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name != "scalars":
                    continue  # the run's arguments and model config, written as text
                seen.setdefault(v.tag, []).append((event.step, float(tensor_util.make_ndarray(v.tensor))))
    # HF's reporter files eval_* under eval/
    assert [s for s, _ in seen["eval/dlr"]] == [0, 2, 4]
    assert [v for _, v in seen["eval/dlr_sqrt"]] == pytest.approx([r["dlr_sqrt"] for r in cb.records], abs=1e-6)
    assert "train/loss" in seen


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="never measures"):
        DLRTrainerCallback([], every_n_steps=None)
    with pytest.raises(TypeError):
        DLRTrainerCallback([], every_n_steps=5, no_such_option=1)
    with pytest.raises(ValueError):
        DLRTrainerCallback([], every_n_steps=0)
    cb = DLRTrainerCallback([], every_n_steps=5, log_prefix="val_")
    assert cb.log_names({"dlr": 0.5, "dlr_span": 0.5, "dlr_sqrt": 0.1, "output_rank": 2}) == {
        "val_dlr": 0.5, "val_dlr_span": 0.5, "val_dlr_sqrt": 0.1, "val_dlr_output_rank": 2.0}
