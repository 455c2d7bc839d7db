"""docs/RELIABILITY.md names the tests behind each promise: every one it names must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
# `test_x.py::test_name`, or `::test_name` for another test of the file named just before it
REFERENCE = re.compile(r"`(test_\w+\.py)?(?:::(\w+))?`")


def named_tests(text: str) -> list[tuple[str, str | None]]:
    """(file, test or None) for every test reference, in order; `::name` takes the file before it."""
    found, current = [], None
    for match in REFERENCE.finditer(text):
        file, test = match.groups()
        if file is None and test is None:
            continue
        current = file or current
        assert current is not None, f"`::{test}` in {DOC.name} comes before any file is named"
        found.append((current, test))
    return found


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
            and node.name.startswith("test_")}


def test_every_test_named_in_reliability_md_exists() -> None:
    references = named_tests(DOC.read_text(encoding="utf-8"))
    assert len(references) >= 40  # the document lists its promises' tests; an empty parse proves nothing
    missing = []
    for file, test in references:
        path = ROOT / "tests" / file
        if not path.is_file():
            missing.append(file)
        elif test is not None and test not in functions_in(path):
            missing.append(f"{file}::{test}")
    assert not missing, f"{DOC.name} names tests that do not exist: {missing}"


def test_a_misspelled_reference_would_be_caught() -> None:
    refs = named_tests("see `test_storage.py::test_nope` and `::test_keys_that_escape_the_lake_are_refused`")
    assert refs == [("test_storage.py", "test_nope"), ("test_storage.py", "test_keys_that_escape_the_lake_are_refused")]
    assert "test_nope" not in functions_in(ROOT / "tests" / "test_storage.py")
