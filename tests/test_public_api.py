"""The curated surface: sorted and complete exports, a light import, one-way layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import esanalytics

PACKAGE = Path(esanalytics.__file__).parent

# DESIGN.md §5, bottom to top: a module may import only from its own layer or below.
LAYERS = [
    {"exceptions", "_typing", "_html", "_terminal", "_duck"},
    {"events"},
    {"store"},
    {"domain", "sources"},
    {"engine"},
    {"temporal", "projections", "catalog", "materialized", "questions", "spark"},
    {"audit"},
    {"report", "viz"},
    {"cli", "jupyter"},
]
EXTRA = {"sample": 3}  # the sample generator sits with the write side


def _layer(module: str) -> int:
    head = module.split(".")[0]
    if head in EXTRA:
        return EXTRA[head]
    for index, names in enumerate(LAYERS):
        if head in names:
            return index
    raise AssertionError(f"esanalytics.{module} is in no layer of DESIGN.md §5")


def test_all_is_sorted_and_complete() -> None:
    names = esanalytics.__all__
    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(
        names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    public = {n for n in dir(esanalytics) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if type(getattr(esanalytics, n)).__name__ == "module"}
    assert public - modules == set(names) - {"__version__"}


def test_import_is_light() -> None:
    code = "import sys, esanalytics; print(sorted(m for m in ('duckdb','altair','rich','pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_layers_import_one_way() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module == "__init__":
            continue
        mine = _layer(module)
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("esanalytics.")
            ):
                targets.append(node.module.removeprefix("esanalytics."))
            elif isinstance(node, ast.ImportFrom) and node.module == "esanalytics":
                targets.append("cli" if mine == _layer("cli") else "__init__")
            elif isinstance(node, ast.Import):
                targets += [
                    a.name.removeprefix("esanalytics.")
                    for a in node.names
                    if a.name.startswith("esanalytics.")
                ]
                if any(a.name == "esanalytics" for a in node.names):
                    assert mine == _layer("cli"), f"{module} imports the whole package"
            for target in targets:
                if target == "__init__":
                    raise AssertionError(f"{module} imports the package root")
                assert _layer(target) <= mine, (
                    f"{module} (layer {mine}) imports {target} (layer {_layer(target)})"
                )
