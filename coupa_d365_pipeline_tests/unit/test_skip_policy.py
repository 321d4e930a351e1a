"""The CI skip policy (--fail-on-skip in conftest.py): a skip not on the allow-list fails the run."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("no server here")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
"""


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"} | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q", *args, "test_sample.py"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unlisted_skip_fails_the_run_only_with_fail_on_skip(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    plugin = ("-p", "coupa_d365_pipeline_tests.conftest")
    strict = run_pytest(tmp_path, *plugin, "--fail-on-skip")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "skips not in conftest.ALLOWED_SKIPS" in strict.stdout
    assert "test_sample.py::test_skips: no server here" in strict.stdout
    assert "test_expected_failure" not in strict.stdout.split("ALLOWED_SKIPS")[1]  # an xfail is not a skip

    relaxed = run_pytest(tmp_path, *plugin)
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "1 passed, 1 skipped, 1 xfailed" in relaxed.stdout


def test_allowed_skip_reason_keeps_the_run_green(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "conftest.py").write_text(
        "from coupa_d365_pipeline_tests.conftest import SkipPolicy\n\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(SkipPolicy({'^no server': 'documented reason'}))\n"
    )
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALLOWED_SKIPS" not in result.stdout and "1 skipped" in result.stdout
