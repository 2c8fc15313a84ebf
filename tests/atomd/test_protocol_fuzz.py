"""atomd's protocol under random input: thousands of requests (random bytes, broken JSON, deep
nesting, every op with arguments of random types and values, pipelined on one connection) each
get exactly one answer, {"ok": bool, ...}, and atomd stays up. Run it against the sanitizer build
too (ATOM_SANITIZE=ON) to catch memory errors that do not crash."""
import json
import os
import random
import time

import harness
from harness import check

OPS = ["ping", "submit", "status", "queue", "show", "cancel", "logs", "nodes", "drain", "resume", "nope", ""]
ARGS = ["spec", "job", "all", "rank", "attempt", "offset", "node", "reason", "op", "x"]


def value(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([0, 1, -1, 2**31, -2**63, 2**63 - 1, rng.randrange(-10, 1000)])
    if kind == 1:
        return rng.choice(["", "x" * rng.randrange(300), "node-x", "\u00e9\u4e2d", "../../etc", "{\"name\":1}", "\x01"])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.random() * 1e6
    if kind == 4:
        return json.dumps({"name": "z", "resources": {"gpus": rng.randrange(-2, 9)}})
    if kind == 5:
        return rng.choice([1.5, float(rng.randrange(10))])
    if kind == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(ARGS): value(rng, depth + 1) for _ in range(rng.randrange(4))}


def message(rng):
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ")
    if kind == 1:
        return b"[" * rng.randrange(1, 5000)
    if kind == 2:
        text = json.dumps({"op": rng.choice(OPS), "job": 1})
        return text[: rng.randrange(len(text))].encode()
    req = {"op": rng.choice(OPS) if rng.random() < 0.9 else value(rng)}
    for _ in range(rng.randrange(4)):
        req[rng.choice(ARGS)] = value(rng)
    return json.dumps(req).encode()


def test(d, seed):
    # Nothing may start: a valid random submission stays queued (the node name never appears in
    # the random values, so no random resume undoes this).
    rc, out, err = d.ctl("drain", os.uname().nodename)
    check(rc == 0, err)
    rng = random.Random(seed)
    sent = 0
    for batch in range(40):
        msgs = [message(rng) for _ in range(50)]
        msgs = [m for m in msgs if m.strip()]  # an empty line gets no answer, by design
        s = d.connect()
        s.sendall(b"".join(m + b"\n" for m in msgs))
        buf = b""
        answers = 0
        while answers < len(msgs):
            chunk = s.recv(1 << 20)
            check(chunk, "atomd closed the connection after %d of %d answers (seed %d)" % (answers, len(msgs), seed))
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                ans = json.loads(line)
                check(isinstance(ans, dict) and isinstance(ans.get("ok"), bool), "answer %r" % line[:200])
                answers += 1
        s.close()
        sent += len(msgs)
    check(d.alive() and d.request({"op": "ping"})["ok"], "atomd alive after %d random requests" % sent)
    jobs = d.request({"op": "queue", "all": True})["jobs"]
    check(all(j["state"] != "running" for j in jobs), "nothing ran")
    print("%d random requests answered, %d accepted as jobs (seed %d)" % (sent, len(jobs), seed))


if __name__ == "__main__":
    seed = int(time.time())
    harness.run(lambda d: test(d, seed), harness.parse_args())
    print("ok")
