"""dlrcore.adapters.torch.all_reduce with two real CPU processes on the gloo backend (no mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import dlrcore  # noqa: E402
from dlrcore import DLRStats  # noqa: E402
from dlrcore.adapters.torch import all_reduce  # noqa: E402

N, P, C, K = 120, 6, 3, 4


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shared data set: features, outputs, class labels, head weight and bias (same on every rank)."""
    rng = np.random.default_rng(7)
    phi = rng.normal(size=(N, P)) * 3.0 + rng.normal(size=P) * 10.0
    out = phi @ rng.normal(size=(P, C)) + rng.normal(size=C) + 0.2 * rng.normal(size=(N, C))
    lab = rng.integers(0, K, size=N)
    w = rng.normal(size=(7, P))
    b = rng.normal(size=7)
    return phi, out, lab, w, b


#: name -> number of samples of each rank (ranks take consecutive slices of the data set, in rank order)
CASES = {
    "even": (60, 60),
    "uneven": (97, 23),
    "rank1_empty": (120, 0),
    "rank0_empty": (0, 120),
}

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    sys.path.insert(0, {test_dir!r})
    from test_adapters_torch_distributed import CASES, dataset, K
    from dlrcore import DLRStats
    from dlrcore.adapters.torch import all_reduce

    rank, world, store, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
    phi, out, lab, w, b = dataset()
    results = {{}}
    for name, sizes in CASES.items():
        lo = sum(sizes[:rank]); hi = lo + sizes[rank]
        for mode in ("outputs", "labels", "weights"):
            st = DLRStats(weight=w, bias=b) if mode == "weights" else DLRStats(num_classes=K)
            for i in range(lo, hi, 16):  # batches of 16 rows
                j = min(i + 16, hi)
                if mode == "weights":
                    st.update(phi[i:j])
                else:
                    st.update(phi[i:j], out[i:j], labels=lab[i:j] if mode == "labels" else None)
            n_before = st.n
            g = all_reduce(st)
            assert st.n == n_before, "all_reduce must leave its argument unchanged"
            mo = g._mom
            mo.flush()
            results[name + "/" + mode + "/value"] = np.array(g.result().value)
            results[name + "/" + mode + "/n"] = np.array(g.n)
            results[name + "/" + mode + "/mean"] = mo.mean
            results[name + "/" + mode + "/m"] = np.triu(mo.m)
    np.savez(outdir + "/rank%d.npz" % rank, **results)
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def gathered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, np.ndarray]]:
    """Run the worker on 2 gloo ranks once; return each rank's results."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "worker.py"
    script.write_text(WORKER.format(test_dir=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if sys.platform.startswith("linux"):  # talk over loopback whatever the host name resolves to
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    world = 2
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(world), str(tmp / "store"), str(tmp)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            logs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:  # pragma: no cover - only on a hang
                p.kill()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r]}"
    return [dict(np.load(tmp / f"rank{r}.npz")) for r in range(world)]


def _single(mode: str) -> DLRStats:
    phi, out, lab, w, b = dataset()
    if mode == "weights":
        return DLRStats(weight=w, bias=b).update(phi)
    return DLRStats(num_classes=K).update(phi, out, labels=lab if mode == "labels" else None)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", ["outputs", "labels", "weights"])
def test_every_rank_gets_the_single_process_result(gathered, case, mode):
    phi, out, _lab, w, b = dataset()
    want = dlrcore.dlr_from_weights(phi, w, b).value if mode == "weights" else dlrcore.dlr(phi, out).value
    ref = _single(mode)
    ref._mom.flush()
    scale = np.abs(ref._mom.m).max()
    for res in gathered:
        key = f"{case}/{mode}/"
        assert int(res[key + "n"]) == N
        assert abs(float(res[key + "value"]) - want) < 1e-10
        np.testing.assert_allclose(res[key + "mean"], ref._mom.mean, rtol=0, atol=1e-10 * np.abs(ref._mom.mean).max())
        np.testing.assert_allclose(res[key + "m"], np.triu(ref._mom.m), rtol=0, atol=1e-10 * scale)
    # both ranks hold the very same merged statistics
    for k in gathered[0]:
        np.testing.assert_array_equal(gathered[0][k], gathered[1][k])


def test_without_process_group_is_a_copy():
    phi, out, *_ = dataset()
    st = DLRStats().update(phi, out)
    got = all_reduce(st)
    assert got is not st and got.n == st.n
    assert got.result().value == st.result().value
    got.update(phi[:5], out[:5])
    assert st.n == N


def test_rejects_non_stats():
    with pytest.raises(TypeError):
        all_reduce("not stats")  # type: ignore[arg-type]
