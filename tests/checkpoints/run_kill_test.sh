#!/bin/sh
# tests/checkpoints/run_kill_test.sh MPIEXEC EXE DIR MODE: runs the crashing job (which must be
# killed by SIGKILL at its kill point, not fail earlier), then a new job that checks the restore.
set -u
mpiexec=$1 exe=$2 dir=$3 mode=$4
rm -rf "$dir" && mkdir -p "$dir" || exit 1
"$mpiexec" -np 2 --oversubscribe "$exe" crash "$dir" "$mode" >"$dir.crash.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "the crashing job exited 0"; cat "$dir.crash.log"; exit 1
fi
if ! grep -q "signal 9 (Killed)" "$dir.crash.log"; then
    echo "the crashing job failed before its kill point (exit $rc):"; cat "$dir.crash.log"; exit 1
fi
echo "crashing job ended as planned (exit $rc); restoring in a new job"
exec "$mpiexec" -np 2 --oversubscribe "$exe" check "$dir" "$mode"
