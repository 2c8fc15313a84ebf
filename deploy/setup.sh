#!/usr/bin/env bash
# Installs every Debian package atom needs to build, test and run (Debian 12).
# Idempotent: when everything is installed it only checks, and it runs
# `apt-get update` only when a package is missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config git ca-certificates
  # MPI and parallel HDF5 (checkpoints)
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools
  # job specs, protocol, state store, matmuls, unit tests
  libyaml-dev libjansson-dev libsqlite3-dev sqlite3 libopenblas-dev libcmocka-dev
  # bf16 matmuls on the CPU (oneDNN: AMX or AVX-512 bf16 where present)
  libdnnl-dev
  # the spec fuzzer and the sanitizer build (clang's libFuzzer and ASan runtimes)
  clang libclang-rt-dev
  # TCP credentials between nodes, and a real Slurm for the Slurm tests
  munge libmunge-dev
  # Slurm (slurmctld, slurmd, the client tools and the pmix plugin) for deploy/slurm and tests/slurm
  slurm-wlm
  # tools the tests and benchmarks call
  procps python3 python3-numpy python3-h5py
  # atomctl plot draws its PNG with gnuplot
  gnuplot-nox
  # the tokenizer test: an independent GPT-2 tokenizer (regex) and a multilingual corpus (locales)
  python3-regex locales
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "atom setup: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
