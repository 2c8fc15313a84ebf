"""What root owns and what a job's owner owns (issue 14), with a real root atomd and jobs of uid
65534, stand-in worker (fake_worker.c):
- the attempt's folder and atomd's records in it (plan, launcher.log, exit_status) are atomd's, the
  output folder alone is the owner's; the modes are the documented ones;
- a FIFO the owner puts wherever launcher.log may be, before their worker dies, does not stop
  atomd: `status` is answered within 100 ms throughout and the attempt ends as a failure;
- a launch that fails on atomd's side (no descriptor left: RLIMIT_NOFILE lowered on the running
  atomd) is retried with backoff and not charged to the job's restarts."""
import json
import os
import resource
import signal
import socket
import stat
import time

import harness
from harness import check, as_nobody

NOBODY = 65534
CLUSTER = """name: one
switches: [leaf]
nodes:
  - {name: n1, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
"""


def submit_as_nobody(d, path):
    rc, out, err = d.ctl("submit", path, "--json", user=NOBODY)
    check(rc == 0, "nobody submits: %r" % err)
    return json.loads(out)["job"]


def timed(d, req):
    """atomd's answer to req and the seconds it took (fails when none comes within 5 s)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    t0 = time.monotonic()
    try:
        s.connect(d.socket)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            check(chunk, "atomd closed the connection without answering %s" % req)
            buf += chunk
    except socket.timeout:
        harness.fail("atomd did not answer %s within 5 s" % req)
    finally:
        s.close()
    ans = json.loads(buf.split(b"\n")[0])
    check(ans.get("ok"), "%s: %r" % (req, buf[:200]))
    return ans, time.monotonic() - t0


def fifo_launcher_log(d):
    """The owner replaces launcher.log with a FIFO wherever they can, then their worker dies."""
    job = submit_as_nobody(d, d.spec("sleep-fifo", gpus=1, extra="restart:\n  max_restarts: 0\n"))
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) > 0, 30, "the job to train")
    a = d.job(job)["attempts"][0]
    run_dir = a["run_dir"]
    out_dir = a.get("output_dir", run_dir)

    def plant():
        for folder in {run_dir, out_dir}:
            path = os.path.join(folder, "launcher.log")
            try:
                os.unlink(path)
            except OSError:
                pass  # not the owner's to remove
            try:
                os.mkfifo(path, 0o600)
            except OSError:
                pass
    as_nobody(plant)
    with open(os.path.join(out_dir, "heartbeat.rank-0.jsonl")) as f:
        pid = json.loads(f.readline())["pid"]
    os.kill(pid, signal.SIGKILL)
    slowest = 0.0
    deadline = time.monotonic() + 30
    while True:
        slowest = max(slowest, timed(d, {"op": "status"})[1])
        if timed(d, {"op": "show", "job": job})[0]["job"]["state"] in ("failed", "done", "cancelled"):
            break
        check(time.monotonic() < deadline, "the attempt did not end within 30 s of its worker's death")
        time.sleep(0.02)
    slowest = max(slowest, timed(d, {"op": "status"})[1])
    check(slowest < 0.1, "status took %.3f s while the attempt ended" % slowest)
    print("FIFO launcher.log: the slowest status took %.1f ms" % (slowest * 1000))
    info = d.job(job)
    check(info["job"]["state"] == "failed" and info["attempts"][0]["state"] == "failed",
          "the attempt ended as a failure: %s %s" % (info["job"], info["attempts"]))
    return job


def modes(d, job):
    """The documented owners and modes of the state folder (docs/architecture.md)."""
    a = d.job(job)["attempts"][0]
    run_dir, out_dir = a["run_dir"], a.get("output_dir", a["run_dir"])

    def owner_mode(path):
        st = os.lstat(path)
        return st.st_uid, stat.S_IMODE(st.st_mode)
    job_dir = os.path.dirname(run_dir)
    expected = [(d.state, (0, 0o711)), (os.path.join(d.state, "jobs"), (0, 0o711)), (job_dir, (0, 0o711)),
                (run_dir, (0, 0o711)), (out_dir, (NOBODY, 0o700)),
                (os.path.join(run_dir, "launcher.log"), (0, 0o600)),
                (os.path.join(run_dir, "plan.json"), (0, 0o644)),
                (os.path.join(d.state, "health"), (0, 0o700)),
                (os.path.join(d.state, "atomd.db"), (0, 0o600))]
    for suffix in ("-wal", "-shm"):
        if os.path.exists(os.path.join(d.state, "atomd.db" + suffix)):
            expected.append((os.path.join(d.state, "atomd.db" + suffix), (0, 0o600)))
    for path, want in expected:
        got = owner_mode(path)
        check(got == want, "%s: owner %d mode %04o, expected owner %d mode %04o" % (path, got[0], got[1], want[0],
                                                                                    want[1]))
    check(not as_nobody(lambda: open(os.path.join(run_dir, "plan.json"), "a").close()),
          "the job's owner cannot change the plan")


def own_launch_failure(d):
    """No descriptor left in atomd when a job is to start: atomd's failure, retried, not charged."""
    first = d.submit(d.spec("ok-first", gpus=2, steps=250))
    harness.wait_until(lambda: d.job(first)["job"].get("step", 0) > 0, 30, "the first job to train")
    job = d.submit(d.spec("ok-second", gpus=2, steps=5, extra="restart:\n  max_restarts: 0\n"))
    check(d.state_of(job) == "pending", "the second job waits for the first")
    pid = d.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)

    def no_descriptor_left():
        """The limit at atomd's lowest free descriptor: none can be opened. Lowered again as the
        connections of the requests above close (their numbers become free)."""
        fds = {int(fd) for fd in os.listdir("/proc/%d/fd" % pid)}
        lowest_free = min(i for i in range(len(fds) + 1) if i not in fds)
        if lowest_free < resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        return d.log().count("Too many open files") >= 2
    # No requests until the limit is back: a connection would need a descriptor too.
    try:
        harness.wait_until(no_descriptor_left, 30, "two launches of the second job to fail for want of a descriptor")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    log = d.log()
    check("not charged" in log and "retrying in 1 s" in log and "retrying in 2 s" in log,
          "atomd says the failures are its own and backs off: %s" % log[-2000:])
    info = d.wait_state(job, "done", timeout=30)
    check(info["job"]["restarts"] == 0, "atomd's failures are not charged: %s" % info["job"])
    states = [a["state"] for a in info["attempts"]]
    check(states[-1] == "done" and all(s == "launch failed" for s in states[:-1]) and len(states) >= 3,
          "the attempts: %s" % info["attempts"])


def test(d):
    job = fifo_launcher_log(d)
    modes(d, job)
    own_launch_failure(d)


if __name__ == "__main__":
    harness.run(test, harness.parse_args(), cluster=CLUSTER)
    print("ok")
