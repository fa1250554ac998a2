"""Every script in benchmarks/ imports, and so does every project module it imports inside its
functions (the README tells users to run them; `benchmarks/explain_masks.py` once imported a module
that had moved, which only running it would have shown). Nothing is run."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
PROJECT = ("discff_cli", "index", "training", "benchmarks")


def project_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of a project module anywhere in the file, functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] in PROJECT]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in PROJECT:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def test_there_are_scripts():
    assert len(SCRIPTS) >= 10 and ROOT / "benchmarks" / "explain_masks.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_imports(script):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level only: no script runs under a name other than __main__
    for line, name, names in project_imports(script):
        imported = importlib.import_module(name)
        for attr in names:
            if not hasattr(imported, attr):
                importlib.import_module(f"{name}.{attr}")  # a submodule (from training.demo_models import x)
