"""The built-in demo behind ``dlr demo``: one small NumPy network trained rich and lazy, and D_LR for both.

A multilayer perceptron (ReLU hidden layers, float64, NumPy only) is trained towards one-hot targets with the
mean squared error on a synthetic classification task, twice from the same initialisation:

* **rich**: every layer is trained, so the hidden features can reorganise around the task;
* **lazy**: only the last linear layer is trained and the hidden layers stay at their random initialisation
  (a random-features model), the extreme of lazy dynamics.

Everything else (data, initialisation, optimiser, learning rate, weight decay, epochs, mini-batch order) is
identical. D_LR of the penultimate features against the outputs is then measured on held-out data with
:func:`dlrcore.dlr`, together with train and test accuracy. MSE on balanced one-hot targets is the setting in
which D_LR is meaningful (see "Domain of validity" in ``docs/dlr.md``).

The task: inputs are standard Gaussian vectors in ``input_dim`` dimensions; the label of a point is the
angular sector (one of ``num_classes`` equal sectors) that its projection onto a hidden random 2-D plane
falls in. Only two input directions matter, so a network that learns them generalises well, while random
features spread their capacity over all directions.

Examples
--------
>>> from dlrcore.demo import run_demo
>>> report = run_demo(seed=0, quick=True, progress=False)
>>> "rich" in report.table() and "lazy" in report.table()
True
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .checks import check_choice
from .demo_mlp import LOSSES, MLP, init_mlp, make_task, train_mlp

__all__ = [
    "MLP",
    "NORMAL_CONFIG",
    "QUICK_CONFIG",
    "DemoConfig",
    "DemoReport",
    "RunRecord",
    "init_mlp",
    "make_task",
    "run_demo",
    "train_mlp",
]


# --------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and training settings of one demo run (shared by the rich and the lazy network).

    Attributes
    ----------
    n_train, n_test : int
        Training and held-out sample counts.
    input_dim : int
        Input dimension ``d`` of the synthetic task.
    num_classes : int
        Number of classes ``C`` (angular sectors).
    width : int
        Width of every hidden layer.
    depth : int
        Number of hidden layers.
    output_scale : float
        Fixed multiplier of the last layer's output (the "alpha" of lazy-versus-rich analyses: a large alpha
        pushes full training towards lazy dynamics). 1 is a plain network; D_LR itself is invariant to it.
    epochs : int
        Passes over the training set.
    batch_size : int
        Mini-batch size.
    learning_rate : float
        Adam step size.
    weight_decay : float
        Decoupled (AdamW) weight decay on the weight matrices that are trained, not on biases.
    loss : {"mse", "ce"}
        Mean squared error on one-hot targets (where the literal D_LR is meaningful) or softmax cross-entropy
        (where D_half, the square-root output kernel, is the number to read).

    Examples
    --------
    >>> DemoConfig(width=64).width
    64
    """

    n_train: int = 3000
    n_test: int = 1000
    input_dim: int = 64
    num_classes: int = 4
    width: int = 256
    depth: int = 2
    output_scale: float = 1.0
    epochs: int = 80
    batch_size: int = 200
    learning_rate: float = 2e-3
    weight_decay: float = 2.0
    loss: str = "mse"


#: Default size of ``dlr demo`` (5 to 10 s on two CPU cores).
NORMAL_CONFIG = DemoConfig()

#: Smaller size for ``dlr demo --quick`` and tests (1 to 2 s); still separates rich and lazy.
QUICK_CONFIG = DemoConfig(n_train=1500, n_test=600, width=128, epochs=60, batch_size=100)


# --------------------------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class RunRecord:
    """Measurements of one trained network (the arrays themselves are not kept).

    Attributes
    ----------
    name : str
        ``"rich"`` or ``"lazy"``.
    trained_layers : str
        Which layers were trained (``"all"`` or ``"last only"``).
    dlr : float
        The literal D_LR of the held-out penultimate features against the held-out outputs (lower is richer).
    dlr_sqrt : float
        D_half of the same (the square-root output kernel, the number to read under cross-entropy).
    test_accuracy, train_accuracy : float
        Argmax accuracy on held-out and training data.
    train_seconds : float
        Wall-clock training time.
    final_train_loss : float
        Mean training loss (MSE or cross-entropy) of the last epoch.
    output_rank : int
        Rank of the output span used by D_LR.
    output_effective_rank : float
        Effective rank of the centered outputs (well below ``output_rank`` flags an anisotropic output span).
    warnings : tuple of str
        Warnings attached to the D_LR result.
    """

    name: str
    trained_layers: str
    dlr: float
    test_accuracy: float
    train_accuracy: float
    train_seconds: float
    final_train_loss: float
    output_rank: int
    output_effective_rank: float
    warnings: tuple[str, ...] = ()
    dlr_sqrt: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary."""
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class DemoReport:
    """Result of :func:`run_demo`: one :class:`RunRecord` per network plus the settings used.

    Attributes
    ----------
    seed : int
        Seed of the task, the initialisation and the mini-batch order.
    quick : bool
        Whether the quick size was used.
    config : DemoConfig
        Sizes and training settings.
    runs : tuple of RunRecord
        The rich run, then the lazy run.
    total_seconds : float
        Wall-clock time of the whole demo.

    Examples
    --------
    >>> report = run_demo(seed=0, quick=True, progress=False)
    >>> report.run("rich").dlr < report.run("lazy").dlr
    True
    """

    seed: int
    quick: bool
    config: DemoConfig
    runs: tuple[RunRecord, ...]
    total_seconds: float = 0.0

    def run(self, name: str) -> RunRecord:
        """The record called ``name`` (``"rich"`` or ``"lazy"``)."""
        for rec in self.runs:
            if rec.name == name:
                return rec
        raise KeyError(f"no run named {name!r}; runs are {[r.name for r in self.runs]}")

    @property
    def measure(self) -> str:
        """The measure the conclusion reads: the literal D_LR under MSE, D_half under cross-entropy."""
        return "D_half" if self.config.loss == "ce" else "D_LR"

    def _value(self, rec: RunRecord) -> float:
        return rec.dlr_sqrt if self.config.loss == "ce" else rec.dlr

    @property
    def dlr_gap(self) -> float:
        """Lazy minus rich, in :attr:`measure` (positive: the rich run is richer)."""
        return self._value(self.run("lazy")) - self._value(self.run("rich"))

    def conclusion(self) -> str:
        """One line reading the measured numbers."""
        rich, lazy = self.run("rich"), self.run("lazy")
        gap, name = self.dlr_gap, self.measure
        if gap >= 0.1:
            verdict = f"training all layers gave markedly richer dynamics (lower {name}) than the last layer alone"
        elif gap > 0.0:
            verdict = (
                f"training all layers gave only slightly lower {name} than the last layer alone: no clear separation"
            )
        else:
            verdict = f"training all layers did NOT give lower {name} than the last layer alone"
        return (
            f"Conclusion: {verdict} ({name} {self._value(rich):.3f} vs {self._value(lazy):.3f}, gap {gap:+.3f}; "
            f"test accuracy {rich.test_accuracy:.3f} vs {lazy.test_accuracy:.3f})."
        )

    def table(self) -> str:
        """Aligned text table of D_LR and accuracy for each run, followed by a one-line conclusion."""
        c = self.config
        sizes = "-".join(str(s) for s in [c.input_dim] + [c.width] * c.depth + [c.num_classes])
        loss = "cross-entropy" if c.loss == "ce" else "MSE on one-hot targets"
        head = [
            f"dlr demo, seed {self.seed}{' (quick)' if self.quick else ''}: {c.num_classes}-class sector task in "
            f"d={c.input_dim}, {c.n_train} training / {c.n_test} held-out samples",
            f"MLP {sizes} (ReLU), {loss}, {c.epochs} epochs AdamW (lr {c.learning_rate:g}, "
            f"weight decay {c.weight_decay:g}); D_LR, D_half and test acc on held-out data",
        ]
        cols = ["run", "trained layers", "D_LR", "D_half", "test acc", "train acc", f"train {c.loss}", "time (s)"]
        rows = [
            [
                r.name,
                r.trained_layers,
                f"{r.dlr:.3f}",
                f"{r.dlr_sqrt:.3f}",
                f"{r.test_accuracy:.3f}",
                f"{r.train_accuracy:.3f}",
                f"{r.final_train_loss:.4f}",
                f"{r.train_seconds:.1f}",
            ]
            for r in self.runs
        ]
        widths = [max(len(col), *(len(row[k]) for row in rows)) for k, col in enumerate(cols)]

        def fmt(cells: list[str]) -> str:
            return "  ".join(
                cell.ljust(w) if k < 2 else cell.rjust(w) for k, (cell, w) in enumerate(zip(cells, widths))
            ).rstrip()

        lines = [*head, "", fmt(cols), fmt(["-" * w for w in widths])]
        lines += [fmt(row) for row in rows]
        lines += [
            "",
            "D_LR and D_half are in [0, 1]: lower means the features concentrate in the output directions (rich).",
            "D_LR counts every output direction equally (right for MSE on one-hot targets); D_half weighs them by",
            "strength (right for cross-entropy logits, docs/output-kernel.md).",
        ]
        for r in self.runs:
            lines += [f"warning ({r.name}): {w}" for w in r.warnings]
        lines.append(self.conclusion())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary (settings, per-run records, gap and conclusion)."""
        return {
            "seed": self.seed,
            "quick": self.quick,
            "config": asdict(self.config),
            "runs": [r.to_dict() for r in self.runs],
            "dlr_gap": self.dlr_gap,
            "total_seconds": self.total_seconds,
            "conclusion": self.conclusion(),
        }


# --------------------------------------------------------------------------------------------------------------
# Driver


@dataclass
class TrainedPair:
    """The demo's task and its two trained networks, for analyses beyond :func:`run_demo`.

    Attributes
    ----------
    task : tuple of ndarray
        ``(x_train, y_train, x_test, y_test)`` from :func:`make_task`.
    initial : MLP
        The shared initialisation.
    nets : dict of str to MLP
        ``"rich"`` (all layers trained) and ``"lazy"`` (last layer only).
    seconds, final_loss : dict of str to float
        Training time and final training loss of each.
    config : DemoConfig
        The settings used.
    order_seed : int
        Seed of the mini-batch order, to retrain with :func:`train_mlp` exactly as here.
    """

    task: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    initial: MLP
    nets: dict[str, MLP]
    seconds: dict[str, float]
    final_loss: dict[str, float]
    config: DemoConfig
    order_seed: int


def train_pair(
    seed: int = 0,
    config: DemoConfig | None = None,
    *,
    progress: bool = False,
    epochs: int | None = None,
    initial: MLP | None = None,
) -> TrainedPair:
    """Build the demo task and train the network rich (all layers) and lazy (last layer) from one start.

    Both runs share the task, the initialisation, the optimiser settings and the mini-batch order; they differ
    only in which layers are trained.

    Parameters
    ----------
    seed : int
        Seed of everything; the result is deterministic given it.
    config : DemoConfig, optional
        Settings (default :data:`NORMAL_CONFIG`).
    progress : bool
        Progress lines on stderr.
    epochs : int, optional
        Override ``config.epochs`` (e.g. to take checkpoints).
    initial : MLP, optional
        Start from this network instead of the seeded initialisation.

    Returns
    -------
    TrainedPair

    Examples
    --------
    >>> pair = train_pair(0, QUICK_CONFIG, epochs=2)
    >>> sorted(pair.nets), pair.nets["lazy"].weights[0] is not pair.initial.weights[0]
    (['lazy', 'rich'], True)
    """
    cfg = config if config is not None else NORMAL_CONFIG
    task = make_task(seed, cfg.n_train, cfg.n_test, input_dim=cfg.input_dim, num_classes=cfg.num_classes)
    x_train, y_train = task[0], task[1]
    targets = np.eye(cfg.num_classes)[y_train]
    sizes = [cfg.input_dim] + [cfg.width] * cfg.depth + [cfg.num_classes]
    # distinct, reproducible streams for the weights and the batch order
    init_seed, order_seed = np.random.SeedSequence(seed).generate_state(2)
    net0 = initial if initial is not None else init_mlp(sizes, int(init_seed), output_scale=cfg.output_scale)
    nets, seconds, final = {}, {}, {}
    for name, train_hidden in (("rich", True), ("lazy", False)):
        t0 = time.perf_counter()
        net, losses = train_mlp(
            net0,
            x_train,
            targets,
            train_hidden=train_hidden,
            epochs=cfg.epochs if epochs is None else epochs,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            seed=int(order_seed),
            progress=progress,
            label=name,
            loss=cfg.loss,
        )
        nets[name] = net
        seconds[name] = float(time.perf_counter() - t0)
        final[name] = float(losses[-1]) if losses else float("nan")
    return TrainedPair(
        task=task, initial=net0, nets=nets, seconds=seconds, final_loss=final, config=cfg, order_seed=int(order_seed)
    )


def run_demo(
    seed: int = 0,
    *,
    quick: bool = False,
    progress: bool = True,
    config: DemoConfig | None = None,
    loss: str | None = None,
) -> DemoReport:
    """Train one network rich (all layers) and lazy (last layer only) from the same start; measure D_LR.

    Both runs share the task, the initialisation, the optimiser settings and the mini-batch order; they
    differ only in which layers are trained. D_LR (:func:`dlrcore.dlr`) is measured on held-out data, on
    the penultimate features against the network outputs.

    Parameters
    ----------
    seed : int, optional
        Seed of everything (task, initialisation, mini-batch order); the run is deterministic given it.
    quick : bool, optional
        Use :data:`QUICK_CONFIG` (a few seconds) instead of :data:`NORMAL_CONFIG` (about ten seconds).
    progress : bool, optional
        Print short progress lines on stderr; nothing is printed on stdout either way.
    config : DemoConfig, optional
        Explicit settings, overriding ``quick``.
    loss : {"mse", "ce"}, optional
        Override the configuration's loss: ``"ce"`` trains both networks with cross-entropy, and the conclusion
        then reads D_half.

    Returns
    -------
    DemoReport
        Records for ``"rich"`` and ``"lazy"``; ``report.table()`` formats them.

    Examples
    --------
    >>> report = run_demo(seed=0, quick=True, progress=False)
    >>> report.run("lazy").dlr - report.run("rich").dlr > 0.2
    True
    """
    import dlrcore  # deferred: dlrcore's package module imports the CLI lazily, avoid any import cycle

    cfg = config if config is not None else (QUICK_CONFIG if quick else NORMAL_CONFIG)
    if loss is not None:
        check_choice(loss, "loss", LOSSES)
        cfg = replace(cfg, loss=loss)
    start = time.perf_counter()
    pair = train_pair(seed, cfg, progress=progress)
    x_train, y_train, x_test, y_test = pair.task
    records = []
    for name in ("rich", "lazy"):
        net = pair.nets[name]
        feats, outs = net.forward(x_test)
        res = dlrcore.dlr(feats, outs)
        records.append(
            RunRecord(
                name=name,
                trained_layers="all" if name == "rich" else "last only",
                dlr=float(res.value_span),
                dlr_sqrt=float(res.value_sqrt),
                test_accuracy=float(np.mean(np.argmax(outs, axis=1) == y_test)),
                train_accuracy=float(np.mean(net.predict(x_train) == y_train)),
                train_seconds=pair.seconds[name],
                final_train_loss=pair.final_loss[name],
                output_rank=int(res.output_rank),
                output_effective_rank=float(res.output_effective_rank),
                warnings=tuple(str(w) for w in res.warnings),
            )
        )
        if progress:
            print(
                f"dlr demo: {name} done in {pair.seconds[name]:.1f}s, D_LR {res.value_span:.3f}, "
                f"D_half {res.value_sqrt:.3f}, "
                f"test acc {records[-1].test_accuracy:.3f}",
                file=sys.stderr,
                flush=True,
            )
    return DemoReport(
        seed=int(seed),
        quick=bool(quick) and config is None,
        config=cfg,
        runs=tuple(records),
        total_seconds=time.perf_counter() - start,
    )


if __name__ == "__main__":  # pragma: no cover
    print(run_demo().table())
