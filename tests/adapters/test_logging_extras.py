"""The logging integrations import nothing until used, and a missing package names its pip command (issue 15),
tried in a fresh interpreter where the package is hidden (``sys.modules[name] = None`` makes its import fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)


def test_the_adapters_import_no_logging_package():
    pytest.importorskip("torch")
    run = _run("import sys, dlrcore.adapters.torch, dlrcore.adapters.hf, dlrcore.adapters.tensorboard; "
               "print(sorted(m for m in ('transformers', 'tensorboard', 'tensorflow', 'matplotlib', 'wandb') "
               "if m in sys.modules))")
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-1500:]


CASES = [
    ("tensorboard", "torch", "import torch; from dlrcore.adapters.torch import Tracker; "
     "Tracker(torch.nn.Linear(2, 2), [torch.ones(3, 2)], tensorboard='{tmp}')", 'pip install "dlrcore[tensorboard]"'),
    ("tensorboard", "keras", "import numpy as np; from dlrcore.adapters.keras import DLRKerasCallback; "
     "DLRKerasCallback((np.ones((3, 2)),), tensorboard='{tmp}')", 'pip install "dlrcore[tensorboard]"'),
    ("transformers", "torch", "import dlrcore.adapters.hf as hf; hf.DLRTrainerCallback",
     'pip install "dlrcore[torch,hf]"'),
]


@pytest.mark.parametrize("hidden, needs, code, message", CASES, ids=["Tracker", "DLRKerasCallback", "hf_trainer"])
def test_a_missing_package_names_its_pip_command(tmp_path, hidden, needs, code, message):
    pytest.importorskip(needs)
    run = _run(f"import sys; sys.modules[{hidden!r}] = None\n" + code.format(tmp=tmp_path / "logs"))
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert message in last and "ImportError" in last, run.stderr[-1500:]
