"""A missing optional dependency names the pip command that installs it (issue 15), tried in a fresh interpreter
where the package is hidden (``sys.modules[name] = None`` makes its import fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CASES = [
    ("torch", "import dlrcore.adapters.torch", 'pip install "dlrcore[torch]"'),
    ("torch", "import dlrcore.adapters.hf", 'pip install "dlrcore[torch]"'),
    ("lightning", "import dlrcore.adapters.lightning", 'pip install "dlrcore[lightning]"'),
    ("jax", "import dlrcore.adapters.jax", 'pip install "dlrcore[jax]"'),
    ("keras", "import dlrcore.adapters.keras", 'pip install "dlrcore[keras]"'),
    ("matplotlib", "import dlrcore.plot as p, numpy as np; p.trajectory([{'step': 0, 'dlr': 0.5}])",
     "pip install 'dlrcore[plot]'"),
]


@pytest.mark.parametrize("hidden, code, message", CASES, ids=[c[1].split(";")[0] for c in CASES])
def test_a_missing_extra_names_its_pip_command(hidden, code, message):
    hide = f"import sys; sys.modules[{hidden!r}] = None; sys.modules['pytorch_lightning'] = None"
    run = subprocess.run([sys.executable, "-c", f"{hide}\n{code}"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=False)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert message in last, run.stderr[-1500:]


def test_the_core_imports_no_extra():
    code = ("import sys, dlrcore, dlrcore.adapters; "
            "print(sorted(m for m in ('torch', 'jax', 'keras', 'lightning', 'matplotlib', 'dask', 'cupy') "
            "if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         check=False)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-1500:]
