"""tests/worker_run/test_stop_signal.py: a stop request ends a running job cleanly. SIGUSR1 to ONE
rank stops every rank after the same step (the flag is all-reduced once a step), with a committed
checkpoint of that step and the resumable exit status 75; running the job again continues from
that checkpoint. SIGTERM to one rank does the same, and so does SIGUSR1 to mpirun (which forwards
it to every rank: the way a launcher stops a job)."""
import os
import signal
import subprocess
import sys
import time

from worker_run_lib import (check, cleanup, heartbeats, kill_session, train_log, workdir,
                            worker_cmd, write_spec)

STEPS = 100000  # never reached: a signal ends every run
work = workdir("stop")
ckpt = os.path.join(work, "checkpoints", "job")  # two folders that do not exist yet
spec = write_spec(work, tensor=2, data=2, steps=STEPS, global_batch=8, micro_batch=2,
                  ckpt_dir=ckpt, every=STEPS, async_ckpt=True)


def run_and_stop(sig, to_rank):
    """Starts the job, waits for 2 new steps, sends sig to rank to_rank (None: to mpirun) and
    returns (exit status, the step every rank stopped after)."""
    before = len(train_log(work))
    # Its own session, so a failing test can kill mpirun and every rank at once.
    proc = subprocess.Popen(worker_cmd(4, spec, work), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 40
    pid = None
    while time.time() < deadline and proc.poll() is None:
        hb = heartbeats(work, to_rank if to_rank is not None else 0)
        if len(train_log(work)) >= before + 2 and hb and hb[-1]["pid"] != 0:
            pid = hb[-1]["pid"] if to_rank is not None else proc.pid
            break
        time.sleep(0.05)
    if pid is None:
        kill_session(proc)
        check(False, "the job never made 2 steps (exit %s)" % proc.poll())
    os.kill(pid, sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        check(False, "the job did not stop within 30 s of signal %d" % sig)
    sys.stdout.write(out)
    sys.stderr.write(err)
    stop_step = train_log(work)[-1]["step"]
    check(before + 2 <= stop_step < STEPS, "stopped at step %d" % stop_step)
    for rank in range(4):
        last = heartbeats(work, rank)[-1]
        check(last["step"] == stop_step, "rank %d stopped after step %d, rank 0 after %d" %
              (rank, last["step"], stop_step))
    committed = os.path.join(ckpt, "ckpt-%010d.h5" % stop_step)
    check(os.path.realpath(os.path.join(ckpt, "latest")) == os.path.realpath(committed),
          "latest is not the committed checkpoint of step %d (have %s)" %
          (stop_step, sorted(os.listdir(ckpt))))
    check(heartbeats(work, 0)[-1]["last_checkpoint_step"] == stop_step,
          "rank 0's heartbeat should report the checkpoint of step %d" % stop_step)
    return proc.returncode, stop_step


rc, first = run_and_stop(signal.SIGUSR1, 3)  # rank 3 only: the others learn of it by all-reduce
check(rc == 75, "SIGUSR1 to rank 3: exit status %d, expected 75 (stopped, resumable)" % rc)
rc, second = run_and_stop(signal.SIGTERM, 1)
check(rc == 75, "SIGTERM to rank 1: exit status %d, expected 75" % rc)
rc, third = run_and_stop(signal.SIGUSR1, None)
check(rc == 75, "SIGUSR1 to mpirun: exit status %d, expected 75" % rc)
# Each run resumed where the last stopped: the log is steps 1..third, each once.
steps = [d["step"] for d in train_log(work)]
check(steps == list(range(1, third + 1)), "each run should continue after the last: %s" % steps)
cleanup(work)
print("PASS: stopped after steps %d, %d and %d" % (first, second, third))
