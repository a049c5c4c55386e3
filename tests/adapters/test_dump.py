"""`collect(..., dump=DIR)` writes the rows it saw for the command line (issue 15): `dlr compute` on the dumped
files gives the statistics `collect` returned (the same float64 moments of the same rows, so the values agree to
the rounding of another batch split, 1e-10)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrcore import cli
from dlrcore.npy_writer import NpyRowWriter

torch = pytest.importorskip("torch")


def test_npy_rows_written_in_pieces_read_back_whole(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(k, 7)).astype(dt) for k, dt in ((5, ">f8"), (0, "<f8"), (11, "<f8"))]
    with NpyRowWriter(tmp_path / "x.npy") as w:
        for part in parts:
            w.append(part)
    back = np.load(tmp_path / "x.npy")
    assert back.shape == (16, 7) and back.dtype == np.float64
    assert np.array_equal(back, np.concatenate(parts).astype(np.float64))
    with NpyRowWriter(tmp_path / "ids.npy") as w:
        w.append(np.arange(3))
        w.append(np.arange(2))
    assert np.load(tmp_path / "ids.npy").tolist() == [0, 1, 2, 0, 1]


def test_collect_dumps_what_the_cli_measures_the_same(tmp_path, capsys):
    from dlrcore.adapters.torch import collect

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    data = [(torch.randn(40, 6), torch.randint(0, 3, (40,))) for _ in range(5)]
    stats = collect(model, data, progress=False, dump=tmp_path / "run")
    feats, outs, labels = (np.load(tmp_path / "run" / f"{k}.npy") for k in ("features", "outputs", "labels"))
    assert feats.shape == (200, 16) and outs.shape == (200, 3) and labels.shape == (200,)
    assert labels.dtype.kind == "i"
    capsys.readouterr()
    code = cli.main(["compute", str(tmp_path / "run/features.npy"), str(tmp_path / "run/outputs.npy"),
                     "--labels", str(tmp_path / "run/labels.npy"), "--json", "--batch-size", "70"])
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    want = stats.result()
    assert got["n"] == want.n == 200
    assert abs(got["value"] - want.value) <= 1e-10 and abs(got["value_sqrt"] - want.value_sqrt) <= 1e-10
    assert abs(got["nc1"]["value"] - stats.nc1().value) <= 1e-10 * max(1.0, stats.nc1().value)
    with pytest.raises(ValueError, match="without layers"):
        collect(model, data, layers=["0"], dump=tmp_path / "no")
