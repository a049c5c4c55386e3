"""DLRCallback with a real PyTorch Lightning Trainer on CPU (no mocks)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
try:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
except ImportError:  # pragma: no cover - the older package name
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import CSVLogger

from torch import nn  # noqa: E402

import dlrcore.adapters.torch as dt  # noqa: E402
from dlrcore.adapters.torch import collect  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(val_dataloader|LeafSpec|logging interval|num_workers).*"
)


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data(n: int, seed: int, bs: int = 16) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs)


def _trainer(tmp_path, callbacks, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_steps=kw.pop("max_steps", 7),
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(tmp_path)),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kw,
    )


class _Snapshot(pl.Callback):
    """Keeps a copy of the weights after every optimizer step, to recompute D_LR with collect()."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer, pl_module):
        self.states[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_import_does_not_import_lightning():
    code = (
        "import sys, dlrcore.adapters.torch; "
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_callback_every_n_steps(tmp_path):
    torch.manual_seed(0)
    held_out = _data(48, seed=1)
    cb = dt.DLRCallback(held_out, every_n_steps=3, spectrum=True)
    assert isinstance(cb, pl.Callback)
    snap = _Snapshot()
    module = TinyModule()
    trainer = _trainer(tmp_path, [snap, cb], max_steps=7, limit_val_batches=0)
    trainer.fit(module, _data(160, seed=0))
    assert [r["step"] for r in cb.records] == [0, 3, 6]
    assert module.training  # training mode restored after every measurement
    # the values are those of collect() on the model as it was at that step
    probe = TinyModule()
    for rec in cb.records:
        probe.load_state_dict(snap.states[rec["step"]])
        want = collect(probe, held_out, progress=False).result()
        assert abs(rec["dlr"] - want.value) < 1e-12 and abs(rec["dlr_sqrt"] - want.value_sqrt) < 1e-12
        assert rec["output_rank"] == want.output_rank and rec["n"] == 48 and rec["C"] == 3
        assert "spectrum" in rec and rec["epoch"] == 0
    # logged to the CSV logger at the measured steps
    trainer.logger.save()
    with open(f"{trainer.logger.log_dir}/metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("dlr/value")]
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert abs(float(rows[-1]["dlr/value"]) - cb.records[-1]["dlr"]) < 1e-6
    assert abs(float(rows[-1]["dlr/span"]) - cb.records[-1]["dlr_span"]) < 1e-6
    assert abs(float(rows[-1]["dlr/sqrt"]) - cb.records[-1]["dlr_sqrt"]) < 1e-6
    assert {"dlr/output_rank", "dlr/output_effective_rank", "dlr/constant_share"} <= set(rows[0])
    assert "dlr/value" in trainer.callback_metrics


def test_callback_on_validation_end_and_prefix(tmp_path):
    torch.manual_seed(0)
    held_out = _data(32, seed=2)
    cb = dt.DLRCallback(held_out, every_n_steps=None, on_validation_end=True, log_prefix="probe_", max_batches=1)
    trainer = _trainer(tmp_path, [cb], max_steps=8, val_check_interval=4, num_sanity_val_steps=1)
    trainer.fit(TinyModule(), _data(128, seed=0), _data(32, seed=3))
    assert [r["step"] for r in cb.records] == [4, 8]  # no record from the sanity check
    assert all(r["n"] == 16 for r in cb.records)  # max_batches=1 passed on to collect()
    assert "probe_value" in trainer.callback_metrics
    from dlrcore.plot import trajectory  # records feed the trajectory figure

    pytest.importorskip("matplotlib")
    trajectory(cb.records, tmp_path / "traj.png")
    assert (tmp_path / "traj.png").stat().st_size > 0


def test_callback_arguments():
    with pytest.raises(ValueError):
        dt.DLRCallback([torch.zeros(2, 5)], every_n_steps=None)
    with pytest.raises(ValueError):
        dt.DLRCallback([torch.zeros(2, 5)], every_n_steps=0)
    assert dt.lightning_callback_class() is dt.DLRCallback


def test_callback_pickles():
    import pickle

    cb = dt.DLRCallback([torch.zeros(2, 5)], every_n_steps=2)
    back = pickle.loads(pickle.dumps(cb))
    assert type(back) is dt.DLRCallback and back.every_n_steps == 2 and back.records == []
