#!/usr/bin/env bash
# Prints the path of a ready virtual environment for this checkout, building it when absent.
# The venv lives outside the clone, keyed by a hash of pyproject.toml, so fresh clones (and CI)
# reuse it; the checkout itself is re-linked into it (editable, no deps) on every call.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hash=$(sha256sum "$root/pyproject.toml" | cut -c1-16)
venv=${SWEEPER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sweeper/venv-$hash}
log="$venv.log"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9  # concurrent callers (parallel test runs, helpers) wait for one build
if [ ! -f "$venv/.complete" ]; then
  printf 'sweeper: building the environment (first time only, a few minutes) in\n  %s\n' "$venv" >&2
  rm -rf "$venv"
  { "${PYTHON:-python3}" -m venv "$venv" &&
    "$venv/bin/pip" install --upgrade pip "setuptools>=77" wheel &&
    "$venv/bin/pip" install -e "$root[test,dev]"; } >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; echo "sweeper: environment build failed; full log: $log" >&2; exit 1; }
  touch "$venv/.complete"
fi
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >"$log.link" 2>&1 ||
  { cat "$log.link" >&2; exit 1; }
echo "$venv"
