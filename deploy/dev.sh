#!/usr/bin/env bash
# The two commands of README.md, and what CI runs. Each one does all the set-up it needs:
#   deploy/dev.sh run [SPEC]   install packages, build, run a job on this machine (default: the
#                              example CPU job) through atomctl run
#   deploy/dev.sh test         install packages, build, run the whole test suite (ctest)
#   deploy/dev.sh test-sanitize  the same tests built with AddressSanitizer + UBSan
#   deploy/dev.sh test-tsan    the multi-threaded parts' tests (label tsan) under ThreadSanitizer
#   deploy/dev.sh build        install packages and build only
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmd=${1:-}
[ $# -gt 0 ] && shift

jobs=$(nproc 2>/dev/null || echo 2)

# The tests start a private Slurm cluster and run clients and jobs as another user (uid 65534):
# they need root. A user with sudo gets it here.
case "$cmd" in
  test|test-sanitize|test-tsan)
    if [ "$(id -u)" -ne 0 ]; then
      exec sudo --preserve-env=PATH,CI bash "${BASH_SOURCE[0]}" "$cmd" "$@"
    fi
    ;;
esac

# Open MPI refuses to run as root unless told; a fresh machine or a container is often root.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

build() { # build DIR [cmake options...]; $targets, when set, limits what is built
  local dir=$1; shift
  bash "$top/deploy/setup.sh"
  mkdir -p "$dir"
  cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir/configure.log" 2>&1 ||
    { cat "$dir/configure.log" >&2; exit 1; }
  cmake --build "$dir" -j "$jobs" ${targets:+--target $targets}
}

case "$cmd" in
  build)
    build "$top/build"
    ;;
  run)
    build "$top/build"
    spec=${1:-$top/configs/examples/tiny-cpu.yaml}
    exec "$top/build/bin/atomctl" run "$spec"
    ;;
  test)
    build "$top/build"
    cd "$top/build"
    exec ctest --output-on-failure -j "$jobs" "$@"
    ;;
  test-sanitize)
    build "$top/build-sanitize" -DATOM_SANITIZE=ON -DATOM_CUDA=OFF
    cd "$top/build-sanitize"
    # Benchmarks and the fuzzer run in the plain build only.
    exec ctest --output-on-failure -j "$jobs" -LE 'fuzz|bench' "$@"
    ;;
  test-tsan)
    # Only what the tsan-labelled tests run: the collectives' progress thread, the async
    # checkpoint writer, and the whole worker with both.
    targets="test_coll_ops test_coll_buckets test_ckpt_async atom-worker worker_make_plan"
    build "$top/build-tsan" -DATOM_TSAN=ON -DATOM_CUDA=OFF
    cd "$top/build-tsan"
    exec ctest --output-on-failure -j "$jobs" -L tsan "$@"
    ;;
  *)
    echo "usage: deploy/dev.sh run [SPEC] | test [ctest args] | test-sanitize | test-tsan | build" >&2
    exit 2
    ;;
esac
