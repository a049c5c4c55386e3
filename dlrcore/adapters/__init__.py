"""Framework adapters: measure D_LR on a model you already have, in a few lines.

Adapters are thin. They only run the model over your data, extract ``(features, outputs[, labels])`` batches
(the input and output of the network's last linear layer, or of a layer you name) and feed them to
:class:`dlrcore.DLRStats`; all the mathematics lives in the core. Each adapter is a submodule that imports its
framework, and only that one, when *you* import it:

* :mod:`dlrcore.adapters.torch`: PyTorch (``collect``, layer-wise D_LR, ``Tracker`` for training loops,
  ``all_reduce`` under ``torch.distributed``);
* :mod:`dlrcore.adapters.lightning`: PyTorch Lightning (``DLRCallback``);
* :mod:`dlrcore.adapters.hf`: Hugging Face ``transformers`` (``collect_hf``); :mod:`dlrcore.adapters.hf_trainer`:
  ``DLRTrainerCallback`` for the ``Trainer``, logging through ``trainer.log`` to its reporters;
* :mod:`dlrcore.adapters.jax`: JAX/Flax; :mod:`dlrcore.adapters.keras`: Keras 3.

:mod:`dlrcore.adapters.batches` reads batches for all of them, :mod:`dlrcore.adapters.loop` runs their one
measuring loop (batches, labels, statistics, progress, dump), framework-neutrally, and
:mod:`dlrcore.adapters.tensorboard` writes measurement records to TensorBoard (``tensorboard=`` of ``Tracker`` and
the Keras callback).

Importing :mod:`dlrcore` or :mod:`dlrcore.adapters` never imports a framework; the core works with none
installed.

Examples
--------
>>> import dlrcore.adapters
>>> dlrcore.adapters.__name__
'dlrcore.adapters'
"""

from __future__ import annotations

__all__: list[str] = []
