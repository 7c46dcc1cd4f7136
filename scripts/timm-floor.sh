#!/usr/bin/env bash
# The timm floor pyproject.toml states is the one the code runs on: install exactly that version
# beside the venv (a --target directory put first on PYTHONPATH, so nothing else changes) and run
# the specialized-ViT tests on it. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash scripts/venv.sh)
floor=$(sed -n 's/^ *"timm>=\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "timm-floor: no 'timm>=X' in pyproject.toml" >&2; exit 1; }
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
"$venv/bin/python" -m pip install -q --no-deps --target "$target" "timm==$floor"
PYTHONPATH="$target" "$venv/bin/python" - "$floor" <<'PY'
import sys, timm
assert timm.__version__ == sys.argv[1], (timm.__version__, sys.argv[1])
print(f"timm-floor: testing on timm {timm.__version__} from {timm.__file__}")
PY
PYTHONPATH="$target" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/model/test_vit.py -m "not slow"
