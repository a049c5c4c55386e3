"""JAX/Flax example: train a small MLP with optax-free SGD for a few epochs and plot D_LR over training.

Run ``python examples/jax_mlp_trajectory.py`` (add ``--quick`` for a few seconds). The task is the built-in
demo's synthetic sector classification (no download), trained with MSE on one-hot targets (see docs/dlr.md).
Writes ``jax_trajectory.png`` and ``jax_records.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import dlrcore.plot
from dlrcore.adapters.jax import collect
from dlrcore.demo import make_task


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(4)(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, epochs = (1000, 10) if args.quick else (3000, 40)
    x_tr, y_tr, x_te, y_te = make_task(0, n_train, 1000, input_dim=64, num_classes=4)
    x_tr, x_te = x_tr.astype(np.float32), x_te.astype(np.float32)
    model = MLP()
    params = model.init(jax.random.PRNGKey(0), x_tr[:1])
    targets = jax.nn.one_hot(y_tr, 4)

    @jax.jit
    def sgd_step(params, x, t):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply(p, x) - t) ** 2))(params)
        return jax.tree_util.tree_map(lambda p, g: p - 0.2 * g, params, grads), loss

    held_out = [(x_te[i : i + 500], y_te[i : i + 500]) for i in range(0, len(x_te), 500)]
    records = []
    rng = np.random.default_rng(0)
    for epoch in range(epochs + 1):
        if epoch % 2 == 0 or epoch == epochs:
            stats = collect(model.apply, params, held_out, progress=False)
            acc = float(np.mean(np.argmax(model.apply(params, x_te), axis=1) == y_te))
            records.append({"epoch": epoch, "dlr": stats.result().value, "test_acc": acc})
        if epoch == epochs:
            break
        for idx in np.array_split(rng.permutation(n_train), n_train // 100):
            params, _ = sgd_step(params, x_tr[idx], targets[idx])
    dlrcore.plot.trajectory(records, path=out / "jax_trajectory.png", x="epoch", title="Flax MLP trained with MSE")
    (out / "jax_records.json").write_text(json.dumps(records, indent=2))
    print(f"D_LR {records[0]['dlr']:.3f} at epoch 0 -> {records[-1]['dlr']:.3f} at epoch {records[-1]['epoch']}; "
          f"test accuracy {records[-1]['test_acc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
