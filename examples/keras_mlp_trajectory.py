"""Keras 3 example: train a small MLP for a few epochs and plot D_LR over training with DLRKerasCallback.

Run ``python examples/keras_mlp_trajectory.py`` (add ``--quick`` for a few seconds). The task is the built-in
demo's synthetic sector classification (no download), trained with MSE on one-hot targets (see docs/dlr.md).
Writes ``keras_trajectory.png`` and ``keras_records.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import dlrcore.plot
from dlrcore.adapters.keras import DLRKerasCallback, collect
from dlrcore.demo import make_task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    n_train, epochs = (1000, 6) if args.quick else (3000, 30)
    x_tr, y_tr, x_te, y_te = make_task(0, n_train, 1000, input_dim=64, num_classes=4)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(4),
    ])
    model.compile(optimizer=keras.optimizers.AdamW(2e-3, weight_decay=0.5), loss="mse", metrics=["accuracy"])
    callback = DLRKerasCallback((x_te.astype("float32"), y_te), every_n_epochs=1)
    model.fit(x_tr.astype("float32"), np.eye(4)[y_tr], validation_data=(x_te.astype("float32"), np.eye(4)[y_te]),
              epochs=epochs, batch_size=100, callbacks=[callback], verbose=0)
    dlrcore.plot.trajectory(callback.records, path=out / "keras_trajectory.png", x="epoch",
                            accuracy_keys=["accuracy", "val_accuracy"], title="Keras MLP trained with MSE")
    (out / "keras_records.json").write_text(json.dumps(callback.records, indent=2, default=float))
    stats = collect(model, (x_te.astype("float32"), y_te), progress=False)
    first, last = callback.records[0], callback.records[-1]
    print(f"D_LR {first['dlr']:.3f} after epoch {first['epoch']} -> {last['dlr']:.3f} after epoch {last['epoch']}; "
          f"val accuracy {last.get('val_accuracy', float('nan')):.3f}; NC1 {stats.nc1().value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
