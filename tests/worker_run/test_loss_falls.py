"""tests/worker_run/test_loss_falls.py: atom-worker trains for real. Four ranks under mpirun
(tensor 2 x data 2) on the GPL-3 text: the loss falls well below where it starts, rank 0 writes
one JSON line per step, and every rank's heartbeat reaches the last step."""
import math
import os

from worker_run_lib import check, cleanup, heartbeats, run, train_log, workdir, write_spec

STEPS = 40
work = workdir("loss-falls")
spec = write_spec(work, tensor=2, data=2, steps=STEPS, global_batch=8, micro_batch=2)
run_dir = os.path.join(work, "runs", "attempt-1")  # made by atom-worker, parents too
p = run(4, spec, run_dir)
check(p.returncode == 0, "atom-worker exited %d" % p.returncode)
log = train_log(run_dir)
check([d["step"] for d in log] == list(range(1, STEPS + 1)),
      "train.jsonl should hold steps 1..%d once each, has %s" % (STEPS, [d["step"] for d in log]))
first = log[0]["loss"]
last = sum(d["loss"] for d in log[-5:]) / 5
print("loss %.4f -> %.4f (mean of the last 5 steps)" % (first, last))
# An untrained byte model sits near ln(256); 40 steps of English text must take it far below.
check(abs(first - math.log(256)) < 0.5, "first loss %.4f should be near ln(256)" % first)
check(last < first - 1.5, "loss did not fall well: %.4f -> %.4f" % (first, last))
for d in log:
    for key in ("lr", "grad_norm", "tokens_per_s", "ms_per_step"):
        check(key in d and d[key] >= 0 and math.isfinite(d[key]), "step %d: bad %s" % (d["step"], key))
check(sum(1 for line in p.stdout.splitlines() if line.startswith("step ")) == STEPS,
      "rank 0 should print one progress line per step")
for rank in range(4):
    hb = heartbeats(run_dir, rank)
    check(hb, "rank %d wrote no heartbeat" % rank)
    check(hb[-1]["step"] == STEPS and hb[-1]["rank"] == rank,
          "rank %d's last heartbeat is %s" % (rank, hb[-1]))
    collectives = hb[-1]["collectives"]
    check(all(c > 0 for c in collectives), "rank %d counts no collectives per group: %s" % (rank, collectives))
check("loss" in heartbeats(run_dir, 0)[-1], "rank 0's heartbeat carries the loss")
cleanup(work)
print("PASS")
