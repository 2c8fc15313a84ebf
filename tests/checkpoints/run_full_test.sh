#!/bin/sh
# tests/checkpoints/run_full_test.sh MPIEXEC EXE DIR SIZE: runs test_ckpt_full on 2 ranks with DIR
# a fresh tmpfs of SIZE (mount's size=, e.g. 2m), so that the test can fill it. The mount is made
# in a mount namespace of the job's own (unshare --mount): nobody else sees it, and it goes away
# with the job. Its mode is 0750 (a tmpfs is 1777 by default, and a checkpoint folder others
# may write is refused). Mounting needs CAP_SYS_ADMIN (root): where it is refused, the test is
# skipped (exit 77, ctest's SKIP_RETURN_CODE) and says why.
set -u
mpiexec=$1 exe=$2 dir=$3 size=$4
mkdir -p "$dir" || exit 1
if ! why=$(unshare --mount mount -t tmpfs -o size=4k tmpfs "$dir" 2>&1); then
    echo "SKIP: cannot mount a small tmpfs to fill (needs CAP_SYS_ADMIN, e.g. root): $why"
    exit 77
fi
exec unshare --mount sh -c 'mount -t tmpfs -o size="$4",mode=0750 tmpfs "$3" || exit 1
exec "$1" -np 2 --oversubscribe "$2" "$3"' sh "$mpiexec" "$exe" "$dir" "$size"
