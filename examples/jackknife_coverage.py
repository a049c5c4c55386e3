"""Do the jackknife error bars cover? Coverage of 95 % intervals of D_LR and D_half, by simulation.

Each setting is a synthetic population with a known value: features ``N(0, Sigma)`` in p dimensions (a ``1 / k``
spectrum), outputs ``Phi W^T`` plus 10 % noise for a fixed readout W (C = 10); the population values of D_LR and
D_half are those of one very large sample. For each n, many seeds draw n samples, accumulate
``DLRStats(blocks=10)`` and form the 95 % intervals ``value +- t stderr`` (``t = 2.262``, the Student quantile
with B - 1 = 9 degrees of freedom, as the standard error comes from ten blocks), the same about the bias-corrected
``value - bias``, and ``value +- 1.96 stderr`` for comparison. The share of seeds whose interval holds the
population value is the coverage; nominal is 0.95. ``sample_size.py`` measures the bias that dominates below ten
samples per feature.

Writes ``jackknife_coverage.json`` into ``--out``; docs/uncertainty.md quotes the table. Run
``python examples/jackknife_coverage.py`` (the docs' table) or ``--quick`` (the test's size).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import dlrcore

Z = 1.96
BLOCKS = 10
#: The Student t quantile with B - 1 = 9 degrees of freedom: the 95 % factor for a standard error estimated from
#: ten blocks (scipy.stats.t.ppf(0.975, 9)).
T9 = 2.262157


def population_of(p: int, C: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([p, C])
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    root = q * np.sqrt(1.0 / np.arange(1, p + 1))
    return root, rng.normal(size=(C, p))


def draw(root: np.ndarray, w: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    phi = rng.normal(size=(n, root.shape[0])) @ root.T
    out = phi @ w.T
    out += 0.1 * out.std(axis=0) * rng.normal(size=out.shape)
    return phi, out


def population_values(root: np.ndarray, w: np.ndarray, n_pop: int, block: int = 50_000) -> tuple[float, float]:
    st = dlrcore.DLRStats()
    rng = np.random.default_rng(99)
    for start in range(0, n_pop, block):
        st.update(*draw(root, w, min(block, n_pop - start), rng))
    res = st.result()
    return res.value_span, res.value_sqrt


def cell(root: np.ndarray, w: np.ndarray, n: int, seeds: int, pop: tuple[float, float]) -> dict:
    hits = np.zeros((2, 3))  # [kernel, (t interval, bias-corrected t interval, 1.96 interval)]
    ses = np.zeros((seeds, 2))
    vals = np.zeros((seeds, 2))
    for s in range(seeds):
        res = dlrcore.DLRStats(blocks=BLOCKS).update(*draw(root, w, n, np.random.default_rng([n, s, 7]))).result()
        for k, (v, se, b) in enumerate(((res.value_span, res.stderr_span, res.bias_span),
                                        (res.value_sqrt, res.stderr_sqrt, res.bias_sqrt))):
            hits[k, 0] += abs(v - pop[k]) <= T9 * se
            hits[k, 1] += abs(v - b - pop[k]) <= T9 * se
            hits[k, 2] += abs(v - pop[k]) <= Z * se
            ses[s, k], vals[s, k] = se, v
    cover = hits / seeds
    return {
        "n": n, "seeds": seeds,
        "coverage_span": float(cover[0, 0]), "coverage_span_corrected": float(cover[0, 1]),
        "coverage_sqrt": float(cover[1, 0]), "coverage_sqrt_corrected": float(cover[1, 1]),
        "coverage_span_z": float(cover[0, 2]), "coverage_sqrt_z": float(cover[1, 2]),
        "mean_stderr_span": float(ses[:, 0].mean()), "sd_value_span": float(vals[:, 0].std(ddof=1)),
        "mean_stderr_sqrt": float(ses[:, 1].mean()), "sd_value_sqrt": float(vals[:, 1].std(ddof=1)),
    }


def run(quick: bool) -> dict:
    widths = [16, 64] if quick else [16, 64, 256, 512]
    ns = [500, 2000] if quick else [500, 2000, 10000]
    rows = []
    for p in widths:
        root, w = population_of(p)
        # the population value must be far more precise than the intervals: its own spread is that of n = 1e4
        # reduced sqrt(n_pop / 1e4) = 8 to 14 times
        pop = population_values(root, w, 100_000 if quick else {16: 2_000_000, 64: 2_000_000}.get(p, 640_000))
        for n in ns:
            seeds = 60 if quick else (200 if n <= 2000 else 100)
            rows.append({"p": p, "population_span": pop[0], "population_sqrt": pop[1], **cell(root, w, n, seeds, pop)})
    return {"blocks": BLOCKS, "t": T9, "z": Z, "rows": rows}


def table(report: dict) -> str:
    out = ["| p | n | n / p | seeds | D_LR: t / bias-corrected t / 1.96 | D_half: t / bias-corrected t / 1.96 | "
           "mean SE / sd of values, D_LR |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        out.append(
            f"| {r['p']} | {r['n']} | {r['n'] / r['p']:.3g} | {r['seeds']} | {r['coverage_span']:.2f} / "
            f"{r['coverage_span_corrected']:.2f} / {r['coverage_span_z']:.2f} | {r['coverage_sqrt']:.2f} / "
            f"{r['coverage_sqrt_corrected']:.2f} / {r['coverage_sqrt_z']:.2f} | "
            f"{r['mean_stderr_span']:.4f} / {r['sd_value_span']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the test's size")
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    report = run(args.quick)
    report["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "jackknife_coverage.json").write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
