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


# Custom Keras layers must be registered at import so safe-mode loading finds them: these two
# modules import TensorFlow by design, and only model building and loading import them.
MODEL_LAYERS = ("layers.py", "hashed.py")


@pytest.mark.integration
def test_importing_every_module_loads_no_heavy_package() -> None:
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "textclf").rglob("*.py")
        if p.name not in ("__main__.py", *MODEL_LAYERS)
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY!r} + ('airflow',) if h in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# The pipeline's layers, lowest first: a module may import from its own package and from lower layers only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "progress", "config", "common", "textstats", "tflog"),
    ("lake",),
    ("report",),
    ("ingest",),
    ("validate",),
    ("model",),
    ("evaluate",),
    ("promote",),
    ("score",),
    ("demo",),
    ("cli", "__main__"),
)


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_stages_import_only_downwards() -> None:
    upward = []
    for path in (ROOT / "textclf").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("textclf."):
                target = node.module or ""
                same_package = module.split(".")[:2] == target.split(".")[:2]
                if not same_package and layer_of(target) > layer_of(module):
                    upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_layering_test_sees_every_package() -> None:
    packages = {p.name for p in (ROOT / "textclf").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in (ROOT / "textclf").glob("*.py")}
    assert packages | modules <= {name for names in LAYERS for name in names}
