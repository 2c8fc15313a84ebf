#!/usr/bin/env bash
# bench/worker/run.sh: the worker's training speed on this machine, one command.
#   atom: gpt-tiny (B=8 per rank, T=128, C=256, L=4, NH=4, V=256) at 1 and 2 ranks of one thread
#         and 1 rank of 2 OpenBLAS threads: tokens/s, ms/step, share of time in sgemm and the
#         sgemm ceiling of the same run, and rank 0's time per backend op (sgemm inside it, and
#         that sgemm replayed alone);
#   PyTorch DDP (gloo) on the same model, when python3-torch is installed: 1 rank x 1 thread,
#         1 rank x 2 threads, 2 ranks x 1 thread.
# Usage: bench/worker/run.sh [BUILD_DIR] (default: build). REPEAT=N runs every configuration N
# times, interleaved, and the summary takes each one's best: the machine has 2 cores, and figures
# are noisy whenever anything else runs. STEPS=N measured steps per run (default 10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
bench=$build/bin/atom-bench-worker
[ -x "$bench" ] || { echo "run.sh: $bench not built (make atom-bench-worker)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_mtl=^ofi,psm2 OPENBLAS_NUM_THREADS=1
steps=${STEPS:-10}
repeat=${REPEAT:-1}
py=/usr/bin/python3
have_torch=0
$py -c 'import torch' 2>/dev/null && have_torch=1
value() { awk -v k="$1" '$1 == k { sub("%", "", $2); print $2 }'; }
best() { [ -z "${1:-}" ] || [ "$2" -gt "$1" ] && echo "$2" || echo "$1"; }
least() { [ -z "${1:-}" ] || awk "BEGIN { exit !($2 < $1) }" && echo "$2" || echo "$1"; }

declare -A atom=() torch=() ceiling=() atom_cpu=() torch_cpu=()
for ((round = 1; round <= repeat; round++)); do
  for cfg in 1x1 2x1 1x2; do
    np=${cfg%x*} t=${cfg#*x}
    echo "== round $round: atom-worker loop, $np rank(s) x $t OpenBLAS thread(s)" \
         "(load $(cut -d' ' -f1 /proc/loadavg))"
    # mpirun binds each rank to one core when np <= 2: a rank of 2 OpenBLAS threads needs
    # --bind-to none, or both threads share a core (1x2 then measured the same as 1x1)
    bind=(); [ "$t" -gt 1 ] && bind=(--bind-to none)
    out=$(OPENBLAS_NUM_THREADS=$t mpirun -np $np "${bind[@]}" --oversubscribe "$bench" \
          --steps "$steps")
    echo "$out" | sed 's/^/   /'
    # the best run's own ceiling: a ceiling from another round (another load) makes no ratio
    tps=$(echo "$out" | value tokens_per_s)
    atom_cpu[$cfg]=$(least "${atom_cpu[$cfg]:-}" "$(echo "$out" | value cpu_ms_per_step)")
    if [ -z "${atom[$cfg]:-}" ] || [ "$tps" -gt "${atom[$cfg]}" ]; then
      atom[$cfg]=$tps
      ceiling[$cfg]=$(echo "$out" | value sgemm_ceiling_tokens_per_s)
    fi
  done
  if [ $have_torch = 1 ]; then
    for cfg in 1x1 1x2 2x1; do
      r=${cfg%x*} t=${cfg#*x}
      echo "== round $round: PyTorch $($py -c 'import torch; print(torch.__version__)') DDP gloo," \
           "$r rank(s) x $t thread(s) (load $(cut -d' ' -f1 /proc/loadavg))"
      out=$(OMP_NUM_THREADS=$t $py "$here/torch_gpt.py" --ranks "$r" --threads "$t" --steps "$steps")
      echo "$out" | sed 's/^/   /'
      torch[$cfg]=$(best "${torch[$cfg]:-}" "$(echo "$out" | value tokens_per_s)")
      torch_cpu[$cfg]=$(least "${torch_cpu[$cfg]:-}" "$(echo "$out" | value cpu_ms_per_step)")
    done
  fi
done

ratio() { awk "BEGIN { printf \"%.2f\", $1 / $2 }"; }
echo "== summary: best of $repeat round(s), tokens/s (the loads while measuring are above)"
for cfg in 1x1 2x1 1x2; do
  printf '   atom %s (ranks x threads): %6s   sgemm ceiling of that run %6s (%s of it)\n' "$cfg" \
         "${atom[$cfg]}" "${ceiling[$cfg]}" "$(ratio "${atom[$cfg]}" "${ceiling[$cfg]}")"
done
if [ $have_torch = 1 ]; then
  atom2=$(best "${atom[1x2]}" "${atom[2x1]}")
  torch2=$(best "${torch[1x2]}" "${torch[2x1]}")
  printf '   1 core : atom %6s  PyTorch 1x1 %6s  ratio %s\n' "${atom[1x1]}" "${torch[1x1]}" \
         "$(ratio "${atom[1x1]}" "${torch[1x1]}")"
  printf '   2 cores: atom best %6s  PyTorch best of 1x2 (%s), 2x1 (%s): %6s  ratio %s\n' \
         "$atom2" "${torch[1x2]}" "${torch[2x1]}" "$torch2" "$(ratio "$atom2" "$torch2")"
  # CPU time of the (first) rank's main thread per step, the least of the rounds: a load that
  # takes cores away from the ranks does not count in it (cache sharing still does)
  printf '   1 core, CPU ms per step: atom %s  PyTorch %s  ratio %s\n' "${atom_cpu[1x1]}" \
         "${torch_cpu[1x1]}" "$(ratio "${torch_cpu[1x1]}" "${atom_cpu[1x1]}")"
else
  echo "   PyTorch not installed (apt-get install python3-torch): no peer figures"
fi
