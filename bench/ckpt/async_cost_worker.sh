#!/bin/sh
# bench/ckpt/async_cost_worker.sh BUILD_DIR [SCRATCH_DIR] [ROUNDS]: the wall time an async
# checkpoint adds to real training (issue 5: <= 25% of what a synchronous one adds), measured
# with the real worker on gpt-tiny.
#
# The same job (gpt-tiny, 2 ranks = data 2, B=8, T=128, 41 steps on the GPL's bytes) runs three
# ways, ROUNDS times (default 5), in an order that rotates each round: no checkpoint; a
# synchronous checkpoint every 10 steps; an asynchronous one every 10 steps. From rank 0's
# train.jsonl (a step's "time" is taken after its save call, its "ms_per_step" before it),
# async_cost_summary.py takes, over steps 1 to 39 (the saves of steps 10, 20 and 30; the async
# save of step 30 has 9 steps to finish in the background; the last step's save, forced
# synchronous, lies outside):
#   window  wall time from step 1 to step 39, and added = window - the no-checkpoint window;
#   stall   the save calls' own time (time gap - ms_per_step at steps 10, 20, 30): the whole
#           save when synchronous, the snapshot copy when asynchronous;
#   steps   the sum of the steps' compute times: async - none is the slowdown of the steps
#           that overlap the background write; sync - none (no overlap) is the noise floor.
set -eu
build=$1
scratch=${2:-/work/ckpt-async-$$}
rounds=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
worker=$build/bin/atom-worker
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_mtl=^ofi,psm2 \
       OMPI_MCA_io=romio321 OPENBLAS_NUM_THREADS=1
mkdir -p "$scratch/logs"
trap 'rm -rf "$scratch"' EXIT

spec() { # spec MODE -> path of a job spec (MODE: none, sync, async)
    f=$scratch/$1.yaml
    cat > "$f" <<YAML
name: ckpt-async-cost-$1
project: bench
priority: 100
resources: {gpus: 2, gpus_per_node: 2, time_limit: 10m, device: cpu}
parallelism: {tensor: 1, data: 2}
model: {preset: gpt-tiny}
data: {path: /usr/share/common-licenses/GPL-3, format: bytes}
training: {steps: 41, global_batch: 16, micro_batch: 8, lr: 3e-4, warmup: 5, seed: 1234}
YAML
    case $1 in
        sync) echo "checkpoint: {dir: $scratch/ck-sync, every: 10, keep: 2, async: false}" >> "$f" ;;
        async) echo "checkpoint: {dir: $scratch/ck-async, every: 10, keep: 2, async: true}" >> "$f" ;;
    esac
    echo "$f"
}

echo "== $(date -u): async checkpoint cost, real worker, gpt-tiny at 2 ranks (data 2)"
for r in $(seq 1 "$rounds"); do
    case $((r % 3)) in
        1) order="none sync async" ;;
        2) order="sync async none" ;;
        0) order="async none sync" ;;
    esac
    echo "round $r load $(cut -d' ' -f1-3 /proc/loadavg)"
    for mode in $order; do
        rm -rf "$scratch/run" "$scratch/ck-$mode"
        mkdir -p "$scratch/run"
        mpirun -np 2 --oversubscribe "$worker" --spec "$(spec $mode)" --run-dir "$scratch/run" \
            > "$scratch/out.txt" 2>&1 || { cat "$scratch/out.txt"; exit 1; }
        cp "$scratch/run/train.jsonl" "$scratch/logs/r$r-$mode.jsonl"
    done
done
/usr/bin/python3 "$here/async_cost_summary.py" "$scratch/logs" "$rounds"
