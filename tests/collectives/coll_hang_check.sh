#!/bin/sh
# tests/collectives/coll_hang_check.sh: runs test_coll_hang under mpirun, where the last rank never
# joins an all-reduce, and checks what a user relies on: the job ends with a non-zero status and
# its output names the operation, the group, and the missing rank with its host, and no other
# rank as missing.
#   coll_hang_check.sh MPIEXEC NP TENSOR_SIZE GROUP EXE
set -u
mpiexec=$1 np=$2 tsize=$3 group=$4 exe=$5
victim=$((np - 1))
host=$(hostname)
out=$("$mpiexec" -n "$np" --oversubscribe "$exe" "$tsize" "$group" 2>&1)
rc=$?
fail() { printf '%s\n--- output of the run (exit %s) ---\n%s\n' "FAIL: $1" "$rc" "$out"; exit 1; }
[ "$rc" -ne 0 ] || fail "the job exited 0"
printf '%s\n' "$out" | grep -q "hang: all_reduce on group $group " || fail "no hang message for all_reduce on group $group"
printf '%s\n' "$out" | grep -q "world rank $victim (host $host, entered" || fail "rank $victim on $host not named"
r=0
while [ "$r" -lt "$victim" ]; do
    if printf '%s\n' "$out" | grep -q "world rank $r (host"; then fail "rank $r named as behind"; fi
    r=$((r + 1))
done
printf '%s\n' "$out" | grep "hang:" | head -1
echo "ok"
