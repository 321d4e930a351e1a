"""The coupa-d365 CLI as real processes: sandbox server, ping, help, demo."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from coupa_d365_pipeline.sandbox.server import free_port

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "coupa_d365_pipeline.cli"]


def run_cli(args, env=None, timeout=120):
    return subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_help_texts():
    out = run_cli(["--help"])
    assert out.returncode == 0 and "ping" in out.stdout and "sandbox" in out.stdout and "demo" in out.stdout
    assert "credentials" in out.stdout
    assert "--rate-429" in run_cli(["sandbox", "--help"]).stdout
    listing = run_cli(["env"]).stdout
    for name in (
        "COUPA_BASE_URL",
        "D365_AUTHORITY_URL",
        "SYNC_DATABASE_URL",
        "COUPA_D365_MAPPING_FILE",
        "COUPA_D365_CREDENTIALS_FILE",
        "COUPA_D365_CREDENTIALS_KEY",
        "COUPA_D365_CREDENTIALS_KEY_FILE",
    ):
        assert name in listing


def test_ping_missing_configuration_names_the_variables():
    env = {
        k: ""
        for k in (
            "COUPA_BASE_URL",
            "COUPA_CLIENT_ID",
            "COUPA_CLIENT_SECRET",
            "D365_BASE_URL",
            "D365_TENANT_ID",
            "D365_CLIENT_ID",
            "D365_CLIENT_SECRET",
            "D365_DEFAULT_LEGAL_ENTITY",
        )
    }
    out = run_cli(["ping"], env)
    assert out.returncode == 1
    assert "coupa  FAIL" in out.stdout and "COUPA_BASE_URL is not set" in out.stdout
    assert "d365   FAIL" in out.stdout and "D365_TENANT_ID is not set" in out.stdout


@pytest.fixture
def sandbox_process(tmp_path):
    coupa_port, d365_port = free_port(), free_port()
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        CLI
        + [
            "sandbox",
            "--coupa-port",
            str(coupa_port),
            "--d365-port",
            str(d365_port),
            "--invoices",
            "60",
            "--env-file",
            str(env_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not env_file.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "sandbox did not start"
        time.sleep(0.1)
    env = dict(re.findall(r"^export (\w+)=(.*)$", env_file.read_text(), re.M))
    try:
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_ping_passes_against_sandbox_processes_and_fails_clearly_with_a_wrong_secret(sandbox_process):
    env = sandbox_process
    assert httpx.get(env["COUPA_BASE_URL"] + "/_sandbox/requests").status_code == 200
    good = run_cli(["ping"], env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "coupa  PASS" in good.stdout and "d365   PASS" in good.stdout and "usmf" in good.stdout

    bad = run_cli(["ping"], env | {"COUPA_CLIENT_SECRET": "not-the-secret", "D365_DEFAULT_LEGAL_ENTITY": "zz"})
    assert bad.returncode == 1
    assert re.search(r"coupa  FAIL .*invalid_client.*COUPA_CLIENT_SECRET", bad.stdout)
    assert re.search(r"d365   FAIL .*'zz' does not exist", bad.stdout)
    assert "not-the-secret" not in bad.stdout + bad.stderr


def test_demo_runs_end_to_end_and_prints_what_moved(tmp_path):
    home, state = tmp_path / "home", tmp_path / "state"
    out = run_cli(
        ["demo", "--invoices", "80", "--dagster-home", str(home), "--state-dir", str(state)],
        env={"DAGSTER_HOME": ""},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"Coupa suppliers -> staged\s+\d+", out.stdout)
    invoices = int(re.search(r"Coupa invoices \(approved/voided\) -> staged\s+(\d+)", out.stdout).group(1))
    assert invoices >= 70
    created = int(re.search(r"D365 pending vendor invoices created\s+(\d+)", out.stdout).group(1))
    quarantined = int(re.search(r"quarantined \(not written, reason in ledger\)\s+(\d+)", out.stdout).group(1))
    assert created > 40 and quarantined >= 1
    assert "asset check default_legal_entity_exists: PASSED" in out.stdout
    assert "asset check vendor_invoices_not_stuck: FAILED" in out.stdout  # the seed has unmappable invoices
    assert (home / "history" / "runs.db").exists() and (home / "dagster.yaml").exists()


REPO = Path(__file__).resolve().parents[2]
VALIDATE = [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "coupa_d365_pipeline"]


def test_definitions_validate_on_the_local_instance(tmp_path):
    out = subprocess.run(
        VALIDATE,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful for code location coupa_d365_pipeline" in out.stderr + out.stdout


@pytest.mark.postgres
def test_definitions_validate_with_the_production_instance_from_the_repo_root(postgres_database):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env |= {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": postgres_database,
    }
    out = subprocess.run(VALIDATE, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "All code locations passed validation" in out.stderr + out.stdout
