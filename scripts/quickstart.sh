#!/usr/bin/env bash
# The main job on a fresh clone: install the environment when absent, then plan the
# quickstart study (micro ViT, procedural data, local executor) into ./results.db.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
"$venv/bin/sweeper" plan studies/quickstart.yaml
