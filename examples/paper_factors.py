"""Paper experiment: training factors (batch normalization and learning rate) against D_LR and accuracy.

Run ``python examples/paper_factors.py`` (20 runs: 306 s measured on 2 CPU cores shared with other jobs;
``--quick``, the test's size: 68-90 s on the same busy cores).

Nam et al. (ICLR 2026) use D_LR to ask how training factors relate to richness; batch normalization lowers D_LR
sharply (it promotes rich dynamics) and accuracy goes with it, and larger learning rates are the recognised route to
richer dynamics. Here a small CNN is trained on scikit-learn's bundled 8x8 digits (no download, pixels / 16,
1200 train / 597 held-out images) with SGD (momentum 0.9, batch 64) and MSE on one-hot targets (the setting where
D_LR is meaningful, docs/dlr.md), with and without batch normalization, over a learning-rate sweep:

    conv3x3(32) [BN] ReLU  conv3x3(64) [BN] ReLU  maxpool2  conv3x3(64) [BN] ReLU  maxpool2
    linear(256 -> 128) [BN] ReLU  linear(128 -> 10)

D_LR is measured with :func:`dlrcore.adapters.torch.collect` on the held-out images (eval mode, so batch
normalization uses its running statistics) at the input of the last linear layer (the 128 features). Runs whose
loss diverges are recorded as such. Writes ``factors.json`` (one row per setting, mean and standard deviation
over seeds) and ``factors.png`` into ``--out`` (default ``docs/figures/paper``), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlrcore.adapters.torch import collect

NUM_CLASSES = 10


def load_data(seed: int, n_test: int = 597):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, random_state=seed, stratify=y)
    return torch.tensor(x_tr), torch.tensor(y_tr), torch.tensor(x_te), torch.tensor(y_te)


def make_cnn(bn: bool) -> nn.Sequential:
    def block(layer: nn.Module, width: int, two_d: bool = True) -> list[nn.Module]:
        norm = (nn.BatchNorm2d(width) if two_d else nn.BatchNorm1d(width)) if bn else None
        return [layer] + ([norm] if norm is not None else []) + [nn.ReLU()]

    return nn.Sequential(
        *block(nn.Conv2d(1, 32, 3, padding=1), 32),
        *block(nn.Conv2d(32, 64, 3, padding=1), 64),
        nn.MaxPool2d(2),
        *block(nn.Conv2d(64, 64, 3, padding=1), 64),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *block(nn.Linear(256, 128), 128, two_d=False),
        nn.Linear(128, NUM_CLASSES),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, epochs: int, batch: int,
          seed: int) -> float:
    """Train with SGD + momentum and MSE on one-hot targets; the last epoch's mean loss (inf when it diverged)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    target = nn.functional.one_hot(y, NUM_CLASSES).float()
    model.train()
    last = math.inf
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            if len(idx) < 2:  # batch normalization needs two samples
                continue
            loss = nn.functional.mse_loss(model(x[idx]), target[idx])
            if not torch.isfinite(loss):
                return math.inf
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / count
    return last


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    out = model(x)
    if not torch.isfinite(out).all():
        return float("nan")
    return float((out.argmax(1) == y).float().mean())


def run(bn: bool, lr: float, seed: int, args: argparse.Namespace, data) -> dict:
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    model = make_cnn(bn)
    t0 = time.perf_counter()
    loss = train(model, x_tr, y_tr, lr=lr, epochs=args.epochs, batch=args.batch, seed=seed)
    row = {"bn": bn, "lr": lr, "seed": seed, "train_seconds": time.perf_counter() - t0, "final_train_loss": loss}
    row["test_acc"] = accuracy(model, x_te, y_te)
    row["train_acc"] = accuracy(model, x_tr, y_tr)
    row["diverged"] = not (math.isfinite(loss) and math.isfinite(row["test_acc"]))
    if row["diverged"]:
        row.update(dlr=None, dlr_rtol0_1=None, output_effective_rank=None, nc1=None)
        return row
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_te, y_te), batch_size=300)
    threads = torch.get_num_threads()
    stats = collect(model, loader, progress=False, num_classes=NUM_CLASSES)
    # dlrcore's Numba kernel resets OpenMP's thread count, which is also torch's intra-op count: restore it
    torch.set_num_threads(threads)
    res = stats.result()
    row.update(dlr=res.value, dlr_rtol0_1=stats.result(rtol=0.1).value, output_rank=res.output_rank,
               output_effective_rank=res.output_effective_rank, nc1=stats.nc1().value, warnings=list(res.warnings))
    return row


def table(rows: list[dict]) -> list[dict]:
    """One entry per (bn, lr): mean and std over the seeds that did not diverge."""
    out = []
    for bn in (False, True):
        for lr in sorted({r["lr"] for r in rows}):
            group = [r for r in rows if r["bn"] == bn and r["lr"] == lr]
            ok = [r for r in group if not r["diverged"]]
            entry = {"bn": bn, "lr": lr, "runs": len(group), "diverged": len(group) - len(ok)}
            for key in ("dlr", "dlr_rtol0_1", "test_acc", "train_acc", "final_train_loss", "output_effective_rank",
                        "nc1"):
                vals = np.array([r[key] for r in ok], dtype=np.float64)
                entry[key] = float(vals.mean()) if len(vals) else None
                entry[key + "_std"] = float(vals.std()) if len(vals) else None
            out.append(entry)
    return out


def figure(entries: list[dict], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_d, ax_a = fig.subplots(1, 2)
    for bn, color, label in ((False, "C0", "no batch norm"), (True, "C3", "batch norm")):
        es = [e for e in entries if e["bn"] == bn and e["dlr"] is not None]
        lrs = [e["lr"] for e in es]
        ax_d.errorbar(lrs, [e["dlr"] for e in es], yerr=[e["dlr_std"] for e in es], color=color, marker="o",
                      capsize=3, label=label)
        ax_a.errorbar(lrs, [e["test_acc"] for e in es], yerr=[e["test_acc_std"] for e in es], color=color,
                      marker="o", capsize=3, label=label)
    for ax, ylabel in ((ax_d, "D_LR (held-out, lower = richer)"), (ax_a, "held-out accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (SGD, momentum 0.9)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    ax_d.legend(frameon=False)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two learning rates, one seed, fewer epochs")
    ap.add_argument("--seed", type=int, default=0, help="first seed (data split, initialisation, batches)")
    ap.add_argument("--seeds", type=int, default=None, help="default 2, 1 with --quick")
    ap.add_argument("--epochs", type=int, default=None, help="default 20, 10 with --quick")
    ap.add_argument("--lrs", type=float, nargs="+", default=None,
                    help="default 0.003 0.01 0.03 0.1 0.3; 0.01 0.1 with --quick")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", default="docs/figures/paper")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 2
    if args.epochs is None:
        args.epochs = 10 if args.quick else 20
    if args.lrs is None:
        args.lrs = [0.01, 0.1] if args.quick else [0.003, 0.01, 0.03, 0.1, 0.3]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    rows = []
    for i in range(args.seeds):
        seed = args.seed + i
        data = load_data(seed)
        for bn in (False, True):
            for lr in args.lrs:
                rows.append(run(bn, lr, seed, args, data))
    entries = table(rows)
    print(f"small CNN on digits, MSE on one-hot, SGD momentum 0.9, {args.epochs} epochs, {args.seeds} seed(s); "
          "D_LR on held-out images")
    print(f"  {'BN':>3s} {'lr':>7s} {'D_LR':>14s} {'test acc':>14s} {'train loss':>10s} {'diverged':>8s}")
    def fmt(e: dict, k: str) -> str:
        return "-" if e[k] is None else f"{e[k]:.3f} +- {e[k + '_std']:.3f}"

    for e in entries:
        loss = "-" if e["final_train_loss"] is None else f"{e['final_train_loss']:.4f}"
        print(f"  {'yes' if e['bn'] else 'no':>3s} {e['lr']:7.3g} {fmt(e, 'dlr'):>14s} {fmt(e, 'test_acc'):>14s} "
              f"{loss:>10s} {e['diverged']:>4d}/{e['runs']}")
    result = {
        "experiment": "training factors: batch normalization and learning rate",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "dataset": "sklearn digits 8x8, 1200 train / 597 test (stratified), pixels / 16",
        "measured_on": "held-out images, eval mode, input of the last linear layer (128 features)",
        "paper": {"claim": "batch normalization lowers D_LR sharply (promotes rich dynamics)"},
        "table": entries,
        "runs": rows,
        "seconds": time.perf_counter() - t_start,
    }
    (out / "factors.json").write_text(json.dumps(result, indent=1))
    figure(entries, out / "factors.png",
           f"small CNN on digits, MSE, {args.epochs} epochs, mean +- sd over {args.seeds} seed(s)")
    print(f"wrote {out / 'factors.json'} and factors.png in {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
