"""atomd restarts attempts: a failing job is requeued until restart.max_restarts, then failed; a
failed attempt's nodes are avoided by the next one; a hung attempt (a rank stopped with SIGSTOP)
is detected, its rank and node named, killed and restarted elsewhere; a worker stopped resumable
(exit 75) is requeued without counting a failure; a time limit sends SIGUSR1 and ends the job;
a running job survives a SIGKILL of atomd (re-adopted, not launched twice).
Cluster: two nodes of 2 CPU slots, both this machine (localhost and 127.0.0.1).
Stand-in worker: tests/atomd/fake_worker.c."""
import json
import os
import signal
import subprocess
import sys
import time

import harness
from harness import check

CLUSTER = """name: two
switches: [leaf]
nodes:
  - {name: node-a, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
  - {name: node-b, switch: leaf, gpus: 2, addr: 127.0.0.1, has_gpus: false}
"""
# Sends heartbeats with advancing steps for ranks 0 and 1 of attempt 1 of a job until killed.
FORGER = """
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for step in range(3, 1000000):
    for rank in (0, 1):
        hb = {"type": "heartbeat", "job_id": sys.argv[2], "attempt": 1, "rank": rank, "host": "x", "pid": 1,
              "step": step, "collectives": [step, 0, step], "time": time.time()}
        try:
            s.sendto(json.dumps(hb).encode(), sys.argv[1])
        except OSError:
            pass
    time.sleep(0.1)
"""
CONFIG = "limit_warning = 3s\nstop_grace = 3s\n"


def nodes_of(attempt):
    with open(os.path.join(attempt["run_dir"], "plan.json")) as f:
        return sorted(n["name"] for n in json.load(f)["nodes"])


def mpirun_pid(d, job):
    info = d.job(job)
    return info["attempts"][-1]["pid"]


def test(d):
    # failing: 1 + max_restarts attempts, then failed
    job = d.submit(d.spec("fail-x", gpus=1, extra="restart:\n  max_restarts: 2\n"))
    info = d.wait_state(job, "failed")
    states = [a["state"] for a in info["attempts"]]
    check(states == ["failed"] * 3 and info["job"]["restarts"] == 3, "fail-x attempts %s, %s" % (states, info["job"]))
    check("failed after 3 attempts" in info["job"]["reason"], info["job"]["reason"])

    # a failed attempt's nodes are avoided next time
    job = d.submit(d.spec("failonce-x", gpus=2))
    info = d.wait_state(job, "done")
    a = info["attempts"]
    check(len(a) == 2 and a[0]["state"] == "failed", "failonce attempts: %s" % a)
    check(nodes_of(a[0]) != nodes_of(a[1]), "attempt 2 ran on %s like attempt 1" % nodes_of(a[1]))
    check([x["nodes"] for x in a] == [nodes_of(a[0]), nodes_of(a[1])], "show names each attempt's nodes: %s" % a)
    rc, out, err = d.ctl("show", str(job))
    check(rc == 0 and "attempt 1 on %s: failed" % nodes_of(a[0])[0] in out, "atomctl show: %r" % out)

    # hung: rank 1 stops itself; detected after restart.heartbeat_timeout, named, restarted elsewhere
    job = d.submit(d.spec("hangonce-x", gpus=2, extra="restart:\n  heartbeat_timeout: 2s\n"))
    # Another user forges advancing heartbeats for both ranks: atomd must not believe them.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable  # nobody can run it
    forger = subprocess.Popen([python, "-c", FORGER, d.hb_path(), str(job)], user=65534, group=65534,
                              extra_groups=[])
    info = d.wait_state(job, "done", timeout=40)
    forger.kill()
    forger.wait()
    a = info["attempts"]
    check(len(a) == 2 and a[0]["state"] == "hung", "hangonce attempts: %s" % a)
    hung_node = nodes_of(a[0])[0]
    check("rank 1 on %s" % hung_node in a[0]["reason"] and "stopped" in a[0]["reason"],
          "the hang names rank 1, its node and that it is stopped: %r" % a[0]["reason"])
    check("rank 0" not in a[0]["reason"], "rank 0 was waiting, not behind: %r" % a[0]["reason"])
    check(nodes_of(a[1]) != nodes_of(a[0]), "restarted on other slots")
    with open(os.path.join(a[0]["output_dir"], "heartbeat.rank-1.jsonl")) as f:
        pid = json.loads(f.readline())["pid"]
    harness.wait_until(lambda: not os.path.exists("/proc/%d" % pid), 10, "the stopped rank to be killed")
    nodes = {n["name"]: n for n in d.request({"op": "nodes"})["nodes"]}
    check(nodes[hung_node]["failures"] == 1, "the hung node's failure is counted: %s" % nodes[hung_node])

    # stopped resumable (exit 75) without atomd asking: requeued, not a failure
    job = d.submit(d.spec("sleep-r", gpus=1))
    # mpirun drops a SIGUSR1 that arrives while it is still starting its ranks: wait for a step
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) >= 2, 20, "sleep-r to report a step")
    os.kill(mpirun_pid(d, job), signal.SIGUSR1)  # mpirun forwards it; the worker exits 75
    harness.wait_until(lambda: len(d.job(job)["attempts"]) == 2 and d.state_of(job) == "running", 20,
                       "sleep-r to run again")
    info = d.job(job)
    check(info["attempts"][0]["state"] == "stopped" and info["job"]["restarts"] == 0,
          "exit 75 requeued without a failure: %s" % info)

    # atomd SIGKILLed while the job runs: re-adopted, not launched again; then cancelled
    pid = mpirun_pid(d, job)
    d.kill9()
    time.sleep(0.3)
    check(os.path.exists("/proc/%d" % pid), "mpirun outlives atomd")
    d.start()
    info = d.job(job)
    check(info["job"]["state"] == "running" and len(info["attempts"]) == 2, "after restart: %s" % info["job"])
    check("re-adopted" in d.log(), "atomd says it re-adopted the attempt")
    time.sleep(1.0)
    check(len(d.job(job)["attempts"]) == 2, "not launched twice")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, err)
    d.wait_state(job, "cancelled", timeout=20)
    harness.wait_until(lambda: not os.path.exists("/proc/%d" % pid), 10, "the adopted mpirun to end")

    # an acknowledged cancel survives a SIGKILL of atomd right after it
    job = d.submit(d.spec("sleep-c", gpus=1))
    d.wait_state(job, "running")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, err)
    d.kill9()
    d.start()
    info = d.wait_state(job, "cancelled", timeout=20)
    check(len(info["attempts"]) == 1, "a cancelled job is not run again: %s" % info["attempts"])

    # atomd dies right after spawning mpirun, before the pid is stored: the restarted atomd
    # finds the attempt's mpirun by its application file and adopts it instead of launching again
    d.stop()
    d.env["ATOMD_FAULT"] = "after-spawn"
    d.proc = None
    d.start()
    rc, out, err = d.ctl("submit", d.spec("sleep-f", gpus=1))  # no answer: atomd dies first
    d.proc.wait(timeout=10)
    check(d.proc.returncode == 99, "the fault was injected (exit %s)" % d.proc.returncode)
    del d.env["ATOMD_FAULT"]
    d.start()
    job = [j["id"] for j in d.request({"op": "queue"})["jobs"] if j["name"] == "sleep-f"][0]
    info = d.job(job)
    check(info["job"]["state"] == "running" and len(info["attempts"]) == 1, "adopted: %s" % info)
    pid = info["attempts"][0]["pid"]
    check(pid > 0 and os.path.exists("/proc/%d" % pid), "the adopted mpirun's pid is known: %s" % info["attempts"])
    rc, out, err = d.ctl("cancel", str(job))
    d.wait_state(job, "cancelled", timeout=20)

    # time limit: SIGUSR1 ahead of it (limit_warning 3 s: mpirun takes about a second to wind
    # down after its rank exits), the worker stops resumable, the job ends as timeout
    job = d.submit(d.spec("sleep-t", gpus=1, resources="  time_limit: 5s\n"))
    info = d.wait_state(job, "timeout", timeout=20)
    check(len(info["attempts"]) == 1 and "time limit" in info["job"]["reason"], "timeout: %s" % info["job"])
    check(info["job"]["exit_code"] == 75, "the worker checkpointed and stopped (75): %s" % info["job"])


if __name__ == "__main__":
    harness.run(test, harness.parse_args(), cluster=CLUSTER, config=CONFIG)
    print("ok")
