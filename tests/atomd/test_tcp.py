"""atomd's TCP port with a MUNGE credential on every message, against a private munged and the real
atom-worker on two nodes that are not atomd's host (node-a, node-b):
  - atomctl over TCP (--server, ATOM_SERVER) submits and lists as root and as uid 65534, whose uid
    comes from munged; `atomctl run --server` is a usage error;
  - 65534's heartbeat for root's job is dropped; 65534 may not cancel root's job, root (an
    administrator) may;
  - a line without a credential, a garbage, a replayed, an expired credential, an oversized line and
    one left unfinished past tcp_request_timeout each get an error answer naming the cause and are
    counted as refused; fuzzed lines and
    credentials around bad payloads get error answers; atomd stays up; connections have keepalive;
  - a job's heartbeats come over TCP: its progress shows, and a rank SIGSTOPped is found hung,
    named and restarted on the other node;
  - atomd configured for TCP while munged is not running warns and listens on its Unix socket only.
"""
import json
import os
import random
import signal
import socket
import time
import urllib.request

import harness
from harness import check

CLUSTER = """name: remote
switches: [leaf]
nodes:
  - {name: node-a, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
  - {name: node-b, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
"""
MODEL = "model:\n  layers: 1\n  channels: 32\n  heads: 2\n  vocab: 256\n  context: 16\n"
NOBODY = 65534
METRICS_PORT = harness.free_port()


def tcp_counts():
    """atom_tcp_messages_total by kind, from atomd's metrics endpoint."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % METRICS_PORT, timeout=10) as r:
        text = r.read().decode()
    prefix = 'atom_tcp_messages_total{kind="'
    return {line[len(prefix):].split('"')[0]: int(line.split()[-1])
            for line in text.splitlines() if line.startswith(prefix)}


def server(d):
    return "127.0.0.1:%d" % d.tcp_port


def ctl_tcp(d, *argv, user=None):
    return d.ctl(*argv, "--server", server(d), user=user)


def submit_tcp(d, path, user=None):
    rc, out, err = ctl_tcp(d, "submit", path, "--json", user=user)
    check(rc == 0, "submit over TCP as %s: exit %d: %s" % (user or "root", rc, err))
    return json.loads(out)["job"]


def show_tcp(d, job, user=None):
    rc, out, err = ctl_tcp(d, "show", str(job), "--json", user=user)
    check(rc == 0, "show %d over TCP: exit %d: %s" % (job, rc, err))
    return json.loads(out)


def keepalive_on_server_side(port):
    """Whether atomd's end of an established connection on port runs the keepalive timer
    (/proc/net/tcp: state 01, timer 2)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, timer = fields[1], fields[3], fields[5].split(":")[0]
            if int(local.split(":")[1], 16) == port and state == "01" and timer == "02":
                return True
    return False


def fuzz(d):
    """Random lines, and valid credentials around random payloads (not JSON, not an object, a
    heartbeat or a request with wrong fields); the random lines hold NUL bytes too: every line
    gets an error answer."""
    rng = random.Random(6)
    payloads = ['{"op": "submit"}', '{"op": "cancel", "job": "x"}', "[1, 2]", "null", "{", "\u00e9t\u00e9",
                '{"type": "heartbeat"}', '{"type": "heartbeat", "job_id": "1", "attempt": -1, "rank": 0}',
                '{"op": "ping", "extra": 1}', '{"type": 7}']
    lines = []
    for _ in range(40):
        n = rng.randint(1, 3000)
        junk = bytes(rng.choice(b"MUNGE:AQWdtxyz0123+/=:{}\"\x00\xff ") for _ in range(n)).replace(b"\n", b"")
        lines.append(junk if junk.strip() else b"x")
    for text in payloads:
        lines.append(d.munge.cred(text).encode())
    for i in range(0, len(lines), 10):
        batch = lines[i:i + 10]
        answers = d.tcp_lines(batch)
        check(len(answers) == len(batch) and all(not a["ok"] and a["error"] for a in answers),
              "every fuzzed line gets an error answer: %s" % answers)
    check(d.answers(), "atomd still answers after the fuzzed lines")


def test(d):
    m = d.munge

    # Submissions and the queue over TCP, as root (--server) and as 65534 (ATOM_SERVER)
    root_job = submit_tcp(d, d.spec("root-long", gpus=1, steps=1000000, extra=MODEL))
    d.env["ATOM_SERVER"] = server(d)
    try:
        rc, out, err = d.ctl("submit", d.spec("nobody-long", gpus=1, steps=1000000, extra=MODEL), "--json",
                             "--server", server(d), user=NOBODY)
        check(rc == 0, "submit as 65534 over TCP: %d %s" % (rc, err))
        nobody_job = json.loads(out)["job"]
        rc, out, err = d.ctl("queue", "--json", "--server", server(d), user=NOBODY)
    finally:
        del d.env["ATOM_SERVER"]
    check(rc == 0, "queue as 65534 over TCP: %d %s" % (rc, err))
    listed = {j["id"]: j for j in json.loads(out)["jobs"]}
    check(root_job in listed and nobody_job in listed, "65534 sees the whole queue: %s" % listed)
    check(listed[root_job]["uid"] == 0 and listed[nobody_job]["uid"] == NOBODY,
          "owners come from the credentials: %s" % listed)

    # 65534's heartbeat for root's job over TCP, valid in every field: dropped, as on the Unix
    # socket (the ping after it on the same connection is answered once it has been handled)
    info = d.wait_state(root_job, "running", timeout=60)
    with open(os.path.join(info["attempts"][-1]["run_dir"], "plan.json")) as f:
        attempt = json.load(f)["attempt"]
    forged = json.dumps({"type": "heartbeat", "job_id": str(root_job), "attempt": attempt, "rank": 0,
                         "host": "node-a", "pid": 1, "step": 10 ** 9, "collectives": [0, 0, 0],
                         "time": time.time(), "loss": 123.0, "tokens_per_s": 1.0, "last_checkpoint_step": -1})
    a = d.tcp_lines([m.cred(forged, user=NOBODY).encode(), m.cred(json.dumps({"op": "ping"}), user=NOBODY).encode()],
                    answers=1)
    check(len(a) == 1 and a[0]["ok"], "an accepted-looking heartbeat gets no answer, the ping one: %s" % a)
    j = d.job(root_job)["job"]
    check(j.get("step", 0) < 10 ** 9 and j.get("loss") != 123.0, "65534's heartbeat moved root's job: %s" % j)

    # run starts or uses a local atomd: --server is refused there (usage)
    rc, out, err = ctl_tcp(d, "run", d.spec("not-remote", gpus=1, steps=1, extra=MODEL))
    check(rc == 2 and "--server" in err, "atomctl run --server: %d %s" % (rc, err))

    # Users act only on their own jobs; an administrator on any
    rc, out, err = ctl_tcp(d, "cancel", str(root_job), user=NOBODY)
    check(rc == 1 and "atomd:" in err, "65534's cancel of root's job is refused: %d %s" % (rc, err))
    check(d.state_of(root_job) in ("pending", "running"), "root's job still lives")
    rc, out, err = ctl_tcp(d, "cancel", str(nobody_job), user=NOBODY)
    check(rc == 0, "65534 cancels its own job: %d %s" % (rc, err))
    rc, out, err = ctl_tcp(d, "cancel", str(root_job))
    check(rc == 0, "root (admin) cancels: %d %s" % (rc, err))
    d.wait_state(root_job, "cancelled", timeout=60)
    d.wait_state(nobody_job, "cancelled", timeout=60)

    # Bad lines: each an error answer naming the cause, counted as refused; atomd stays up
    refused0 = tcp_counts()["refused"]
    ping = json.dumps({"op": "ping"})
    a = d.tcp_lines([ping.encode()])
    check(len(a) == 1 and not a[0]["ok"] and "no MUNGE credential" in a[0]["error"], "plain JSON: %s" % a)
    a = d.tcp_lines([b"MUNGE:AgQDAAAgarbage:"])
    check(len(a) == 1 and not a[0]["ok"] and "MUNGE credential refused" in a[0]["error"],
          "garbage credential: %s" % a)
    cred = m.cred(ping).encode()
    a = d.tcp_lines([cred, cred])
    check(len(a) == 2 and a[0]["ok"] and a[0]["uid"] == 0, "a fresh credential is answered: %s" % a)
    check(not a[1]["ok"] and "Replayed credential" in a[1]["error"], "the same credential again: %s" % a)
    cred = m.cred(ping, user=NOBODY).encode()
    a = d.tcp_lines([cred])
    check(a and a[0]["ok"] and a[0]["uid"] == NOBODY and not a[0]["admin"],
          "65534's credential: uid from munged, not admin: %s" % a)
    expiring = m.cred(ping, ttl=1).encode()
    time.sleep(2.5)  # not a timing assertion: the credential must be past its time to live
    a = d.tcp_lines([expiring])
    check(a and not a[0]["ok"] and "Expired credential" in a[0]["error"], "expired credential: %s" % a)
    a = d.tcp_lines([b"MUNGE:" + b"A" * (2 << 20), m.cred(ping).encode()])
    check(len(a) == 1 and not a[0]["ok"] and "larger than" in a[0]["error"],
          "an oversized line is refused (then the connection closed): %s" % a)
    check(d.answers(), "atomd still answers after the bad lines")
    # A request line begun and never ended: an error after tcp_request_timeout (2 s here), closed
    s = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=30)
    try:
        s.sendall(b"MUNGE:AwQDAAA")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    check(b"incomplete request" in buf and b"tcp_request_timeout" in buf,
          "an unfinished request line is answered, then closed: %r" % buf)
    # A connection whose peer dies without a word (a node lost) is probed, not kept forever
    idle = socket.create_connection(("127.0.0.1", d.tcp_port))
    try:
        check(d.tcp_lines([m.cred(ping).encode()])[0]["ok"], "answers while an idle connection is open")
        check(keepalive_on_server_side(d.tcp_port), "atomd's TCP connections have keepalive on")
    finally:
        idle.close()
    refused = tcp_counts()["refused"] - refused0
    check(refused == 6, "plain, garbage, replayed, expired, oversized, unfinished: 6 refused, counted %d" % refused)
    fuzz(d)
    a = d.tcp_lines([m.cred(ping).encode()])
    check(a and a[0]["ok"], "the TCP port still answers: %s" % a)

    # A job on node-a (not atomd's host): heartbeats over TCP, progress visible
    steps = 60
    job = submit_tcp(d, d.spec("remote-hb", gpus=2, steps=steps, extra=MODEL))
    info = d.wait_state(job, "done", timeout=90)
    with open(os.path.join(info["attempts"][-1]["run_dir"], "plan.json")) as f:
        plan = json.load(f)
    check(plan["heartbeat_tcp"] == server(d) and plan["atomd_host"] == socket.gethostname()
          and plan["munge_socket"] == m.socket, "the plan names the TCP port: %s" %
          {k: plan[k] for k in ("heartbeat_tcp", "atomd_host", "munge_socket")})
    j = show_tcp(d, job, user=NOBODY)["job"]
    check(j.get("step") == steps and j.get("loss") is not None and j.get("tokens_per_s", 0) > 0,
          "progress from heartbeats over TCP: %s" % j)
    # A rank stopped (SIGSTOP) on node-a: its TCP heartbeats stop advancing, the job is hung,
    # named, and restarted away from node-a
    job = submit_tcp(d, d.spec("remote-hang", gpus=2, steps=1000000, resources="  gpus_per_node: 2\n",
                               extra=MODEL + "restart:\n  heartbeat_timeout: 3s\n  max_restarts: 1\n"))
    info = harness.wait_until(lambda: d.job(job)["job"].get("step", 0) > 0 and d.job(job), 60, "remote-hang to train")
    a0 = info["attempts"][-1]
    with open(os.path.join(a0["output_dir"], "heartbeat.rank-1.jsonl")) as f:
        os.kill(json.loads(f.readline())["pid"], signal.SIGSTOP)
    info = harness.wait_until(lambda: len(d.job(job)["attempts"]) == 2 and d.job(job), 60, "the hang to be found")
    a = info["attempts"]
    check(a[0]["state"] == "hung" and "rank 1 on %s" % a0["nodes"][0] in a[0]["reason"],
          "the hung rank is named: %s" % a[0])
    check(a[1]["nodes"] != a0["nodes"], "restarted on the other node: %s" % a)
    rc, out, err = ctl_tcp(d, "cancel", str(job))
    check(rc == 0, "cancel remote-hang: %s" % err)
    d.wait_state(job, "cancelled", timeout=60)

    counts = tcp_counts()
    check(counts["heartbeat"] > 0 and counts["request"] > 0, "TCP lines counted: %s" % counts)
    print("TCP: queue, ownership, bad credentials ok; heartbeats over TCP: step %d loss %.3f; %s"
          % (j["step"], j["loss"], counts))


def test_without_munged(args):
    """tcp_listen set, munged not running: a warning, the Unix socket only."""
    d = harness.Daemon(args, tcp=True)
    d.munge = None  # its socket path stays in the config, with no munged behind it
    ok = False
    try:
        d.start()
        check("munged does not answer" in d.log() and "listening on the local socket only" in d.log(),
              "the warning names munged: %s" % d.log()[-2000:])
        s = socket.socket()
        try:
            refused = s.connect_ex(("127.0.0.1", d.tcp_port)) != 0
        finally:
            s.close()
        check(refused, "no TCP port without munged")
        rc, out, err = d.ctl("status", "--server", "127.0.0.1:%d" % d.tcp_port)
        check(rc == 3 and "cannot reach atomd over TCP" in err, "atomctl over TCP: %d %s" % (rc, err))
        rc, out, err = d.ctl("status")
        check(rc == 0, "the Unix socket answers: %d %s" % (rc, err))
        ok = True
        d.stop()
    finally:
        if not ok:
            print(d.log(), file=os.sys.stderr)
        d.cleanup(ok)


if __name__ == "__main__":
    args = harness.parse_args()
    harness.run(test, args, cluster=CLUSTER, tcp=True,
                config="metrics_port = %d\ntcp_request_timeout = 2s\n" % METRICS_PORT)
    test_without_munged(args)
    print("ok")
