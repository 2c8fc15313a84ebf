#!/usr/bin/env bash
# bench/data/run.sh: the GPT-2 tokenizer's speed, one command.
#   atom: `atom-data prepare --tokenizer gpt2` (reading, encoding, writing train.bin) on one thread
#         and on every core, MB of text per second, best of REPEAT;
#   tiktoken (npm tiktoken, OpenAI's Rust tokenizer built to WASM; one thread) on the same text
#         in the same run, its ids checked against atom's; installed with npm into
#         ${XDG_CACHE_HOME:-~/.cache}/atom-bench/tiktoken when missing, skipped with a line saying
#         so when npm cannot reach its registry;
#   the Python reference of the tests (tests/data/gpt2_reference.py: OpenAI's encoder.py
#         algorithm on python3-regex) on the first 2 MB.
# Each is shown as MB per second of wall time and MB per second of CPU time (user + system): on a
# machine shared with other work the second is the steadier figure of the code itself.
# The text: every Debian machine's /usr/share/common-licenses and glibc's locale sources
# (/usr/share/i18n/locales: many scripts), about 13 MB.
# Usage: bench/data/run.sh [BUILD_DIR] (default: build). REPEAT=N (default 3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../..
build=${1:-$src/build}
atom_data=$build/bin/atom-data
[ -x "$atom_data" ] || { echo "run.sh: $atom_data not built (make atom-data)" >&2; exit 2; }
repeat=${REPEAT:-3}
threads=$(nproc)
# in memory (tmpfs) when there is one, so the disk's fsync does not hide the tokenizer's speed
tmp=/tmp; [ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
work=$(mktemp -d $tmp/atom-bench-data.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/text"
cat /usr/share/common-licenses/* /usr/share/i18n/locales/* > "$work/text/corpus.txt"
mb=$(awk -v b="$(stat -c %s "$work/text/corpus.txt")" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "== text: $mb MB (common-licenses + i18n/locales), $threads cores, load $(cut -d' ' -f1 /proc/loadavg)"

atom_rate() { # threads -> "best wall MB/s  best CPU MB/s"
  local best=0 best_cpu=0 r line rate cpu
  for ((r = 1; r <= repeat; r++)); do
    line=$("$atom_data" prepare --tokenizer gpt2 --val-fraction 0 --threads "$1" \
           -o "$work/out-$1" "$work/text" | grep '^encoded ')
    # "encoded 13.0 MB in 1.58 s (8.3 MB/s, 1 thread; 0.49 s of CPU)"
    rate=$(echo "$line" | sed 's/.*(\([0-9.]*\) MB\/s.*/\1/')
    cpu=$(echo "$line" | awk '{ for (i = 1; i <= NF; i++) if ($i == "of") c = $(i - 2);
                                 printf "%.2f", $2 / c }')
    best=$(awk -v a="$best" -v b="$rate" 'BEGIN { print (b > a) ? b : a }')
    best_cpu=$(awk -v a="$best_cpu" -v b="$cpu" 'BEGIN { print (b > a) ? b : a }')
  done
  echo "$best $best_cpu"
}
read -r atom1 atom1_cpu <<< "$(atom_rate 1)"
read -r atomn atomn_cpu <<< "$(atom_rate "$threads")"
tokens=$(( $(stat -c %s "$work/out-1/train.bin") / 2 ))

tik="skipped" tik_cpu="-"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/atom-bench/tiktoken
if ! command -v node >/dev/null; then
  tik_note="tiktoken: skipped (node is not installed)"
else
  if [ ! -d "$cache/node_modules/tiktoken" ]; then
    mkdir -p "$cache"
    if ! timeout 120 npm install --prefix "$cache" --no-audit --no-fund tiktoken@1 \
         >"$work/npm.log" 2>&1; then
      tik_note="tiktoken: skipped (npm could not install it: $(tail -1 "$work/npm.log"))"
    fi
  fi
  if [ -d "$cache/node_modules/tiktoken" ]; then
    out=$(node "$here/tiktoken_bench.js" "$cache" "$work/text/corpus.txt" \
          "$work/out-1/train.bin" "$repeat")
    tik=$(echo "$out" | awk '$1 == "tiktoken_mb_per_s" { print $2 }')
    tik_cpu=$(echo "$out" | awk '$1 == "tiktoken_mb_per_cpu_s" { print $2 }')
    tik_note="tiktoken $(echo "$out" | awk '$1 == "tiktoken_version" { print $2 }'): same ids as atom: $(echo "$out" | awk '$1 == "tiktoken_same_ids" { print $2 }')"
  fi
fi

py=$(/usr/bin/python3 - "$src/tests/data" "$work/text/corpus.txt" <<'PY'
import sys, time
sys.path.insert(0, sys.argv[1])
import gpt2_reference
text = open(sys.argv[2], "rb").read(2_000_000).decode("utf-8", "ignore")
enc = gpt2_reference.Encoder(sys.argv[1] + "/../../data/gpt2")
t0, c0 = time.perf_counter(), time.process_time()
enc.encode(text)
mb = len(text.encode()) / 1e6
print("%.2f %.2f" % (mb / (time.perf_counter() - t0), mb / (time.process_time() - c0)))
PY
) || py="skipped -"
read -r py py_cpu <<< "$py"

echo
echo "GPT-2 tokenizer ($tokens tokens from $mb MB; best of $repeat)"
printf "  %-44s %10s %12s\n" "" "MB/s wall" "MB/CPU-s"
printf "  %-44s %10s %12s\n" "atom-data prepare, 1 thread" "$atom1" "$atom1_cpu"
printf "  %-44s %10s %12s\n" "atom-data prepare, $threads threads" "$atomn" "$atomn_cpu"
printf "  %-44s %10s %12s\n" "tiktoken (npm, WASM), 1 thread" "$tik" "$tik_cpu"
printf "  %-44s %10s %12s\n" "Python reference (encoder.py, first 2 MB)" "$py" "$py_cpu"
echo "  $tik_note"
