"""
tests/README.md maps the card's properties and each method to their tests. The map stays true: every
`file::test` it cites names a test function that file defines (read with ast, nothing run), every method of
spectral_ft.METHODS (and full, head) has its line, and every test file is listed.
"""
import ast
import re
from pathlib import Path

import spectral_ft

TESTS = Path(__file__).resolve().parent
README = (TESTS / "README.md").read_text()
REFERENCE = re.compile(r"\b(test_\w+\.py)::(\w+)")


def section(title):
    """The text of README's `## title` section, up to the next `## ` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:] if end < 0 else README[start:end]


def functions(file):
    """The top-level function names (tests and helpers) a test file defines."""
    return {node.name for node in ast.parse((TESTS / file).read_text()).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_cited_test_exists():
    cited = REFERENCE.findall(README)
    assert len(cited) >= 50
    missing = [f"{file}::{name}" for file, name in cited
               if not (TESTS / file).is_file() or not name.startswith("test_") or name not in functions(file)]
    assert not missing, f"tests/README.md cites tests that do not exist: {missing}"


def test_every_method_has_its_line_naming_its_tests():
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^- `(\w+)`(.*(?:\n  .*)*)", section("Each method"), re.M)}
    missing = [method for method in [*spectral_ft.METHODS, "full", "head"]
               if method not in lines or not REFERENCE.search(lines[method])]
    assert not missing, f"tests/README.md's 'Each method' has no line citing a test for: {missing}"


def test_every_test_file_is_listed():
    listed = set(re.findall(r"`(\w+\.py)`", section("The files")))
    missing = sorted(p.name for p in TESTS.glob("*.py") if p.name not in listed)
    assert not missing, f"tests/README.md's 'The files' does not list: {missing}"
