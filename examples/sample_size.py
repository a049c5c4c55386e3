"""How many held-out samples D_LR needs: the value against n, for several feature widths p, against a population.

D_LR measured on n samples reads high when n is not much larger than the features' spread: sampling noise in the
feature covariance ``S = Phic^T Phic / n`` adds ``(tr Sigma)^2 / n`` to ``||S||_F^2`` on average, so the kernel
``K`` looks spread over more directions than the population's (lazy). The inflation of ``||K||_F`` is about
``sqrt(1 + PR / n)``, with ``PR = (tr Sigma)^2 / ||Sigma||_F^2`` the participation ratio of the features (at most
p, equal to p for isotropic features), which is why the guidance is stated in samples per feature.

Two settings:

* **synthetic**: features ``N(0, Sigma)`` in p dimensions with an isotropic or a decaying (``1 / k``) spectrum,
  outputs ``Phi W^T`` plus 10 % noise (C = 10, W fixed); the population value is D_LR on one large sample;
* **trained network**: the built-in demo's rich MLP (:mod:`dlrcore.demo_mlp`), trained once; its penultimate
  features (p = width) against its outputs on held-out inputs, the population value on 40 000 of them.

For each n the mean over seeds of the literal D_LR and of D_half, their bias against the population, their spread
over seeds and the mean of their jackknife standard errors (ten blocks) are written to ``sample_size.json`` in
``--out``, with the smallest ratio n / p at which the bias of both stays under 0.02 in every setting.
docs/uncertainty.md quotes the table.

Run ``python examples/sample_size.py`` (the docs' table) or ``--quick`` (the test's size).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import dlrcore
from dlrcore.demo_mlp import init_mlp, make_task, train_mlp

#: Bias (absolute, on the [0, 1] scale) under which a reading counts as settled.
TOLERATED_BIAS = 0.02


def synthetic(p: int, spectrum: str, seed: int, C: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The fixed population of one setting: the square root of Sigma (by its eigenvalues) and the readout W."""
    rng = np.random.default_rng([p, C, seed])
    ev = np.ones(p) if spectrum == "isotropic" else 1.0 / np.arange(1, p + 1)
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    root = q * np.sqrt(ev)  # Phi = Z root^T, Sigma = root root^T
    w = rng.normal(size=(C, p))
    return root, w


def draw(root: np.ndarray, w: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    phi = rng.normal(size=(n, root.shape[0])) @ root.T
    out = phi @ w.T
    out += 0.1 * out.std(axis=0) * rng.normal(size=out.shape)
    return phi, out


#: Jackknife blocks of each measurement (its standard error is reported beside the spread over seeds).
BLOCKS = 10


def both(phi: np.ndarray, out: np.ndarray) -> tuple[float, float, float, float]:
    """Both measures and their jackknife standard errors (NaN where n is too small for one)."""
    res = dlrcore.DLRStats(blocks=BLOCKS).update(phi, out).result()
    se = [math.nan if v is None else v for v in (res.stderr_span, res.stderr_sqrt)]
    return res.value_span, res.value_sqrt, se[0], se[1]


def population(sample, n_pop: int, block: int = 50_000) -> tuple[float, float]:
    """Both measures on one large sample, streamed in blocks."""
    st = dlrcore.DLRStats()
    rng = np.random.default_rng(10_000)
    for start in range(0, n_pop, block):
        st.update(*sample(min(block, n_pop - start), rng))
    res = st.result()
    return res.value_span, res.value_sqrt


def curve(sample, pop: tuple[float, float], ns: list[int], seeds: int) -> list[dict]:
    rows = []
    for n in ns:
        vals = np.array([both(*sample(n, np.random.default_rng([n, s]))) for s in range(seeds)])
        mean, sd = vals.mean(axis=0), vals.std(axis=0, ddof=1)
        rows.append({
            "n": n, "span_mean": float(mean[0]), "span_bias": float(mean[0] - pop[0]), "span_sd": float(sd[0]),
            "sqrt_mean": float(mean[1]), "sqrt_bias": float(mean[1] - pop[1]), "sqrt_sd": float(sd[1]),
            "span_stderr": float(np.nanmean(vals[:, 2])), "sqrt_stderr": float(np.nanmean(vals[:, 3])),
        })
    return rows


def trained_network(quick: bool) -> tuple[Callable[[int, np.random.Generator], tuple], int]:
    """The demo's rich network, trained once: a sampler of (features, outputs) on fresh held-out inputs."""
    width, dim, classes = (64, 32, 4) if quick else (128, 64, 4)
    x_tr, y_tr, _, _ = make_task(0, 1500 if quick else 3000, 10, input_dim=dim, num_classes=classes)
    net = init_mlp([dim, width, width, classes], seed=0)
    net, _ = train_mlp(net, x_tr, np.eye(classes)[y_tr], epochs=20 if quick else 60, batch_size=100)

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return net.forward(rng.normal(size=(n, dim)))  # fresh inputs of the task's distribution

    return sample, width


def run(quick: bool) -> dict:
    ratios = [1, 2, 5, 10, 20, 50] if quick else [1, 2, 5, 10, 20, 50, 100]
    widths = [16, 64] if quick else [16, 64, 256]
    seeds = 4 if quick else 12
    settings = []
    for p in widths:
        for spectrum in ("isotropic", "decaying"):
            root, w = synthetic(p, spectrum, seed=0)
            sample = lambda n, rng, root=root, w=w: draw(root, w, n, rng)
            pop = population(sample, 40_000 if quick else max(200_000, 400 * p))
            ns = [max(r * p, 20) for r in ratios]
            settings.append({"setting": f"synthetic p={p} {spectrum}", "p": p, "population_span": pop[0],
                             "population_sqrt": pop[1], "rows": curve(sample, pop, ns, seeds)})
    sample, p = trained_network(quick)
    pop = population(sample, 40_000)
    ns = [r * p for r in ratios]
    settings.append({"setting": f"trained MLP p={p}", "p": p, "population_span": pop[0], "population_sqrt": pop[1],
                     "rows": curve(sample, pop, ns, seeds)})
    settled = []
    for s in settings:
        ok = [r["n"] / s["p"] for r in s["rows"]
              if abs(r["span_bias"]) < TOLERATED_BIAS and abs(r["sqrt_bias"]) < TOLERATED_BIAS]
        later_ok = [x for x in ok if all(
            abs(r["span_bias"]) < TOLERATED_BIAS and abs(r["sqrt_bias"]) < TOLERATED_BIAS
            for r in s["rows"] if r["n"] / s["p"] >= x)]
        settled.append(min(later_ok) if later_ok else None)
    need = None if any(v is None for v in settled) else max(settled)
    return {"tolerated_bias": TOLERATED_BIAS, "seeds": seeds, "settings": settings,
            "samples_per_feature_needed": need}


def table(report: dict) -> str:
    lines = ["| setting | population D_LR / D_half | n / p | bias D_LR | bias D_half | sd D_LR / D_half | "
             "jackknife SE D_LR / D_half |", "|---|---|---|---|---|---|---|"]
    for s in report["settings"]:
        for i, r in enumerate(s["rows"]):
            head = (f"{s['setting']} | {s['population_span']:.3f} / {s['population_sqrt']:.3f}" if i == 0
                    else " | ")
            lines.append(f"| {head} | {r['n'] / s['p']:g} | {r['span_bias']:+.3f} | {r['sqrt_bias']:+.3f} | "
                         f"{r['span_sd']:.3f} / {r['sqrt_sd']:.3f} | {r['span_stderr']:.3f} / {r['sqrt_stderr']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the test's size")
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    report = run(args.quick)
    report["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sample_size.json").write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"samples per feature for |bias| < {TOLERATED_BIAS} everywhere: {report['samples_per_feature_needed']}"
          f" ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
