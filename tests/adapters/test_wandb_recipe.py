"""The Weights & Biases recipe of docs/adapters.md, run offline (issue 15): Tracker records logged with
``run.log(..., step=...)``, and the Hugging Face Trainer reporting to W&B, read back from the run's ``.wandb`` file.

An offline run writes no summary or history JSON; everything it would sync is in ``run-<id>.wandb``, a LevelDB-style
log of protobuf records (``wandb.proto.wandb_internal_pb2.Record``). :func:`_wandb_records` reads that format
(32 KiB blocks, 7-byte chunk headers) for the version tested; it skips when the file does not start as expected.
``run.finish()`` may return before the file is written out, so the reader waits for the run's exit record."""

from __future__ import annotations

import json
import struct
import time
import warnings
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")
torch = pytest.importorskip("torch")

from dlrcore.adapters.tensorboard import record_scalars  # noqa: E402
from dlrcore.adapters.torch import Tracker  # noqa: E402

BLOCK = 32 * 1024


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_DATA_DIR": str(tmp_path / "data"),
                       "WANDB_PROJECT": "dlrcore-test"}.items():
        monkeypatch.setenv(var, value)
    yield tmp_path
    wandb.teardown()  # the next wandb.init reads the environment afresh


def _wandb_records(run_dir: Path, wait: float = 30.0) -> tuple[list[dict], dict]:
    """(history rows, final summary) of the offline run in ``run_dir``, once its exit record is written."""
    deadline = time.monotonic() + wait
    while True:
        history, summary, done = _read_run(run_dir)
        if done or time.monotonic() > deadline:
            assert done, f"no exit record in {run_dir} after {wait} s"
            return history, summary
        time.sleep(0.1)


def _read_run(run_dir: Path) -> tuple[list[dict], dict, bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    files = list(run_dir.glob("run-*.wandb"))
    assert len(files) == 1, files
    raw = files[0].read_bytes()
    if len(raw) >= 4 and raw[:4] != b":W&B":
        pytest.skip(f"unknown .wandb file layout in wandb {wandb.__version__}")
    done = False
    history: list[dict] = []
    summary: dict = {}
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        room = BLOCK - pos % BLOCK
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            pending = data
        elif kind in (3, 4):  # middle, last
            pending += data
        if kind not in (1, 4):
            continue
        rec = pb.Record()
        rec.ParseFromString(pending)
        which = rec.WhichOneof("record_type")
        done = done or which == "exit"
        if which == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
        elif which == "summary":
            summary.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.summary.update})
    return history, summary, done


def test_tracker_records_to_wandb_offline(offline):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 10), torch.nn.Tanh(), torch.nn.Linear(10, 3))
    held_out = [(torch.randn(50, 4), torch.randint(0, 3, (50,)))]
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    tracker = Tracker(net, held_out, every=5)

    run = wandb.init(project="dlrcore-test", dir=str(offline))  # the recipe of docs/adapters.md
    for step in range(11):
        x, y = held_out[0]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        rec = tracker.step(step)
        if rec is not None:
            run.log({f"dlr/{k}": v for k, v in record_scalars(rec).items()}, step=rec["step"])
    run.finish()

    history, summary = _wandb_records(Path(run.dir).parent)
    assert [h["_step"] for h in history] == [0, 5, 10]
    assert [h["dlr/value"] for h in history] == pytest.approx([r["dlr"] for r in tracker.records], abs=1e-12)
    assert [h["dlr/sqrt"] for h in history] == pytest.approx([r["dlr_sqrt"] for r in tracker.records], abs=1e-12)
    assert summary["dlr/value"] == pytest.approx(tracker.records[-1]["dlr"], abs=1e-12)


def test_trainer_callback_reaches_the_wandb_reporter(offline):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from dlrcore.adapters.hf import DLRTrainerCallback

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=40, max_position_embeddings=8, num_labels=2)
    g = torch.Generator().manual_seed(0)
    train = [{"input_ids": torch.randint(1, 40, (8,), generator=g), "labels": i % 2} for i in range(32)]
    held_out = [{"input_ids": torch.randint(1, 40, (16, 8), generator=g),
                 "labels": torch.randint(0, 2, (16,), generator=g)}]
    args = transformers.TrainingArguments(output_dir=str(offline / "out"), max_steps=4, logging_steps=2,
                                          report_to=["wandb"], use_cpu=True, per_device_train_batch_size=8,
                                          save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=transformers.BertForSequenceClassification(cfg), args=args,
                                   train_dataset=train)
    cb = DLRTrainerCallback(held_out, every_n_steps=2, output_kernel="sqrt").attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        trainer.train()
    run_dir = Path(wandb.run.dir).parent  # the run HF's reporter started
    wandb.finish()
    history, _ = _wandb_records(run_dir)
    rows = [h for h in history if "eval/dlr" in h]  # HF's reporter files eval_* under eval/
    assert [h["train/global_step"] for h in rows] == [0, 2, 4]
    assert [h["eval/dlr"] for h in rows] == pytest.approx([r["dlr_sqrt"] for r in cb.records], abs=1e-12)
    assert any("train/loss" in h for h in history)
