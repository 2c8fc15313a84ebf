"""`atomctl run job.yaml`: with no atomd reachable it starts a private one, submits, follows the job
to its end and exits with its result (0 done, 1 failed); a second run reuses that atomd; a bad spec
is reported with file:line:column before anything starts. Stand-in worker: fake_worker.c."""
import os
import re
import signal
import subprocess

import harness
from harness import check


def main():
    args = harness.parse_args()
    d = harness.Daemon(args)  # only its folder, spec writer and environment: `run` starts atomd
    env = dict(d.env, ATOM_ATOMD=args.atomd, ATOM_STATE_DIR=os.path.join(d.tmp, "private-state"))
    pids = []

    def run(path):
        r = subprocess.run([args.ctl, "run", path, "--socket", d.socket], capture_output=True, text=True, env=env,
                           timeout=60)
        pids.extend(int(p) for p in re.findall(r"started a private atomd \(pid (\d+)", r.stderr))
        return r.returncode, r.stderr

    ok = False
    try:
        bad = d.spec("bad-spec")
        with open(bad, "a") as f:
            f.write("training:\n  stpes: 3\n")
        rc, err = run(bad)
        check(rc == 1 and re.search(r"bad-spec\.yaml:\d+:\d+", err) and not pids, "bad spec: %d %r" % (rc, err))

        rc, err = run(d.spec("ok-run", gpus=2, steps=10))
        check(rc == 0 and "step 10/10" in err and "done" in err and len(pids) == 1, "run ok: %d %r" % (rc, err))
        rc, err = run(d.spec("fail-run", extra="restart:\n  max_restarts: 0\n"))
        check(rc == 1 and "failed" in err, "run of a failing job: %d %r" % (rc, err))
        check(len(pids) == 1, "the second run reused the private atomd (started %d)" % len(pids))

        # ^C cancels the job and run exits 130 once it has ended
        p = subprocess.Popen([args.ctl, "run", d.spec("sleep-run"), "--socket", d.socket], stderr=subprocess.PIPE,
                             text=True, env=env)
        line = ""
        while "sleep-run" not in line and "step" not in line:
            line = p.stderr.readline()
            check(line, "run printed no progress")
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=60)[1]
        check(p.returncode == 130 and "cancelled" in rest, "run after ^C: %d %r" % (p.returncode, rest))
        ok = True
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        d.cleanup(ok)


if __name__ == "__main__":
    main()
    print("ok")
