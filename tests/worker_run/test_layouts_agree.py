"""tests/worker_run/test_layouts_agree.py: the layout is not the model. The same job trained on
one rank and on four (tensor 2 x data 2), or with micro-batches of 2 or 8, sees the same global
batches and gives the same losses within float rounding; and a checkpoint written by the four
ranks resumes on one rank (a different TP x DP) where the one-rank run would have been."""
import os

from worker_run_lib import check, cleanup, run, train_log, workdir, write_spec

STEPS = 8


def job(name, tensor, data, micro_batch=2):
    work = workdir(name)
    spec = write_spec(work, tensor=tensor, data=data, steps=STEPS, global_batch=8,
                      micro_batch=micro_batch, ckpt_dir=os.path.join(work, "ckpt"), every=100)
    return work, spec


one, spec_one = job("layout-1x1", 1, 1)
p = run(1, spec_one, one)
check(p.returncode == 0, "the 1-rank run exited %d" % p.returncode)
four, spec_four = job("layout-2x2", 2, 2)
p = run(4, spec_four, four)
check(p.returncode == 0, "the 4-rank run exited %d" % p.returncode)


def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-6)


a, b = train_log(one), train_log(four)
check(len(a) == STEPS and len(b) == STEPS, "both runs log %d steps" % STEPS)
for da, db in zip(a, b):
    check(close(da["loss"], db["loss"], 1e-4),
          "step %d: loss %.7f (1 rank) vs %.7f (TP2 x DP2)" % (da["step"], da["loss"], db["loss"]))
    check(close(da["grad_norm"], db["grad_norm"], 1e-3),
          "step %d: grad norm %.7f vs %.7f" % (da["step"], da["grad_norm"], db["grad_norm"]))

# Gradient accumulation: 4 micro-batches of 2 are one batch of 8.
whole, spec_whole = job("layout-micro8", 1, 1, micro_batch=8)
p = run(1, spec_whole, whole)
check(p.returncode == 0, "the micro_batch 8 run exited %d" % p.returncode)
for da, dw in zip(a, train_log(whole)):
    check(close(da["loss"], dw["loss"], 1e-4),
          "step %d: loss %.7f (4 x 2) vs %.7f (1 x 8)" % (da["step"], da["loss"], dw["loss"]))

# Reshard on restore: stop the 4-rank job after 4 steps, finish it on one rank.
mixed, spec_mixed4 = job("layout-mixed", 2, 2)
p = run(4, spec_mixed4, mixed, ["--stop-after", "4"])
check(p.returncode == 75, "the 4-rank half exited %d" % p.returncode)
spec_mixed1 = write_spec(mixed, tensor=1, data=1, steps=STEPS, global_batch=8, micro_batch=2,
                         ckpt_dir=os.path.join(mixed, "ckpt"), every=100)
p = run(1, spec_mixed1, mixed)
check(p.returncode == 0, "the 1-rank half exited %d" % p.returncode)
c = train_log(mixed)
check([d["step"] for d in c] == list(range(1, STEPS + 1)), "steps 1..%d once each" % STEPS)
for da, dc in zip(a, c):
    check(close(da["loss"], dc["loss"], 1e-4),
          "step %d: loss %.7f (1 rank) vs %.7f (4 ranks, then 1)" % (da["step"], da["loss"], dc["loss"]))
cleanup(one, four, whole, mixed)
print("PASS: 1x1 and 2x2 agree over %d steps; a 2x2 checkpoint resumes on 1x1" % STEPS)
