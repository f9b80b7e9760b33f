#!/usr/bin/env bash
# .ci/slurm/stop.sh [STATE_DIR]: stop what start.sh started, by PID file (never by process name).
# Leftover jobs are cancelled first so that no job outlives the cluster. STATE_DIR is kept (configs,
# munge key, accounting database) for the next start.sh; delete it for a clean slate.
set -uo pipefail

STATE=$(realpath -m "${1:-/tmp/workbench-slurm}")
SPOOL=$STATE/slurm
export SLURM_CONF=$STATE/etc/slurm.conf
say() { echo "[slurm stop] $*" >&2; }
running() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}
# halt PIDFILE COMM: SIGTERM, up to 30 s to exit cleanly, then SIGKILL
halt() {
  running "$1" "$2" || { rm -f "$1"; return 0; }
  local pid; pid=$(cat "$1")
  say "$2 ($pid)"
  kill -TERM "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then say "$2 still alive after 30 s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$1"
}

if running "$SPOOL/slurmctld.pid" slurmctld && [[ -n $(squeue -h -o %A 2>/dev/null) ]]; then
  say "cancelling leftover jobs"
  squeue -h -o %A | xargs -r scancel
  for _ in $(seq 40); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.5; done
fi
halt "$SPOOL/slurmd.pid" slurmd   # reverse order of start.sh
halt "$SPOOL/slurmctld.pid" slurmctld
halt "$SPOOL/slurmdbd.pid" slurmdbd
halt "$STATE/mariadb/mariadbd.pid" mariadbd
halt "$STATE/munge/munged.pid" munged
say "stopped; state kept in $STATE"
