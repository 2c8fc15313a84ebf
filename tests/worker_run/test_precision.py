"""tests/worker_run/test_precision.py: `training.precision: bf16` in a job spec reaches the
model. The same 6-step job (tensor 2 x data 1) in fp32 and in bf16: every step's loss within 1e-2
relative, and not one of them equal (the matmuls' operands were rounded to bf16)."""
import os

from worker_run_lib import check, cleanup, run, train_log, workdir, write_spec

STEPS = 6
losses = {}
works = []
for precision in ("fp32", "bf16"):
    work = workdir("precision-" + precision)
    works.append(work)
    spec = write_spec(work, tensor=2, data=1, steps=STEPS, global_batch=4, micro_batch=4,
                      precision=precision)
    run_dir = os.path.join(work, "runs", "attempt-1")
    p = run(2, spec, run_dir)
    check(p.returncode == 0, "the %s run exited %d" % (precision, p.returncode))
    losses[precision] = [d["loss"] for d in train_log(run_dir)]
    check(len(losses[precision]) == STEPS,
          "%s: %d steps logged" % (precision, len(losses[precision])))
for step, (a, b) in enumerate(zip(losses["fp32"], losses["bf16"]), 1):
    print("step %d: loss fp32 %.6f bf16 %.6f (relative %.1e)" % (step, a, b, abs(b - a) / a))
    check(abs(b - a) <= 1e-2 * a,
          "step %d: bf16 loss %.6f is not within 1e-2 of fp32's %.6f" % (step, b, a))
    check(a != b, "step %d: bf16 and fp32 losses are identical (%.6f): the precision did not "
          "reach the model" % (step, a))
cleanup(*works)
print("PASS")
