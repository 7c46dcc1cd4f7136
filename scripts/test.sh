#!/usr/bin/env bash
# Installs the environment when absent (scripts/venv.sh) and runs the test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow" -x`.
# PostgreSQL store tests run when SWEEPER_TEST_PG_URL is set (scripts/pg-sandbox.sh);
# SLURM tests when SLURM_CONF is set (scripts/slurm-sandbox.sh). Under CI=true they must run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
exec "$venv/bin/python" -m pytest --durations=25 "$@"  # the slowest tests, to keep CI short
