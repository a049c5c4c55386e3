"""Shared fixtures for the dlrcore test suite."""

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
