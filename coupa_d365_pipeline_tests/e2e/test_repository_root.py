"""A newcomer's first Dagster command from the repository root, without DAGSTER_HOME: Dagster's CLI then
reads the root dagster.yaml, the production instance. Without DAGSTER_PG_* it stops with ONE line
saying what to set (instead of a config error with a stack trace per variable); with the
DAGSTER_HOME that line names, the same command succeeds."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from coupa_d365_pipeline.defs.instance import PG_VARIABLES, ProductionSettingsMissing
from coupa_d365_pipeline.demo import prepare_dagster_home

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")
HINT = "for local work run `export DAGSTER_HOME=$PWD/.dagster_home`"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and not k.startswith("DAGSTER_PG_")}
    return env | extra


def test_definitions_validate_from_the_root_fails_with_one_line_and_works_as_it_says(tmp_path):
    home = prepare_dagster_home(tmp_path / ".dagster_home")  # what scripts/bootstrap.sh makes
    validate = [DAGSTER, "definitions", "validate"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "cwd": REPO}
    bare = subprocess.Popen(validate, env=_env(), **pipes)
    local = subprocess.Popen(validate, env=_env(DAGSTER_HOME=str(home)), **pipes)
    bare_out, _ = bare.communicate(timeout=120)
    local_out, _ = local.communicate(timeout=120)

    assert bare.returncode == 1, bare_out
    errors = [line for line in bare_out.splitlines() if "error" in line.lower() or "DAGSTER_PG" in line]
    assert len(errors) == 1, bare_out
    assert errors[0].startswith("Error: this dagster.yaml is the production instance (PostgreSQL) and ")
    assert ", ".join(PG_VARIABLES) + " are not set" in errors[0] and HINT in errors[0]
    assert "Traceback" not in bare_out and "Stack Trace" not in bare_out
    assert not list(REPO.glob(".tmp_dagster_home_*"))  # Dagster's temporary instance directory is gone

    assert local.returncode == 0, local_out
    assert "All code locations passed validation." in local_out


def test_one_missing_variable_is_named_alone(tmp_path, monkeypatch):
    home = tmp_path / "prod_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    for name in PG_VARIABLES:
        monkeypatch.setenv(name, "")
    monkeypatch.delenv("DAGSTER_PG_DB")
    with pytest.raises(ProductionSettingsMissing) as raised:
        dg.DagsterInstance.from_config(str(home))
    assert "and DAGSTER_PG_DB is not set: for local work" in raised.value.format_message()
