"""tests/worker_run/test_early_signal.py: a SIGUSR1 that reaches a worker while it is still in
MPI_Init (Slurm may send its warning signal up to a minute early; see README) stops the job
cleanly: exit 75 (resumable), no rank killed by the signal, no step trained. The worker's test
hook ATOM_WORKER_FAULT=usr1-before-mpi-init[:RANK] sends the signal just before MPI_Init, here to
rank 1 only of a job resuming from step 2: rank 0 learns of it from the stop all-reduce made
before the first step, and step 2's checkpoint stays the newest."""
import os

from worker_run_lib import check, cleanup, run, train_log, workdir, write_spec

work = workdir("early-signal")
ckpt = os.path.join(work, "ckpt")
spec = write_spec(work, tensor=1, data=2, steps=4, global_batch=4, micro_batch=2, warmup=1,
                  ckpt_dir=ckpt, every=2)


def early_stop(target):
    os.environ["ATOM_WORKER_FAULT"] = "usr1-before-mpi-init" + target
    try:
        return run(2, spec, work, timeout=60)
    finally:
        del os.environ["ATOM_WORKER_FAULT"]


p = run(2, spec, work, ["--stop-after", "2"])
check(p.returncode == 75, "the run to step 2 exited %d" % p.returncode)
p = early_stop(":1")
check(p.returncode == 75, "USR1 to rank 1 before MPI_Init: exit %d, expected 75" % p.returncode)
check("exited on signal" not in p.stderr and "User defined signal" not in p.stderr,
      "a rank died of the signal: %r" % p.stderr[-1500:])
check("stopped on request before its first step (at step 2 of 4)" in p.stderr,
      "rank 0 did not report the early stop after restoring step 2: %r" % p.stderr[-1500:])
check([d["step"] for d in train_log(work)] == [1, 2], "a step was trained after the stop request")
check(sorted(f for f in os.listdir(ckpt) if f.endswith(".h5")) == ["ckpt-%010d.h5" % 2],
      "checkpoints after the early stop: %s" % sorted(os.listdir(ckpt)))
cleanup(work)
print("PASS: a SIGUSR1 during MPI_Init ends the job with status 75, before any step")
