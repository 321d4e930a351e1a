"""The layout holds: Dagster lives in ``defs/`` (and the CLI's demo), never in the clients, the
mapping, the sync core, the state store or the sandboxes; ``coupa/`` and ``d365/`` hold no assets."""

import subprocess
import sys
from pathlib import Path

import pytest

import coupa_d365_pipeline

PACKAGE_DIR = Path(coupa_d365_pipeline.__file__).parent

# every module of these packages (walked) and these modules (alone) is imported in a fresh interpreter,
# which then must not hold Dagster: transitive imports count too
PLAIN = ["coupa", "d365", "common", "mapping", "sync", "state", "sandbox", "webhooks", "bench", "soak"]
PLAIN_MODULES = ["coupa_d365_pipeline", "coupa_d365_pipeline.settings", "coupa_d365_pipeline.cli"]

IMPORT_ALL_AND_CHECK = """
import importlib, pkgutil, sys
walk = sys.argv[1] == "walk"
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []) if walk else [], name + "."):
        importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m == "dagster" or m.startswith(("dagster.", "dagster_")))
assert not loaded, f"{sys.argv[2:]} imported Dagster: {loaded[:5]}"
"""


@pytest.mark.parametrize("package", PLAIN)
def test_plain_packages_import_nothing_from_dagster(package):
    name = f"coupa_d365_pipeline.{package}"
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_AND_CHECK, "walk", name], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_package_the_settings_and_the_cli_import_nothing_from_dagster():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_AND_CHECK, "no-walk", *PLAIN_MODULES],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_dagster_is_imported_only_in_defs_definitions_and_demo():
    # bench/dagster_path.py runs the documents job in the bench's worker process (imports inside functions)
    allowed = {PACKAGE_DIR / "definitions.py", PACKAGE_DIR / "demo.py", PACKAGE_DIR / "bench" / "dagster_path.py"}
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if path in allowed or (PACKAGE_DIR / "defs") in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        if "import dagster" in text or "from dagster" in text:
            offenders.append(str(path.relative_to(PACKAGE_DIR)))
    assert offenders == []


def test_client_packages_hold_no_asset_modules():
    for package in ("coupa", "d365"):
        names = {p.stem for p in (PACKAGE_DIR / package).glob("*.py")}
        assert not names & {"assets", "master_assets", "sync_assets", "status_assets", "services"}, package
