"""atomd keeps each attempt apart from atomd and from what outlives it (scheduler/cgroup.h,
job_env.h), probed as a hostile job owner (uid 65534) would:
- a variable only root's atomd has never reaches the job; the job gets its owner's HOME and USER;
- what the job writes is not world-readable (umask 027);
- a daemon the job leaves behind (double fork, setsid: outside mpirun's process tree) is killed
  when the attempt ends, and the attempt's cgroup folder goes;
- after atomd is killed and the attempt dies meanwhile, a process of the owner's that names the
  attempt's ranks.app on its command line is not adopted as the attempt: the job is requeued.
Where atomd has no cgroup (no cgroup2 mount), `atomctl nodes` must say so and why."""
import json
import os
import pwd
import signal
import subprocess

import harness
from harness import check, wait_until

NOBODY = 65534
SECRET = "ATOM_TEST_ROOT_ONLY_SECRET"


def dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def isolation(d):
    rc, out, err = d.ctl("nodes", "--json")
    check(rc == 0, "nodes --json: %s" % err)
    iso = json.loads(out)["isolation"]
    rc, text, err = d.ctl("nodes")
    check(rc == 0 and "attempts on atomd's node:" in text, "atomctl nodes names the isolation: %r" % text)
    if iso["kind"] != "cgroup":
        check(iso["kind"] == "process group" and iso["why"], "no cgroup, and why: %s" % iso)
    return iso


def submit_as_nobody(d, path):
    os.chmod(path, 0o644)
    rc, out, err = d.ctl("submit", path, "--json", user=NOBODY)
    check(rc == 0, "submit as uid %d: %s" % (NOBODY, err))
    return json.loads(out)["job"]


def test(d):
    iso = isolation(d)
    nobody = pwd.getpwuid(NOBODY)

    job = submit_as_nobody(d, d.spec("isolate-a", gpus=2, steps=30))
    info = d.wait_state(job, "done")
    run_dir = info["attempts"][0]["output_dir"]  # the owner's folder, where the job writes
    env_path = os.path.join(run_dir, "env.txt")
    with open(env_path) as f:
        env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    check(SECRET not in env, "root's %s reached the job" % SECRET)
    check(env.get("USER") == nobody.pw_name and env.get("HOME") == nobody.pw_dir,
          "the job runs with its owner's USER and HOME: %s %s" % (env.get("USER"), env.get("HOME")))
    mode = os.stat(env_path).st_mode & 0o777
    check(mode == 0o640, "a file the job made has mode %o, not 640 (umask 027)" % mode)

    pid_path = os.path.join(run_dir, "daemon.pid")
    wait_until(lambda: os.path.exists(pid_path) and open(pid_path).read().strip(), 10, "the daemon's pid")
    daemon = int(open(pid_path).read())
    if iso["kind"] == "cgroup":
        wait_until(lambda: dead(daemon), 10, "the job's daemon (pid %d) to be killed with its attempt" % daemon)
        folder = os.path.join(iso["cgroup_root"], "job-%d-1" % job)
        wait_until(lambda: not os.path.exists(folder), 10, "the attempt's cgroup %s to be removed" % folder)
    else:
        os.kill(daemon, signal.SIGKILL)  # nothing here claims to kill it

    # Recovery: the attempt dies while atomd is down; an impostor names its ranks.app.
    job = submit_as_nobody(d, d.spec("sleep-b", gpus=1))
    info = d.wait_state(job, "running")
    app = os.path.join(info["attempts"][0]["run_dir"], "ranks.app")
    d.kill9()
    d.kill_leftovers()  # the attempt's mpirun and worker: every process naming the test folder
    impostor = subprocess.Popen(["tail", "-f", app], user=NOBODY, group=NOBODY, extra_groups=[],
                                stdout=subprocess.DEVNULL)
    try:
        d.start()
        if iso["kind"] == "cgroup":
            info = d.wait_state(job, "running")
            wait_until(lambda: d.job(job)["job"]["attempts"] >= 2, 10, "the job to be requeued")
            check("re-adopted" not in d.log(), "atomd adopted a process that names ranks.app:\n%s" % d.log())
        rc, out, err = d.ctl("cancel", str(job))
        check(rc == 0, "cancel: %s" % err)
        d.wait_state(job, "cancelled")
    finally:
        impostor.kill()
        impostor.wait()


os.environ[SECRET] = "root's own"
harness.run(test, harness.parse_args())
