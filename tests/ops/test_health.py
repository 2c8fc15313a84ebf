"""Node health checks (scheduler/health.h): a health-check program that fails on node n1 drains it
with the program's message as the reason (`atomctl nodes`), and no job starts there: a job
placed on n1 waits for the check, then runs on n2. The periodic check (health_interval) drains
n1 again after an administrator resumes it, while n2 stays up.
Cluster: two nodes of 2 CPU slots, both this machine; stand-in worker tests/atomd/fake_worker.c."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "atomd"))
import harness  # noqa: E402
from harness import check, wait_until  # noqa: E402

CLUSTER = """name: pair
switches: [leaf]
nodes:
  - {name: n1, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
  - {name: n2, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
"""

SCRIPT = """#!/bin/sh
# Fails on n1 only; counts its runs per node so the test sees the periodic checks.
echo run >> "%(dir)s/runs.$1"
if [ "$1" = n1 ]; then
    echo "$ATOM_HEALTH_NODE: GPU 3 has uncorrectable ECC errors"
    exit 1
fi
echo ok
"""


def nodes(d):
    rc, out, err = d.ctl("nodes", "--json")
    check(rc == 0, "nodes: %s" % err)
    return {n["name"]: n for n in json.loads(out)["nodes"]}


def with_daemon(args, settings, test):
    daemon = harness.Daemon(args, cluster=CLUSTER)
    script = os.path.join(daemon.tmp, "health.sh")
    with open(script, "w") as f:
        f.write(SCRIPT % {"dir": daemon.tmp})
    os.chmod(script, 0o755)
    conf = os.path.join(daemon.tmp, "atomd.conf")
    with open(conf, "w") as f:
        f.write("health_check = %s\n%s" % (script, settings))
    daemon.extra += ["--config", conf]
    ok = False
    try:
        daemon.start()
        test(daemon)
        ok = True
        daemon.stop()
    finally:
        if not ok:
            print("---- atomd log (%s) ----\n%s" % (daemon.tmp, daemon.log() if os.path.exists(daemon.log_path) else ""),
                  file=sys.stderr)
        daemon.cleanup(ok)


def runs(d, node):
    path = os.path.join(d.tmp, "runs." + node)
    return len(open(path).read().split()) if os.path.exists(path) else 0


def before_jobs(d):
    """health_interval = 0: nothing is checked until a job is placed. The planner places the
    first job on n1; the job waits for n1's check, which fails and drains n1; the job then runs
    on n2 after n2's check passes."""
    time.sleep(1.5)
    check(runs(d, "n1") == 0 and runs(d, "n2") == 0, "checked before any job")
    check(nodes(d)["n1"]["state"] == "up", "n1 up before any job")
    job = d.submit(d.spec("ok-first", gpus=2, steps=10))
    d.wait_state(job, "done", timeout=60)
    attempts = d.job(job)["attempts"]
    check(len(attempts) == 1 and attempts[0]["nodes"] == ["n2"], "ran on %r" % attempts)
    n = nodes(d)
    check(n["n1"]["state"] == "drained" and "GPU 3 has uncorrectable ECC errors" in n["n1"]["reason"],
          "n1: %r" % n["n1"])
    check(runs(d, "n1") == 1 and runs(d, "n2") == 1, "one check each before the job")


def periodic(d):
    """health_interval = 2s: both nodes are checked from the start; n1 is drained with the
    message, jobs run on n2 only, and after an administrator resumes n1 the next check drains it
    again while n2 stays up."""
    wait_until(lambda: nodes(d)["n1"]["state"] == "drained", 20, "n1 to be drained")
    n = nodes(d)
    check("health check failed (exit 1): n1: GPU 3 has uncorrectable ECC errors" in n["n1"]["reason"],
          "reason: %r" % n["n1"]["reason"])
    check(n["n2"]["state"] == "up", "n2: %r" % n["n2"])
    rc, out, err = d.ctl("nodes")
    check("GPU 3 has uncorrectable ECC errors" in out, "atomctl nodes shows the reason: %r" % out)
    jobs = [d.submit(d.spec("ok-h%d" % i, gpus=2, steps=10)) for i in range(3)]
    for job in jobs:
        d.wait_state(job, "done", timeout=60)
        for a in d.job(job)["attempts"]:
            check(a["nodes"] == ["n2"], "job %d ran on %r" % (job, a["nodes"]))
    rc, out, err = d.ctl("resume", "n1")
    check(rc == 0, "resume: %s" % err)
    before = runs(d, "n1")
    wait_until(lambda: nodes(d)["n1"]["state"] == "drained", 20, "n1 to be drained again")
    check(runs(d, "n1") > before, "n1 checked again")
    time.sleep(2.5)
    check(nodes(d)["n2"]["state"] == "up", "n2 still up")
    check(runs(d, "n2") >= 2, "n2 checked at the interval")


def main():
    args = harness.parse_args()
    with_daemon(args, "health_interval = 0s\nhealth_fresh = 60s\n", before_jobs)
    with_daemon(args, "health_interval = 2s\nhealth_fresh = 60s\n", periodic)
    print("health: ok")


if __name__ == "__main__":
    main()
