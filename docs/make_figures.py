"""Figures and the comparison table of docs/spectrum.md, from the built-in demo (``dlr demo``).

Run from the repository root::

    python docs/make_figures.py            # about 30 s on 2 cores; writes docs/figures/
    python docs/make_figures.py --quick    # smaller networks, a few seconds

It trains the demo network rich (all layers) and lazy (last layer only) from one initialisation, measures on the
held-out inputs D_LR, its spectrum, NC1, S_init (linear CKA between the features at initialisation and after
training), the effective rank of the features and the parameter norm, and draws:

* ``rich_vs_lazy.png``: the three-panel figure for both networks;
* ``checkpoints.png``: the same for the rich network after 1, 5, 20 and all epochs;
* ``trajectory.png``: D_LR and test accuracy of both networks over the epochs.

The numbers go to ``comparison.json`` and, as a Markdown table, ``comparison.md``. Statistics files
(``rich.npz``, ``lazy.npz``) are saved too: ``dlr plot docs/figures/rich.npz docs/figures/lazy.npz -o fig.png``
redraws the first figure without the networks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

import dlrcore
from dlrcore import plot
from dlrcore.demo import MLP, NORMAL_CONFIG, QUICK_CONFIG, train_mlp, train_pair


def parameter_norm(net: MLP) -> float:
    """Euclidean norm of all weights and biases."""
    return math.sqrt(sum(float((w**2).sum()) for w in net.weights) + sum(float((b**2).sum()) for b in net.biases))


def relative_change(net: MLP, start: MLP) -> float:
    """||theta - theta_0|| / ||theta_0||."""
    diff = sum(float(((w - w0) ** 2).sum()) for w, w0 in zip(net.weights + net.biases, start.weights + start.biases))
    return math.sqrt(diff) / parameter_norm(start)


def measure(name: str, net: MLP, start: MLP, x: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    feats, outs = net.forward(x)
    feats0, _ = start.forward(x)
    st = dlrcore.DLRStats(num_classes=num_classes).update(feats, outs, labels=y)
    sp = st.spectrum(name=name)
    return {
        "stats": st,
        "spectrum": sp,
        "row": {
            "network": name,
            "D_LR": st.result().value,
            "NC1": st.nc1().value,
            "S_init": dlrcore.s_init(feats0, feats).value,
            "effective_rank": sp.effective_rank,
            "participation_ratio": sp.participation_ratio,
            "parameter_norm": parameter_norm(net),
            "relative_parameter_change": relative_change(net, start),
            "test_accuracy": float(np.mean(np.argmax(outs, axis=1) == y)),
        },
    }


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: v if isinstance(v, str) else f"{v:.3f}"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = QUICK_CONFIG if args.quick else NORMAL_CONFIG

    pair = train_pair(args.seed, cfg)
    x_train, y_train, x_test, y_test = pair.task
    results = {name: measure(name, pair.nets[name], pair.initial, x_test, y_test, cfg.num_classes)
               for name in ("rich", "lazy")}
    rows = [results[k]["row"] for k in ("rich", "lazy")]
    for name, res in results.items():
        res["stats"].save(out / f"{name}.npz")
    plot.spectrum([results["rich"]["spectrum"], results["lazy"]["spectrum"]], path=out / "rich_vs_lazy.png",
                  title="Demo network trained rich (all layers) and lazy (last layer only)")

    # checkpoints of the rich network, and the D_LR trajectory of both
    targets = np.eye(cfg.num_classes)[y_train]
    marks = sorted({1, 2, 5, 10, 20, 40, cfg.epochs})
    marks = [e for e in marks if e <= cfg.epochs]
    checkpoints, records = [], []
    for name, hidden in (("rich", True), ("lazy", False)):
        for e in [0, *marks]:
            if e == 0:
                net = pair.initial
            else:
                net, _ = train_mlp(pair.initial, x_train, targets, train_hidden=hidden, epochs=e,
                                   batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                   weight_decay=cfg.weight_decay, seed=pair.order_seed)
            feats, outs = net.forward(x_test)
            st = dlrcore.DLRStats(num_classes=cfg.num_classes).update(feats, outs, labels=y_test)
            records.append({"run": name, "epoch": e, "dlr": st.result().value,
                            "test_acc": float(np.mean(np.argmax(outs, axis=1) == y_test))})
            if hidden and e in (1, 5, 20, cfg.epochs):
                checkpoints.append(st.spectrum(name=f"epoch {e}"))
    plot.spectrum(checkpoints, path=out / "checkpoints.png", title="Rich network over training")
    for name in ("rich", "lazy"):
        plot.trajectory([r for r in records if r["run"] == name], x="epoch",
                        path=out / f"trajectory_{name}.png", title=f"D_LR over training ({name})")

    table = markdown_table(rows)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps({"config": cfg.__dict__, "seed": args.seed, "rows": rows,
                                                     "trajectory": records}, indent=2))
    print(table)
    print(f"\nfigures and statistics written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
