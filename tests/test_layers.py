"""The layering rule of docs/architecture.md: a module imports only from its own layer or below,
and no import cycle exists.  Every project import in a file counts, function-local ones too;
imports under ``if TYPE_CHECKING:`` (annotations only) do not."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "transferkit"

#: Bottom to top; a module's layer is that of its longest listed prefix.
LAYERS: list[list[str]] = [
    ["errors", "_registry", "_files", "_memory", "_studies", "_fit_cache"],
    ["data", "scores", "alignment", "evaluation", "config", "tasks"],
    ["backbones"],
    ["features", "onnx_runtime", "training", "classical", "series_features"],
    ["strategies", "controls", "model", "evidence", "selection", "forecast_controls", "forecast_model", "continual",
     "pretraining"],
    ["report"],
    ["runs", "ranking", "auto", "tracking"],
    ["pipeline", "multitask", "predict", "export", "distill", "distill_set", "explain", "serve", "demo", "sklearn",
     "update", "rl", "federated", "forecast_pipeline", "continual_update", "continual_lineage", "pretrain"],
    ["cli", "cli_rl", "cli_federate", "cli_forecast", "cli_pretrain", ""],  # "" is the package's own __init__
]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _layer(module: str) -> int:
    best, level = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (n == "" and module == "") or (n and (module == n or module.startswith(n + "."))):
                if len(n) > best:
                    best, level = len(n), i
    if level is None:
        raise AssertionError(f"transferkit.{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return level


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports (resolved to the most specific existing module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    pkg = [p for p in pkg if p]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "transferkit" or node.module.startswith("transferkit.")):
                prefix = node.module[len("transferkit."):] if node.module != "transferkit" else ""
            else:
                continue
            for a in node.names:
                full = f"{prefix}.{a.name}" if prefix else a.name
                names.append(full if full in mods else prefix)
        elif isinstance(node, ast.Import):
            names = [a.name[len("transferkit."):] for a in node.names if a.name.startswith("transferkit.")]
        for n in names:
            while n not in mods and "." in n:
                n = n.rsplit(".", 1)[0]
            if n in mods and n != module:
                found.add(n)
    # a package's __init__ gathers its own submodules; a submodule reaching up to its own
    # package's __init__ is an edge like any other (it runs that __init__)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, f, mods) for m, f in mods.items()}


def test_every_module_has_a_layer():
    for m in _modules():
        _layer(m)


def test_no_module_imports_a_higher_layer():
    upward = [f"transferkit.{m or '__init__'} (layer {_layer(m)}) imports transferkit.{d} (layer {_layer(d)})"
              for m, deps in _graph().items() for d in sorted(deps) if _layer(d) > _layer(m)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    g = _graph()
    # a package __init__ importing its own submodules is how packages gather their names: those
    # edges are not part of a cycle unless the submodule also imports the package back
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(v: str, path: list[str]) -> None:
        state[v] = 1
        path.append(v)
        for w in sorted(g[v]):
            if state.get(w) == 1:
                cycles.append(path[path.index(w):] + [w])
            elif w not in state:
                walk(w, path)
        path.pop()
        state[v] = 2

    for v in sorted(g):
        if v not in state:
            walk(v, [])
    shown = ["  " + " -> ".join(f"transferkit.{m or '__init__'}" for m in c) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(shown)


def test_the_check_finds_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above can fail: a fake package with one upward import and one cycle."""
    pkg = tmp_path / "transferkit"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from .pipeline import fit\n")  # layer 0 -> layer 7
    (pkg / "pipeline.py").write_text("def fit():\n    from .errors import X\n")
    (pkg / "data" / "__init__.py").write_text("from .readers import read\n")
    (pkg / "data" / "readers.py").write_text("from . import validate\n")
    (pkg / "data" / "validate.py").write_text("from .readers import read\n"
                                              "from typing import TYPE_CHECKING\n"
                                              "if TYPE_CHECKING:\n    from ..pipeline import fit\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    with pytest.raises(AssertionError, match="errors .layer 0. imports transferkit.pipeline"):
        test_no_module_imports_a_higher_layer()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
