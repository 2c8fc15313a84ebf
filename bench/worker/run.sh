#!/usr/bin/env bash
# bench/worker/run.sh: the worker's training speed on this machine, one command.
#   atom: gpt-tiny (B=8 per rank, T=128, C=256, L=4, NH=4, V=256) at 1 and 2 ranks of one thread,
#         tokens/s, ms/step, share of time in sgemm and the sgemm ceiling of the same run;
#   PyTorch DDP (gloo) on the same model, when python3-torch is installed: 1 rank x 1 thread,
#         1 rank x 2 threads, 2 ranks x 1 thread.
# Usage: bench/worker/run.sh [BUILD_DIR] (default: build). The machine has 2 cores: figures are
# noisy whenever anything else runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
bench=$build/bin/atom-bench-worker
[ -x "$bench" ] || { echo "run.sh: $bench not built (make atom-bench-worker)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_mtl=^ofi,psm2 OPENBLAS_NUM_THREADS=1
steps=${STEPS:-10}
value() { awk -v k="$1" '$1 == k { sub("%", "", $2); print $2 }'; }

declare -A atom torch
for np in 1 2; do
  echo "== atom-worker loop, $np rank(s) x 1 thread"
  out=$(mpirun -np $np --oversubscribe "$bench" --steps "$steps")
  echo "$out" | sed 's/^/   /'
  atom[$np]=$(echo "$out" | value tokens_per_s)
done

py=/usr/bin/python3
if $py -c 'import torch' 2>/dev/null; then
  for cfg in 1x1 1x2 2x1; do
    r=${cfg%x*} t=${cfg#*x}
    echo "== PyTorch $($py -c 'import torch; print(torch.__version__)') DDP gloo, $r rank(s) x $t thread(s)"
    out=$(OMP_NUM_THREADS=$t $py "$here/torch_gpt.py" --ranks "$r" --threads "$t" --steps "$steps")
    echo "$out" | sed 's/^/   /'
    torch[$cfg]=$(echo "$out" | value tokens_per_s)
  done
  best2=${torch[1x2]}
  [ "${torch[2x1]}" -gt "$best2" ] && best2=${torch[2x1]}
  echo "== summary (tokens/s)"
  printf '   1 core : atom %6s  PyTorch 1x1 %6s  ratio %.2f\n' "${atom[1]}" "${torch[1x1]}" \
         "$(awk "BEGIN { print ${atom[1]} / ${torch[1x1]} }")"
  printf '   2 cores: atom %6s  PyTorch best of 1x2, 2x1 %6s  ratio %.2f\n' "${atom[2]}" "$best2" \
         "$(awk "BEGIN { print ${atom[2]} / $best2 }")"
else
  echo "== PyTorch not installed (apt-get install python3-torch): no peer figures"
fi
