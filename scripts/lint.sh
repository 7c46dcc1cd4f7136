#!/usr/bin/env bash
# Format check, lint and type check (settings in pyproject.toml). Covers sweeper/ and its tests;
# model/ joins (add it to PATHS) once its pending changes have merged and it is clean.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
PATHS=(sweeper tests/sweeper benchmarks/cli_startup.py)
"$venv/bin/ruff" format --check "${PATHS[@]}"
"$venv/bin/ruff" check "${PATHS[@]}"
"$venv/bin/mypy" sweeper
