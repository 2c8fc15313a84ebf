#!/bin/sh
# tests/fuzz/run_fuzz.sh BINARY SOURCE_DIR WORK_DIR SECONDS: fuzzes the spec parser for a bounded
# time, from the seed corpus (read-only) plus a work corpus kept in the build folder between runs.
# A crash leaves its input in WORK_DIR/crash-*: once fixed, copy it into tests/fuzz/corpus/ so that
# fuzz_spec_replay keeps it as a regression test.
set -eu
bin=$1 src=$2 work=$3 seconds=$4
mkdir -p "$work/corpus"
# The test environment's fast_unwind_on_malloc=0 is for Open MPI's frame-pointer-less stacks; here
# it would slow every allocation fiftyfold. Leaks are still detected.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
exec "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -dict="$src/spec.dict" -artifact_prefix="$work/" \
    "$work/corpus" "$src/corpus"
