"""atomd's scheduling pass: a job that does not fit blocks lower-priority jobs without a time limit
(they would delay it), while a job whose time limit ends before the blocked job's reserved start
backfills; pending jobs start by priority, then by fair share (the project that used less first).
Cluster: one node of 4 CPU slots. Stand-in worker: tests/atomd/fake_worker.c."""
import time

import harness
from harness import check

CLUSTER = """name: solo
switches: [leaf]
nodes:
  - {name: solo, switch: leaf, gpus: 4, addr: localhost, has_gpus: false}
"""


def spec(d, name, gpus, priority=100, project="alpha", limit=None, steps=20):
    res = "  time_limit: %s\n" % limit if limit else ""
    return d.spec(name, gpus=gpus, steps=steps, resources=res,
                  extra="priority: %d\nproject: %s\n" % (priority, project))


def test(d):
    a = d.submit(spec(d, "sleep-a", 3, priority=500, limit="30s"))
    d.wait_state(a, "running")
    b = d.submit(spec(d, "ok-b", 4, priority=400))          # blocked: reserved at A's end
    c = d.submit(spec(d, "sleep-c", 1))                     # no limit: would delay B
    e = d.submit(spec(d, "sleep-e", 1, limit="60s"))        # ends after B's reservation
    f = d.submit(spec(d, "sleep-f", 1, limit="8s"))         # ends before it: backfills
    d.wait_state(f, "running")
    time.sleep(1.0)
    for job, why in ((b, "next to start"), (c, "no time limit"), (e, "would delay")):
        j = d.job(job)["job"]
        check(j["state"] == "pending" and why in j["reason"], "job %s: %s: %r" % (j["name"], j["state"], j["reason"]))
    rc, out, err = d.ctl("status")
    check("GPUs 4 busy, 0 free of 4" in out and "2 running, 3 pending" in out, "status: %r" % out)
    for job in (a, c, e, f):
        d.ctl("cancel", str(job))
    d.wait_state(b, "done", timeout=30)
    for job in (a, c, e, f):
        d.wait_state(job, "cancelled", timeout=20)

    # Priority first, then fair share: alpha has used 3 GPUs for seconds, beta nothing.
    rc, out, err = d.ctl("drain", "solo")
    check(rc == 0, err)
    x1 = d.submit(spec(d, "ok-x1", 4, project="alpha"))
    x2 = d.submit(spec(d, "ok-x2", 4, project="beta"))
    x3 = d.submit(spec(d, "ok-x3", 4, project="alpha", priority=300))
    rc, out, err = d.ctl("resume", "solo")
    check(rc == 0, err)
    for job in (x1, x2, x3):
        d.wait_state(job, "done", timeout=40)
    starts = {job: d.job(job)["job"]["start_time"] for job in (x1, x2, x3)}
    order = sorted(starts, key=starts.get)
    check(order == [x3, x2, x1], "start order %s, expected x3 (priority), x2 (beta, less usage), x1" %
          [d.job(j)["job"]["name"] for j in order])


if __name__ == "__main__":
    harness.run(test, harness.parse_args(), cluster=CLUSTER)
    print("ok")
