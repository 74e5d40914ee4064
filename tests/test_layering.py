"""The package layering of docs/ARCHITECTURE.md (from the design card): arrows run config -> recommender -> archive ->
desom, and desom stays a plain library without Django. Read from the source (every import
statement, those inside functions too), so that a late import cannot slip past."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Package -> top-level names its modules must never import.
FORBIDDEN = {
    "desom": {"django", "rest_framework", "django_filters", "archive", "recommender", "config", "benchmarks",
              "tests"},
    "archive": {"recommender", "benchmarks", "tests"},
    "recommender": {"benchmarks", "tests"},
}


def imported_top_levels(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_up_the_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    breaches = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                for path in files for name, line in sorted(imported_top_levels(path))
                if name in FORBIDDEN[package]]
    assert not breaches, "\n".join(breaches)


def test_the_checker_sees_a_late_import(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from django.db import models\n    import archive.models\n")
    assert {name for name, _ in imported_top_levels(module)} == {"django", "archive"}


def _is_sys_path(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
            and node.value.id == "sys")


def test_nothing_edits_sys_path():
    """Every entry point runs from the repository root (`python -m benchmarks.<name>`,
    `manage.py`), so no module needs to edit sys.path; an edit would hide a broken import."""
    offenders = set()
    for package in ("desom", "archive", "recommender", "config", "benchmarks", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                called = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and _is_sys_path(node.func.value)                       # sys.path.insert(...)
                assigned = isinstance(node, (ast.Assign, ast.AugAssign)) and any(
                    _is_sys_path(t) for t in getattr(node, "targets", [getattr(node, "target", None)]))
                if called or assigned:
                    offenders.add(str(path.relative_to(ROOT)))
    assert not offenders, f"these modules edit sys.path: {sorted(offenders)}"
