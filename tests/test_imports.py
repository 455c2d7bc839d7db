"""Layering: the library never imports Airflow, and heavy packages load only when used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "great_expectations", "pandas")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_airflow() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "textclf").rglob("*.py") if "airflow" in imported_modules(p)]
    assert offenders == []


# Custom Keras layers must be registered at import so safe-mode loading finds them: this one
# module imports TensorFlow by design, and only model building and loading import it.
MODEL_LAYERS = "layers.py"


@pytest.mark.integration
def test_importing_every_module_loads_no_heavy_package() -> None:
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "textclf").rglob("*.py")
        if p.name not in ("__main__.py", MODEL_LAYERS)
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY!r} + ('airflow',) if h in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
