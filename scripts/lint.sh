#!/usr/bin/env bash
# Lint and types, as CI runs them: ruff (lint + format check) and pyright (basic), configured in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check coupa_d365_pipeline coupa_d365_pipeline_tests
.venv/bin/ruff format --check coupa_d365_pipeline coupa_d365_pipeline_tests
.venv/bin/pyright --project .
