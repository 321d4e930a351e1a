"""The sandboxes stand apart: no module under ``sandbox/`` imports Dagster, and none imports the connector
code except ``launch.py``, which takes the shared clock and the private-file writer from ``common/``."""

from __future__ import annotations

import ast
from pathlib import Path

import coupa_d365_pipeline.sandbox as sandbox_pkg

SANDBOX = Path(sandbox_pkg.__file__).parent
ALLOWED_CONNECTOR_IMPORTS = {"launch.py": {"coupa_d365_pipeline.common.clock", "coupa_d365_pipeline.common.files"}}


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against its package)."""
    package = ["coupa_d365_pipeline", *path.relative_to(SANDBOX.parent).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return found


def test_sandbox_modules_import_no_dagster_and_no_connector_code():
    modules = sorted(SANDBOX.rglob("*.py"))
    assert len(modules) > 20
    problems = []
    for path in modules:
        rel = path.relative_to(SANDBOX).as_posix()
        for name in _imports(path):
            if name == "dagster" or name.startswith("dagster"):
                problems.append(f"{rel} imports {name}")
            elif (
                name.startswith("coupa_d365_pipeline")
                and not name.startswith("coupa_d365_pipeline.sandbox")
                and name not in ALLOWED_CONNECTOR_IMPORTS.get(rel, set())
            ):
                problems.append(f"{rel} imports {name}")
    assert not problems, "sandboxes must stay independent of the connector and of Dagster: " + "; ".join(problems)


def test_no_sandbox_module_is_over_about_500_lines():
    long = {
        p.relative_to(SANDBOX).as_posix(): n
        for p in SANDBOX.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 520
    }
    assert not long, f"split these modules along their seams: {long}"
