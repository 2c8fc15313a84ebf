#!/usr/bin/env bash
# deploy/slurm/stop-local.sh: stops the cluster start-local.sh made in BASE, by PID only.
#
#   stop-local.sh BASE
#
# Order: cancel every job (so slurmd ends their steps), stop each slurmd, slurmctld and munged by
# the PIDs in BASE/pids, then kill what is left of that cluster's jobs: processes whose environment
# holds this cluster's SLURM_CONF (slurmstepd and tasks). Nothing else on the machine is touched.
# Liveness is read from /proc/PID/stat, since a zombie may wait a while for its reaper.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: stop-local.sh BASE" >&2; exit 2; }
base=$1
case $base in /*) ;; *) base=$PWD/$base ;; esac
[ -f "$base/pids" ] || { echo "stop-local.sh: no $base/pids (not a start-local.sh cluster)" >&2; exit 1; }
conf=$base/etc/slurm.conf

alive() {  # alive PID: running and not a zombie
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop_pid() {  # stop_pid PID: TERM, wait up to 5 s, then KILL
  local pid=$1
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  for _ in $(seq 20); do alive "$pid" || return 0; sleep 0.1; done
  echo "stop-local.sh: pid $pid did not stop" >&2
  return 1
}

# This script and its callers: they may carry SLURM_CONF too, and must live.
ancestors=" "
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  ancestors+="$p "
  p=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $2}')
done

# What is left of this cluster's jobs: slurmstepd and job tasks (they have SLURM_JOB_ID) whose
# environment holds this cluster's SLURM_CONF. One grep reads every environment at once.
cluster_pids() {
  local f pid
  for f in $(grep -lzxF "SLURM_CONF=$conf" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${f#/proc/}; pid=${pid%/environ}
    case $ancestors in *" $pid "*) continue ;; esac
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] ||
       grep -qzx 'SLURM_JOB_ID=[0-9]*' "$f" 2>/dev/null; then
      alive "$pid" && echo "$pid"
    fi
  done
}

if [ -f "$conf" ]; then
  SLURM_CONF=$conf timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
  SLURM_CONF=$conf timeout 10 scancel --quiet --user=root 2>/dev/null || true
fi

rc=0
# Daemons in reverse order of start: slurmd, slurmctld, munged last (the others use it).
while read -r _ pid; do
  stop_pid "$pid" || rc=1
done < <(tac "$base/pids")

for pid in $(cluster_pids); do
  kill -KILL "$pid" 2>/dev/null
done
for _ in $(seq 50); do
  [ -z "$(cluster_pids)" ] && break
  sleep 0.1
done
left=$(cluster_pids)
if [ -n "$left" ]; then
  echo "stop-local.sh: still running: $left" >&2
  rc=1
fi
exit $rc
