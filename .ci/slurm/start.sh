#!/usr/bin/env bash
# .ci/slurm/start.sh [STATE_DIR]: a private single-node Slurm (with accounting) for the `slurm` tests.
#
# Daemons, in start order: munged, mariadbd, slurmdbd, slurmctld, slurmd. Each is a private instance:
# configs, key, database, sockets, logs and PID files live under STATE_DIR (default
# /tmp/workbench-slurm), so nothing of the host's own services is touched. Debian 12, root, Slurm 22.05.
# Safe to rerun: installs only missing packages, keeps state, skips daemons already alive.
# stdout carries only `export SLURM_CONF=...`; progress and errors go to stderr:
#     eval "$(bash .ci/slurm/start.sh)"  ...  bash .ci/slurm/stop.sh
# Why each setting: see the comments below (the pitfalls were all hit on this kind of machine).
set -euo pipefail

STATE=$(realpath -m "${1:-/tmp/workbench-slurm}")   # absolute: the daemons change directory
CLUSTER=${SLURM_TEST_CLUSTER:-ci}
DB_PORT=${SLURM_TEST_DB_PORT:-3306}
DB_PASS=slurm                                        # loopback-only throwaway database
HOST=$(hostname -s)
ETC=$STATE/etc MUNGE=$STATE/munge DB=$STATE/mariadb SPOOL=$STATE/slurm
export SLURM_CONF=$ETC/slurm.conf

say() { echo "[slurm start ${SECONDS}s] $*" >&2; }
fail() {
  say "FAILED: $*"
  sinfo -h -R >&2 2>/dev/null || true
  for log in "$MUNGE/munged.log" "$DB/mariadbd.log" "$SPOOL"/*.log; do
    [[ -f $log ]] && { echo "==> $log" >&2; tail -n 20 "$log" >&2; }
  done
  exit 1
}
# running PIDFILE COMM: the PID file names a live process called COMM (a reused PID does not count)
running() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}
# await SECONDS LABEL CMD...: retry CMD twice a second until it succeeds
await() {
  local limit=$1 label=$2; shift 2
  for ((n = 0; n < limit * 2; n++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  fail "no $label after ${limit}s"
}

# 1. Packages. A policy-rc.d that exits 101 keeps apt from starting the distribution's services
#    (we run our own instances); it is only added, and removed again, when the host has none.
need=()
for pkg in slurm-wlm slurmdbd munge mariadb-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  say "apt-get install ${need[*]} (minutes on a cold cache)"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2 ||
    fail "apt-get install ${need[*]}"
fi
# srun reaches back to the submitting host by name: it must resolve to loopback
getent ahostsv4 "$HOST" | grep -q '^127\.' || say "warning: $HOST does not resolve to 127.x"

# 2. Layout and the munge key (one random key per state dir, kept across restarts).
mkdir -p "$ETC" "$MUNGE" "$DB" "$SPOOL/state" "$SPOOL/spool"
chmod 755 "$STATE" "$MUNGE"   # munged rejects group- or world-writable directories
chown munge:munge "$MUNGE"
chown mysql:mysql "$DB"
if [[ ! -s $MUNGE/munge.key ]]; then
  (umask 077 && head -c 1024 /dev/urandom >"$MUNGE/munge.key")
  chown munge:munge "$MUNGE/munge.key"
fi

# 3. Configs, rewritten every time (daemons read them at start only).
NODE_LINE=$(slurmd -C | head -n 1)   # the node as slurmd detects it: a bigger claim drains the node
cat >"$ETC/slurm.conf" <<EOF
ClusterName=$CLUSTER
# loopback only, no DNS lookups
SlurmctldHost=$HOST(127.0.0.1)
# jobs run as the submitting user; no slurm account or file ownership to manage
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# our munge socket; short credential life lets a requeued job start again after ~5 s, not 120 s
AuthInfo=socket=$MUNGE/munge.socket,cred_expire=5
StateSaveLocation=$SPOOL/state
SlurmdSpoolDir=$SPOOL/spool
SlurmctldPidFile=$SPOOL/slurmctld.pid
SlurmdPidFile=$SPOOL/slurmd.pid
SlurmctldLogFile=$SPOOL/slurmctld.log
SlurmdLogFile=$SPOOL/slurmd.log
# containers have no usable cgroups: track by /proc, no binding, no usage sampling
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# submitit polls sacct; without accounting a cancelled job's result() never returns
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# clients find slurmdbd's munge socket here (AuthInfo is not used for that): else /run/munge/... fails
AccountingStoragePass=$MUNGE/munge.socket
JobCompType=jobcomp/none
# per-core, per-MB sharing; without DefMemPerCPU a job takes all memory and jobs run one at a time
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# schedule every 2 s instead of 60/30 s so requeued jobs restart promptly
SchedulerParameters=sched_interval=2,bf_interval=2
# grace between SIGTERM and SIGKILL on cancel or requeue (default 30 s)
KillWait=5
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# slurmdbd.conf holds the DB password: slurmdbd refuses it unless it is mode 600; it is found next to
# SLURM_CONF; DbdHost must name this host
(umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE/munge.socket
PidFile=$SPOOL/slurmdbd.pid
LogFile=$SPOOL/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)
chmod 600 "$ETC/slurmdbd.conf"

# 4. munged, as the munge user.
if ! running "$MUNGE/munged.pid" munged; then
  say "munged"
  runuser -u munge -- munged --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket" \
    --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" ||
    fail "munged"
fi
await 10 "munge socket" test -S "$MUNGE/munge.socket"

# 5. MariaDB: private datadir, 127.0.0.1 only, the host's my.cnf ignored; buffer and lock-wait sizes
#    are what slurmdbd asks for (it logs a warning otherwise).
if [[ ! -d $DB/data/mysql ]]; then
  say "mariadb-install-db"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --skip-test-db >"$DB/install.log" 2>&1 ||
    fail "mariadb-install-db (see $DB/install.log)"
fi
if ! running "$DB/mariadbd.pid" mariadbd; then
  say "mariadbd"
  setsid mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$DB/mariadbd.sock" \
    --pid-file="$DB/mariadbd.pid" --log-error="$DB/mariadbd.log" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --skip-name-resolve --innodb-buffer-pool-size=512M \
    --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
fi
dbsql() { mariadb --no-defaults -S "$DB/mariadbd.sock" -u root -e "$1"; }
await 60 mariadbd dbsql 'SELECT 1'
dbsql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || fail "creating the slurm database user"

# 6. slurmdbd; the cluster is registered before slurmctld first connects.
if ! running "$SPOOL/slurmdbd.pid" slurmdbd; then say "slurmdbd"; slurmdbd || fail "slurmdbd"; fi
await 60 slurmdbd sacctmgr -n list cluster
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
  sacctmgr -i add cluster "$CLUSTER" >&2 || fail "sacctmgr add cluster $CLUSTER"

# 7. slurmctld, then slurmd.
if ! running "$SPOOL/slurmctld.pid" slurmctld; then say "slurmctld"; slurmctld || fail "slurmctld"; fi
await 30 slurmctld scontrol ping
if ! running "$SPOOL/slurmd.pid" slurmd; then say "slurmd"; slurmd || fail "slurmd"; fi

# 8. Ready: the node takes jobs (a node left drained or down is resumed) and sacct answers.
node_ready() {
  local state; state=$(sinfo -h -N -n "$HOST" -o %T)
  case $state in
    idle | mixed | allocated | completing) return 0 ;;
    *drain* | down*) scontrol update nodename="$HOST" state=resume ;;
  esac
  return 1
}
await 60 "idle node $HOST" node_ready
await 30 "sacct answer" sacct -n -X
say "ready: cluster $CLUSTER, node $HOST ($(sinfo -h -N -n "$HOST" -o '%c CPUs, %m MB')), state in $STATE"
echo "export SLURM_CONF=$SLURM_CONF"
