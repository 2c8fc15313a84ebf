"""tests/worker_run/test_stop_signal.py: SIGUSR1 to ONE rank of a running job stops every rank
after the same step, with a committed checkpoint of that step and the resumable exit status 75;
running the job again continues from that checkpoint; SIGTERM to mpirun stops it the same way."""
import os
import signal
import subprocess
import sys
import time

from worker_run_lib import (check, cleanup, heartbeats, run, train_log, workdir, worker_cmd,
                            write_spec)

STEPS = 100000  # never reached: the signal ends the run
work = workdir("stop")
ckpt = os.path.join(work, "checkpoints", "job")  # two folders that do not exist yet
spec = write_spec(work, tensor=2, data=2, steps=STEPS, global_batch=8, micro_batch=2,
                  ckpt_dir=ckpt, every=STEPS, async_ckpt=True)
# Its own session, so a failing test can kill mpirun and every rank at once.
proc = subprocess.Popen(worker_cmd(4, spec, work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, start_new_session=True)
deadline = time.time() + 40
pid = None
while time.time() < deadline and proc.poll() is None:
    log = train_log(work)
    hb = heartbeats(work, 3)
    if len(log) >= 3 and hb:
        pid = hb[-1]["pid"]
        break
    time.sleep(0.1)
if pid is None:
    os.killpg(proc.pid, signal.SIGKILL)
    check(False, "the job never got to step 3 (exit %s)" % proc.poll())
os.kill(pid, signal.SIGUSR1)  # rank 3 only: the others learn of it through the all-reduce
try:
    out, err = proc.communicate(timeout=30)
except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    check(False, "the job did not stop within 30 s of SIGUSR1")
sys.stdout.write(out)
sys.stderr.write(err)
check(proc.returncode == 75, "exit status %d, expected 75 (stopped, resumable)" % proc.returncode)
log = train_log(work)
stop_step = log[-1]["step"]
check(3 <= stop_step < STEPS, "stopped at step %d" % stop_step)
for rank in range(4):
    hb = heartbeats(work, rank)
    check(hb[-1]["step"] == stop_step,
          "rank %d stopped after step %d, rank 0 after %d" % (rank, hb[-1]["step"], stop_step))
committed = os.path.join(ckpt, "ckpt-%010d.h5" % stop_step)
check(os.path.exists(committed), "no committed checkpoint %s (have %s)" % (committed, os.listdir(ckpt)))
check(os.path.realpath(os.path.join(ckpt, "latest")) == os.path.realpath(committed),
      "latest does not point at the stop's checkpoint")
check(heartbeats(work, 0)[-1]["last_checkpoint_step"] == stop_step,
      "rank 0's heartbeat should report the checkpoint")

# The same job again resumes after the stop's step (stopped again at once by --stop-after).
p = run(4, spec, work, ["--stop-after", str(stop_step + 2)])
check(p.returncode == 75, "resumed run exited %d" % p.returncode)
steps = [d["step"] for d in train_log(work)]
check(steps == list(range(1, stop_step + 3)),
      "the resumed run should continue at step %d: %s" % (stop_step + 1, steps[-5:]))

# SIGTERM to mpirun (what a scheduler or Slurm sends): mpirun passes it to every rank and kills
# them a few seconds later, so its own exit status is not the workers'; what matters is that every
# rank stopped after the same step and that step's checkpoint is committed.
before = len(train_log(work))
proc = subprocess.Popen(worker_cmd(4, spec, work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, start_new_session=True)
deadline = time.time() + 40
while time.time() < deadline and proc.poll() is None and len(train_log(work)) < before + 2:
    time.sleep(0.1)
proc.send_signal(signal.SIGTERM)
try:
    out, err = proc.communicate(timeout=30)
except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    check(False, "the job did not stop within 30 s of SIGTERM")
sys.stdout.write(out)
sys.stderr.write(err)
term_step = train_log(work)[-1]["step"]
check(term_step > stop_step + 2, "the SIGTERM run made no step")
check("stopped on request after step %d" % term_step in err, "rank 0 did not report the stop")
for rank in range(4):
    check(heartbeats(work, rank)[-1]["step"] == term_step,
          "rank %d stopped after step %d, rank 0 after %d" %
          (rank, heartbeats(work, rank)[-1]["step"], term_step))
check(os.path.realpath(os.path.join(ckpt, "latest")) ==
      os.path.realpath(os.path.join(ckpt, "ckpt-%010d.h5" % term_step)),
      "no committed checkpoint of step %d after SIGTERM" % term_step)
cleanup(work)
print("PASS: stopped after step %d on SIGUSR1 to one rank, after step %d on SIGTERM"
      % (stop_step, term_step))
