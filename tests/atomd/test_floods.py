"""atomd under floods (issue 14): the governor (scheduler/server_clients.c) keeps one user from
taking atomd from the others. While each attack runs, another user's `status` must be answered
within 100 ms (the round trip on atomd's socket, measured here), atomd's CPU time and memory stay
bounded, and afterwards a job still runs.
  - 200 idle connections from uid 65534 with atomd's descriptor limit at 64: the per-user cap
    refuses the extra ones with an error line (before: EMFILE, and the loop spun at 100% CPU);
    with caps set above what the limit allows, the reserve descriptor refuses them instead;
  - a client of uid 65534 that pipelines 2000 `queue --all` and `status` and never reads: it is not
    read past the soft output limit, then closed; atomd's RSS stays bounded;
  - 100 TCP peers sending up to 1 MiB each without a newline or a credential: each is closed at
    tcp_preauth_line; atomd's RSS stays bounded; with tcp_preauth_budget at 1 MiB, 100 peers
    holding 60 kB each: those beyond the budget are closed.
Under AddressSanitizer (build-sanitize) atomd's every answer is several times slower (a status
over 100 pending jobs takes 50-200 ms there with no attack at all, and one request is never cut
short), so when atomd is sanitized the bound on the answer time is five times larger and the
never-reading client's queue is 25 jobs instead of 100; ASan's quarantine keeps freed memory, so
it is held to 8 MB for these daemons, leaving RSS growth meaningful.
"""
import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import harness
from harness import check

NOBODY = 65534
ANSWER_WITHIN = 0.100  # seconds: what "atomd keeps answering" means in the issue
SANITIZED_SLOWER = 5   # ... times this when atomd runs under AddressSanitizer
RSS_GROWTH_MAX = 32 << 10  # KiB: far below what the attacks made atomd hold before (40-110 MiB)

# The attacker, run as uid 65534: opens N connections to atomd's socket without a word, says how
# many it got, then on "report" says what atomd told each (an error line, a close, or nothing).
IDLE_ATTACKER = r'''
import json, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
socks, backlog_full = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
    except BlockingIOError:  # atomd's listen backlog is full: the kernel refused it
        backlog_full += 1
        s.close()
        continue
    socks.append(s)
print("connected %d" % len(socks), flush=True)
sys.stdin.readline()
errors, closed, silent = [], 0, 0
for s in socks:
    try:
        data = s.recv(65536)
    except BlockingIOError:
        silent += 1
        continue
    except ConnectionResetError:
        closed += 1
        continue
    if data:
        errors.append(json.loads(data.split(b"\n")[0])["error"])
    else:
        closed += 1
print(json.dumps({"errors": errors, "closed": closed, "silent": silent, "backlog_full": backlog_full}),
      flush=True)
sys.stdin.readline()
'''

# The attacker that never reads: pipelines requests, then waits (without reading) for atomd to
# hang up, and says after how long, or "open" when it did not within the time given.
DEAF_ATTACKER = r'''
import select, socket, sys, time
path, n, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
reqs = [b'{"op": "queue", "all": true}\n', b'{"op": "status"}\n']
s.sendall(b"".join(reqs[i % 2] for i in range(n)))
print("sent", flush=True)
t0 = time.monotonic()
p = select.poll()
p.register(s, select.POLLHUP | select.POLLERR)
while time.monotonic() - t0 < wait:
    if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in p.poll(100)):
        print("closed %.1f" % (time.monotonic() - t0), flush=True)
        break
else:
    print("open", flush=True)
sys.stdin.readline()
'''


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def status_rtt(d):
    """One `status` on a fresh connection (as root, not the attacking user): (seconds from
    connect to the answer, the answer), or (None, why) when none came within 2 s."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A blocking connect, as atomctl's: it waits while the listen backlog is full (SO_SNDTIMEO
    # bounds the wait), where a non-blocking one would fail at once
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
    try:
        s.connect(d.socket)
        s.settimeout(2)
        try:
            s.sendall(b'{"op": "status"}\n')
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at once (a cap, no descriptor): its error line is there to read
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        if not buf:
            return None, "closed without an answer"
        return time.monotonic() - t0, json.loads(buf.split(b"\n")[0])
    except OSError as e:
        return None, "no answer: %s" % e
    finally:
        s.close()


def small_quarantine(d):
    """harness.run's setup: ASan (when atomd is built with it) keeps at most 8 MB freed."""
    d.env["ASAN_OPTIONS"] = d.env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8"


def sanitized(d):
    with open("/proc/%d/maps" % d.proc.pid) as f:
        return "libasan" in f.read()


def answer_within(d):
    return ANSWER_WITHIN * (SANITIZED_SLOWER if sanitized(d) else 1)


def probe(d):
    """status_rtt, asked again at once when over ANSWER_WITHIN: on a shared 2-core machine any
    process may lose the CPU for 100 ms to others now and then, whereas an attack that holds atomd
    delays both (the floods here last seconds). The faster of the two counts."""
    first = status_rtt(d)
    if first[0] is not None and first[0] < answer_within(d):
        return first
    second = status_rtt(d)
    return second if second[0] is not None and (first[0] is None or second[0] < first[0]) else first


def check_probes(d, probes, what, ok_only=True):
    check(probes, "no status probe ran during %s" % what)
    for rtt, ans in probes:
        check(rtt is not None, "status during %s: %s" % (what, ans))
        check(not ok_only or ans.get("ok"), "status during %s: %s" % (what, ans))
        check(ans.get("ok") or "error" in ans, "status during %s: %s" % (what, ans))
    worst = max(rtt for rtt, _ in probes)
    print("%s: %d status answers, slowest %.1f ms (%s)" % (what, len(probes), worst * 1000,
                                                         " ".join("%.0f" % (r * 1000) for r, _ in probes)))
    check(worst < answer_within(d), "status during %s took %.0f ms (at most %.0f ms asked)"
          % (what, worst * 1000, answer_within(d) * 1000))


def attacker(d, script, *argv):
    path = os.path.join(d.tmp, "attacker-%d.py" % len(os.listdir(d.tmp)))
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o644)
    # uid 65534 must reach the interpreter: the system's, rather than one under /root
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return subprocess.Popen([python, path] + [str(a) for a in argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, user=NOBODY, group=NOBODY, extra_groups=[])


def finish(proc):
    proc.stdin.close()
    proc.wait(timeout=30)


def job_runs(d):
    job = d.submit(d.spec("ok-after-flood", gpus=1, steps=3))
    d.wait_state(job, "done", timeout=60)


def idle_flood(d, expect_error, while_held=lambda: None):
    """200 connections of uid 65534 that say nothing. While they are held: atomd's CPU time over
    2 s (a loop spinning on a listening socket it cannot accept from burns most of
    it), and the other user's status every 100 ms."""
    pid = d.proc.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    proc = attacker(d, IDLE_ATTACKER, d.socket, 200)
    try:
        line = proc.stdout.readline()
        check(line.startswith("connected"), "the attacker: %r" % line)
        probes = []
        while time.monotonic() - t0 < 2:  # the measurement window (CPU time is the assertion)
            probes.append(probe(d))
            time.sleep(0.1)
        cpu = cpu_seconds(pid) - cpu0
        window = time.monotonic() - t0
        while_held()
        proc.stdin.write("report\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
    finally:
        finish(proc)
    print("idle flood (%s): atomd used %.2f s of CPU in %.1f s; attacker: %d error lines, %d closed, "
          "%d held, %d refused by the backlog" % (expect_error, cpu, window, len(report["errors"]),
                                                  report["closed"], report["silent"], report["backlog_full"]))
    check(cpu < 0.4, "atomd used %.2f s of CPU in %.1f s with idle connections waiting (spinning?)" % (cpu, window))
    check(report["errors"] and all(expect_error in e for e in report["errors"]),
          "refused connections get one error line naming %s: %s" % (expect_error, report["errors"][:3]))
    return probes, report


def test_idle_connections(args):
    # The caps from the descriptor limit: 64 - 32 kept back = 32 connections, 8 per user.
    def test(d):
        def refused_by_name():  # while the attacker holds its 8
            rc, out, err = d.ctl("status", user=NOBODY)
            check(rc == 1 and "max_clients_per_user" in err,
                  "uid 65534's own atomctl at its cap is told which limit: %d %r" % (rc, err))

        probes, report = idle_flood(d, "max_clients_per_user", while_held=refused_by_name)
        check_probes(d, probes, "200 idle connections of another user")
        check(report["silent"] <= 8, "uid 65534 holds at most its 8 connections: %s" % report)
        job_runs(d)
    harness.run(test, args, setup=small_quarantine, nofile=64)


def test_reserve_descriptor(args):
    # Caps above what 64 descriptors allow: atomd runs out of descriptors, and the reserve one
    # refuses each connection with an error line instead of leaving it in the backlog.
    def test(d):
        probes, report = idle_flood(d, "out of file descriptors")
        check_probes(d, probes, "descriptor exhaustion", ok_only=False)
        check(any("out of file descriptors" in ans.get("error", "") for _, ans in probes) or
              all(ans.get("ok") for _, ans in probes), "the other user: served or told why: %s" % probes)
        check("out of file descriptors" in d.log(), "atomd logs the refusals")
        job_runs(d)
    harness.run(test, args, setup=small_quarantine, nofile=64,
                config="max_clients = 1000\nmax_clients_per_user = 1000\n")


def test_never_reading_client(args):
    def test(d):
        # 100 pending jobs (the node drained) make each `queue --all` and `status` answer large
        # (45 kB): 2000 of them unread would be 90 MB
        jobs = 25 if sanitized(d) else 100
        node = d.request({"op": "status"})["node_list"][0]["name"]
        check(d.request({"op": "drain", "node": node, "reason": "flood test"})["ok"], "drain")
        spec = json.dumps(d.job(d.submit(d.spec("sleep-queued", gpus=1)))["spec"])  # as atomctl sends it
        s = d.connect()
        try:
            s.sendall(b"".join((json.dumps({"op": "submit", "spec": spec}) + "\n").encode() for _ in range(jobs - 1)))
            buf = b""
            while buf.count(b"\n") < jobs - 1:
                chunk = s.recv(1 << 20)
                check(chunk, "atomd closed the submitting connection")
                buf += chunk
        finally:
            s.close()
        answers = [json.loads(x) for x in buf.split(b"\n") if x]
        check(all(a["ok"] for a in answers), "the submissions: %s" % [a for a in answers if not a["ok"]][:1])
        pid = d.proc.pid
        rss0 = rss_kib(pid)
        proc = attacker(d, DEAF_ATTACKER, d.socket, 2000, 15)
        try:
            check(proc.stdout.readline().strip() == "sent", "the attacker sent its requests")
            probes, rss_max, verdict = [], rss0, None
            while verdict is None:
                probes.append(probe(d))
                rss_max = max(rss_max, rss_kib(pid))
                if select.select([proc.stdout], [], [], 0.1)[0]:
                    verdict = proc.stdout.readline().strip()
        finally:
            finish(proc)
        print("never-reading client: RSS %d -> at most %d KiB; attacker: %s" % (rss0, rss_max, verdict))
        check_probes(d, probes, "a client that never reads its answers")
        check(rss_max - rss0 < RSS_GROWTH_MAX, "atomd's RSS grew by %d KiB for a client that never reads"
              % (rss_max - rss0))
        check(verdict.startswith("closed"), "the client that never reads is closed: %s" % verdict)
        check("(client_output_soft)" in d.log(), "atomd says why it closed the client")
        check(d.request({"op": "resume", "node": node})["ok"], "resume")
    harness.run(test, args, setup=small_quarantine)


def closed_by_governor(port):
    """atom_clients_closed_total by reason, from atomd's metrics endpoint."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    prefix = 'atom_clients_closed_total{reason="'
    return {line[len(prefix):].split('"')[0]: int(line.split()[-1])
            for line in text.splitlines() if line.startswith(prefix)}


def tcp_flood(d, peers_n, line_len, on_sent=lambda: None, max_seconds=20):
    """peers_n TCP peers each sending line_len bytes with no newline and no credential, the
    other user's status probed every 20 ms and atomd's RSS sampled meanwhile; then on_sent(),
    while the peers that sent everything are still open. Returns (probes, RSS growth in KiB, how
    many peers atomd hung up on while they sent, how many sent everything)."""
    pid = d.proc.pid
    rss0 = rss_kib(pid)
    line = memoryview(b"MUNGE:" + b"A" * (line_len - 6))
    peers = {}
    for _ in range(peers_n):
        s = socket.create_connection(("127.0.0.1", d.tcp_port))
        s.setblocking(False)
        peers[s] = 0  # bytes of line sent
    probes, rss_max, closed, done = [], rss0, 0, []
    t0 = last_probe = time.monotonic()
    while peers and time.monotonic() - t0 < max_seconds:
        _, writable, _ = select.select([], list(peers), [], 0.05)
        for s in writable:
            try:
                peers[s] += s.send(line[peers[s]:peers[s] + (64 << 10)])
                if peers[s] < len(line):
                    continue
                done.append(s)  # all sent: kept open, as an attacker would
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                closed += 1  # atomd hung up (EPIPE, ECONNRESET)
                s.close()
            del peers[s]
        if time.monotonic() - last_probe >= 0.02:
            last_probe = time.monotonic()
            probes.append(probe(d))
            rss_max = max(rss_max, rss_kib(pid))
    on_sent()
    probes.append(probe(d))
    rss_max = max(rss_max, rss_kib(pid))
    for s in list(peers) + done:
        s.close()
    return probes, rss_max - rss0, closed, len(done)


def test_preauth_tcp_peers(args):
    metrics_port = harness.free_port()

    def test(d):
        probes, growth, closed, _ = tcp_flood(d, 100, 1 << 20)
        print("pre-auth TCP peers: RSS +%d KiB; %d of 100 closed by atomd" % (growth, closed))
        check_probes(d, probes, "100 TCP peers sending 1 MiB without a credential")
        check(growth < RSS_GROWTH_MAX, "atomd's RSS grew by %d KiB for peers without a credential" % growth)
        check(closed == 100, "every peer is closed before it sent 1 MiB: %d of 100" % closed)
        counts = closed_by_governor(metrics_port)
        check(counts.get("preauth_line") == 100, "closed for tcp_preauth_line, counted: %s" % counts)
        a = d.tcp_lines([d.munge.cred(json.dumps({"op": "ping"})).encode()])
        check(a and a[0]["ok"], "the TCP port still answers a credential: %s" % a)
    harness.run(test, args, setup=small_quarantine, tcp=True, config="metrics_port = %d\n" % metrics_port)


def test_preauth_budget(args):
    """Lines under tcp_preauth_line (60 kB) from 100 peers, with tcp_preauth_budget at 1 MiB:
    atomd closes the peers holding most until the rest fit, and a credential still gets in."""
    metrics_port = harness.free_port()

    def test(d):
        evicted = 100 - (1 << 20) // (60 << 10)  # 83: the budget holds 17 such lines

        def budget_enforced():
            harness.wait_until(lambda: closed_by_governor(metrics_port).get("preauth_budget", 0) >= evicted,
                               10, "atomd to close the peers beyond tcp_preauth_budget")

        probes, growth, _, sent = tcp_flood(d, 100, 60 << 10, on_sent=budget_enforced)
        counts = closed_by_governor(metrics_port)
        print("pre-auth budget: RSS +%d KiB; %d of 100 sent their 60 kB; closed: %s" % (growth, sent, counts))
        check_probes(d, probes, "100 TCP peers holding 60 kB each without a credential")
        check(counts.get("preauth_budget") == evicted and counts.get("preauth_line") == 0,
              "the peers beyond the 1 MiB budget are closed, the others kept: %s" % counts)
        a = d.tcp_lines([d.munge.cred(json.dumps({"op": "ping"})).encode()])
        check(a and a[0]["ok"], "a credential gets in beside the peers held: %s" % a)
    harness.run(test, args, setup=small_quarantine, tcp=True,
                config="metrics_port = %d\ntcp_preauth_budget = 1m\n" % metrics_port)


if __name__ == "__main__":
    args = harness.parse_args()
    test_idle_connections(args)
    test_reserve_descriptor(args)
    test_never_reading_client(args)
    test_preauth_tcp_peers(args)
    test_preauth_budget(args)
    print("ok")
