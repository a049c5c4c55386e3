"""Paper experiment: richness is not accuracy (label leaked into the first pixels, all layers vs last layer only).

Run ``python examples/paper_decoupling.py`` (3 seeds, MSE and cross-entropy: 222 s measured on 2 CPU cores shared
with other jobs; ``--quick``, the test's size: 36-170 s on the same busy cores).

Nam et al. (ICLR 2026) train an MLP on MNIST whose first pixels encode the label, then test it on clean images:
the network trained in full (rich dynamics) learns the shortcut and is near chance on clean images (10 %), while
the network whose last layer alone is trained (lazy: fixed random features) reaches 74.4 %. D_LR, which does not
look at accuracy, still calls the first one richer.

Here the data are scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to [0, 1]. The first
``--leak`` (10) pixels of every training image are overwritten with the one-hot code of its label (value 1, the
brightest pixel value). Clean inputs have those pixels blank (0), as the first pixels of MNIST are; everything
else in the image is unchanged. Both networks start from the same initialisation of a ReLU MLP
64-512-512-10 and are trained for the same number of epochs with Adam, with MSE on one-hot targets by default
(the setting where D_LR is meaningful, docs/dlr.md) and again with cross-entropy for comparison:

* ``all layers`` (rich): every parameter is trained;
* ``last layer only`` (lazy): the hidden layers keep their random initial weights, only the readout is trained.

D_LR is measured with :func:`dlrcore.adapters.torch.collect` on the held-out images, twice: with the label code
(``leaked``, the distribution the networks were trained on, which is what the training dynamics shaped) and
without it (``clean``, where the accuracy is measured). The three-panel spectra of both networks are drawn for both
inputs. Writes ``decoupling.json``, ``decoupling_spectrum_leaked.png`` and ``decoupling_spectrum_clean.png`` into
``--out`` (default ``docs/figures/paper``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import dlrcore.plot
from dlrcore.adapters.torch import collect

NUM_CLASSES = 10


def load_data(seed: int, leak: int, n_test: int = 597):
    """Digits scaled to [0, 1]: (x_train_leaked, y_train, x_test_leaked, x_test_clean, y_test) as tensors."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, random_state=seed, stratify=y)

    def with_code(images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        out = images.copy()
        out[:, :leak] = 0.0  # clean: the code pixels are blank
        if labels is not None:  # leaked: one-hot label code in the first pixels (10 pixels hold 10 classes)
            out[np.arange(len(out)), labels % leak] = 1.0
        return out

    t = torch.tensor
    return (t(with_code(x_tr, y_tr)), t(y_tr), t(with_code(x_te, y_te)), t(with_code(x_te, None)), t(y_te))


def make_mlp(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, NUM_CLASSES)
    )


def train(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, *, last_only: bool, loss: str, epochs: int,
          lr: float, batch: int, seed: int) -> None:
    params = list(model[-1].parameters()) if last_only else list(model.parameters())
    for p in model.parameters():
        p.requires_grad_(not last_only)
    for p in model[-1].parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    target = nn.functional.one_hot(y, NUM_CLASSES).float()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = model(x[idx])
            if loss == "mse":
                err = nn.functional.mse_loss(out, target[idx])
            else:
                err = nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            err.backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str):
    """D_LR statistics of the last layer on (x, y), with the true labels for the quality curve."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=300)
    threads = torch.get_num_threads()
    stats = collect(model, loader, progress=False, num_classes=NUM_CLASSES)
    # dlrcore's Numba kernel resets OpenMP's thread count, which is also torch's intra-op count: restore it
    torch.set_num_threads(threads)
    res = stats.result()
    out = {
        "dlr": res.value,
        "dlr_rtol0.1": stats.result(rtol=0.1).value,
        "output_rank": res.output_rank,
        "output_effective_rank": res.output_effective_rank,
        "nc1": stats.nc1().value,
        "warnings": list(res.warnings),
    }
    return out, stats.spectrum(name=name)


def run_seed(seed: int, args: argparse.Namespace, loss: str, keep_spectra: bool) -> tuple[dict, dict]:
    x_tr, y_tr, x_te_leak, x_te_clean, y_te = load_data(seed, args.leak)
    torch.manual_seed(seed)
    init = make_mlp(args.width)
    rows: dict = {}
    spectra: dict = {"leaked": [], "clean": []}
    at_init, _ = measure(init, x_te_leak, y_te, "init")
    rows["init"] = {"dlr_leaked": at_init["dlr"], "test_acc_clean": accuracy(init, x_te_clean, y_te)}
    for key, last_only in (("all_layers", False), ("last_layer_only", True)):
        model = copy.deepcopy(init)
        t0 = time.perf_counter()
        train(model, x_tr, y_tr, last_only=last_only, loss=loss, epochs=args.epochs, lr=args.lr, batch=args.batch,
              seed=seed)
        row = {
            "train_seconds": time.perf_counter() - t0,
            "train_acc_leaked": accuracy(model, x_tr, y_tr),
            "test_acc_leaked": accuracy(model, x_te_leak, y_te),
            "test_acc_clean": accuracy(model, x_te_clean, y_te),
        }
        label = "all layers (rich)" if not last_only else "last layer only (lazy)"
        for inputs, x in (("leaked", x_te_leak), ("clean", x_te_clean)):
            m, sp = measure(model, x, y_te, label)
            row.update({f"{k}_{inputs}": v for k, v in m.items()})
            if keep_spectra:
                spectra[inputs].append(sp)
        rows[key] = row
    return rows, spectra


def summary(per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every numeric entry."""
    out: dict = {}
    for key in per_seed[0]:
        out[key] = {}
        for name, v in per_seed[0][key].items():
            if isinstance(v, (int, float)):
                vals = np.array([s[key][name] for s in per_seed], dtype=np.float64)
                out[key][name] = {"mean": float(vals.mean()), "std": float(vals.std())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and seeds (the test suite's size)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (data split, initialisation, batches)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, 1 with --quick)")
    ap.add_argument("--epochs", type=int, default=None, help="default 60, 20 with --quick")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--leak", type=int, default=10, help="pixels carrying the label code")
    ap.add_argument("--no-ce", action="store_true", help="skip the cross-entropy comparison")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", default="docs/figures/paper")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.epochs is None:
        args.epochs = 20 if args.quick else 60
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    result: dict = {
        "experiment": "decoupling richness from accuracy (label code in the first pixels)",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "dataset": "sklearn digits 8x8, 1200 train / 597 test (stratified), pixels / 16",
        "measured_on": "held-out images; 'leaked' with the label code, 'clean' with the code pixels blank",
        "paper": {"dataset": "MNIST", "test_acc_clean": {"all_layers": 0.10, "last_layer_only": 0.744},
                  "claim": "D_LR(all layers) < D_LR(last layer only) although the rich network is less accurate"},
    }
    losses = ["mse"] if args.no_ce else ["mse", "ce"]
    for loss in losses:
        per_seed = []
        for i in range(args.seeds):
            rows, spectra = run_seed(args.seed + i, args, loss, keep_spectra=(i == 0))
            per_seed.append(rows)
            if i == 0:
                for inputs in ("leaked", "clean"):
                    suffix = "" if loss == "mse" else "_ce"
                    name = f"decoupling_spectrum_{inputs}{suffix}.png"
                    if loss == "mse" or inputs == "leaked":
                        dlrcore.plot.spectrum(
                            spectra[inputs], out / name, figsize=(11, 3.6),
                            title=f"digits, label code in the first {args.leak} pixels, {loss.upper()} loss: "
                                  f"held-out {inputs} inputs (seed {args.seed})",
                        )
        result[loss] = {"per_seed": per_seed, "summary": summary(per_seed)}
        s = result[loss]["summary"]
        print(f"[{loss}] {args.seeds} seed(s), {args.epochs} epochs")
        print(f"  {'':18s} {'D_LR leaked':>12s} {'D_LR clean':>11s} {'acc clean':>10s} {'acc leaked':>11s}")
        print(f"  {'init':18s} {s['init']['dlr_leaked']['mean']:12.3f} {'':>11s} "
              f"{s['init']['test_acc_clean']['mean']:10.3f}")
        for key in ("all_layers", "last_layer_only"):
            r = s[key]
            print(f"  {key:18s} {r['dlr_leaked']['mean']:12.3f} {r['dlr_clean']['mean']:11.3f} "
                  f"{r['test_acc_clean']['mean']:10.3f} {r['test_acc_leaked']['mean']:11.3f}")
    result["seconds"] = time.perf_counter() - t_start
    (out / "decoupling.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'decoupling.json'} in {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
