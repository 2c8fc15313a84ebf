"""bench/sched/bench_daemon.py: a real atomd on the 10,000-GPU inventory, each figure beside its
target (run by bench/sched/run.sh; a benchmark, not a test: it asserts nothing about speed).

  - submissions/s through the socket, durably (each answer comes after its COMMIT), from 4
    clients with one request in flight each (target >= 1,000/s); with --slurm, the same number
    of `sbatch --hold` submissions to a local Slurm started here (deploy/slurm/start-local.sh)
  - `atomctl status` wall time, process start included, with 10,000 GPUs and 1,000 jobs
    (target <= 50 ms): the median of 20 runs
  - atomd's memory at that size (VmRSS, VmHWM)
  - with --tcp yes: atomd also listens on TCP with a private munged, and the submissions go both
    through the Unix socket and through the TCP port, each request in a fresh MUNGE credential
    (encoded by libmunge in the client threads), in the same run; then atom-bench-munge, the cost
    of one encode and one decode
The inventory's nodes are fictional, so every node is drained first and the jobs stay pending
(status lists them all the same; nothing runs).

usage: bench_daemon.py --atomd BIN --ctl BIN --worker BIN [--jobs N] [--slurm yes] [--tcp yes]"""
import ctypes
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "atomd"))
import harness  # noqa: E402

CLIENTS = 4
TCP_ROUNDS = 4


def pipelined(d, requests):
    """Sends every request on one connection, then reads every answer."""
    s = d.connect()
    s.sendall(b"".join((json.dumps(r) + "\n").encode() for r in requests))
    buf, answers = b"", []
    while len(answers) < len(requests):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        answers += [json.loads(x) for x in lines]
    s.close()
    return answers


class MungeEncoder:
    """munge_encode through libmunge itself (one context per client thread)."""

    def __init__(self, munge_socket):
        self.lib = ctypes.CDLL("libmunge.so.2")
        self.libc = ctypes.CDLL(None)
        self.lib.munge_ctx_create.restype = ctypes.c_void_p
        self.lib.munge_encode.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                          ctypes.c_char_p, ctypes.c_int]
        self.lib.munge_strerror.restype = ctypes.c_char_p
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.ctx = self.lib.munge_ctx_create()
        MUNGE_OPT_SOCKET = 8
        self.lib.munge_ctx_set(ctypes.c_void_p(self.ctx), MUNGE_OPT_SOCKET, ctypes.c_char_p(munge_socket.encode()))

    def encode(self, payload):
        cred = ctypes.c_void_p()
        rc = self.lib.munge_encode(ctypes.byref(cred), ctypes.c_void_p(self.ctx), payload, len(payload))
        harness.check(rc == 0, "munge_encode: %s" % self.lib.munge_strerror(rc))
        text = ctypes.string_at(cred)
        self.libc.free(cred)
        return text


def submit_rate(d, n, tcp=False):
    template = d.job(d.submit(d.spec("bench-template")))["spec"]
    commits0 = d.request({"op": "ping"})["commits"]

    def client(t):
        if tcp:
            s = socket.create_connection(("127.0.0.1", d.tcp_port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enc = MungeEncoder(d.munge.socket)
        else:
            s = d.connect()
        buf = b""
        for i in range(n // CLIENTS):
            spec = json.dumps(dict(template, name="b-%d-%d" % (t, i)))
            req = json.dumps({"op": "submit", "spec": spec}).encode()
            s.sendall((enc.encode(req) if tcp else req) + b"\n")
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
    total = n // CLIENTS * CLIENTS
    commits = d.request({"op": "ping"})["commits"] - commits0
    return total, took, commits


def sbatch_rate(n):
    base = tempfile.mkdtemp(prefix="atom-bench-slurm-")
    os.rmdir(base)
    deploy = os.path.join(SRC, "deploy", "slurm")
    r = subprocess.run(["bash", os.path.join(deploy, "start-local.sh"), base], capture_output=True, text=True,
                       timeout=180)
    try:
        if r.returncode != 0:
            print("sbatch: the local Slurm did not start: %s%s" % (r.stdout[-500:], r.stderr[-500:]))
            return
        env = dict(os.environ, SLURM_CONF=os.path.join(base, "etc", "slurm.conf"))
        start = time.monotonic()
        for i in range(n):
            subprocess.run(["sbatch", "--hold", "--job-name=b%d" % i, "--output=/dev/null", "--wrap", "true"],
                           env=env, capture_output=True, check=True)
        took = time.monotonic() - start
        print("sbatch --hold, one after another: %d in %.2f s: %.0f/s (the issue measured 56-258/s)" % (n, took, n / took))
    finally:
        subprocess.run(["bash", os.path.join(deploy, "stop-local.sh"), base], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def bench(d, n, slurm, tcp, bin_dir):
    nodes = d.request({"op": "nodes"})["nodes"]
    answers = pipelined(d, [{"op": "drain", "node": x["name"], "reason": "benchmark"} for x in nodes])
    harness.check(all(a.get("ok") for a in answers), "drain: %r" % answers[:3])
    gpus = sum(x["gpus"] for x in nodes)
    if tcp:
        # Alternating rounds: every pending job makes each scheduling pass longer, so the
        # transports take turns and see the same queue sizes.
        sums = {False: [0, 0.0, 0], True: [0, 0.0, 0]}
        for _ in range(TCP_ROUNDS):
            for over_tcp in (False, True):
                for i, v in enumerate(submit_rate(d, n // TCP_ROUNDS, tcp=over_tcp)):
                    sums[over_tcp][i] += v
        total, took, commits = sums[False]
    else:
        total, took, commits = submit_rate(d, n)
    print("submissions through the socket: %d from %d clients in %.2f s: %.0f/s (target >= 1000/s); "
          "%d COMMITs, %.1f submissions each" % (total, CLIENTS, took, total / took, commits, total / max(commits, 1)))
    if tcp:
        unix_rate = total / took
        total, took, commits = sums[True]
        print("submissions through the TCP port, a MUNGE credential each: %d from %d clients in %.2f s: "
              "%.0f/s, %.2fx the Unix socket's %.0f/s in the same %d alternating rounds; %d COMMITs, "
              "%.1f submissions each" % (total, CLIENTS, took, total / took, total / took / unix_rate, unix_rate,
                                         TCP_ROUNDS, commits, total / max(commits, 1)))
        r = subprocess.run([os.path.join(bin_dir, "atom-bench-munge"), "--socket", d.munge.socket],
                           capture_output=True, text=True, timeout=300)
        harness.check(r.returncode == 0, "atom-bench-munge: %s" % r.stderr)
        print(r.stdout.strip())
    times = []
    for _ in range(20):
        t0 = time.monotonic()
        rc, out, err = d.ctl("status")
        times.append(time.monotonic() - t0)
        harness.check(rc == 0, "status: %s" % err)
    jobs = len(d.request({"op": "queue"}).get("jobs", []))
    print("atomctl status with %d GPUs and %d jobs: median %.1f ms, max %.1f ms over 20 runs (target <= 50 ms)"
          % (gpus, jobs, 1e3 * statistics.median(times), 1e3 * max(times), ))
    with open("/proc/%d/status" % d.proc.pid) as f:
        mem = {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
    print("atomd memory with %d GPUs and %d jobs: VmRSS %s, VmHWM %s" % (gpus, jobs, mem["VmRSS"], mem["VmHWM"]))
    if slurm:
        sbatch_rate(total)


if __name__ == "__main__":
    args = harness.parse_args(["--jobs", "--slurm", "--tcp"])
    with open(os.path.join(SRC, "configs", "clusters", "cluster-10k.yaml")) as f:
        cluster = f.read()
    tcp = args.tcp == "yes"
    harness.run(lambda d: bench(d, int(args.jobs or 1000), args.slurm == "yes", tcp,
                                os.path.dirname(os.path.abspath(args.atomd))),
                args, cluster=cluster, tcp=tcp)
