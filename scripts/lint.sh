#!/usr/bin/env bash
# Format check, lint and type check (settings in pyproject.toml) of sweeper/, model/, their tests
# and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
PATHS=(sweeper model tests/sweeper tests/model benchmarks)
"$venv/bin/ruff" format --check "${PATHS[@]}"
"$venv/bin/ruff" check "${PATHS[@]}"
"$venv/bin/mypy" sweeper model
