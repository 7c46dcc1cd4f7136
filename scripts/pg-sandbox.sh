#!/usr/bin/env bash
# A throw-away PostgreSQL on loopback, for the store tests (CI runs them on it) or for
# trying `sweeper --db postgresql+psycopg://...` before pointing at a real server.
#   scripts/pg-sandbox.sh up | down | env
#   eval "$(scripts/pg-sandbox.sh env)"   # sets SWEEPER_TEST_PG_URL
# Installs Debian's postgresql when missing (needs root). Everything lives under
# ${SWEEPER_PG_BASE:-/tmp/sweeper-pg}; the port is ${SWEEPER_PG_PORT:-55432}.
set -euo pipefail
base=${SWEEPER_PG_BASE:-/tmp/sweeper-pg}
port=${SWEEPER_PG_PORT:-55432}
url="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

install() {
  [ -n "$(bindir)" ] && return
  echo "pg-sandbox: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Keep apt from starting the packaged cluster: PID 1 is not systemd here.
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

up() {
  install
  local bin; bin=$(bindir)
  if as_pg "$bin/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then echo "pg-sandbox: already up ($url)"; return; fi
  mkdir -p "$base"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$base"
  if [ ! -f "$base/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$base/data" -A trust -U postgres >"$base/initdb.log" 2>&1 ||
      { cat "$base/initdb.log" >&2; exit 1; }
  fi
  as_pg "$bin/pg_ctl" -D "$base/data" -o "-k $base -p $port -h 127.0.0.1" -l "$base/log" -w -t 60 start >/dev/null ||
    { tail -n 20 "$base/log" >&2; exit 1; }
  echo "pg-sandbox: up ($url)"
}

down() {
  local bin; bin=$(bindir)
  [ -n "$bin" ] && [ -d "$base/data" ] && as_pg "$bin/pg_ctl" -D "$base/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$base"
  echo "pg-sandbox: down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export SWEEPER_TEST_PG_URL=$url" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
