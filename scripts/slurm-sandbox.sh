#!/usr/bin/env bash
# slurm-sandbox.sh — a real single-node SLURM on loopback, for trying a study before going to a
# cluster and for CI (the @pytest.mark.slurm tests). Debian 12 packages, root, no systemd needed.
#
#   scripts/slurm-sandbox.sh up       install missing packages, start munge, MariaDB, slurmdbd,
#                                     slurmctld, slurmd; wait until the node is idle and sacct answers
#   eval "$(scripts/slurm-sandbox.sh env)"   export SLURM_CONF for sinfo/sbatch/sacct/submitit
#   scripts/slurm-sandbox.sh status   short summary (exit 0 when everything is up, 3 otherwise)
#   scripts/slurm-sandbox.sh down     cancel jobs, stop every daemon it started (no-op when down)
#
# Why each piece: munge authenticates everything (own key and socket, so a system munged is left
# alone); slurmdbd + MariaDB give sacct — without it submitit's job.state stays UNKNOWN and
# job.result() of a job that died without a result file waits forever.
# Everything (conf, state, logs, sockets, database) lives under one base directory:
#   SWEEPER_SLURM_BASE        base directory (default /tmp/sweeper-slurm); absolute, short path
#   SWEEPER_SLURM_TIMEOUT     seconds each readiness wait may take (default 90)
#   SWEEPER_SLURM_DB_PORT     MariaDB port on 127.0.0.1 (default 3306)
#   SWEEPER_SLURM_PORTS       slurmctld,slurmd,slurmdbd ports (default 6817,6818,6819)
# Cluster facts a caller may rely on: ClusterName=sandbox, one node "localhost" advertising the
# CPUs and RealMemory that `slurmd -C` reports, partition "debug" (default, no time limit),
# MaxArraySize=1001 (array indices 0..1000: split bigger arrays), requeued jobs restart after
# ~10-15 s (cred_expire=10, bf_interval=2, sched_interval=5) instead of ~2 min, memory is
# enforced without cgroups (a step past its --mem is killed within ~1 s; no --mem: the node's
# memory divided by its CPUs, per CPU).
# Re-running `up` is safe; `up` after `down` keeps the accounting database and job history.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

BASE=${SWEEPER_SLURM_BASE:-/tmp/sweeper-slurm}
TIMEOUT=${SWEEPER_SLURM_TIMEOUT:-90}
DB_PORT=${SWEEPER_SLURM_DB_PORT:-3306}
IFS=, read -r CTLD_PORT SLURMD_PORT DBD_PORT <<<"${SWEEPER_SLURM_PORTS:-6817,6818,6819}"
MAX_ARRAY_SIZE=1001
CLUSTER=sandbox
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

CONF=$BASE/etc/slurm.conf
DBD_CONF=$BASE/etc/slurmdbd.conf   # slurmdbd finds it next to $SLURM_CONF
M=$BASE/munge
SOCK=$M/run/munge.socket.2
DB=$BASE/mysql
LOG=$BASE/log
export SLURM_CONF=$CONF

# name:pidfile:process-name (/proc/PID/comm) — the comm check keeps us from killing a reused pid
DAEMONS=(
  "munged:$M/run/munged.pid:munged"
  "mariadbd:$DB/mysqld.pid:mariadbd"
  "slurmdbd:$BASE/run/slurmdbd.pid:slurmdbd"
  "slurmctld:$BASE/run/slurmctld.pid:slurmctld"
  "slurmd:$BASE/run/slurmd.pid:slurmd"
)

say() { echo "slurm-sandbox: $*" >&2; }

# fail MESSAGE [LOGFILE...]: one clear error, then the last lines of the logs that explain it
fail() {
  local msg=$1 f; shift
  say "ERROR: $msg"
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "----- last lines of $f" >&2
    tail -n 25 "$f" >&2
  done
  exit 1
}

# waitfor DESCRIPTION "LOGS" CMD...: bounded poll; each probe is itself time-limited so a hung
# client (e.g. sinfo against a dead slurmctld) cannot stall us past the deadline.
waitfor() {
  local what=$1 logs=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    timeout 15 "$@" >/dev/null 2>&1 && return 0
    # WATCH_PID: the daemon we just started; when it has died, waiting longer is pointless
    if [ -n "${WATCH_PID:-}" ] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
      # shellcheck disable=SC2086
      fail "$what: the process (pid $WATCH_PID) exited" $logs
    fi
    sleep 0.5
  done
  # shellcheck disable=SC2086
  fail "timed out after ${TIMEOUT}s waiting for $what" $logs
}

pid_of() {  # pid_of PIDFILE COMM -> prints the pid when that process is alive, else fails
  local pf=$1 comm=$2 p
  [ -s "$pf" ] || return 1
  p=$(tr -dc 0-9 <"$pf")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$comm" ] || return 1
  echo "$p"
}

alive() { local name pf comm; IFS=: read -r name pf comm <<<"$(daemon "$1")"; pid_of "$pf" "$comm" >/dev/null; }
daemon() { local d; for d in "${DAEMONS[@]}"; do [ "${d%%:*}" = "$1" ] && { echo "$d"; return; }; done; return 1; }

stop() {  # SIGTERM, wait up to 30 s (slurmctld saves state, MariaDB flushes), then SIGKILL
  local name pf comm p
  IFS=: read -r name pf comm <<<"$(daemon "$1")"
  if p=$(pid_of "$pf" "$comm"); then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then say "$name (pid $p) ignored SIGTERM for 30 s; killing"; kill -9 "$p" 2>/dev/null || true; fi
    say "stopped $name (pid $p)"
  fi
  rm -f "$pf"
}

need_root() { [ "$(id -u)" = 0 ] || fail "'$1' needs root (it starts daemons as root, munge and mysql)"; }

lock() {  # serialize up/down: two concurrent `up`s would start daemons twice.
  # Daemons are started with 9>&- so they do not inherit (and hold) this lock forever.
  mkdir -p "$BASE"
  exec 9>"$BASE/.lock"
  flock -w "$TIMEOUT" 9 || fail "another slurm-sandbox.sh holds $BASE/.lock for more than ${TIMEOUT}s"
}

install_packages() {
  local missing=() p created_policy=0
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} (apt-get, --no-install-recommends)"
  # No init system runs here; a policy-rc.d that exits 101 keeps the packages' maintainer
  # scripts from starting distro daemons (system munged, mariadb on /run/mysqld) we don't manage.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# slurm-sandbox.sh: no daemon starts during apt-get\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  local rc=0
  {
    apt-get update -q || { sleep 5; apt-get update -q; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "${missing[@]}"
  } >"$LOG/apt.log" 2>&1 || rc=$?
  ((created_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || fail "apt-get install ${missing[*]} failed (exit $rc)" "$LOG/apt.log"
}

# write_if_changed FILE MODE < content: returns 0 when the file changed (daemons must restart)
write_if_changed() {
  local f=$1 mode=$2 tmp
  tmp=$(mktemp "$f.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$f"
}

start_munge() {
  mkdir -p "$M"/{etc,run,lib,log}
  [ -s "$M/etc/munge.key" ] || mungekey -c -k "$M/etc/munge.key" >/dev/null
  chown -R munge:munge "$M"
  chmod 700 "$M/etc" "$M/lib" "$M/log"; chmod 755 "$M/run"; chmod 400 "$M/etc/munge.key"
  if ! alive munged; then
    # --force: a socket left by a killed munged would otherwise block the restart
    runuser -u munge -- munged --force --socket="$SOCK" --key-file="$M/etc/munge.key" \
      --log-file="$M/log/munged.log" --pid-file="$M/run/munged.pid" --seed-file="$M/lib/munged.seed" \
      </dev/null >>"$LOG/munged.out" 2>&1 9>&- || fail "munged did not start" "$LOG/munged.out" "$M/log/munged.log"
    STARTED=1
  fi
  waitfor "munge credentials (munge | unmunge on $SOCK)" "$M/log/munged.log" \
    bash -c "munge -S '$SOCK' -n | unmunge -S '$SOCK'"
}

start_mariadb() {
  mkdir -p "$DB"; chown -R mysql:mysql "$DB"  # -R: the mysql uid may differ after a package reinstall
  if [ ! -e "$DB/.installed" ]; then  # a half-initialised datadir is redone, not trusted
    rm -rf "$DB/data"
    mariadb-install-db --user=mysql --datadir="$DB/data" --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      fail "mariadb-install-db failed" "$LOG/mariadb-install.log"
    touch "$DB/.installed"
  fi
  local WATCH_PID=
  if ! alive mariadbd; then
    # --no-defaults: ignore /etc/mysql; loopback only, own socket, small buffer pool (2-core CI boxes).
    # Its logs go in $DB: mariadbd runs as mysql and cannot write the root-owned $LOG.
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$DB/mysqld.sock" \
      --pid-file="$DB/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
      --log-error="$DB/mariadb.err" --innodb-buffer-pool-size=128M </dev/null >>"$DB/mariadbd.out" 2>&1 9>&- &
    WATCH_PID=$!
    STARTED=1
  fi
  waitfor "MariaDB on $DB/mysqld.sock" "$DB/mariadb.err $DB/mariadbd.out" \
    mariadb --socket="$DB/mysqld.sock" -u root -e 'select 1'
  mariadb --socket="$DB/mysqld.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    fail "could not create the slurm database user" "$DB/mariadb.err"
}

write_configs() {  # returns via globals: CONF_CHANGED, DBD_CONF_CHANGED
  local node
  # The node advertises exactly what slurmd detects (CPUs, sockets, cores, RealMemory), so
  # slurmd registers without "low memory"/"CPU count" drains.
  node=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=' | sed 's/^NodeName=[^ ]*/NodeName=localhost/') ||
    fail "slurmd -C printed no node line"
  # a job that asks for no memory gets its cores' share of the node's, as on most clusters
  local real cpus
  real=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  CONF_CHANGED=0; DBD_CONF_CHANGED=0
  write_if_changed "$CONF" 644 <<EOF && CONF_CHANGED=1
# Generated by scripts/slurm-sandbox.sh — edits are overwritten by the next 'up'.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may restart after ~10 s instead of the default ~120 s
AuthInfo=socket=$SOCK,cred_expire=10
StateSaveLocation=$BASE/state/ctld
SlurmdSpoolDir=$BASE/state/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# no cgroups in containers/VMs without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Memory is enforced without cgroups: the Linux gatherer samples each step's processes every
# second and OverMemoryKill kills a step past its --mem. sacct then says FAILED, not
# OUT_OF_MEMORY (that needs cgroups); the step's MaxRSS past the job's ReqMem tells the cause.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
SelectType=select/cons_tres
# memory is a consumable resource, so a job's --mem is its step's limit (OverMemoryKill, above);
# a job that asks for none gets DefMemPerCPU per core, not the whole node
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((real / cpus))
# schedule within seconds, not the default minute, so tests and requeues are quick
SchedulerParameters=bf_interval=2,sched_interval=5
# room for a 10,000-cell study (every array task counts as a job) next to finished jobs,
# which are forgotten 60 s after they end
MaxJobCount=50000
MinJobAge=60
# an ordinary cluster limit (indices 0..1000); the orchestrator splits larger arrays by it
MaxArraySize=$MAX_ARRAY_SIZE
# submitit ignores SIGTERM, so a cancelled job's step lives until SIGKILL and holds its core:
# 5 s instead of the default 30 s between the two
KillWait=5
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# with a non-default munge socket slurmctld->slurmdbd auth needs the socket here too
AccountingStoragePass=$SOCK
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  write_if_changed "$DBD_CONF" 600 <<EOF && DBD_CONF_CHANGED=1
# Generated by scripts/slurm-sandbox.sh
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  return 0
}

cmd_up() {
  need_root up
  case $BASE in /*) ;; *) fail "SWEEPER_SLURM_BASE must be an absolute path (got '$BASE')" ;; esac
  # unix socket paths are limited to 108 bytes
  ((${#SOCK} < 100)) || fail "SWEEPER_SLURM_BASE is too long for a unix socket path: $SOCK"
  local t0=$SECONDS
  lock
  mkdir -p "$BASE"/{etc,run,state/ctld,state/d} "$LOG"
  STARTED=0
  install_packages
  start_munge
  start_mariadb
  write_configs
  # A changed config only takes effect on restart (cred_expire in particular).
  if ((DBD_CONF_CHANGED)); then stop slurmdbd; fi
  if ((CONF_CHANGED)); then stop slurmd; stop slurmctld; fi
  if ! alive slurmdbd; then
    slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 9>&- || fail "slurmdbd did not start" "$LOG/slurmdbd.out" "$LOG/slurmdbd.log"
    STARTED=1
  fi
  waitfor "slurmdbd (sacctmgr list cluster)" "$LOG/slurmdbd.log $DB/mariadb.err" sacctmgr -n list cluster
  if ! alive slurmctld; then
    slurmctld -f "$CONF" </dev/null >>"$LOG/slurmctld.out" 2>&1 9>&- ||
      fail "slurmctld did not start" "$LOG/slurmctld.out" "$LOG/slurmctld.log"
    STARTED=1
  fi
  if ! alive slurmd; then
    slurmd -f "$CONF" -N localhost </dev/null >>"$LOG/slurmd.out" 2>&1 9>&- ||
      fail "slurmd did not start" "$LOG/slurmd.out" "$LOG/slurmd.log"
    STARTED=1
  fi
  waitfor "node localhost to be idle in sinfo" "$LOG/slurmctld.log $LOG/slurmd.log" \
    bash -c "sinfo -h -n localhost -o %T | grep -Eqx 'idle|mixed|allocated'"
  # slurmctld registers the cluster in slurmdbd on start; until then jobs are not accounted
  waitfor "cluster '$CLUSTER' to register in slurmdbd" "$LOG/slurmctld.log $LOG/slurmdbd.log" \
    bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx '$CLUSTER'"
  waitfor "sacct to answer" "$LOG/slurmdbd.log" sacct -n -X -S now-1hour
  if ((STARTED)); then  # a job really launches (munge credentials, slurmd, slurmstepd)
    # --immediate: other users' jobs may fill the node the moment slurmctld is up; don't queue
    if ! timeout "$TIMEOUT" srun --immediate=10 -t 1 -J sandbox-smoke true >>"$LOG/smoke.out" 2>&1; then
      if [ -n "$(timeout 15 squeue -h -t R 2>/dev/null)" ]; then
        say "warning: srun smoke test skipped: the node is busy with other jobs"
      else
        fail "srun smoke test failed" "$LOG/smoke.out" "$LOG/slurmctld.log" "$LOG/slurmd.log"
      fi
    fi
  fi
  say "up in $((SECONDS - t0)) s ($( ((STARTED)) && echo started || echo already running)): $(sinfo -h -n localhost -o 'node %N %T, %c CPUs, %m MB')"
  say "use it with: eval \"\$($0 env)\""
}

cmd_down() {
  need_root down
  lock
  local any=0 d ids
  for d in "${DAEMONS[@]}"; do alive "${d%%:*}" && any=1; done
  if ((any == 0)); then
    rm -f "$BASE"/run/*.pid "$M/run/munged.pid" "$DB/mysqld.pid" 2>/dev/null || true
    say "nothing running under $BASE"
    return 0
  fi
  local t0=$SECONDS
  if alive slurmctld; then
    ids=$(timeout 15 squeue -h -o %A 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      timeout 15 scancel $ids 2>/dev/null || true
      for _ in $(seq 60); do [ -z "$(timeout 15 squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  # Reverse start order, independent daemons in parallel: slurmctld flushes accounting to
  # slurmdbd (authenticated by munge) on exit, slurmdbd flushes to MariaDB.
  stop slurmd & stop slurmctld & wait
  stop slurmdbd
  stop mariadbd & stop munged & wait
  if pgrep -x slurmstepd >/dev/null; then say "warning: slurmstepd processes remain: $(pgrep -x slurmstepd | tr '\n' ' ')"; fi
  say "down in $((SECONDS - t0)) s"
}

cmd_status() {
  local d name pf comm p up=1
  echo "base:       $BASE"
  echo "SLURM_CONF: $CONF$([ -f "$CONF" ] || echo ' (not written yet)')"
  for d in "${DAEMONS[@]}"; do
    IFS=: read -r name pf comm <<<"$d"
    if p=$(pid_of "$pf" "$comm"); then printf '%-11s running (pid %s)\n' "$name:" "$p"
    else printf '%-11s stopped\n' "$name:"; up=0; fi
  done
  if alive slurmctld; then
    echo "node:       $(timeout 15 sinfo -h -n localhost -o '%N %T, %c CPUs, %m MB' 2>/dev/null || echo 'no answer from slurmctld')"
    echo "jobs:       $(timeout 15 squeue -h 2>/dev/null | wc -l) in queue"
  fi
  if alive slurmdbd && timeout 15 sacct -n -X -S now-1hour >/dev/null 2>&1; then echo "sacct:      ok"
  else echo "sacct:      unavailable"; up=0; fi
  ((up)) && return 0 || return 3
}

cmd_env() {
  [ -f "$CONF" ] || say "warning: $CONF does not exist yet; run '$0 up' first"
  printf 'export SLURM_CONF=%q\n' "$CONF"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
