#!/usr/bin/env bash
# deploy/slurm/start-local.sh: a fresh, private Slurm cluster on this one machine, for atom's tests
# and for trying the Slurm wrappers without a real cluster.
#
#   start-local.sh BASE [NODES]      NODES virtual nodes n1..nNODES (default 4), 8 emulated GPUs each
#
# Everything lives under BASE (which must not exist yet or be empty): its own munge key and socket,
# slurm.conf with private ports, spool and state folders, logs, and BASE/pids (one "name pid" per
# line, for stop-local.sh). Tools reach the cluster through SLURM_CONF: `. BASE/env` sets it.
# What each setting is for is measured in ../shared/facts/slurm-local.md. Must run as root (slurmd
# starts tasks as the submitting user). Stop it with stop-local.sh BASE, which kills by PID only.
set -euo pipefail

usage() { echo "usage: start-local.sh BASE [NODES]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
base=$1
nodes=${2:-4}
[[ $nodes =~ ^[1-9][0-9]?$ ]] || { echo "start-local.sh: NODES must be 1..99" >&2; exit 2; }
case $base in /*) ;; *) base=$PWD/$base ;; esac
[[ $base =~ ^[A-Za-z0-9/._-]+$ ]] || { echo "start-local.sh: BASE may hold only letters, digits and / . _ -" >&2; exit 2; }
if [ -e "$base" ] && [ -n "$(ls -A "$base")" ]; then
  echo "start-local.sh: $base exists and is not empty" >&2; exit 1
fi
[ "$(id -u)" -eq 0 ] || { echo "start-local.sh: must run as root" >&2; exit 1; }
for tool in munged mungekey slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "start-local.sh: $tool not found (run deploy/setup.sh)" >&2; exit 1; }
done

mkdir -p "$base"/{etc,munge,log,state,spool,dev,tmp,run}
chmod 755 "$base" "$base/munge"   # munged refuses a socket folder others cannot reach
: > "$base/pids"

# ---- munge: its own key and socket, so the system's munged (if any) is left alone ----
mungekey -c -f -k "$base/munge/munge.key" 2>/dev/null || mungekey --create --force --keyfile="$base/munge/munge.key"
chmod 600 "$base/munge/munge.key"
munged -F --socket="$base/munge/munge.socket" --key-file="$base/munge/munge.key" \
       --pid-file="$base/munge/munged.pid" --log-file="$base/log/munged.log" \
       --seed-file="$base/munge/munged.seed" > "$base/log/munged.out" 2>&1 &
echo "munged $!" >> "$base/pids"
for _ in $(seq 100); do [ -S "$base/munge/munge.socket" ] && break; sleep 0.05; done
munge -S "$base/munge/munge.socket" -n | unmunge -S "$base/munge/munge.socket" >/dev/null

# ---- free TCP ports: one for slurmctld, one per node ----
mapfile -t ports < <(/usr/bin/python3 - "$((nodes + 1))" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
)
ctld_port=${ports[0]}

# ---- emulated GPUs: device files Slurm accepts (symlinks to /dev/null) ----
for g in 0 1 2 3 4 5 6 7; do ln -s /dev/null "$base/dev/nvidia$g"; done

# ---- TaskProlog: per-node TMPDIR and Open MPI shared-memory folder, MPI over loopback/UCX ----
cat > "$base/etc/task-prolog.sh" <<PROLOG
#!/bin/sh
# Prints "export X=Y" lines that slurmd adds to every task's environment. Virtual nodes share one
# host, so each gets its own TMPDIR and vader backing folder, as real nodes would.
dir="$base/tmp/\$SLURMD_NODENAME"
mkdir -p "\$dir"
echo "export TMPDIR=\$dir"
echo "export OMPI_MCA_btl_vader_backing_directory=\$dir"
echo "export OMPI_MCA_btl_tcp_if_include=lo"
echo "export OMPI_MCA_oob_tcp_if_include=lo"
echo "export OMPI_MCA_pml=ucx"
echo "export OMPI_MCA_pml_ucx_tls=any"
echo "export OMPI_MCA_pml_ucx_devices=any"
echo "export OMPI_MCA_btl=self,vader,tcp"
# All virtual nodes share one host name, so Open MPI takes them for one node and its shared-memory
# one-sided windows (osc/sm) look for files in another node's folder: windows go through UCX.
echo "export OMPI_MCA_osc=ucx"
PROLOG
chmod 755 "$base/etc/task-prolog.sh"

host=$(hostname -s)
cat > "$base/etc/slurm.conf" <<CONF
# A private test cluster made by deploy/slurm/start-local.sh (see ../shared/facts/slurm-local.md).
ClusterName=atomlocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$base/munge/munge.socket,cred_expire=5
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool/%n
TmpFS=$base/tmp/%n
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmdPidFile=$base/run/slurmd-%n.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$base/etc/task-prolog.sh
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$base/log/jobcomp.txt
MailProg=/bin/true
MpiDefault=none
SlurmdParameters=config_overrides
# Time for the workers to checkpoint and exit after SIGTERM (scancel, time limit) before SIGKILL:
# 5 s was too short under ASan+LSan (killed mid-exit in a CI run).
KillWait=30
MinJobAge=300
GresTypes=gpu
NodeName=n[1-$nodes] NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[1]}-${ports[$nodes]} CPUs=16 RealMemory=4000 Gres=gpu:8 State=UNKNOWN
PartitionName=atom Nodes=n[1-$nodes] Default=YES MaxTime=INFINITE State=UP
CONF
cat > "$base/etc/gres.conf" <<GRES
AutoDetect=off
Name=gpu File=$base/dev/nvidia[0-7]
GRES
# The ports must be consecutive for Port=a-b; when they are not, list each node on its own line.
if [ "$nodes" -gt 1 ]; then
  consecutive=1
  for i in $(seq 2 "$nodes"); do
    [ "${ports[$i]}" -eq $((ports[i - 1] + 1)) ] || consecutive=0
  done
  if [ $consecutive -eq 0 ]; then
    sed -i '/^NodeName=/d' "$base/etc/slurm.conf"
    for i in $(seq 1 "$nodes"); do
      echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[$i]} CPUs=16 RealMemory=4000 Gres=gpu:8 State=UNKNOWN" >> "$base/etc/slurm.conf"
    done
    # PartitionName must come after the nodes it names.
    sed -i '/^PartitionName=/d' "$base/etc/slurm.conf"
    echo "PartitionName=atom Nodes=n[1-$nodes] Default=YES MaxTime=INFINITE State=UP" >> "$base/etc/slurm.conf"
  fi
fi

export SLURM_CONF=$base/etc/slurm.conf
printf 'export SLURM_CONF=%s\n' "$SLURM_CONF" > "$base/env"

slurmctld -D -i -f "$SLURM_CONF" > "$base/log/slurmctld.out" 2>&1 &
echo "slurmctld $!" >> "$base/pids"
for i in $(seq 1 "$nodes"); do
  mkdir -p "$base/spool/n$i" "$base/tmp/n$i"  # TmpFS=tmp/%n: the pmix plugin's folders per node
  slurmd -D -N "n$i" -f "$SLURM_CONF" > "$base/log/slurmd-n$i.out" 2>&1 &
  echo "slurmd-n$i $!" >> "$base/pids"
done

# Ready when every node is idle (about half a second here; give it 30).
for _ in $(seq 300); do
  idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
  [ "$idle" -eq "$nodes" ] && { echo "start-local.sh: $nodes nodes idle; . $base/env to use the cluster"; exit 0; }
  sleep 0.1
done
echo "start-local.sh: the nodes did not become idle; logs in $base/log" >&2
sinfo >&2 || true
exit 1
