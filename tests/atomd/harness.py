"""tests/atomd/harness.py: what atomd's end-to-end tests share.

A Daemon is a real atomd on a temporary socket and state folder, with the stand-in worker
(fake_worker.c) as its atom-worker; requests go over the real Unix socket, either raw (JSON
lines) or through atomctl. With tcp=True it also listens on a free TCP port of 127.0.0.1 and
checks credentials with a private munged (Munged: its own key, socket, pid and log files in the
test's folder). Nothing is mocked.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def parse_args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--atomd", required=True)
    p.add_argument("--ctl", required=True)
    p.add_argument("--worker", required=True)
    for name in extra or []:
        p.add_argument(name)
    return p.parse_args()


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


NOBODY = 65534  # the second user the tests act as: a job's owner, not root


def as_nobody(fn):
    """Runs fn() in a child that has become uid/gid 65534 (what a job's owner can do); True when
    fn returned without raising."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    fail("timed out after %.0f s waiting for %s" % (timeout, what))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Munged:
    """A private munged: key, socket, pid, seed and log files under folder; nothing root-wide."""

    def __init__(self, folder):
        self.folder = folder
        self.socket = os.path.join(folder, "munge.socket")
        self.proc = None

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        os.chmod(self.folder, 0o755)  # munged refuses a socket folder others cannot reach
        key = os.path.join(self.folder, "munge.key")
        subprocess.run(["mungekey", "--create", "--force", "--keyfile=" + key], check=True,
                       capture_output=True)
        os.chmod(key, 0o600)
        out = open(os.path.join(self.folder, "munged.out"), "w")
        self.proc = subprocess.Popen(["munged", "-F", "--socket=" + self.socket, "--key-file=" + key,
                                      "--pid-file=" + os.path.join(self.folder, "munged.pid"),
                                      "--log-file=" + os.path.join(self.folder, "munged.log"),
                                      "--seed-file=" + os.path.join(self.folder, "munged.seed")],
                                     stdout=out, stderr=out)
        out.close()
        wait_until(lambda: self.proc.poll() is not None or os.path.exists(self.socket), 10,
                   "munged's socket")
        check(self.proc.poll() is None, "munged exited with %s" % self.proc.returncode)

    def cred(self, payload, ttl=None, user=None):
        """A credential carrying payload (str), made by the real munge client."""
        argv = ["munge", "-S", self.socket, "-s", payload] + (["-t", str(ttl)] if ttl else [])
        kw = dict(user=user, group=user, extra_groups=[]) if user is not None else {}
        r = subprocess.run(argv, capture_output=True, text=True, check=True, **kw)
        return r.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Daemon:
    def __init__(self, args, config=None, cluster=None, tcp=False, nofile=None):
        self.args = args
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) for atomd, set before exec
        self.tmp = tempfile.mkdtemp(prefix="atomd-test-")
        os.chmod(self.tmp, 0o755)  # other users' clients must reach the socket
        self.munge = Munged(os.path.join(self.tmp, "munge")) if tcp else None
        if tcp:
            self.tcp_port = free_port()
            config = (config or "") + "tcp_listen = 127.0.0.1:%d\nmunge_socket = %s\n" % (
                self.tcp_port, self.munge.socket)
        self.socket = os.path.join(self.tmp, "s", "atomd.sock")
        self.state = os.path.join(self.tmp, "state")
        self.log_path = os.path.join(self.tmp, "atomd.log")
        self.extra = []
        if config:
            path = os.path.join(self.tmp, "atomd.conf")
            with open(path, "w") as f:
                f.write(config)
            self.extra += ["--config", path]
        if cluster:
            path = os.path.join(self.tmp, "cluster.yaml")
            with open(path, "w") as f:
                f.write(cluster)
            self.extra += ["--cluster", path]
        with open(os.path.join(self.tmp, "data.bin"), "wb") as f:
            f.write(os.urandom(20000))
        self.proc = None
        # Other users (uid 65534) run atomctl and the worker of their own jobs: give them copies
        # they can reach, since the build folder may sit in a home folder of mode 0700 (/root).
        bin_dir = os.path.join(self.tmp, "bin")
        os.mkdir(bin_dir, 0o755)
        self.ctl_path = shutil.copy(args.ctl, bin_dir)
        self.worker_path = shutil.copy(args.worker, bin_dir)
        for path in (self.ctl_path, self.worker_path):
            os.chmod(path, 0o755)
        self.env = dict(os.environ, ATOM_WORKER=self.worker_path, ATOM_SOCKET=self.socket)
        if tcp:
            self.env["ATOM_MUNGE_SOCKET"] = self.munge.socket

    def start(self):
        if self.munge and not self.munge.proc:
            self.munge.start()
        log = open(self.log_path, "a")
        limit = None
        if self.nofile:
            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        self.proc = subprocess.Popen([self.args.atomd, "--socket", self.socket, "--state-dir", self.state] + self.extra,
                                     stdout=log, stderr=log, env=self.env, preexec_fn=limit)
        log.close()
        wait_until(self.answers, 10, "atomd to listen")

    def answers(self):
        if self.proc.poll() is not None:
            fail("atomd exited with %s:\n%s" % (self.proc.returncode, self.log()))
        try:
            return self.request({"op": "ping"}).get("ok")
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        """SIGTERM; atomd must exit 0 (under the sanitizers: no leak or error report)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
                fail("atomd did not stop within 10 s of SIGTERM")
            check(self.proc.returncode == 0 and "Sanitizer" not in self.log(),
                  "atomd stopped with status %d:\n%s" % (self.proc.returncode, self.log()[-3000:]))

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def kill_leftovers(self):
        """SIGKILLs every process whose command line names this test's folder (mpirun and
        workers of attempts a failed test left running)."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.tmp.encode() in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass

    def cleanup(self, ok=True):
        try:
            self.stop()
        finally:
            self.kill_leftovers()
            if self.munge:
                self.munge.stop()
        if ok:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def hb_path(self):
        return os.path.join(os.path.dirname(self.socket), "atomd-hb.sock")

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.socket)
        return s

    def request_raw(self, data):
        """Sends bytes as they are; returns the first answer line, parsed."""
        s = self.connect()
        try:
            try:
                s.sendall(data)
            except BrokenPipeError:
                pass  # atomd answered an oversized request and hung up: read its answer
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return json.loads(buf.split(b"\n")[0]) if buf else None
        finally:
            s.close()

    def request(self, obj):
        return self.request_raw((json.dumps(obj) + "\n").encode())

    def tcp_lines(self, lines, answers=None):
        """Sends lines (bytes, without newlines) on one TCP connection; returns the answers, parsed
        (as many as lines unless answers says; fewer if atomd closes the connection)."""
        want = len(lines) if answers is None else answers
        s = socket.create_connection(("127.0.0.1", self.tcp_port), timeout=30)
        try:
            try:
                s.sendall(b"".join(line + b"\n" for line in lines))
            except (BrokenPipeError, ConnectionResetError):
                pass  # atomd answered an oversized request and hung up: read its answer
            buf = b""
            while buf.count(b"\n") < want:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
            return [json.loads(line) for line in buf.split(b"\n") if line]
        finally:
            s.close()

    def spec(self, name, gpus=1, steps=20, extra="", resources=""):
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write("name: %s\nresources:\n  gpus: %d\n%sparallelism:\n  data: %d\n"
                    "training:\n  steps: %d\n  lr: 0.001\n  global_batch: %d\n  micro_batch: 1\n"
                    "data:\n  path: data.bin\n%s" % (name, gpus, resources, gpus, steps, gpus, extra))
        os.chmod(path, 0o644)
        return path

    def ctl(self, *argv, user=None):
        kw = {}
        if user is not None:
            kw = dict(user=user, group=user, extra_groups=[])
        sock = [] if "--socket" in argv or "--server" in argv else ["--socket", self.socket]
        r = subprocess.run([self.ctl_path] + list(argv) + sock, capture_output=True, text=True,
                           env=self.env, timeout=60, **kw)
        return r.returncode, r.stdout, r.stderr

    def submit(self, path):
        rc, out, err = self.ctl("submit", path, "--json")
        check(rc == 0, "submit %s: exit %d: %s" % (path, rc, err))
        return json.loads(out)["job"]

    def job(self, job_id):
        ans = self.request({"op": "show", "job": job_id})
        check(ans and ans.get("ok"), "show %d: %s" % (job_id, ans))
        return ans

    def state_of(self, job_id):
        return self.job(job_id)["job"]["state"]

    def wait_state(self, job_id, states, timeout=30):
        """Waits for one of states; fails at once if the job ends in another."""
        states = [states] if isinstance(states, str) else states
        final = ("done", "failed", "cancelled", "timeout")

        def reached():
            info = self.job(job_id)
            state = info["job"]["state"]
            check(state in states or state not in final,
                  "job %d ended %s (%s), expected %s" % (job_id, state, info["job"]["reason"], "/".join(states)))
            return state in states and info

        return wait_until(reached, timeout, "job %d to be %s" % (job_id, "/".join(states)))


def run(test, args, setup=None, **daemon_kw):
    """Runs test(daemon) on a fresh atomd; keeps the folder and prints the log on failure.
    setup(daemon), when given, runs before atomd starts (files that need the test's folder)."""
    d = Daemon(args, **daemon_kw)
    ok = False
    try:
        if setup:
            setup(d)
        d.start()
        test(d)
        ok = True
        d.stop()
    except SystemExit:
        ok = False
        raise
    finally:
        if not ok:
            print("---- atomd log (%s) ----\n%s" % (d.tmp, d.log() if os.path.exists(d.log_path) else ""), file=sys.stderr)
        d.cleanup(ok)
