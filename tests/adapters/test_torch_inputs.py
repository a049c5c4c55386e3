"""Real PyTorch tensors go into the core through __array__ / DLPack; dlrcore never imports torch itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import dlrcore

torch = pytest.importorskip("torch")  # installed by the test extra; the core itself never needs it


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g) + 2.0
    head = torch.nn.Linear(12, 4)
    with torch.no_grad():
        f = head(x)
    return x, f, head


def test_cpu_tensors_equal_numpy_arrays(tensors):
    x, f, _ = tensors
    assert dlrcore.dlr(x, f).value == pytest.approx(dlrcore.dlr(x.numpy(), f.numpy()).value, rel=1e-12)


def test_tensors_that_require_grad_and_strided_views_are_accepted(tensors):
    x, _, head = tensors
    f = head(x)  # requires grad
    assert f.requires_grad
    ref = dlrcore.dlr(x.numpy(), f.detach().numpy()).value
    assert dlrcore.dlr(x, f).value == pytest.approx(ref, rel=1e-12)
    assert dlrcore.dlr(x[::2], f[::2]).value == pytest.approx(
        dlrcore.dlr(x.numpy()[::2], f.detach().numpy()[::2]).value, rel=1e-12
    )


@pytest.mark.parametrize(
    "dtype, exact_tol, drift_tol",
    [("bfloat16", 1e-5, 2e-2), ("float16", 1e-5, 2e-3), ("float64", 1e-12, 1e-6)],
)
def test_low_precision_tensors(tensors, dtype, exact_tol, drift_tol):
    x, f, _ = tensors
    td = getattr(torch, dtype)
    xs, fs = x.to(td), f.to(td)
    # the stored low-precision values, widened exactly, give the same D_LR (float32 products: 1e-5)
    ref = dlrcore.dlr(xs.double().numpy(), fs.double().numpy()).value
    res = dlrcore.dlr(xs, fs)
    assert res.value == pytest.approx(ref, abs=exact_tol)
    # and rounding the data to that precision moves D_LR only a little
    assert res.value == pytest.approx(dlrcore.dlr(x, f).value, abs=drift_tol)


def test_weights_from_a_torch_layer(tensors):
    x, f, head = tensors
    res = dlrcore.dlr_from_weights(x, head.weight, head.bias)
    assert res.value == pytest.approx(dlrcore.dlr(x, f).value, abs=1e-6)


def test_labels_as_integer_tensors(tensors):
    x, f, _ = tensors
    y = torch.randint(0, 4, (300,))
    st = dlrcore.DLRStats().update(x, f, labels=y)
    # label statistics are kept at the precision of the products (float32 here)
    np.testing.assert_allclose(st.moments()["mean_labels"] * 300, np.bincount(y.numpy(), minlength=4), rtol=1e-6)


def test_core_does_not_import_torch():
    code = (
        "import sys, numpy as np, dlrcore, dlrcore.cli, dlrcore.demo;"
        "dlrcore.dlr(np.random.rand(50, 4), np.random.rand(50, 2));"
        "bad = [m for m in ('torch', 'jax', 'tensorflow', 'matplotlib') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
