#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the project with its test dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The local Dagster instance (SQLite): `export DAGSTER_HOME=$PWD/.dagster_home` before `dagster dev`.
# (The root dagster.yaml is the production instance and needs DAGSTER_PG_*.)
if [ ! -f .dagster_home/dagster.yaml ]; then
  .venv/bin/python -c 'from pathlib import Path; from coupa_d365_pipeline.demo import prepare_dagster_home; prepare_dagster_home(Path(".dagster_home"))'
fi
