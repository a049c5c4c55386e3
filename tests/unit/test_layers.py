"""The package reads as a pipeline (issue 14): arrays -> state -> results -> algebra -> estimators -> io -> front
ends. An AST check that no module imports one of a higher layer, and that no private name (``_x``) is imported
across layers. Every module of the package must be placed in a layer, so a new module has to be placed too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dlrcore"

LAYERS: dict[str, list[str]] = {
    "arrays": [
        "checks", "precision", "inputs", "backend", "scaling", "kernels", "concurrency", "progress", "storage",
        "extras",
    ],
    "state": ["chan", "folded_moments", "moments", "accumulate", "weights_head", "blocked_moments"],
    "results": ["record", "result"],
    "algebra": [
        "eigen", "output_kernels", "output_span", "exact", "spectral", "baseline", "sketch_algebra",
    ],
    "estimators": [
        "estimator", "stats_format", "stats_compute", "stats_device", "stats_file", "stats", "sketch", "randomized",
        "method_choice", "measures", "device_exact", "functions", "__init__", "jackknife",
    ],
    "io": ["arrayfiles", "checkpoint", "npy_writer"],
    "front": ["cli", "plot", "dask", "dask_tasks", "demo", "demo_mlp", "__main__", "adapters"],
}
ORDER = list(LAYERS)
LAYER_OF = {module: ORDER.index(layer) for layer, modules in LAYERS.items() for module in modules}


def _layer(module: str) -> int:
    """Layer of ``dlrcore.x.y`` (the adapters subpackage is one front-end unit)."""
    parts = module.split(".")[1:] or ["__init__"]
    return LAYER_OF[parts[0]]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1] if len(parts) > 2 else parts
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported dlrcore module, names) for every import of ``path``, relative ones resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if path.name == "__init__.py" and package[-1] == "__init__":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dlrcore":
                continue
            names = [a.name for a in node.names]
            if node.module is None or target == "dlrcore":  # from . import kernels: the names are modules
                for name in names:
                    sub = f"{target}.{name}"
                    found.append((sub if sub.split(".")[1] in LAYER_OF else target, [] if sub else names))
            else:
                found.append((target, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "dlrcore"]
    return found


def test_every_module_has_a_layer():
    missing = sorted(m for m in _modules() if m.split(".")[1:2] and m.split(".")[1] not in LAYER_OF)
    assert not missing, f"place these modules in LAYERS: {missing}"


def test_lower_layers_never_import_higher_ones_nor_private_names_across_layers():
    problems = []
    for module, path in _modules().items():
        own = _layer(module)
        for target, names in _imports(module, path):
            if target == "dlrcore":
                continue  # the package itself: only front ends and lazy imports of its kernels use it
            theirs = _layer(target)
            if theirs > own:
                problems.append(f"{module} ({ORDER[own]}) imports {target} ({ORDER[theirs]})")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and theirs != own:
                problems.append(f"{module} imports private {private} from {target} across layers")
    assert not problems, "\n".join(problems)
