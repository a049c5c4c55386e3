"""Markdown table of a pytest-benchmark JSON file from the suites in benchmarks/: per group, each member's median,
its ratio to the group's floor and, where the member computes D_LR, its error against the float64 reference.

    python -m pytest benchmarks --benchmark-only --benchmark-json=out.json
    python benchmarks/suite_table.py out.json                 # or an autosaved file under .benchmarks/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def floor_of(members: list[dict]) -> dict | None:
    """The group's floor: the member the suite marked with ``role = "floor"`` in its extra_info."""
    return next((b for b in members if b.get("extra_info", {}).get("role") == "floor"), None)


def _time(s: float) -> str:
    return f"{s:.3f} s" if s >= 0.1 else f"{s * 1e3:.1f} ms"


def table(doc: dict) -> str:
    groups: dict[str, list[dict]] = {}
    for b in doc["benchmarks"]:
        groups.setdefault(b.get("group") or "", []).append(b)
    lines = ["| group | member | role | median | x floor | rounds | \\|err\\| (tolerance) |",
             "|---|---|---|---|---|---|---|"]
    for name, members in groups.items():
        members.sort(key=lambda b: b["stats"]["median"])
        floor = floor_of(members)
        for b in members:
            med = b["stats"]["median"]
            ratio = f"{med / floor['stats']['median']:.2f}" if floor else "-"
            info = b.get("extra_info", {})
            err = "-"
            if info.get("abs_error") is not None:
                err = f"{info['abs_error']:.1e} ({info['tolerance']:.1e})"
            elif info.get("sumsq_rel_error") is not None:
                err = f"{info['sumsq_rel_error']:.1e} ({info['sumsq_tolerance']:.1e}) rel. sum of squares"
            member = b.get("param") or b["name"]
            lines.append(f"| {name} | {member} | {info.get('role', '-')} | {_time(med)} | {ratio} | "
                         f"{b['stats']['rounds']} | {err} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="a file written by --benchmark-json or --benchmark-autosave")
    args = ap.parse_args(argv)
    doc = json.loads(Path(args.json).read_text())
    info = doc.get("machine_info", {})
    env = info.get("dlrcore_benchmarks", {})
    run = doc.get("dlrcore_run", {})
    print(f"<!-- {info.get('cpu', {}).get('brand_raw', info.get('processor'))}, {env.get('cpus')} CPUs, "
          f"load average {run.get('loadavg_start')} at start, {run.get('loadavg_end')} at end, "
          f"commit {doc.get('commit_info', {}).get('id', '?')[:10]}, {doc.get('datetime')} -->")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
