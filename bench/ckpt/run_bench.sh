#!/bin/sh
# bench/ckpt/run_bench.sh BUILD_DIR [SCRATCH_DIR]: the checkpoint benchmark of issue 5.
#
# Saves and loads a gpt2-124m-sized state (124M parameters + two AdamW moments, 1.49 GB) at 1, 2
# and 4 ranks, beside the disk's limits measured in the same run on the same disk and size:
# dd conv=fsync (writes) and dd iflag=direct (cold reads), just before each of atom's runs and
# after the last (the disk is noisy: only ratios within one run count). Then the async save's added wall time on
# gpt-tiny and gpt2-124m with a stand-in compute loop. Writes about 30 GB in total; removes
# everything it wrote at the end.
set -eu
build=$1
scratch=${2:-/work/ckpt-bench-$$}
exe=$build/bench/ckpt/bench_ckpt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_mtl=^ofi,psm2 \
       OMPI_MCA_io=romio321 OPENBLAS_NUM_THREADS=1
mkdir -p "$scratch"
mb=1425 # 1425 MiB = 1.494 GB, the gpt2-124m state

# dd from /dev/zero, as the issue measured it, and dd of random bytes (a source in /dev/shm,
# i.e. memory): measured here, writing zeros ran up to 2x faster than writing real data (the
# virtual disk seems to treat zeros specially), so both are printed.
random_src=/dev/shm/atom-ckpt-bench-src.$$
head -c $((mb * 1048576)) /dev/urandom > "$random_src"
trap 'rm -rf "$scratch" "$random_src"' EXIT
dd_limits() {
    w=$(dd if=/dev/zero of="$scratch/dd.bin" bs=1M count=$mb conv=fsync 2>&1 | tail -1)
    rm -f "$scratch/dd.bin"
    wr=$(dd if="$random_src" of="$scratch/dd.bin" bs=1M conv=fsync 2>&1 | tail -1)
    r=$(dd if="$scratch/dd.bin" of=/dev/null bs=1M iflag=direct 2>&1 | tail -1)
    rm -f "$scratch/dd.bin"
    echo "dd_write_zeros($1): $w"
    echo "dd_write_random($1): $wr"
    echo "dd_read_direct($1): $r"
}

echo "== $(date -u) on $(hostname), $(nproc) cores, disk of $scratch: $(df -h "$scratch" | tail -1)"
for np in 1 2 4; do
    dd_limits "before np$np"
    echo "== gpt2-124m at $np rank(s)"
    mpirun -np $np --oversubscribe "$exe" --dir "$scratch/np$np" --model gpt2-124m
    rm -rf "$scratch/np$np"
done
dd_limits after
for np in 1 2 4; do
    echo "== gpt-tiny at $np rank(s)"
    mpirun -np $np --oversubscribe "$exe" --dir "$scratch/tiny$np" --model gpt-tiny --steps-ms 20
    rm -rf "$scratch/tiny$np"
done
