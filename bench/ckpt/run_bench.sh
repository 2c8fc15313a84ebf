#!/bin/sh
# bench/ckpt/run_bench.sh BUILD_DIR [SCRATCH_DIR] [ROUNDS]: the checkpoint benchmark of issue 5.
# NPS="1 2" limits the rank counts (default 1 2 4).
#
# Saves and loads a gpt2-124m-sized state (124M parameters + two AdamW moments, 1.49 GB) at 1, 2
# and 4 ranks, ROUNDS times (default 3), each round running, in an order that rotates from round
# to round (the disk drifts within a minute, so only what runs side by side compares):
#   atom  bench_ckpt: save (write + commit, fsynced), cold load, cold verified load
#   dd    the disk's limits for the same bytes on the same disk: dd conv=fsync of random bytes (a
#         source in /dev/shm) and of zeros (the virtual disk writes zeros faster), dd
#         oflag=direct of the random bytes (past the page cache, as atom's saves write), and
#         dd iflag=direct reading the file back
#   dcp   PyTorch's distributed checkpoint (dcp_bench.py) at the same ranks, when torch imports
# Every load starts cold (the file evicted from the page cache). summarize.py then prints, per
# rank count, the medians and the ratio of each round. Writes about 60 GB in total; removes
# everything it wrote.
#
# Each of the three starts after SETTLE seconds (default 6) of idle: this VM reports freed memory
# to its host (virtio-balloon free page reporting, page_reporting_order=11 on the kernel command
# line), and writing into the page cache ran 2-2.5x faster on pages freed within the last ~2 s
# (dd right after deleting a file of the same size: 0.52 and 0.72 GB/s; after 12 s idle: 0.24
# and 0.30 GB/s, measured 2026-11-23 17:23). Without the pause, a dd run right after atom's
# file was deleted wrote into recycled pages while atom, which first allocates its 1.5 GB state,
# wrote into fresh ones: the comparison measured the order of the runs.
#
# The async save's cost is measured apart (docs/checkpoint-format.md, "Async save"):
#   mpirun -np N bench_ckpt --dir DIR --model gpt2-124m --export no --cost-rounds 5
#   bench/ckpt/async_cost_worker.sh BUILD_DIR     (the real worker on gpt-tiny)
set -eu
build=$1
scratch=${2:-/work/ckpt-bench-$$}
rounds=${3:-3}
settle=${SETTLE:-6}
nps=${NPS:-1 2 4} # rank counts to run, e.g. NPS=1
here=$(cd "$(dirname "$0")" && pwd)
exe=$build/bench/ckpt/bench_ckpt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_mtl=^ofi,psm2 \
       OMPI_MCA_io=romio321 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p "$scratch"
mb=1425 # 1425 MiB = 1.494 GB, the gpt2-124m state
random_src=/dev/shm/atom-ckpt-bench-src.$$
head -c $((mb * 1048576)) /dev/urandom > "$random_src"
trap 'rm -rf "$scratch" "$random_src"' EXIT

# dd's summary line "N bytes (...) copied, S s, ..." -> GB/s
dd_gbps() { awk '/copied/ {for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1); printf "%.3f", $1 / s / 1e9}'; }

run_dd() {
    sleep "$settle"
    echo "dd_write_random_GBps $(dd if="$random_src" of="$scratch/dd.bin" bs=1M conv=fsync 2>&1 | dd_gbps)"
    echo "dd_read_direct_GBps $(dd if="$scratch/dd.bin" of=/dev/null bs=1M iflag=direct 2>&1 | dd_gbps)"
    rm -f "$scratch/dd.bin"
    sleep "$settle"
    echo "dd_write_direct_GBps $(dd if="$random_src" of="$scratch/dd.bin" bs=4M oflag=direct conv=fsync 2>&1 | dd_gbps)"
    rm -f "$scratch/dd.bin"
    sleep "$settle"
    echo "dd_write_zeros_GBps $(dd if=/dev/zero of="$scratch/dd.bin" bs=1M count=$mb conv=fsync 2>&1 | dd_gbps)"
    rm -f "$scratch/dd.bin"
}
run_atom() {
    sleep "$settle"
    mpirun -np "$1" --oversubscribe "$exe" --dir "$scratch/atom" --model gpt2-124m --async no \
        --export "$([ "$2" = 1 ] && echo yes || echo no)"
    rm -rf "$scratch/atom"
}
run_dcp() {
    sleep "$settle"
    rc=0
    mpirun -np "$1" --oversubscribe /usr/bin/python3 "$here/dcp_bench.py" --dir "$scratch/dcp" \
        --model gpt2-124m 2>"$scratch/dcp.err" || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] || { echo "dcp_failed rc $rc"; tail -5 "$scratch/dcp.err"; }
    rm -rf "$scratch/dcp" "$scratch/dcp.err"
}

echo "== $(date -u) on $(hostname), $(getconf _NPROCESSORS_ONLN) cores, disk of $scratch: $(df -h "$scratch" | tail -1)"
for np in $nps; do
    for r in $(seq 1 "$rounds"); do
        echo "== np $np round $r load $(cut -d' ' -f1-3 /proc/loadavg)"
        case $((r % 3)) in
            1) order="atom dd dcp" ;;
            2) order="dd dcp atom" ;;
            0) order="dcp atom dd" ;;
        esac
        for what in $order; do
            case $what in
                atom) run_atom "$np" "$r" ;;
                dd) run_dd ;;
                dcp) run_dcp "$np" ;;
            esac
        done
    done
done
echo "== end $(date -u) load $(cut -d' ' -f1-3 /proc/loadavg)"
