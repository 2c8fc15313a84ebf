"""Submission throughput of atomd (a benchmark, not a test: it asserts nothing about speed).

N jobs from 4 clients, each with one request in flight, on a drained node (nothing runs); prints
submissions per second and how many COMMITs they took (submissions that arrive together share one).
usage: bench_submit.py --atomd BIN --ctl BIN --worker BIN [--jobs N]"""
import json
import os
import threading
import time

import harness

CLIENTS = 4


def bench(d, n):
    d.ctl("drain", os.uname().nodename)
    template = d.job(d.submit(d.spec("bench-template")))["spec"]
    commits0 = d.request({"op": "ping"})["commits"]

    def client(t):
        s = d.connect()
        buf = b""
        for i in range(n // CLIENTS):
            spec = json.dumps(dict(template, name="b-%d-%d" % (t, i)))
            s.sendall((json.dumps({"op": "submit", "spec": spec}) + "\n").encode())
            while b"\n" not in buf:
                buf += s.recv(65536)
            line, buf = buf.split(b"\n", 1)
            harness.check(json.loads(line)["ok"], "submit refused: %r" % line)
        s.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(t,)) for t in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    commits = d.request({"op": "ping"})["commits"] - commits0
    total = n // CLIENTS * CLIENTS
    print("%d submissions from %d clients in %.2f s: %.0f/s; %d COMMITs (%.1f submissions each)"
          % (total, CLIENTS, took, total / took, commits, total / max(commits, 1)))


if __name__ == "__main__":
    args = harness.parse_args(["--jobs"])
    harness.run(lambda d: bench(d, int(args.jobs or 1000)), args)
