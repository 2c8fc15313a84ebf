#!/usr/bin/env python3
"""bench/ckpt/async_cost_summary.py LOGDIR ROUNDS: the figures of async_cost_worker.sh from the
train.jsonl of each run (LOGDIR/r<round>-<none|sync|async>.jsonl); see that script."""
import json
import statistics
import sys

SAVES, FIRST, LAST = (10, 20, 30), 1, 39


def figures(path):
    steps = {}
    for line in open(path):
        d = json.loads(line)
        steps[d["step"]] = d
    window = steps[LAST]["time"] - steps[FIRST]["time"]
    compute = sum(steps[s]["ms_per_step"] for s in range(FIRST + 1, LAST + 1)) / 1e3
    stall = [steps[s]["time"] - steps[s - 1]["time"] - steps[s]["ms_per_step"] / 1e3
             for s in SAVES]
    # the async writer thread's CPU time (rank 0), all saves; the last step's line comes after
    # its forced synchronous save has waited for the async one before it
    last = max(steps)
    saves = [s for s in steps if s % SAVES[0] == 0 and s < last]
    writer = steps[last].get("ckpt_writer_cpu_s")
    writer = writer / len(saves) if writer is not None and saves else float("nan")
    return window, compute, statistics.mean(stall), writer


logdir, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for r in range(1, rounds + 1):
    f = {m: figures(f"{logdir}/r{r}-{m}.jsonl") for m in ("none", "sync", "async")}
    n = len(SAVES)
    row = {
        "added_sync": (f["sync"][0] - f["none"][0]) / n,
        "added_async": (f["async"][0] - f["none"][0]) / n,
        "stall_sync": f["sync"][2],
        "stall_async": f["async"][2],
        "slowdown_async": (f["async"][1] - f["none"][1]) / n,
        "noise_sync": (f["sync"][1] - f["none"][1]) / n,
        "none_window": f["none"][0],
        "writer_cpu": f["async"][3],
    }
    row["ratio_window"] = row["added_async"] / row["added_sync"]
    row["ratio_parts"] = (row["stall_async"] + row["slowdown_async"]) / row["stall_sync"]
    row["ratio_cpu"] = (row["stall_async"] + row["writer_cpu"]) / row["stall_sync"]
    rows.append(row)
    print(f"round {r}: no-checkpoint window {row['none_window']:.2f} s; per save: "
          f"sync adds {row['added_sync']:.3f} s (its call {row['stall_sync']:.3f} s), "
          f"async adds {row['added_async']:.3f} s (snapshot call {row['stall_async']:.3f} s, "
          f"overlapped steps {row['slowdown_async']:+.3f} s; sync's steps {row['noise_sync']:+.3f} s "
          f"= noise); async/sync by windows {100 * row['ratio_window']:.0f}%, "
          f"by parts {100 * row['ratio_parts']:.0f}%; writer CPU {row['writer_cpu']:.3f} s, "
          f"(snapshot + writer CPU)/sync call {100 * row['ratio_cpu']:.0f}%")
med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
lo = {k: min(r[k] for r in rows) for k in rows[0]}
hi = {k: max(r[k] for r in rows) for k in rows[0]}
print(f"medians of {rounds} rounds, per save: sync call {med['stall_sync']:.3f} s, async snapshot "
      f"call {med['stall_async']:.3f} s, overlapped-step slowdown {med['slowdown_async']:+.3f} s "
      f"(noise floor {med['noise_sync']:+.3f} s); async/sync by windows "
      f"{100 * med['ratio_window']:.0f}% (rounds {100 * lo['ratio_window']:.0f} to {100 * hi['ratio_window']:.0f}), "
      f"by parts {100 * med['ratio_parts']:.0f}% ({100 * lo['ratio_parts']:.0f} to {100 * hi['ratio_parts']:.0f}); "
      f"writer CPU per save {med['writer_cpu']:.3f} s, (snapshot + writer CPU)/sync call "
      f"{100 * med['ratio_cpu']:.0f}% ({100 * lo['ratio_cpu']:.0f} to {100 * hi['ratio_cpu']:.0f}) (target <= 25%)")
