"""The demo's task and network: a synthetic classification task and a float64 NumPy multilayer perceptron.

:func:`make_task` draws the task (the angular sector of a hidden 2-D projection of Gaussian inputs),
:func:`init_mlp` and :func:`train_mlp` build and train the ReLU network with plain mini-batch gradient descent,
MSE on one-hot targets or softmax cross-entropy. :mod:`dlrcore.demo` trains it rich and lazy and measures both.

Examples
--------
>>> x_tr, y_tr, x_te, y_te = make_task(0, 200, 50, input_dim=8)
>>> net = init_mlp([8, 16, 4], seed=0)
>>> net.predict(x_te).shape
(50,)
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import check_choice

__all__ = ["LOSSES", "MLP", "init_mlp", "make_task", "train_mlp"]

#: The losses the demo trains with.
LOSSES = ("mse", "ce")


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
