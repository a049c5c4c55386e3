"""Paper reproduction, grokking: D_LR falls when modular addition is grokked (Nam et al., ICLR 2026, Sec. 5).

An MLP with two hidden layers learns ``(a + b) mod P`` from a fraction of all ``P * P`` pairs, full batch,
AdamW with strong weight decay. It first memorises the training pairs (train accuracy 1, test accuracy near chance)
and much later generalises (test accuracy jumps: grokking). Every few steps the script records train and test
accuracy and D_LR of the held-out pairs, measured with :class:`dlrcore.adapters.torch.Tracker` (features: the last
hidden layer, the input of the last ``nn.Linear``; outputs: that layer's P outputs), and D_LR of the training pairs.
It detects the step of the accuracy jump and of the D_LR fall and draws the paper's three-panel spectrum for
checkpoints at initialisation, at memorisation and after grokking.

Two losses are trained from the same initialisation and data split:

* ``mse``: MSE on one-hot targets, the setting where D_LR compares the features with the right ideal kernel
  (isotropic targets, see docs/dlr.md and "Domain of validity"): the main run;
* ``ce``: cross-entropy, the classical grokking setting. Its logits are strongly anisotropic (a few Fourier
  modes), so the literal D_LR's exact output span weighs many weak directions fully and moves the wrong way;
  D_half (the square-root output kernel, ``output_kernel="sqrt"``, docs/output-kernel.md) weighs them by strength
  and is the number to read. Both are recorded for both losses, with D_half of class-centered logits, the
  literal value with ``rtol=0.1`` (strong output directions only) and the random-readout baseline of both.

Why two hidden layers: with one, the last hidden layer is ``relu(u(a) + v(b))``, and however the network solves
the task those features keep large components that depend on a or b alone, which the outputs (functions of
a + b) never use; D_LR then cannot fall far (``--depth 1`` shows it rising; docs/paper_grokking.md).

Run ``python examples/paper_grokking.py`` (P = 97, about 7 minutes on a shared 2-core machine) or ``--quick``
(P = 31, under a minute of CPU). Writes ``grokking.json`` (records, detected steps, checkpoints),
``grokking_trajectory.png`` and ``grokking_spectrum_<loss>.png`` into ``--out`` (default docs/figures/paper);
``--tag T`` names them ``grokking_T...``. Single-threaded (see below); set OMP_NUM_THREADS to change that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time

# one thread everywhere: full-batch steps on these small matrices gain little from more, and a second BLAS or
# OpenMP pool competing with torch's on a shared 2-core machine costs far more (set before numpy is imported).
# Only when run as a script: a process that imports this module (the tests) keeps its own settings (numba refuses
# a changed NUMBA_NUM_THREADS once its threads run).
if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import dlrcore
import dlrcore.plot
from dlrcore.adapters.torch import Tracker, collect

ROOT = Path(__file__).resolve().parents[1]

# default (full) and quick sizes; every value can be overridden on the command line
SIZES: dict[str, dict[str, Any]] = {
    "full": {"modulus": 97, "train_frac": 0.4, "width": 256, "depth": 2, "steps": 8000, "every": 50,
             "lr": 3e-3, "weight_decay": 1.0},
    "quick": {"modulus": 31, "train_frac": 0.7, "width": 256, "depth": 2, "steps": 3000, "every": 25,
              "lr": 3e-3, "weight_decay": 1.0},
}
CE_RTOL = 0.1  # output-span tolerance for the second CE reading (strong logit directions only)
MEMORISED = 0.99  # train accuracy at which the network counts as having memorised the training pairs
GROKKED = 0.9  # test accuracy that marks the jump
MIN_DROP = 0.05  # smaller changes of D_LR from memorisation to the end count as no fall
NOT_GENERALISED = 0.1  # test accuracy below which a memorised network counts as not (yet) generalising


class ModAddMLP(nn.Module):
    """``head(body(relu(E[a] + E[P + b] + c)))``: an MLP on the concatenated one-hot codes of a and b.

    The embedding table holds the columns of the first linear layer on the concatenated one-hot codes (rows
    ``0..P-1`` for a, ``P..2P-1`` for b), so that layer costs a gather instead of a matrix product. ``body`` holds
    ``depth - 1`` further hidden layers (Linear + ReLU). ``head`` is the last ``nn.Linear``: its input (the last
    hidden layer, ``width`` features) and output (P values) are what D_LR compares.
    """

    def __init__(self, modulus: int, width: int, depth: int = 2) -> None:
        super().__init__()
        self.modulus = modulus
        self.embed = nn.Embedding(2 * modulus, width)
        self.bias = nn.Parameter(torch.zeros(width))
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, modulus)
        # the initialisation of nn.Linear(2P, width): uniform with bound 1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(2 * modulus)
        nn.init.uniform_(self.embed.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        h = self.embed(pairs[:, 0]) + self.embed(pairs[:, 1] + self.modulus) + self.bias
        return self.head(self.body(torch.relu(h)))


def make_split(modulus: int, train_frac: float, seed: int) -> tuple[torch.Tensor, ...]:
    """All pairs (a, b) with labels (a + b) mod P, split at random into train and held-out pairs."""
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    pairs = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    labels = (pairs[:, 0] + pairs[:, 1]) % modulus
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n_train = round(train_frac * len(pairs))
    tr, te = perm[:n_train], perm[n_train:]
    return pairs[tr], labels[tr], pairs[te], labels[te]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(loss_name: str, cfg: dict[str, Any], seed: int, split: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Train one network; return its records, detected steps and spectra of the three checkpoints."""
    x_tr, y_tr, x_te, y_te = split
    P = cfg["modulus"]
    torch.manual_seed(seed)  # same initialisation for both losses
    model = ModAddMLP(P, cfg["width"], cfg["depth"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.98))
    targets = nn.functional.one_hot(y_tr, P).float()
    held_out = [(x_te, y_te)]  # one full batch; labels give the spectrum's quality curve
    train_set = [(x_tr, y_tr)]
    # spectrum=True keeps each measurement's eigen-spectrum (small); the checkpoints are chosen afterwards
    tracker = Tracker(model, held_out, every=cfg["every"], layer=model.head, spectrum=True)
    stop_at = cfg["steps"]
    t0 = time.perf_counter()

    for step in range(cfg["steps"] + 1):
        out = model(x_tr)
        if loss_name == "mse":
            loss = nn.functional.mse_loss(out, targets)
        else:
            loss = nn.functional.cross_entropy(out, y_tr)
        if step % cfg["every"] == 0:  # measure the parameters before this step's update
            threads = torch.get_num_threads()
            rec = tracker.measure(step, train_acc=accuracy(model, x_tr, y_tr),
                                  test_acc=accuracy(model, x_te, y_te), loss=loss.item())
            # dlrcore's Numba kernel restores Numba's thread count through OpenMP, which also sets torch's
            # intra-op threads (same libgomp): set them back, or training runs oversubscribed and much slower
            torch.set_num_threads(threads)
            rec["dlr_rtol"] = tracker.stats.result(rtol=CE_RTOL).value
            rec["dlr_sqrt_centered"] = tracker.stats.result(center_logits=True).value_sqrt
            base = tracker.stats.baseline()
            rec["baseline_span"], rec["baseline_sqrt"] = base.span_mean, base.sqrt_mean
            # for comparison, D_LR on the training pairs (the main measurement is on the held-out pairs)
            rec["dlr_train"] = collect(model, train_set, layer=model.head, progress=False).result().value
            torch.set_num_threads(threads)
            if stop_at == cfg["steps"] and rec["test_acc"] >= 0.99 and rec["train_acc"] >= 0.99:
                # keep training a while after the jump so that D_LR can settle, then stop
                stop_at = min(cfg["steps"], math.ceil(1.5 * step / cfg["every"]) * cfg["every"])
            if step >= stop_at:
                break
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0

    records = tracker.records
    spectra_by_step = {r["step"]: r.pop("spectrum") for r in records}
    events = detect(records)
    chosen = {"initialisation": 0, "memorisation": events.get("memorisation_checkpoint"),
              "after grokking": records[-1]["step"]}
    spectra = {}
    for name, step in chosen.items():
        if step is not None:
            rec = next(r for r in records if r["step"] == step)
            spectra[name] = {"step": step, "spectrum": dlrcore.Spectrum.from_dict(spectra_by_step[step]),
                             "dlr": rec["dlr"], "dlr_sqrt": rec["dlr_sqrt"], "dlr_rtol": rec["dlr_rtol"],
                             "test_acc": rec["test_acc"]}
    return {"loss": loss_name, "records": records, "events": events, "events_sqrt": detect(records, key="dlr_sqrt"),
            "spectra": spectra, "seconds": seconds}


def _first(records: list[dict[str, Any]], cond: Any, start: int = 0) -> dict[str, Any] | None:
    return next((r for r in records if r["step"] >= start and cond(r)), None)


def detect(records: list[dict[str, Any]], key: str = "dlr") -> dict[str, Any]:
    """Steps of memorisation, of the test-accuracy jump and of the D_LR fall, and D_LR before and after.

    * memorised: the first measurement with train accuracy >= 0.99 (``MEMORISED``);
    * memorisation phase: the measurements from there on while test accuracy stays below 0.1
      (``NOT_GENERALISED``); ``dlr_memorisation`` is their median D_LR, the spectrum checkpoint their middle one;
    * jump (``grokked_at``): the first measurement with test accuracy >= 0.9 (``GROKKED``);
    * ``dlr_after``: the median D_LR over the last 10% of the measurements (at least 3);
    * fall (``dlr_fall_at``): the first measurement after the highest D_LR of the memorisation phase where D_LR
      is below the midpoint of ``dlr_memorisation`` and ``dlr_after``; ``dlr_fall_onset_at``: the first where it
      has covered 10% of that way; both None unless D_LR fell by at least ``MIN_DROP``.
    """
    ev: dict[str, Any] = {"memorised_at": None, "grokked_at": None, "dlr_fall_at": None, "dlr_fall_onset_at": None}
    mem = _first(records, lambda r: r["train_acc"] >= MEMORISED)
    jump = _first(records, lambda r: r["test_acc"] >= GROKKED)
    tail = records[-max(3, len(records) // 10):]
    after = float(np.median([r[key] for r in tail]))
    ev.update(dlr_initial=records[0][key], dlr_after=after, dlr_final=records[-1][key],
              test_acc_final=records[-1]["test_acc"], train_acc_final=records[-1]["train_acc"])
    if jump is not None:
        ev.update(grokked_at=jump["step"], dlr_at_jump=jump[key])
    if mem is None:
        return ev
    phase = []
    for r in records[records.index(mem):]:
        if r["test_acc"] >= NOT_GENERALISED:
            break
        phase.append(r)
    phase = phase or [mem]
    before = float(np.median([r[key] for r in phase]))
    peak = max(phase, key=lambda r: r[key])
    ev.update(memorised_at=mem["step"], memorisation_phase=[phase[0]["step"], phase[-1]["step"]],
              memorisation_checkpoint=phase[len(phase) // 2]["step"], dlr_memorisation=before,
              dlr_memorisation_peak=peak[key], dlr_drop=before - after)
    if before - after >= MIN_DROP:
        mid = _first(records, lambda r: r[key] < 0.5 * (before + after), start=peak["step"])
        onset = _first(records, lambda r: r[key] < before - 0.1 * (before - after), start=peak["step"])
        ev["dlr_fall_at"] = None if mid is None else mid["step"]
        ev["dlr_fall_onset_at"] = None if onset is None else onset["step"]
    if ev["grokked_at"] is not None and ev["dlr_fall_at"] is not None:
        ev["fall_minus_jump"] = ev["dlr_fall_at"] - ev["grokked_at"]
    return ev


def plot_trajectories(runs: list[dict[str, Any]], path: Path, cfg: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.6), squeeze=False, layout="constrained")
    legend: dict[str, Any] = {}
    for ax, run in zip(axes[0], runs):
        recs, ev = run["records"], run["events"]
        steps = [r["step"] for r in recs]
        ax.plot(steps, [r["dlr"] for r in recs], color="black", lw=2, label="D_LR, literal (held-out pairs)")
        ax.plot(steps, [r["dlr_train"] for r in recs], color="black", lw=1, ls=":", label="D_LR (training pairs)")
        ax.plot(steps, [r["dlr_sqrt"] for r in recs], color="C3", lw=2, label="D_half (held-out pairs)")
        ax.plot(steps, [r["baseline_sqrt"] for r in recs], color="C3", lw=1, ls=":",
                label="D_half of random readouts")
        if run["loss"] == "ce":  # the exact output span weighs the many weak logit directions fully
            ax.plot(steps, [r["dlr_rtol"] for r in recs], color="0.45", lw=1.6,
                    label=f"D_LR, output span rtol={CE_RTOL}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("D_LR and D_half (lower = richer)")
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(steps, [r["train_acc"] for r in recs], color="C0", ls="--", lw=1.5, label="train accuracy")
        ax2.plot(steps, [r["test_acc"] for r in recs], color="C2", ls="--", lw=1.5, label="test accuracy")
        ax2.set_ylim(-0.02, 1.02)
        ax2.set_ylabel("accuracy")
        for key, color, text in (("memorised_at", "C0", "memorised"), ("grokked_at", "C2", "test acc 0.9"),
                                 ("dlr_fall_at", "black", "D_LR half-way down")):
            if ev.get(key) is not None:
                ax.axvline(ev[key], color=color, ls=":", lw=1.2)
                ax.text(ev[key], 1.0, " " + text, color=color, fontsize="x-small", rotation=90, va="top")
        name = "MSE on one-hot targets" if run["loss"] == "mse" else "cross-entropy (anisotropic logits)"
        ax.set_title(f"{name}", fontsize="medium")
        for h in ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]:
            legend.setdefault(h.get_label(), h)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=4, frameon=False,
               fontsize="small")
    sep = ", " if len(runs) > 1 else "\n"  # one panel: two lines, or the title is wider than the figure
    fig.suptitle(f"Grokking (a + b) mod {cfg['modulus']}, train fraction {cfg['train_frac']}{sep}"
                 f"MLP depth {cfg['depth']} width {cfg['width']}, AdamW lr {cfg['lr']} wd {cfg['weight_decay']}",
                 fontsize="medium")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small modulus, under a minute (what the tests run)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data split and the initialisation")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "paper"))
    ap.add_argument("--loss", choices=["mse", "ce", "both"], default="both")
    ap.add_argument("--tag", default="", help="output names grokking_<tag>... instead of grokking... (variants)")
    for key, value in SIZES["full"].items():  # --modulus, --train-frac, --width, --depth, --steps, ...
        ap.add_argument("--" + key.replace("_", "-"), type=type(value), default=None,
                        help=f"override (full size {value}, quick {SIZES['quick'][key]})")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = dict(SIZES["quick" if args.quick else "full"])
    for key in cfg:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "grokking" + (f"_{args.tag}" if args.tag else "")

    split = make_split(cfg["modulus"], cfg["train_frac"], args.seed)
    losses = ["mse", "ce"] if args.loss == "both" else [args.loss]

    def clean(run: dict[str, Any]) -> dict[str, Any]:
        d = {k: v for k, v in run.items() if k != "spectra"}
        d["checkpoints"] = {
            k: {"step": v["step"], "dlr": v["dlr"], "dlr_sqrt": v["dlr_sqrt"], "dlr_rtol": v["dlr_rtol"],
                "test_acc": v["test_acc"],
                "effective_rank": v["spectrum"].effective_rank,
                "relative_eigenvalue_top": [float(x) for x in v["spectrum"].relative_eigenvalue[:40]],
                "cumulative_utilization_at_C": float(
                    v["spectrum"].cumulative_utilization[min(cfg["modulus"], v["spectrum"].k) - 1])}
            for k, v in run["spectra"].items()
        }
        return d

    def write() -> None:  # after every run, so that a long run leaves its first results behind
        given = sys.argv[1:] if argv is None else argv
        command = " ".join(["python examples/paper_grokking.py", *(shlex.quote(str(a)) for a in given)])
        doc = {"experiment": "grokking", "command": command, "seed": args.seed, "config": cfg,
               "optimizer": "AdamW(betas=(0.9, 0.98)), full batch", "measured_on": "held-out pairs",
               "torch": torch.__version__, "dlrcore": dlrcore.__version__,
               "thresholds": {"memorised": MEMORISED, "not_generalised": NOT_GENERALISED, "grokked": GROKKED,
                              "min_drop": MIN_DROP, "ce_rtol": CE_RTOL},
               "runs": [clean(r) for r in runs]}
        (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=float))

    runs: list[dict[str, Any]] = []
    for loss_name in losses:
        run = train(loss_name, cfg, args.seed, split)
        runs.append(run)
        ev = run["events"]
        print(f"[{loss_name}] {run['seconds']:.0f} s, {run['records'][-1]['step']} steps; memorised at "
              f"{ev['memorised_at']}, test acc >= {GROKKED} at {ev['grokked_at']}, D_LR half-way down at "
              f"{ev['dlr_fall_at']} (onset {ev['dlr_fall_onset_at']}); D_LR {ev.get('dlr_memorisation', math.nan):.3f}"
              f" at memorisation -> {ev['dlr_after']:.3f} after; final test acc {ev['test_acc_final']:.3f}",
              flush=True)
        ev_h = run["events_sqrt"]
        print(f"[{loss_name}, D_half] {ev_h.get('dlr_memorisation', math.nan):.3f} at memorisation -> "
              f"{ev_h['dlr_after']:.3f} after; half-way down at {ev_h['dlr_fall_at']}", flush=True)
        if loss_name == "ce":
            ev_r = detect(run["records"], key="dlr_rtol")
            run["events_rtol"] = ev_r
            print(f"[ce, rtol={CE_RTOL}] D_LR {ev_r.get('dlr_memorisation', math.nan):.3f} at memorisation -> "
                  f"{ev_r['dlr_after']:.3f} after; half-way down at {ev_r['dlr_fall_at']}", flush=True)
        sp = run["spectra"]
        labels = [f"{k}, step {v['step']}" for k, v in sp.items()]
        title = (f"Grokking (a + b) mod {cfg['modulus']}, {loss_name.upper()}: feature spectra of the held-out "
                 "pairs")
        if loss_name == "ce":  # the legend gives the exact-span D_LR and D_half
            title += f"\nD_LR with rtol={CE_RTOL}: " + ", ".join(f"{k} {v['dlr_rtol']:.2f}" for k, v in sp.items())
        fig = dlrcore.plot.spectrum([v["spectrum"] for v in sp.values()], labels=labels, title=title,
                                    figsize=(12.0, 4.6) if loss_name == "ce" else (12.0, 4.3))
        fig.savefig(out / f"{stem}_spectrum_{loss_name}.png", dpi=80)
        write()
    plot_trajectories(runs, out / f"{stem}_trajectory.png", cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
