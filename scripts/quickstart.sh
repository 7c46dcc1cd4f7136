#!/usr/bin/env bash
# The main job on a fresh clone: install the environment when absent, run the quickstart study
# (micro ViT pretrained with DINOv2, procedural data; 2 local cells at a time) into ./results.db and ./runs,
# wait for it, and print the ablation table (mean ± std over seeds, deltas vs the baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
"$venv/bin/sweeper" launch studies/quickstart.yaml --wait
# the science columns only (all 18 metrics do not fit an 80-column terminal); these three do
"$venv/bin/sweeper" report quickstart -m "knn.*.top1" -m "linear_seg.*.miou" -m params.extra_pct
