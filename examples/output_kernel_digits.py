"""Rich and lazy networks under cross-entropy and MSE: the literal D_LR beside D_half (docs/output-kernel.md).

An MLP ``64 -> 256 -> ReLU -> 256 -> ReLU -> 10`` learns scikit-learn's bundled 8x8 digits (no download; 1200
training and 597 held-out images, pixels standardised), full batch Adam, in two regimes and with two losses:

* **rich**: every weight initialised 10x smaller than PyTorch's default (small initialisation), trained with
  lr 1e-3: the hidden weights travel far from their start and the features reorganise around the task;
* **lazy**: the output-scaled, centered model of Chizat, Oyallon and Bach (2019),
  ``f(x) = alpha (g_1(x) - g_2(x)) / sqrt(2)`` with two copies ``g_1 = g_2`` of the MLP at initialisation, so the
  network starts at ``f = 0``, alpha = 1000 and lr 1e-3 / alpha: the hidden weights barely move (the relative
  change is reported) and the network is its own linearisation, a random-features model. Its last linear layer
  acts on the concatenated features ``[h_1, h_2]`` (512 columns) with weight ``alpha [W, -W] / sqrt(2)``.

For each run D_LR is measured on the held-out images with :func:`dlrcore.dlr`: the literal value (output span),
D_half (square-root output kernel), D_half of class-centered logits, and the random-readout baseline of both
(:meth:`dlrcore.DLRStats.baseline`). The second part scores untrained networks with random readouts of growing
width C against their own random-readout baseline: D_half reads low there too, and only the baseline shows why.

Run ``python examples/output_kernel_digits.py`` (3 seeds, about 5 minutes on one core of a busy 2-core machine) or
``--quick`` (what the tests run: one seed, width 64, 300 steps, about 5 s). Writes ``output_kernel_digits.json``
into ``--out`` (default docs/figures/paper) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one thread: the products are small, and torch's and BLAS's pools compete on 2 cores
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np
import torch
from torch import nn

import dlrcore

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
SIZES: dict[str, dict[str, Any]] = {
    "full": {"width": 256, "steps": 1500, "seeds": 3},
    "quick": {"width": 64, "steps": 300, "seeds": 1},
}
RICH_INIT = 0.1  # every weight of the rich network at this fraction of PyTorch's default initialisation
LAZY_ALPHA = 1000.0  # output scale of the lazy (centered, output-scaled) network
LR = 1e-3  # Adam step of the rich network; the lazy one takes LR / LAZY_ALPHA
WIDE_SHARES = (1 / 16, 1 / 4, 1 / 2, 1, 2)  # readout widths C / p of the untrained networks in part two


def load_data(seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32), y, test_size=597, random_state=seed, stratify=y
    )
    return torch.tensor(x_tr), torch.tensor(y_tr), torch.tensor(x_te), torch.tensor(y_te)


def mlp_body(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())


class Rich(nn.Module):
    """The MLP with every weight scaled by ``RICH_INIT`` at initialisation (biases zero)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = mlp_body(width)
        self.head = nn.Linear(width, NUM_CLASSES)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(RICH_INIT)
                    m.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Lazy(nn.Module):
    """``alpha (g_1 - g_2) / sqrt 2`` with ``g_1 = g_2`` at initialisation: one linear head on ``[h_1, h_2]``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body1 = mlp_body(width)
        self.body2 = mlp_body(width)
        self.body2.load_state_dict(self.body1.state_dict())
        self.head = nn.Linear(2 * width, NUM_CLASSES)
        with torch.no_grad():
            w = nn.Linear(width, NUM_CLASSES).weight
            self.head.weight.copy_(torch.cat([w, -w], 1) * (LAZY_ALPHA / math.sqrt(2.0)))
            self.head.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body1(x), self.body2(x)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def hidden_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features != NUM_CLASSES]


def measure(features: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Literal D_LR, D_half (plain and class-centered logits) and the random-readout baseline of both."""
    st = dlrcore.DLRStats().update(features, outputs)
    res = st.result()
    base = st.baseline()
    return {
        "dlr_span": res.value_span,
        "dlr_sqrt": res.value_sqrt,
        "dlr_sqrt_centered": st.result(center_logits=True).value_sqrt,
        "baseline_span": base.span_mean,
        "baseline_sqrt": base.sqrt_mean,
        "output_effective_rank": res.output_effective_rank,
        "warnings": [w.split(":")[0] for w in res.warnings],  # their subjects ("anisotropic outputs", ...)
    }


def train_run(regime: str, loss_name: str, seed: int, cfg: dict[str, Any], data: tuple[torch.Tensor, ...]) -> dict:
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    model = Rich(cfg["width"]) if regime == "rich" else Lazy(cfg["width"])
    start = [m.weight.detach().clone() for m in hidden_layers(model)]
    opt = torch.optim.Adam(model.parameters(), lr=LR if regime == "rich" else LR / LAZY_ALPHA)
    targets = nn.functional.one_hot(y_tr, NUM_CLASSES).float()
    t0 = time.perf_counter()
    for _ in range(cfg["steps"]):
        out = model(x_tr)
        loss = nn.functional.cross_entropy(out, y_tr) if loss_name == "ce" else nn.functional.mse_loss(out, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        feats, outs = model.features(x_te), model(x_te)
        moved = max(float((m.weight - w0).norm() / w0.norm()) for m, w0 in zip(hidden_layers(model), start))
        row = {
            "regime": regime,
            "loss": loss_name,
            "seed": seed,
            "train_seconds": time.perf_counter() - t0,
            "final_train_loss": float(loss),
            "test_acc": float((outs.argmax(1) == y_te).float().mean()),
            "train_acc": float((model(x_tr).argmax(1) == y_tr).float().mean()),
            "hidden_weight_change": moved,
        }
    row.update(measure(feats.double().numpy(), outs.double().numpy()))
    return row


def untrained_rows(width: int, seed: int, data: tuple[torch.Tensor, ...]) -> list[dict]:
    """Untrained MLP features (``width`` columns) read out by a random layer of C outputs, C growing."""
    torch.manual_seed(seed)
    body = mlp_body(width)
    with torch.no_grad():
        feats = body(data[2]).double().numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for C in (max(2, round(share * width)) for share in WIDE_SHARES):
        outs = feats @ rng.normal(size=(width, C)) / math.sqrt(width)
        rows.append({"C": C, "p": width, **measure(feats, outs)})
    return rows


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and spread over seeds of each (loss, regime)."""
    out: dict[str, dict[str, float]] = {}
    for loss in ("ce", "mse"):
        for regime in ("rich", "lazy"):
            sel = [r for r in rows if r["loss"] == loss and r["regime"] == regime]
            if not sel:
                continue
            agg = {}
            for key in ("dlr_span", "dlr_sqrt", "dlr_sqrt_centered", "baseline_span", "baseline_sqrt", "test_acc",
                        "hidden_weight_change"):
                vals = [r[key] for r in sel]
                agg[key] = float(np.mean(vals))
                agg[key + "_min"], agg[key + "_max"] = float(np.min(vals)), float(np.max(vals))
            out[f"{loss}/{regime}"] = agg
    return out


def table(rows: list[dict]) -> str:
    head = (f"{'loss':4} {'regime':6} {'seed':>4} {'test acc':>8} {'hidden move':>11} {'D_LR':>6} {'D_half':>6} "
            f"{'centered':>8} {'base D_LR':>9} {'base D_half':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['loss']:4} {r['regime']:6} {r['seed']:>4} {r['test_acc']:8.3f} {r['hidden_weight_change']:11.2e} "
            f"{r['dlr_span']:6.3f} {r['dlr_sqrt']:6.3f} {r['dlr_sqrt_centered']:8.3f} {r['baseline_span']:9.3f} "
            f"{r['baseline_sqrt']:11.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, width 64, 300 steps (what the tests run)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "paper"))
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, quick 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = dict(SIZES["quick" if args.quick else "full"])
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    rows = []
    for seed in range(cfg["seeds"]):
        data = load_data(seed)
        for loss_name in ("ce", "mse"):
            for regime in ("rich", "lazy"):
                rows.append(train_run(regime, loss_name, seed, cfg, data))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    wide = untrained_rows(cfg["width"], 0, load_data(0))
    print()
    print(table(rows))
    print()
    print(f"untrained MLP features (p = {cfg['width']}) with random readouts of C outputs:")
    for r in wide:
        print(f"  C = {r['C']:4}: D_LR {r['dlr_span']:.3f}, D_half {r['dlr_sqrt']:.3f}; random-readout baseline "
              f"D_LR {r['baseline_span']:.3f}, D_half {r['baseline_sqrt']:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    doc = {
        "experiment": "output kernel on digits: rich vs lazy, cross-entropy vs MSE",
        "command": " ".join(["python examples/output_kernel_digits.py", *(shlex.quote(str(a)) for a in given)]),
        "config": {**cfg, "rich_init": RICH_INIT, "lazy_alpha": LAZY_ALPHA, "lr": LR},
        "torch": torch.__version__,
        "dlrcore": dlrcore.__version__,
        "runs": rows,
        "summary": summary(rows),
        "untrained": wide,
    }
    (out / "output_kernel_digits.json").write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
