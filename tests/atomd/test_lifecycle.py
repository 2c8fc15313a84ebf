"""atomd end to end: submit -> run -> done; cancel; another user's cancel refused; admin-only ops;
bad requests answered with errors while the daemon stays up; atomctl exits 3 without atomd.
Stand-in worker: tests/atomd/fake_worker.c (see harness.py)."""
import json
import os
import socket
import subprocess
import time

import harness
from harness import check

NOBODY = 65534


def test(d):
    # submit -> run -> done, through atomctl's commands
    job = d.submit(d.spec("ok-two", gpus=2, steps=15))
    info = d.wait_state(job, "done")
    j = info["job"]
    check(j["step"] == 15 and j["exit_code"] == 0 and j["attempts"] == 1, "done job: %s" % j)
    run_dir = info["attempts"][0]["run_dir"]
    with open(os.path.join(run_dir, "exit_status")) as f:
        check(f.read().strip() == "0", "exit_status file of the attempt")
    check(os.path.exists(os.path.join(run_dir, "plan.json")), "the attempt folder holds its plan")
    rc, out, err = d.ctl("logs", str(job), "--rank", "1")
    check(rc == 0 and "rank 1 attempt 1 step 15" in out and "rank 0" not in out, "logs --rank 1: %r %r" % (out, err))
    rc, out, err = d.ctl("logs", str(job), "--rank", "0", "--json")
    chunk = json.loads(out.splitlines()[0])
    check(rc == 0 and "rank 0 attempt 1 step 15" in chunk["data"] and chunk["ended"], "logs --json: %r" % out[:300])
    rc, out, err = d.ctl("logs", str(job), "-f")  # follows to the end of a finished job, then returns
    check(rc == 0 and "rank 0 attempt 1 step 15\n" in out, "logs -f: %r %r" % (out[-200:], err))
    rc, out, err = d.ctl("status")
    check(rc == 0 and "GPUs 0 busy, 4 free of 4" in out, "status after the job: %r" % out)
    rc, out, err = d.ctl("queue", "--all", "--json")
    check(rc == 0 and [x["state"] for x in json.loads(out)["jobs"]] == ["done"], "queue --all --json: %r" % out)

    # cancel a running job of one's own
    job = d.submit(d.spec("sleep-a", gpus=1))
    d.wait_state(job, "running")
    time.sleep(0.5)
    rc, out, err = d.ctl("status")
    check("sleep-a" in out and "running" in out, "status shows the running job: %r" % out)
    # another user may look but not cancel
    rc, out, err = d.ctl("cancel", str(job), user=NOBODY)
    check(rc == 1 and "permission denied" in err, "nobody's cancel of root's job: exit %d, %r" % (rc, err))
    rc, out, err = d.ctl("queue", user=NOBODY)
    check(rc == 0 and "sleep-a" in out, "nobody sees the queue: %r %r" % (out, err))
    rc, out, err = d.ctl("logs", str(job), user=NOBODY)
    check(rc == 1 and "permission denied" in err, "nobody reads root's logs: %r" % err)
    rc, out, err = d.ctl("drain", "nonode", user=NOBODY)
    check(rc == 1 and "administrators" in err, "nobody's drain refused: %r" % err)
    check(d.state_of(job) == "running", "the job survived the refused cancel")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, "owner's cancel: %r" % err)
    info = d.wait_state(job, "cancelled", timeout=40)
    with open(os.path.join(info["attempts"][0]["output_dir"], "heartbeat.rank-0.jsonl")) as f:
        pid = json.loads(f.readline())["pid"]
    harness.wait_until(lambda: not os.path.exists("/proc/%d" % pid), 10,
                       "the cancelled job's worker (pid %d) to be gone" % pid)
    rc, out, err = d.ctl("status")
    check("GPUs 0 busy" in out, "the cancelled job's GPUs are free: %r" % out)

    # another user's job runs as that user (not as atomd's root), and they may cancel their own
    rc, out, err = d.ctl("submit", d.spec("ok-nobody", gpus=2, steps=10), "--json", user=NOBODY)
    check(rc == 0, "nobody submits: %r" % err)
    job = json.loads(out)["job"]
    info = d.wait_state(job, "done")
    check(info["job"]["uid"] == NOBODY and info["job"]["step"] == 10, "nobody's job, heartbeats seen: %s" % info["job"])
    hb_file = os.path.join(info["attempts"][0]["output_dir"], "heartbeat.rank-1.jsonl")
    check(os.stat(hb_file).st_uid == NOBODY, "the workers of nobody's job ran as nobody")
    rc, out, err = d.ctl("submit", d.spec("sleep-nobody"), "--json", user=NOBODY)
    job = json.loads(out)["job"]
    d.wait_state(job, "running")
    rc, out, err = d.ctl("cancel", str(job), user=NOBODY)
    check(rc == 0, "nobody cancels their own job: %r" % err)
    d.wait_state(job, "cancelled", timeout=40)

    # a pending job cancelled at once; cancelling twice is an error
    rc, out, err = d.ctl("drain", os.uname().nodename, "--reason", "test")
    check(rc == 0, "root drains the node: %r" % err)
    job = d.submit(d.spec("ok-pending"))
    time.sleep(0.6)
    check(d.state_of(job) == "pending", "nothing starts on a drained node")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0 and d.state_of(job) == "cancelled", "pending job cancelled: %r" % err)
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 1 and "already ended" in err, "second cancel refused: %r" % err)
    rc, out, err = d.ctl("resume", os.uname().nodename)
    check(rc == 0, "resume: %r" % err)

    # bad requests: answered with an error, the daemon stays up
    bad = [
        b"this is not json\n",
        b"[1,2,3]\n",
        b"{\"op\": 42}\n",
        b"{\"op\": \"frobnicate\"}\n",
        b"{\"op\": \"show\"}\n",
        b"{\"op\": \"show\", \"job\": \"one\"}\n",
        b"{\"op\": \"show\", \"job\": 1, \"extra\": true}\n",
        b"{\"op\": \"submit\", \"spec\": \"{}\"}\n",
        b"{\"op\": \"submit\", \"spec\": \"{\\\"resources\\\": {\\\"gpus\\\": 99999}}\"}\n",
        b"{\"op\": \"cancel\", \"job\": 999999}\n",
        b"\xff\xfe\x00garbage\n",
        b"{\"op\": \"ping\", \"op\": \"ping\"}\n",
    ]
    for msg in bad:
        ans = d.request_raw(msg)
        check(ans is not None and ans.get("ok") is False and ans.get("error"), "bad request %r -> %r" % (msg, ans))
    big = b"{\"op\": \"ping\", \"pad\": \"" + b"x" * (2 << 20) + b"\"}\n"
    ans = d.request_raw(big)
    check(ans is not None and not ans["ok"] and "larger than" in ans["error"], "oversized request -> %r" % ans)
    # a client that sends half a request and hangs up
    s = d.connect()
    s.sendall(b"{\"op\": \"pi")
    s.close()
    check(d.request({"op": "ping"})["ok"] and d.alive(), "atomd alive after bad requests")

    # ended jobs beyond keep_finished (2 here) leave memory but not the store: show still works
    rc, out, err = d.ctl("queue", "--all", "--json")
    ids = [j["id"] for j in json.loads(out)["jobs"]]
    check(1 not in ids and len(ids) <= 3, "queue --all lists the newest ended jobs only: %s" % ids)
    rc, out, err = d.ctl("show", "1")
    check(rc == 0 and "ok-two" in out and "state done" in out, "show of an evicted job: %r %r" % (out, err))
    rc, out, err = d.ctl("logs", "1", "--rank", "0")
    check(rc == 0 and "rank 0 attempt 1 step 15" in out, "logs of an evicted job")
    rc, out, err = d.ctl("cancel", "1")
    check(rc == 1 and "already ended" in err, "cancel of an evicted job: %r" % err)
    d.stop()
    d.start()
    check(d.job(1)["job"]["state"] == "done", "an evicted job is there after a restart")

    # a second atomd on the same socket, or on the same state folder, refuses to start
    for sock, state in ((d.socket, os.path.join(d.tmp, "other")), (os.path.join(d.tmp, "other.sock"), d.state)):
        r = subprocess.run([d.args.atomd, "--socket", sock, "--state-dir", state], capture_output=True, text=True,
                           env=d.env, timeout=20)
        check(r.returncode == 1 and "another atomd" in r.stderr, "second atomd: %d %r" % (r.returncode, r.stderr))
    check(d.request({"op": "ping"})["ok"], "the first atomd is unharmed")

    # atomctl with no atomd: a clear message and exit code 3, not a hang
    rc, out, err = d.ctl("status", "--socket", os.path.join(d.tmp, "nothing.sock"))
    check(rc == 3 and "not running" in err, "no daemon: exit %d %r" % (rc, err))


if __name__ == "__main__":
    harness.run(test, harness.parse_args(), config="keep_finished = 2\n")
    print("ok")
