#!/usr/bin/env bash
# The checks to run when a machine with a GPU is lent (issue 15 §5), printing figures for the
# README: the rehearsal of one ViT-B cell per framework (model/train.py trains in bf16 autocast on
# CUDA), then the specialized-vs-plain train-step time at ViT-B, 224 px, batch 128, without and
# with bf16 autocast. Without CUDA it runs the same checks on CPU at batch 8 and says so, so the
# script is known to work before a GPU is at hand.
#   scripts/gpu-checks.sh [extra arguments for benchmarks/specialized_vit.py]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
py="$venv/bin/python"
if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  device=cuda batch=128 repeats=7
  "$py" -c 'import torch; print("gpu-checks:", torch.cuda.get_device_name(), "torch", torch.__version__)'
else
  device=cpu batch=8 repeats=2
  echo "gpu-checks: no CUDA device here: the same checks on CPU at batch 8 (not GPU figures)" >&2
fi
echo "== rehearsal: one ViT-B cell per framework"
"$py" benchmarks/rehearsal.py --scales base
for amp in "" --amp; do
  echo "== specialized / plain train step, ViT-B, 224 px, batch $batch${amp:+, bf16 autocast}"
  "$py" benchmarks/specialized_vit.py --device "$device" --scales base --batch "$batch" \
    --repeats "$repeats" --spec norms+qkv_third $amp "$@"
  "$py" benchmarks/specialized_vit.py --device "$device" --scales base --batch "$batch" \
    --repeats "$repeats" --spec all $amp "$@"
done
