"""tests/worker_run/test_resume_exact.py: on the CPU, a run stopped after 10 steps and resumed
from its checkpoint is bit for bit the uninterrupted 20-step run: the same loss and gradient norm
at every step, and the same parameters and AdamW moments at the end, with asynchronous
checkpoints written in the background every 3 steps."""
import os

import h5py
import numpy as np

from worker_run_lib import check, cleanup, run, train_log, workdir, write_spec

NP, TENSOR, DATA = 2, 1, 2


def job(name, stop_after=None):
    work = workdir(name)
    spec = write_spec(work, tensor=TENSOR, data=DATA, steps=20, global_batch=8, micro_batch=2,
                      ckpt_dir=os.path.join(work, "ckpt"), every=3, async_ckpt=True)
    return work, spec


straight, spec_a = job("resume-straight")
p = run(NP, spec_a, straight)
check(p.returncode == 0, "the straight run exited %d" % p.returncode)

split, spec_b = job("resume-split")
p = run(NP, spec_b, split, ["--stop-after", "10"])
check(p.returncode == 75, "the first half exited %d, expected 75" % p.returncode)
check([d["step"] for d in train_log(split)] == list(range(1, 11)), "the first half ran 10 steps")
p = run(NP, spec_b, split)
check(p.returncode == 0, "the second half exited %d" % p.returncode)

# Asynchronous checkpoints every 3 steps, written while training went on, plus the final one.
have = sorted(f for f in os.listdir(os.path.join(straight, "ckpt")) if f.endswith(".h5"))
check(have == ["ckpt-%010d.h5" % s for s in (3, 6, 9, 12, 15, 18, 20)],
      "the straight run's checkpoints: %s" % have)

a, b = train_log(straight), train_log(split)
check([d["step"] for d in b] == list(range(1, 21)), "the two halves ran steps 1..20 once each")
for da, db in zip(a, b):
    for key in ("loss", "grad_norm", "lr"):
        check(da[key] == db[key], "step %d: %s %r (straight) != %r (resumed)" %
              (da["step"], key, da[key], db[key]))

fa = h5py.File(os.path.join(straight, "ckpt", "ckpt-%010d.h5" % 20), "r")
fb = h5py.File(os.path.join(split, "ckpt", "ckpt-%010d.h5" % 20), "r")
n = 0
for group in ("param", "adam_m", "adam_v"):
    for name in fa[group]:
        x, y = np.asarray(fa[group][name]), np.asarray(fb[group][name])
        check(x.shape == y.shape and np.array_equal(x.view(np.uint32), y.view(np.uint32)),
              "/%s/%s differs after resuming" % (group, name))
        n += 1
check(n >= 3 * 16, "the checkpoints hold %d datasets" % n)
cleanup(straight, split)
print("PASS: 20 steps = 10 + 10 steps, bit for bit (%d datasets)" % n)
