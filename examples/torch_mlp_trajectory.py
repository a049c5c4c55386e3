"""PyTorch example: train a small MLP for a few epochs and plot D_LR over training.

Run ``python examples/torch_mlp_trajectory.py`` (about 20 s on 2 CPU cores; add ``--quick`` for a few seconds).
The task is the built-in demo's synthetic sector classification (no download); the network is trained with MSE
on one-hot targets, the regime where D_LR is meaningful (see docs/dlr.md). Writes ``torch_trajectory.png``,
``torch_spectrum.png`` and ``torch_records.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import dlrcore
import dlrcore.plot
from dlrcore.adapters.torch import Tracker, collect
from dlrcore.demo import make_task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    n_train, epochs = (1000, 10) if args.quick else (3000, 40)
    x_tr, y_tr, x_te, y_te = make_task(0, n_train, 1000, input_dim=64, num_classes=4)
    train = torch.utils.data.TensorDataset(torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr))
    test = torch.utils.data.TensorDataset(torch.tensor(x_te, dtype=torch.float32), torch.tensor(y_te))
    loader = torch.utils.data.DataLoader(train, batch_size=100, shuffle=True)
    held_out = torch.utils.data.DataLoader(test, batch_size=500)

    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.5)
    tracker = Tracker(model, held_out, every=len(loader) * 2, progress=False)
    step = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), nn.functional.one_hot(y, 4).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % tracker.every == 0:
                with torch.no_grad():
                    acc = float((model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean())
                tracker.step(step, test_acc=acc)
            step += 1

    dlrcore.plot.trajectory(tracker.records, path=out / "torch_trajectory.png", title="MLP trained with MSE")
    stats = collect(model, held_out, progress=False)  # labels come from the (x, y) batches
    dlrcore.plot.spectrum([stats.spectrum(name="trained MLP")], path=out / "torch_spectrum.png")
    (out / "torch_records.json").write_text(json.dumps(tracker.records, indent=2, default=float))
    first, last = tracker.records[0], tracker.records[-1]
    print(f"D_LR {first['dlr']:.3f} at step {first['step']} -> {last['dlr']:.3f} at step {last['step']}; "
          f"test accuracy {last['test_acc']:.3f}; NC1 {stats.nc1().value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
