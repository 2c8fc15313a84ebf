"""atomd with its Slurm launcher on a real local Slurm cluster (deploy/slurm/start-local.sh: four
virtual nodes n1..n4 of 8 emulated GPUs; stopped by PID whatever happens) and the real atom-worker:
the cluster comes from sinfo; a job goes through sbatch, its heartbeats reach atomd, it ends done;
a job is cancelled through scancel; a running job survives a SIGKILL of atomd (re-adopted from
Slurm, not submitted twice) and ends done; with atomd's TCP port on (the cluster's munged), a job's
ranks on the Slurm nodes, which are not atomd's host, send their heartbeats over TCP. The Slurm job
id atomd signals is the one sbatch gave it, whatever the job's owner writes (issue 14)."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import harness
from harness import check, as_nobody

SOURCE = os.environ.get("ATOM_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEPLOY = os.path.join(SOURCE, "deploy", "slurm")
NOBODY = 65534
CLUSTER_DIR = None  # start-local.sh's folder (its munged's socket is under munge/)
MODEL = "model:\n  layers: 2\n  channels: 64\n  heads: 2\n  vocab: 256\n  context: 32\n"


def spec(d, name, steps):
    return d.spec(name, gpus=2, steps=steps, resources="  gpus_per_node: 1\n  device: cpu\n",
                  extra=MODEL + "checkpoint:\n  dir: ckpt-%s\n  every: 10\n  async: false\n" % name)


def rewritten_id(d):
    """Issue 14: the owner of a job writes another user's Slurm job id wherever the attempt's id
    may be kept in their reach, then cancels their own job: root's scancel and squeue follow the id
    sbatch gave atomd, and the other user's job runs on."""
    r = subprocess.run(["sbatch", "--parsable", "--job-name=victim", "--output=/dev/null", "--wrap", "sleep 300"],
                       capture_output=True, text=True)
    check(r.returncode == 0, "sbatch of root's own job: %r" % r.stderr)
    victim = r.stdout.strip().split(";")[0]
    path = d.spec("slurm-rewrite", gpus=2, steps=100000, resources="  gpus_per_node: 1\n  device: cpu\n",
                  extra=MODEL)
    rc, out, err = d.ctl("submit", path, "--json", user=NOBODY)
    check(rc == 0, "nobody's submit: %r" % err)
    job = json.loads(out)["job"]
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) > 0, 60, "nobody's long job to train")
    a = d.job(job)["attempts"][0]

    def rewrite():
        for folder in {a["run_dir"], a.get("output_dir", a["run_dir"])}:
            try:  # a file of root's in a folder of theirs: replaced, not written
                with open(os.path.join(folder, "slurm.job.new"), "w") as f:
                    f.write(victim + "\n")
                os.replace(os.path.join(folder, "slurm.job.new"), os.path.join(folder, "slurm.job"))
            except OSError:
                pass  # not the owner's folder
    as_nobody(rewrite)
    rc, out, err = d.ctl("cancel", str(job), user=NOBODY)
    check(rc == 0, "nobody cancels their job: %r" % err)
    d.wait_state(job, "cancelled", timeout=60)
    r = subprocess.run(["scontrol", "show", "job", "-o", victim], capture_output=True, text=True)
    subprocess.run(["scancel", victim], capture_output=True)
    check("JobState=RUNNING" in r.stdout or "JobState=PENDING" in r.stdout,
          "root's own Slurm job runs on: %r" % r.stdout[:300])


def test(d):
    nodes = {n["name"] for n in d.request({"op": "nodes"})["nodes"]}
    check(nodes == {"n1", "n2", "n3", "n4"}, "the cluster from sinfo: %s" % nodes)
    job = d.submit(spec(d, "slurm-ok", 20))
    info = d.wait_state(job, "done", timeout=90)
    check(info["job"].get("step") == 20, "heartbeats reached atomd: %s" % info["job"])
    check(info["attempts"][0].get("slurm_job", "").isdigit(), "submitted through sbatch: %s" % info["attempts"])
    rc, out, err = d.ctl("logs", str(job))
    head, sep, tail = out.partition("---- launcher.log ----\n")
    check(rc == 0 and "finished after step 20 of 20" in head and "atom.sbatch: job" in tail,
          "logs: rank 0's lines, then the batch script's: %r" % out[-500:])
    rc, out, err = d.ctl("logs", str(job), "--rank", "1")
    out_dir = info["attempts"][0]["output_dir"]
    check(rc == 0 and out == open(os.path.join(out_dir, "rank-1.log")).read() and "finished after" not in out,
          "logs --rank 1 is rank 1's file: %r" % out[-500:])

    # Another user's job runs as that user on the Slurm nodes (sbatch --uid), not as atomd's root.
    path = d.spec("slurm-nobody", gpus=2, steps=5, resources="  gpus_per_node: 1\n  device: cpu\n", extra=MODEL)
    rc, out, err = d.ctl("submit", path, "--json", user=NOBODY)
    check(rc == 0, "nobody's submit: %r" % err)
    job = json.loads(out)["job"]
    info = d.wait_state(job, "done", timeout=90)
    out_dir = info["attempts"][0]["output_dir"]
    hb_file = os.path.join(out_dir, "heartbeat.rank-0.jsonl")
    check(os.path.exists(hb_file) and os.stat(hb_file).st_uid == NOBODY,
          "the workers of nobody's Slurm job ran as nobody (heartbeat file owner)")
    slurm_id = info["attempts"][0]["slurm_job"]
    r = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True)
    check("UserId=nobody(65534)" in r.stdout, "Slurm ran nobody's job as nobody: %r" % r.stdout[:300])
    rewritten_id(d)

    job = d.submit(spec(d, "slurm-cancel", 100000))
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) > 0, 60, "the long job to train")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, err)
    d.wait_state(job, "cancelled", timeout=60)

    # A job that outlives the restart whatever the machine's speed (400 steps ended before atomd
    # was back on a quiet machine): re-adopted, followed, then cancelled through Slurm.
    job = d.submit(spec(d, "slurm-adopt", 100000))
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) > 0, 60, "the job to train")
    d.kill9()
    d.start()
    check("re-adopted (Slurm)" in d.log(), "atomd re-adopted the Slurm job")
    step = d.job(job)["job"].get("step", 0)
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) > step, 60, "the re-adopted job's progress")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, err)
    info = d.wait_state(job, "cancelled", timeout=60)
    check(len(info["attempts"]) == 1, "not submitted twice: %s" % info["attempts"])

    # atomd dies right after sbatch, before the Slurm job id is in its store: the restarted atomd
    # finds the job by its name (atom-ID, of the job's user) and adopts it, not submitting twice
    d.stop()
    d.env["ATOMD_FAULT"] = "after-spawn"
    d.start()
    d.ctl("submit", spec(d, "slurm-fault", 100000))  # no answer: atomd dies first
    d.proc.wait(timeout=30)
    check(d.proc.returncode == 99, "the fault was injected (exit %s)" % d.proc.returncode)
    del d.env["ATOMD_FAULT"]
    d.start()
    job = [j["id"] for j in d.request({"op": "queue"})["jobs"] if j["name"] == "slurm-fault"][0]
    info = d.job(job)
    check(info["job"]["state"] == "running" and len(info["attempts"]) == 1 and info["attempts"][0].get("slurm_job"),
          "adopted by its name: %s" % info)
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, err)
    d.wait_state(job, "cancelled", timeout=60)

    # atomd's TCP port: n1..n4 are not atomd's host, so the ranks send heartbeats over TCP, each
    # in a credential of the cluster's munged (metrics count them: atomd restarted, so only these)
    d.stop()
    metrics_port = harness.free_port()
    with open(os.path.join(d.tmp, "atomd.conf"), "a") as f:
        f.write("tcp_listen = 127.0.0.1:%d\nmunge_socket = %s\nmetrics_port = %d\n"
                % (harness.free_port(), os.path.join(CLUSTER_DIR, "munge", "munge.socket"), metrics_port))
    d.start()
    job = d.submit(spec(d, "slurm-tcp", 20))
    info = d.wait_state(job, "done", timeout=90)
    check(info["job"].get("step") == 20, "heartbeats over TCP reached atomd: %s" % info["job"])
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=10) as r:
        text = r.read().decode()
    hb = [line for line in text.splitlines() if line.startswith('atom_tcp_messages_total{kind="heartbeat"}')]
    check(hb and int(hb[0].split()[-1]) > 0, "heartbeats counted on the TCP port: %s" % hb)


def main():
    args = harness.parse_args()
    base = tempfile.mkdtemp(prefix="atomd-slurm-")
    os.chmod(base, 0o755)  # munged refuses a socket folder others cannot reach
    cluster = os.path.join(base, "cluster")
    global CLUSTER_DIR
    CLUSTER_DIR = cluster
    r = subprocess.run(["bash", os.path.join(DEPLOY, "start-local.sh"), cluster], capture_output=True, text=True,
                       timeout=60)
    try:
        check(r.returncode == 0, "start-local.sh: %s%s" % (r.stdout, r.stderr))
        bin_dir = os.path.dirname(os.path.abspath(args.atomd))
        # nobody's job runs the wrapper and the template: copies it can reach (the build may sit
        # in a home folder of mode 0700); the worker is copied by the harness.
        shared = os.path.join(base, "bin")
        os.mkdir(shared, 0o755)
        for path in (os.path.join(bin_dir, "atom-srun"), os.path.join(DEPLOY, "atom.sbatch")):
            os.chmod(shutil.copy(path, shared), 0o755)
        extra_env = {"SLURM_CONF": os.path.join(cluster, "etc", "slurm.conf"),
                     "PATH": bin_dir + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
                     "ATOM_SBATCH_TEMPLATE": os.path.join(shared, "atom.sbatch"),
                     "ATOM_SRUN": os.path.join(shared, "atom-srun")}
        os.environ.update(extra_env)  # for sinfo in atomd and for the harness's clients
        harness.run(test, args, config="launcher = slurm\n")
    finally:
        subprocess.run(["bash", os.path.join(DEPLOY, "stop-local.sh"), cluster], capture_output=True, timeout=120)


if __name__ == "__main__":
    main()
    print("ok")
