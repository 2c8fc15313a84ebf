#!/usr/bin/env bash
# bench/sample/run.sh: generated tokens/s of `atomctl sample` on one CPU core for a
# gpt2-124m-shaped model (L 12, C 768, 12 heads, T 1024, V 50257; weights from one training step
# of atom-worker, so random-like), beside PyTorch running the same model with the same weights
# (exported with `atomctl ckpt export`) and a key/value cache of its own on one thread
# (torch_gpt2_sample.py), in the same run. Both generate greedily from the same prompt ids and
# time the tokens after the prompt's forward; the ids of the two are compared too.
# Usage: bench/sample/run.sh [BUILD_DIR] (default: build). TOKENS=N (default 200), ROUNDS=N
# (default 3, interleaved; the best of each is kept: the machine's 2 cores are shared).
# PyTorch is a benchmark-only dependency: when python3-torch is missing this script installs it
# (apt-get install -y python3-torch) and says so.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
tokens=${TOKENS:-200}
rounds=${ROUNDS:-3}
py=/usr/bin/python3
for p in atom-worker atomctl atom-infer; do
  [ -x "$build/bin/$p" ] || { echo "run.sh: $build/bin/$p is not built" >&2; exit 2; }
done
if ! $py -c 'import torch' 2>/dev/null; then
  echo "run.sh: python3-torch is missing; installing it for this benchmark only:" \
       "apt-get install -y python3-torch"
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch >/dev/null
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl=self,vader OMPI_MCA_io=romio321 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d /tmp/atom-bench-sample.XXXXXX)
trap 'rm -rf "$work"' EXIT

cat >"$work/job.yaml" <<YAML
name: bench-sample
resources:
  gpus: 1
  device: cpu
model:
  preset: gpt2-124m
data:
  path: /usr/share/common-licenses/GPL-3
  format: bytes
training:
  steps: 1
  global_batch: 1
  micro_batch: 1
  lr: 1e-5
checkpoint:
  dir: $work/ckpt
YAML
echo "== a gpt2-124m checkpoint: one step of atom-worker (load $(cut -d' ' -f1 /proc/loadavg))"
"$build/bin/atom-worker" --spec "$work/job.yaml" >"$work/train.log" 2>&1 ||
  { cat "$work/train.log" >&2; exit 1; }
"$build/bin/atomctl" ckpt export "$work/ckpt/latest" -o "$work/model.safetensors" >/dev/null

prompt="This program is free software: you can redistribute it"
ids=$($py -c 'import sys; print(",".join(str(b) for b in sys.argv[1].encode()))' "$prompt")
best_atom=0 best_torch=0
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r of $rounds (load $(cut -d' ' -f1 /proc/loadavg))"
  "$build/bin/atomctl" sample "$work/ckpt" --prompt "$prompt" --tokens "$tokens" \
    --temperature 0 --json >"$work/atom.json"
  $py "$here/torch_gpt2_sample.py" "$work/model.safetensors" --prompt-ids "$ids" \
    --tokens "$tokens" --heads 12 >"$work/torch.json"
  read -r a t same < <($py - "$work/atom.json" "$work/torch.json" <<'PY'
import json, sys
a, t = (json.load(open(p)) for p in sys.argv[1:3])
n = next((i for i, (x, y) in enumerate(zip(a["ids"], t["ids"])) if x != y), None)
print("%.2f %.2f %s" % (a["tokens_per_s"], t["tokens_per_s"],
                        "all" if n is None else "first-%d" % n))
PY
)
  echo "atom $a tokens/s, PyTorch $t tokens/s, ratio $($py -c "print('%.2f' % ($a / $t))");" \
       "greedy ids the same: $same"
  best_atom=$($py -c "print(max($best_atom, $a))")
  best_torch=$($py -c "print(max($best_torch, $t))")
done
echo "== gpt2-124m, one core, greedy, $tokens tokens after a ${#prompt}-token prompt" \
     "(best of $rounds)"
echo "atom-infer (atomctl sample)   $best_atom tokens/s"
echo "PyTorch $($py -c 'import torch; print(torch.__version__)') (1 thread)    $best_torch tokens/s"
echo "ratio atom / PyTorch           $($py -c "print('%.2f' % ($best_atom / $best_torch))")"
