"""Shared fixtures for the dlrcore test suite, and the markers of its folders.

The tests are arranged by kind: ``unit/`` (each module's behaviour), ``reference/`` (results against the plain
float64 references in ``reference*.py``), ``adapters/`` (the frameworks, for real) and ``scripts/`` (examples,
paper scripts, docs figures, the README). Each test is marked with its folder's name, so ``python -m pytest -m
reference`` or ``-m "not scripts"`` selects by kind.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def gaussian_problem(rng: np.random.Generator, n: int = 200, p: int = 12, C: int = 3, noise: float = 0.3):
    """Gaussian features with a nonzero mean and noisy linear outputs with a bias."""
    phi = rng.normal(size=(n, p)) + rng.normal(size=p)
    out = phi @ rng.normal(size=(p, C)) + rng.normal(size=C) + noise * rng.normal(size=(n, C))
    return phi, out


KINDS = ("unit", "reference", "adapters", "scripts")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for kind in KINDS:
            if kind in parts and parts[parts.index(kind) - 1] == "tests":
                item.add_marker(getattr(pytest.mark, kind))
