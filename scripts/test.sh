#!/usr/bin/env bash
# README command 2: set everything up, then run the whole test suite.
# PostgreSQL tests need 127.0.0.1:5432 (user postgres); they skip when it is absent, except with CI=true.
# Two pytest-xdist workers (PYTEST_WORKERS, default 2; 0 = in this process): the tests that start real
# processes (marker e2e) run one after another on one worker, everything else on both (conftest.py).
# Arguments are passed to pytest after these, so `scripts/test.sh -n 0 path::test` runs one test in-process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadgroup "$@"
