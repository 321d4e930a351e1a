#!/usr/bin/env bash
# README command 2: set everything up, then run the whole test suite.
# PostgreSQL tests need 127.0.0.1:5432 (user postgres); they skip when it is absent, except with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
