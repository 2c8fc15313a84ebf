"""atomctl's socket folder is the caller's alone (common/private_path.c).

A victim (uid 65533, no account: HOME from the environment) runs `atomctl run` with
XDG_RUNTIME_DIR pointing at a folder where another user (uid 65534) created atom/ first and put
atomd's log name there as a symlink to the victim's ~/.bashrc. atomctl must refuse with a
sentence naming the folder and its owner, start no atomd, and leave the victim's file as it was
(before, it appended atomd's log to it). Without XDG_RUNTIME_DIR the socket is in the victim's
own state folder, never /tmp/atom-UID. Runs as root, acting as both users."""
import os
import re
import shutil
import signal
import subprocess

import harness
from harness import check

VICTIM, OTHER = 65533, 65534


def main():
    args = harness.parse_args()
    d = harness.Daemon(args)  # its folder and copies of the programs only: no atomd is started
    atomd_copy = os.path.join(d.tmp, "bin", "atomd")
    shutil.copy(args.atomd, atomd_copy)
    os.chmod(atomd_copy, 0o755)
    home = os.path.join(d.tmp, "home")
    os.mkdir(home, 0o700)
    bashrc = os.path.join(home, ".bashrc")
    with open(bashrc, "w") as f:
        f.write("export PATH=$HOME/bin:$PATH\n")
    os.chmod(bashrc, 0o600)
    for path in (home, bashrc):
        os.chown(path, VICTIM, VICTIM)
    before = open(bashrc, "rb").read()

    # the other user's XDG_RUNTIME_DIR-to-be, with atom/ made first and the log name planted
    runtime = os.path.join(d.tmp, "runtime")
    planted = os.path.join(runtime, "atom")
    os.makedirs(planted)
    os.chmod(runtime, 0o777)
    os.chmod(planted, 0o777)
    log = os.path.join(planted, "atomd.sock.atomd.log")
    os.symlink(bashrc, log)
    for path in (runtime, planted, log):
        os.lchown(path, OTHER, OTHER)

    env = {k: v for k, v in d.env.items() if k not in ("ATOM_SOCKET", "XDG_STATE_HOME",
                                                       "ATOM_STATE_DIR")}
    env.update(HOME=home, XDG_RUNTIME_DIR=runtime, ATOM_ATOMD=atomd_copy)
    spec = d.spec("victim-run")
    os.chmod(spec, 0o644)
    pids = []
    ok = False
    try:
        r = subprocess.run([d.ctl_path, "run", spec], capture_output=True, text=True, env=env,
                           user=VICTIM, group=VICTIM, extra_groups=[], timeout=60)
        pids.extend(int(p) for p in re.findall(r"started a private atomd \(pid (\d+)", r.stderr))
        check(open(bashrc, "rb").read() == before,
              "atomctl run appended to the victim's ~/.bashrc through %s: %r" % (log, r.stderr))
        check(r.returncode != 0 and not pids, "atomctl run used the other user's folder: %d %r"
              % (r.returncode, r.stderr))
        check(planted in r.stderr and "uid 65534" in r.stderr,
              "the refusal does not name the folder and its owner: %r" % r.stderr)
        check(sorted(os.listdir(planted)) == ["atomd.sock.atomd.log"],
              "something was created in the other user's folder: %r" % os.listdir(planted))

        # no XDG_RUNTIME_DIR: the victim's own state folder, never /tmp/atom-UID
        del env["XDG_RUNTIME_DIR"]
        r = subprocess.run([d.ctl_path, "status"], capture_output=True, text=True, env=env,
                           user=VICTIM, group=VICTIM, extra_groups=[], timeout=60)
        want = os.path.join(home, ".local/state/atom/socket/atomd.sock")
        check(r.returncode != 0 and want in r.stderr and "/tmp/atom-" not in r.stderr,
              "without XDG_RUNTIME_DIR the socket is not %s: %r" % (want, r.stderr))
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
