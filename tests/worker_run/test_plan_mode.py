"""tests/worker_run/test_plan_mode.py: `atom-worker --plan PLAN.json`, as atomd's launcher runs
it: the job id and attempt from the plan reach the heartbeats sent to the plan's socket, the
run folder gets train.jsonl, and a plan for more ranks than mpirun started fails at once with a
message naming the rank and host (no hang)."""
import json
import os
import socket
import subprocess
import sys

from worker_run_lib import BUILD, MPIEXEC, WORKER, check, cleanup, train_log, workdir, write_spec

work = workdir("plan")
spec = write_spec(work, tensor=1, data=2, steps=4, global_batch=4, micro_batch=2, warmup=1)
sock_path = os.path.join(work, "atomd.sock")
plan = os.path.join(work, "plan.json")
make_plan = os.path.join(BUILD, "tests", "worker_run", "worker_make_plan")
subprocess.run([make_plan, spec, work, sock_path, plan], check=True)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listener.bind(sock_path)

p = subprocess.run([MPIEXEC, "-np", "2", "--oversubscribe", WORKER, "--plan", plan],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
sys.stdout.write(p.stdout)
sys.stderr.write(p.stderr)
check(p.returncode == 0, "atom-worker --plan exited %d" % p.returncode)
check([d["step"] for d in train_log(work)] == [1, 2, 3, 4], "train.jsonl in the plan's run_dir")
listener.setblocking(False)
got = []
while True:
    try:
        got.append(json.loads(listener.recv(65536)))
    except BlockingIOError:
        break
check(got, "no heartbeat reached the plan's socket")
check(all(m["job_id"] == "test-plan" and m["attempt"] == 1 for m in got),
      "heartbeats carry the plan's job id and attempt: %s" % got[0])
check(sorted({m["rank"] for m in got}) == [0, 1], "both ranks send heartbeats")

# The plan says 2 ranks; mpirun starts 1: a clear error, not a hang.
p = subprocess.run([MPIEXEC, "-np", "1", WORKER, "--plan", plan], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, timeout=60)
check(p.returncode != 0, "a 1-rank start of a 2-rank plan must fail")
check("rank 0 on " in p.stderr and "MPI_COMM_WORLD has 1" in p.stderr,
      "the error names the rank, host and the mismatch: %s" % p.stderr[-500:])
listener.close()
cleanup(work)
print("PASS")
