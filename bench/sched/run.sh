#!/bin/sh
# bench/sched/run.sh BUILD_DIR: atomd's scheduler at 10,000 GPUs, each figure beside its target.
#
#  1. A scheduling pass over 10,000 pending jobs on configs/clusters/cluster-10k.yaml (target
#     <= 100 ms): 10,000 jobs submitted at once, so the first real pass (sched.c, through
#     `atomd --simulate`) orders all of them, places and launches what fits and computes the head's
#     reservation; later passes see fewer pending jobs. The worst pass is the figure.
#  2. A day of trace (configs/traces/day-10k.csv) under the three policies: the simulation's own
#     wall time (target: seconds), with its report.
#  3. A real atomd on that inventory (bench_daemon.py): submissions/s through the socket (target
#     >= 1,000/s), `atomctl status` with 1,000 jobs (target <= 50 ms), atomd's memory; with
#     SLURM=yes (as root), the same number of sbatch submissions to a local Slurm beside it; with
#     TCP=yes, the same submissions through atomd's TCP port with a MUNGE credential each (a
#     private munged), beside the Unix socket's in the same run, and the cost of one MUNGE
#     encode + decode (atom-bench-munge).
#
#   bench/sched/run.sh build-ops            SLURM=yes bench/sched/run.sh build-ops
#   TCP=yes bench/sched/run.sh build
set -eu
BUILD=${1:?usage: bench/sched/run.sh BUILD_DIR}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ATOMD=$BUILD/bin/atomd
CLUSTER=$SRC/configs/clusters/cluster-10k.yaml
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

python3 - "$TMP/pending-10k.csv" <<'PY'
import random, sys
rng = random.Random(11)
with open(sys.argv[1], "w") as f:
    f.write("submit_s,gpus,duration_s,tensor,project,fails_at,time_limit_s,priority\n")
    for i in range(10000):
        gpus = rng.choice([1, 2, 4, 8, 8, 16, 32, 64, 128, 256])
        tensor = 8 if gpus >= 64 else 1
        d = rng.randint(600, 14400)
        f.write(f"0,{gpus},{d},{tensor},p{i % 8},0,{d * 2},{rng.choice([100, 100, 100, 200])}\n")
PY
echo "== scheduling pass, 10,000 pending jobs, 10,000 GPUs (target <= 100 ms)"
"$ATOMD" --simulate --cluster "$CLUSTER" --trace "$TMP/pending-10k.csv" --policy backfill --json |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("first pass (10,000 pending) %.1f ms, worst pass %.1f ms (%d pending) (target <= 100 ms); mean %.2f ms over %d passes; simulation wall %.1f s" % (r["pass_first_ms"], r["pass_max_ms"], r["pass_max_pending"], r["pass_mean_ms"], r["passes"], r["wall_s"]))'

echo "== a day of trace on 10,000 GPUs, three policies (target: seconds)"
/usr/bin/time -f "wall %e s, max RSS %M kB" "$ATOMD" --simulate --cluster "$CLUSTER" --trace "$SRC/configs/traces/day-10k.csv"

echo "== a real atomd with 10,000 GPUs and 1,000 jobs"
python3 "$SRC/bench/sched/bench_daemon.py" --atomd "$ATOMD" --ctl "$BUILD/bin/atomctl" \
    --worker "$BUILD/tests/atomd/atomd_fake_worker" --jobs 1000 --slurm "${SLURM:-no}" --tcp "${TCP:-no}"
