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

import contextlib
import itertools
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .checks import check_choice

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

#: The losses the demo trains with.
LOSSES = ("mse", "ce")

#: Smaller size for ``dlr demo --quick`` and tests (1 to 2 s); still separates rich and lazy.
QUICK_CONFIG = DemoConfig(n_train=1500, n_test=600, width=128, epochs=60, batch_size=100)


# --------------------------------------------------------------------------------------------------------------
# Data


def make_task(
    seed: int, n_train: int, n_test: int, *, input_dim: int = 64, num_classes: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic classification task: the angular sector of a hidden 2-D projection of Gaussian inputs.

    Inputs are i.i.d. standard Gaussian in ``input_dim`` dimensions. A random orthonormal pair of directions
    (drawn from ``seed``) defines a plane; the label is the index of the equal angular sector, out of
    ``num_classes``, that the input's projection onto that plane falls in. Classes are balanced in expectation.

    Parameters
    ----------
    seed : int
        Seed of the plane and of the samples; the same seed gives the same arrays.
    n_train, n_test : int
        Number of training and held-out samples (both at least 1).
    input_dim : int, optional
        Input dimension ``d`` (at least 2).
    num_classes : int, optional
        Number of classes (at least 2).

    Returns
    -------
    x_train : ndarray of float64, shape (n_train, input_dim)
    y_train : ndarray of int64, shape (n_train,)
        Integer labels in ``[0, num_classes)``.
    x_test : ndarray of float64, shape (n_test, input_dim)
    y_test : ndarray of int64, shape (n_test,)

    Examples
    --------
    >>> x_tr, y_tr, x_te, y_te = make_task(0, 100, 50, input_dim=8)
    >>> x_tr.shape, y_tr.shape, x_te.shape, y_te.shape
    ((100, 8), (100,), (50, 8), (50,))
    >>> bool(y_tr.min() >= 0 and y_tr.max() <= 3)
    True
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be at least 1, got {n_train} and {n_test}")
    if input_dim < 2:
        raise ValueError(f"input_dim must be at least 2, got {input_dim}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    rng = np.random.default_rng(seed)
    plane, _ = np.linalg.qr(rng.standard_normal((input_dim, 2)))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, input_dim))
        z = x @ plane
        angle = np.arctan2(z[:, 1], z[:, 0]) + math.pi  # in [0, 2 pi]
        label = np.floor(angle * (num_classes / (2 * math.pi))).astype(np.int64)
        return x, np.minimum(label, num_classes - 1)

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------------------------------------------
# Network


@dataclass
class MLP:
    """A ReLU multilayer perceptron in float64: ``out = output_scale * (W_L h_{L-1} + b_L)``.

    Attributes
    ----------
    weights : list of ndarray
        Weight matrices, ``weights[i]`` of shape (fan_out, fan_in); the last one is the readout.
    biases : list of ndarray
        Bias vectors matching ``weights``.
    output_scale : float
        Fixed multiplier of the readout.

    Examples
    --------
    >>> net = init_mlp([3, 5, 2], seed=0)
    >>> feats, out = net.forward(np.ones((4, 3)))
    >>> feats.shape, out.shape
    ((4, 5), (4, 2))
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    output_scale: float = 1.0

    def copy(self) -> MLP:
        """An independent deep copy."""
        return MLP([w.copy() for w in self.weights], [b.copy() for b in self.biases], self.output_scale)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (the readout's input) and outputs for inputs ``x`` (n x d).

        Parameters
        ----------
        x : ndarray, shape (n, d)

        Returns
        -------
        features : ndarray, shape (n, width)
        outputs : ndarray, shape (n, C)
        """
        h = np.asarray(x, dtype=np.float64)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w.T + b, 0.0)
        return h, self.output_scale * (h @ self.weights[-1].T + self.biases[-1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class (argmax of the outputs) for inputs ``x``."""
        return np.argmax(self.forward(x)[1], axis=1)


def init_mlp(sizes: list[int], seed: int, *, output_scale: float = 1.0) -> MLP:
    """Random ReLU network with He-normal weights and zero biases.

    Parameters
    ----------
    sizes : list of int
        Layer widths from input to output, e.g. ``[d, 256, 256, C]`` (at least two entries).
    seed : int
        Seed of the weights.
    output_scale : float, optional
        Fixed multiplier of the readout, see :class:`DemoConfig`.

    Returns
    -------
    MLP

    Examples
    --------
    >>> [w.shape for w in init_mlp([4, 8, 3], seed=1).weights]
    [(8, 4), (3, 8)]
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes needs an input and an output width, got {sizes}")
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for fan_in, fan_out in itertools.pairwise(sizes):
        weights.append(rng.standard_normal((fan_out, fan_in)) * math.sqrt(2.0 / fan_in))
        biases.append(np.zeros(fan_out))
    return MLP(weights, biases, float(output_scale))


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while training, when the optional ``threadpoolctl`` is installed.

    The demo's products are small (hundreds of rows), so extra BLAS threads barely help, and when the cores are
    shared with other processes, OpenBLAS threads that wait for each other on every product can make training
    tens of times slower. Without ``threadpoolctl`` nothing changes (set ``OPENBLAS_NUM_THREADS=1`` instead).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def train_mlp(
    net: MLP,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    train_hidden: bool = True,
    epochs: int = 80,
    batch_size: int = 200,
    learning_rate: float = 2e-3,
    weight_decay: float = 2.0,
    seed: int = 0,
    progress: bool = False,
    label: str = "",
    loss: str = "mse",
) -> tuple[MLP, list[float]]:
    """Train a copy of ``net`` with Adam (decoupled weight decay) on the mean squared error or cross-entropy.

    With ``loss="mse"`` the loss of a mini-batch is the mean over its samples and output columns of
    ``(out - target)^2``; with ``loss="ce"`` it is the mean over its samples of the softmax cross-entropy
    ``-sum_c target_c log softmax(out)_c`` (targets one-hot or class probabilities).

    Parameters
    ----------
    net : MLP
        Starting point; it is not modified.
    x : ndarray, shape (n, d)
        Training inputs.
    targets : ndarray, shape (n, C)
        Regression targets, e.g. one-hot labels.
    train_hidden : bool, optional
        True trains every layer (rich); False trains only the readout and freezes the hidden layers (lazy).
    epochs : int, optional
        Passes over the data.
    batch_size : int, optional
        Mini-batch size; the last batch of an epoch may be smaller.
    learning_rate : float, optional
        Adam step size (betas 0.9, 0.999; eps 1e-8).
    weight_decay : float, optional
        Decoupled weight decay on the trained weight matrices (not on biases): each step multiplies them by
        ``1 - learning_rate * weight_decay``.
    seed : int, optional
        Seed of the mini-batch order.
    progress : bool, optional
        Print a few short epoch lines on stderr.
    label : str, optional
        Name shown in progress lines.
    loss : {"mse", "ce"}, optional
        Mean squared error or softmax cross-entropy.

    Returns
    -------
    net : MLP
        The trained copy.
    losses : list of float
        Mean training loss of each epoch (averaged over its mini-batches, during the epoch).

    Examples
    --------
    >>> x_tr, y_tr, _, _ = make_task(0, 200, 10, input_dim=4)
    >>> net0 = init_mlp([4, 16, 4], seed=0)
    >>> net, losses = train_mlp(net0, x_tr, np.eye(4)[y_tr], epochs=5)
    >>> len(losses), losses[-1] < losses[0]
    (5, True)
    """
    x = np.asarray(x, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if x.ndim != 2 or x.shape[0] != targets.shape[0]:
        raise ValueError(f"x must be n x d with one target row per sample, got {x.shape} and {targets.shape}")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    check_choice(loss, "loss", LOSSES)
    net = net.copy()
    n_layers = len(net.weights)
    first = 0 if train_hidden else n_layers - 1  # index of the first trained layer
    params = [p for i in range(first, n_layers) for p in (net.weights[i], net.biases[i])]
    decays = [weight_decay if k % 2 == 0 else 0.0 for k in range(len(params))]
    mom = [np.zeros_like(p) for p in params]
    sq = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    scale = net.output_scale
    n_out = targets.shape[1]
    losses: list[float] = []
    step = 0
    report_every = max(1, epochs // 4)
    start = time.perf_counter()
    with _one_blas_thread():
        for epoch in range(epochs):
            order = rng.permutation(n)
            total, batches = 0.0, 0
            for lo in range(0, n, batch_size):
                idx = order[lo : lo + batch_size]
                # forward, keeping every layer's post-activation
                acts = [x[idx]]
                for w, b in zip(net.weights[:-1], net.biases[:-1]):
                    acts.append(np.maximum(acts[-1] @ w.T + b, 0.0))
                out = scale * (acts[-1] @ net.weights[-1].T + net.biases[-1])
                if loss == "mse":
                    resid = out - targets[idx]
                    total += float(np.mean(resid * resid))
                    grad = resid * (2.0 * scale / (len(idx) * n_out))
                else:
                    shifted = out - out.max(axis=1, keepdims=True)
                    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                    total += float(-np.mean(np.sum(targets[idx] * log_p, axis=1)))
                    grad = (np.exp(log_p) - targets[idx]) * (scale / len(idx))
                batches += 1
                # backward down to the first trained layer
                grads: list[np.ndarray] = []
                for i in range(n_layers - 1, first - 1, -1):
                    grads[:0] = [grad.T @ acts[i], grad.sum(axis=0)]
                    if i > first:
                        grad = (grad @ net.weights[i]) * (acts[i] > 0)
                # AdamW update, in place on the network's arrays
                step += 1
                corr1, corr2 = 1.0 - beta1**step, 1.0 - beta2**step
                for p, g, m, v, wd in zip(params, grads, mom, sq, decays):
                    m *= beta1
                    m += (1.0 - beta1) * g
                    v *= beta2
                    v += (1.0 - beta2) * (g * g)
                    if wd:
                        p *= 1.0 - learning_rate * wd
                    p -= learning_rate * (m / corr1) / (np.sqrt(v / corr2) + eps)
            losses.append(total / max(batches, 1))
            if progress and ((epoch + 1) % report_every == 0 or epoch + 1 == epochs):
                print(
                    f"dlr demo: {label or 'train'} epoch {epoch + 1}/{epochs}, train {loss} {losses[-1]:.4f}, "
                    f"{time.perf_counter() - start:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
    return net, losses


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
