#!/usr/bin/env bash
# bench/worker/run.sh: the worker's training speed on this machine, one command.
#   atom: gpt-tiny (B=8 per rank, T=128, C=256, L=4, NH=4, V=256) in fp32 and in bf16
#         (training.precision: bf16) at 1 and 2 ranks of one thread and 1 rank of 2 threads:
#         tokens/s, ms/step, share of time in matmuls and the matmul ceiling of the same run
#         (one step's sgemm and oneDNN bf16 calls replayed alone), and rank 0's time per backend
#         op (the matmuls inside it, and those matmuls replayed alone);
#   PyTorch DDP (gloo) on the same model, when python3-torch is installed, in fp32 and under
#         torch.autocast(bfloat16): 1 rank x 1 thread, 1 rank x 2 threads, 2 ranks x 1 thread.
# Usage: bench/worker/run.sh [BUILD_DIR] (default: build). REPEAT=N runs every configuration N
# times, interleaved, and the summary takes each one's best: the machine has 2 cores, and figures
# are noisy whenever anything else runs. STEPS=N measured steps per run (default 10).
# PRECISIONS="fp32 bf16" (the default) chooses the precisions.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
bench=$build/bin/atom-bench-worker
[ -x "$bench" ] || { echo "run.sh: $bench not built (make atom-bench-worker)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_mtl=^ofi,psm2 OPENBLAS_NUM_THREADS=1
steps=${STEPS:-10}
repeat=${REPEAT:-1}
precisions=${PRECISIONS:-fp32 bf16}
configs="1x1 2x1 1x2"
py=/usr/bin/python3
have_torch=0
$py -c 'import torch' 2>/dev/null && have_torch=1
value() { awk -v k="$1" '$1 == k { sub("%", "", $2); print $2 }'; }
best() { [ -z "${1:-}" ] || [ "$2" -gt "$1" ] && echo "$2" || echo "$1"; }
least() { [ -z "${1:-}" ] || awk "BEGIN { exit !($2 < $1) }" && echo "$2" || echo "$1"; }
load() { cut -d' ' -f1 /proc/loadavg; }

# keys: "PRECISION CONFIG", e.g. "bf16 2x1"
declare -A atom=() torch=() ceiling=() atom_cpu=() torch_cpu=()
for ((round = 1; round <= repeat; round++)); do
  for prec in $precisions; do
    flag=(); [ "$prec" = bf16 ] && flag=(--bf16)
    for cfg in $configs; do
      np=${cfg%x*} t=${cfg#*x} key="$prec $cfg"
      echo "== round $round: atom-worker loop, $prec, $np rank(s) x $t thread(s) (load $(load))"
      # mpirun binds each rank to one core when np <= 2: a rank of 2 threads needs
      # --bind-to none, or both threads share a core (1x2 then measured the same as 1x1)
      bind=(); [ "$t" -gt 1 ] && bind=(--bind-to none)
      out=$(OPENBLAS_NUM_THREADS=$t mpirun -np $np "${bind[@]}" --oversubscribe "$bench" \
            --steps "$steps" "${flag[@]}")
      echo "$out" | sed 's/^/   /'
      # the best run's own ceiling: a ceiling from another round (another load) makes no ratio
      tps=$(echo "$out" | value tokens_per_s)
      atom_cpu[$key]=$(least "${atom_cpu[$key]:-}" "$(echo "$out" | value cpu_ms_per_step)")
      if [ -z "${atom[$key]:-}" ] || [ "$tps" -gt "${atom[$key]}" ]; then
        atom[$key]=$tps
        ceiling[$key]=$(echo "$out" | value matmul_ceiling_tokens_per_s)
      fi
    done
  done
  if [ $have_torch = 1 ]; then
    for prec in $precisions; do
      flag=(); [ "$prec" = bf16 ] && flag=(--bf16)
      for cfg in $configs; do
        r=${cfg%x*} t=${cfg#*x} key="$prec $cfg"
        echo "== round $round: PyTorch $($py -c 'import torch; print(torch.__version__)')" \
             "DDP gloo, $prec, $r rank(s) x $t thread(s) (load $(load))"
        out=$(OMP_NUM_THREADS=$t $py "$here/torch_gpt.py" --ranks "$r" --threads "$t" \
              --steps "$steps" "${flag[@]}")
        echo "$out" | sed 's/^/   /'
        torch[$key]=$(best "${torch[$key]:-}" "$(echo "$out" | value tokens_per_s)")
        torch_cpu[$key]=$(least "${torch_cpu[$key]:-}" "$(echo "$out" | value cpu_ms_per_step)")
      done
    done
  fi
done

ratio() { awk "BEGIN { printf \"%.2f\", $1 / $2 }"; }
# argmax KEY over the keys given whose figure in array $1 is highest: "prec cfg"
top() {
  local -n arr=$1; shift
  local k best_k=""
  for k in "$@"; do
    if [ -z "$best_k" ] || [ "${arr[$k]}" -gt "${arr[$best_k]}" ]; then best_k=$k; fi
  done
  echo "$best_k"
}
echo "== summary: best of $repeat round(s), tokens/s (the loads while measuring are above)"
for prec in $precisions; do
  for cfg in $configs; do
    key="$prec $cfg"
    line=$(printf '   %s %s (ranks x threads): atom %6s   matmul ceiling of that run %6s (%s of it)' \
           "$prec" "$cfg" "${atom[$key]}" "${ceiling[$key]}" \
           "$(ratio "${atom[$key]}" "${ceiling[$key]}")")
    if [ $have_torch = 1 ]; then
      line+=$(printf '   PyTorch %6s   atom/PyTorch %s' "${torch[$key]}" \
              "$(ratio "${atom[$key]}" "${torch[$key]}")")
    fi
    echo "$line"
  done
done
if [ $have_torch = 1 ]; then
  one=() two=()
  for prec in $precisions; do
    one+=("$prec 1x1")
    two+=("$prec 2x1" "$prec 1x2")
  done
  a1=$(top atom "${one[@]}") t1=$(top torch "${one[@]}")
  a2=$(top atom "${two[@]}") t2=$(top torch "${two[@]}")
  printf '   1 core , best of each: atom %6s (%s)  PyTorch %6s (%s)  ratio %s\n' \
         "${atom[$a1]}" "$a1" "${torch[$t1]}" "$t1" "$(ratio "${atom[$a1]}" "${torch[$t1]}")"
  printf '   2 cores, best of each: atom %6s (%s)  PyTorch %6s (%s)  ratio %s\n' \
         "${atom[$a2]}" "$a2" "${torch[$t2]}" "$t2" "$(ratio "${atom[$a2]}" "${torch[$t2]}")"
  # CPU time of the (first) rank's main thread per step, the least of the rounds: a load that
  # takes cores away from the ranks does not count in it (cache sharing still does)
  for prec in $precisions; do
    printf '   1 core, %s, CPU ms per step: atom %s  PyTorch %s  ratio %s\n' "$prec" \
           "${atom_cpu[$prec 1x1]}" "${torch_cpu[$prec 1x1]}" \
           "$(ratio "${torch_cpu[$prec 1x1]}" "${atom_cpu[$prec 1x1]}")"
  done
else
  echo "   PyTorch not installed (apt-get install python3-torch): no peer figures"
fi
