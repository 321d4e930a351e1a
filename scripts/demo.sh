#!/usr/bin/env bash
# README command 1: set everything up, then run the connector end to end against both sandboxes
# on a local SQLite Dagster instance (.dagster_home) and print what moved.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/coupa-d365 demo "$@"
