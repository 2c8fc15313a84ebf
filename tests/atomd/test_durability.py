"""atomd durability: several clients submit jobs while atomd is SIGKILLed at random moments and
restarted; afterwards every acknowledged job is present exactly once (with the id it was
acknowledged with), and no two jobs share an id. The node is drained first so that nothing runs:
the test is about the queue. Usage: test_durability.py ... [--jobs N] (default 300)."""
import json
import random
import socket
import sys
import threading
import time

import harness
from harness import check

CLIENTS = 4


def submitter(d, template, tag, stop, acked, lock):
    n = 0
    sock = None
    buf = b""
    while not stop.is_set():
        if sock is None:
            try:
                sock = d.connect()
                buf = b""
            except OSError:
                time.sleep(0.01)  # atomd is down: being restarted
                continue
        name = "dur-%d-%d" % (tag, n)
        n += 1
        spec = dict(template, name=name)
        try:
            sock.sendall((json.dumps({"op": "submit", "spec": json.dumps(spec)}) + "\n").encode())
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            ans = json.loads(line)
            if not ans.get("ok"):
                harness.fail("submit refused: %s" % ans)
            with lock:
                acked[name] = ans["job"]
        except (OSError, ConnectionError):
            sock.close()  # no answer: this job may or may not exist; never resubmitted
            sock = None
    if sock:
        sock.close()


def test(d, target):
    node = __import__("os").uname().nodename
    rc, out, err = d.ctl("drain", node)
    check(rc == 0, "drain: %s" % err)
    first = d.submit(d.spec("dur-template"))
    template = d.job(first)["spec"]
    acked, lock, stop = {}, threading.Lock(), threading.Event()
    threads = [threading.Thread(target=submitter, args=(d, template, t, stop, acked, lock)) for t in range(CLIENTS)]
    for t in threads:
        t.start()
    kills = 0
    rng = random.Random(int(time.time()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.02, 0.3))
        d.kill9()
        kills += 1
        d.start()
        with lock:
            done = len(acked)
        if done >= target and kills >= 8:
            break
    stop.set()
    for t in threads:
        t.join()
    d.kill9()
    d.start()
    jobs = d.request({"op": "queue", "all": True})["jobs"]
    ids = [j["id"] for j in jobs]
    check(len(ids) == len(set(ids)), "job ids are unique")
    by_name = {}
    for j in jobs:
        by_name.setdefault(j["name"], []).append(j["id"])
    lost = [n for n in acked if n not in by_name]
    twice = [n for n in acked if len(by_name.get(n, [])) > 1]
    wrong = [n for n in acked if by_name.get(n) and by_name[n][0] != acked[n]]
    check(not lost, "%d acknowledged jobs lost, e.g. %s" % (len(lost), lost[:5]))
    check(not twice, "%d acknowledged jobs present twice, e.g. %s" % (len(twice), twice[:5]))
    check(not wrong, "%d jobs with another id than acknowledged, e.g. %s" % (len(wrong), wrong[:5]))
    check(len(acked) >= target, "only %d jobs acknowledged in 60 s" % len(acked))
    check(all(j["state"] in ("pending", "done") for j in jobs), "every job is pending (the node is drained)")
    rc, out, err = d.ctl("status")
    check(rc == 0 and len(out.splitlines()) < 25 and "more pending" in out, "status fits one screen: %r" % out)
    unacked = len(jobs) - 1 - len(acked)
    print("%d jobs acknowledged, %d more stored without an answer, %d SIGKILLs, all acknowledged present once"
          % (len(acked), unacked, kills))


if __name__ == "__main__":
    args = harness.parse_args(["--jobs"])
    harness.run(lambda d: test(d, int(args.jobs or 300)), args)
    print("ok")
