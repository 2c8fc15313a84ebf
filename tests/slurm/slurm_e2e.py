#!/usr/bin/python3
"""tests/slurm/slurm_e2e.py: atom on a real Slurm cluster started by the test itself.

Every case starts a fresh private cluster (deploy/slurm/start-local.sh: munged, slurmctld, four
slurmd virtual nodes n1..n4 with eight emulated GPUs each) in its own folder and stops it by PID
(stop-local.sh) whatever happens. Cases:

  srun      an 8-rank gpt-tiny job (tensor 2 x data 4, two ranks per node) across the four
            virtual nodes through deploy/slurm/atom-srun: trains to its last step, every rank
            reports, one checkpoint per `every` steps, Slurm ran it on n[1-4].
  refusals  allocations that break atom's rules are refused with a sentence saying why: a node's
            tasks not a multiple of the tensor size, cyclic distribution, an uneven allocation.
  requeue   the sbatch template: the job reaches its time limit, its workers checkpoint on the
            forwarded USR1, the job requeues itself, the rerun (SLURM_RESTART_COUNT=1) restores the
            checkpoint and goes on; then scancel stops it cleanly (checkpoint, no requeue,
            CANCELLED).

usage: slurm_e2e.py CASE    (ATOM_SOURCE_DIR and ATOM_BUILD_DIR come from ctest's environment)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SOURCE = os.environ.get("ATOM_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("ATOM_BUILD_DIR", os.path.join(SOURCE, "build"))
BIN = os.path.join(BUILD, "bin")
DEPLOY = os.path.join(SOURCE, "deploy", "slurm")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


SPEC = """name: {name}
resources: {{gpus: {gpus}, gpus_per_node: {per_node}, time_limit: {limit}, device: cpu}}
parallelism: {{tensor: {tensor}, data: {data}}}
model: {{preset: gpt-tiny, layers: {layers}}}
data: {{path: /usr/share/common-licenses/GPL-3, format: bytes}}
training: {{steps: {steps}, global_batch: {batch}, micro_batch: 2, lr: 3e-4, warmup: 1, seed: 1}}
checkpoint: {{dir: {ckpt}, every: {every}, keep: 2, async: false}}
"""


def write_spec(path, name, tensor, data, per_node, steps, every, ckpt, limit="10m", layers=2):
    """gpt-tiny, cut to 2 layers where a test is about Slurm rather than the model."""
    with open(path, "w") as f:
        f.write(SPEC.format(name=name, gpus=tensor * data, per_node=per_node, limit=limit,
                            tensor=tensor, data=data, steps=steps, batch=2 * data, ckpt=ckpt,
                            every=every, layers=layers))


class Cluster:
    """A private Slurm cluster in base, started fresh and stopped by PID."""

    def __init__(self, base):
        self.base = base
        self.conf = os.path.join(base, "etc", "slurm.conf")

    def __enter__(self):
        t0 = time.monotonic()
        r = subprocess.run(["bash", os.path.join(DEPLOY, "start-local.sh"), self.base],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.stop()
            raise Failure("start-local.sh failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))
        print("cluster up in %.2f s: %s" % (time.monotonic() - t0, r.stdout.strip()))
        return self

    def env(self):
        env = dict(os.environ)
        env["SLURM_CONF"] = self.conf
        env["PATH"] = BIN + ":" + env.get("PATH", "/usr/bin:/bin")
        return env

    def run(self, argv, timeout=120, **kw):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=self.env(), **kw)

    def stop(self):
        t0 = time.monotonic()
        r = subprocess.run(["bash", os.path.join(DEPLOY, "stop-local.sh"), self.base],
                           capture_output=True, text=True, timeout=120)
        print("cluster stopped in %.2f s (status %d) %s" % (time.monotonic() - t0, r.returncode,
                                                           r.stderr.strip()))
        return r.returncode

    def __exit__(self, *exc):
        rc = self.stop()
        if rc != 0 and exc[0] is None:
            raise Failure("stop-local.sh could not stop every process of the cluster")
        return False


def jobcomp(cluster):
    """The finished jobs as the jobcomp/filetxt plugin wrote them: one dict per line."""
    path = os.path.join(cluster.base, "log", "jobcomp.txt")
    jobs = []
    if os.path.exists(path):
        for line in open(path):
            jobs.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return jobs


def case_srun(work):
    ckpt = os.path.join(work, "ckpt")
    run_dir = os.path.join(work, "run")
    os.makedirs(run_dir)
    spec = os.path.join(work, "job.yaml")
    write_spec(spec, "slurm-srun", tensor=2, data=4, per_node=2, steps=6, every=3, ckpt=ckpt, layers=4)
    with Cluster(os.path.join(work, "cluster")) as cluster:
        dry = cluster.run([os.path.join(BIN, "atom-srun"), "--dry-run", spec])
        check(dry.returncode == 0, "atom-srun --dry-run failed: " + dry.stderr)
        argv = dry.stdout.split("\n")
        for want in ["srun", "--nodes=4", "--ntasks-per-node=2", "--distribution=block",
                     "--mpi=pmix", "--kill-on-bad-exit=1", "--slurm", "--spec", spec]:
            check(want in argv, "atom-srun's srun command lacks %s: %s" % (want, argv))
        check("--gpus-per-task=1" not in argv, "a device: cpu job asked for GPUs: %s" % argv)

        t0 = time.monotonic()
        r = cluster.run([os.path.join(BIN, "atom-srun"), "--run-dir", run_dir, spec], timeout=150)
        print("8 ranks on 4 virtual nodes: %.1f s" % (time.monotonic() - t0))
        # With --run-dir every rank writes its own log there (srun --output=RUN/rank-%t.log).
        rank_logs = [os.path.join(run_dir, "rank-%d.log" % rank) for rank in range(8)]
        out = r.stdout + r.stderr + "".join(open(p).read() for p in rank_logs if os.path.exists(p))
        check(r.returncode == 0, "atom-srun exited %d:\n%s" % (r.returncode, out[-3000:]))
        check(all(os.path.exists(p) for p in rank_logs), "a rank log is missing: %s" % os.listdir(run_dir))
        check("finished after step 6 of 6" in open(rank_logs[0]).read() and
              "finished after step 6 of 6" not in r.stdout, "rank 0's lines are in rank-0.log only")
        check("step 6/6" in out and "finished after step 6 of 6" in out,
              "the job did not reach its last step:\n" + out[-3000:])
        # Every rank sent heartbeats for the same Slurm job and attempt 0.
        job_ids = set()
        for rank in range(8):
            path = os.path.join(run_dir, "heartbeat.rank-%d.jsonl" % rank)
            check(os.path.exists(path), "rank %d wrote no heartbeat (%s)" % (rank, path))
            last = json.loads(open(path).read().strip().split("\n")[-1])
            check(last["step"] == 6, "rank %d's last heartbeat is step %s" % (rank, last["step"]))
            check(last["attempt"] == 0, "rank %d reports attempt %s" % (rank, last["attempt"]))
            job_ids.add(last["job_id"])
        check(len(job_ids) == 1 and re.fullmatch(r"slurm-\d+", job_ids.pop()),
              "the ranks disagree on the job id or it is not slurm-N")
        ckpts = sorted(f for f in os.listdir(ckpt) if f.endswith(".h5"))
        check(ckpts == ["ckpt-0000000003.h5", "ckpt-0000000006.h5"],
              "checkpoints after 6 steps every 3: %s" % ckpts)
        jobs = jobcomp(cluster)
        check(len(jobs) == 1 and jobs[0].get("NodeList") == "n[1-4]" and
              jobs[0].get("NodeCnt") == "4" and jobs[0].get("JobState") == "COMPLETED",
              "Slurm's record of the job: %s" % jobs)


def case_refusals(work):
    spec = os.path.join(work, "tp2.yaml")
    write_spec(spec, "slurm-refuse", tensor=2, data=2, per_node=2, steps=2, every=10,
               ckpt=os.path.join(work, "ckpt"))
    worker = [os.path.join(BIN, "atom-worker"), "--slurm", "--spec", spec]
    # Inside a 4-node allocation, a spec without gpus_per_node gets world / nodes tasks per node:
    # 4 ranks on 4 nodes is one per node, which splits every tensor group.
    spec0 = os.path.join(work, "tp2-any.yaml")
    write_spec(spec0, "slurm-refuse", tensor=2, data=2, per_node=0, steps=2, every=10,
               ckpt=os.path.join(work, "ckpt"))
    env = dict(os.environ, SLURM_JOB_NUM_NODES="4")
    r = subprocess.run([os.path.join(BIN, "atom-srun"), "--dry-run", spec0], env=env,
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "1 tasks per node is not a multiple of the tensor-parallel size 2"
          in r.stderr, "atom-srun accepted one task per node for tensor 2 (%d): %s" %
          (r.returncode, r.stderr))
    env["SLURM_JOB_NUM_NODES"] = "3"
    r = subprocess.run([os.path.join(BIN, "atom-srun"), "--dry-run", spec0], env=env,
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "do not split evenly over the allocation's 3 nodes" in r.stderr,
          "atom-srun accepted 4 ranks on 3 nodes (%d): %s" % (r.returncode, r.stderr))
    with Cluster(os.path.join(work, "cluster")) as cluster:
        common = ["srun", "--mpi=pmix", "--kill-on-bad-exit=1"]
        # One task on each of four nodes: every tensor-parallel group would cross nodes.
        r = cluster.run(common + ["--nodes=4", "--ntasks-per-node=1"] + worker, timeout=60)
        out = r.stdout + r.stderr
        check(r.returncode != 0 and "not a multiple of the tensor-parallel size 2" in out,
              "one task per node for tensor 2 was not refused (%d):\n%s" % (r.returncode,
                                                                            out[-2000:]))
        # Cyclic distribution: rank order no longer follows the nodes.
        r = cluster.run(common + ["--nodes=2", "--ntasks-per-node=2", "--distribution=cyclic"] + worker,
                        timeout=60)
        out = r.stdout + r.stderr
        check(r.returncode != 0 and "--distribution=block" in out,
              "cyclic distribution was not refused (%d):\n%s" % (r.returncode, out[-2000:]))
        # A task that sees two GPUs.
        r = cluster.run(common + ["--nodes=2", "--ntasks-per-node=2", "--gpus-per-task=2"] +
                        worker, timeout=60)
        out = r.stdout + r.stderr
        check(r.returncode != 0 and "sees 2 GPUs" in out,
              "two GPUs per task were not refused (%d):\n%s" % (r.returncode, out[-2000:]))


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise Failure("timed out after %d s waiting for %s" % (timeout, what))


def squeue_states(cluster, job):
    r = cluster.run(["squeue", "--json", "--jobs", str(job)], timeout=30)
    if r.returncode != 0:
        return []
    return [j["job_state"] for j in json.loads(r.stdout).get("jobs", [])]


def case_requeue(work):
    ckpt = os.path.join(work, "ckpt")
    spec = os.path.join(work, "job.yaml")
    out_path = os.path.join(work, "job.out")
    # Far more steps than fit in the one-minute limit; checkpoints only when asked to stop.
    write_spec(spec, "slurm-requeue", tensor=2, data=4, per_node=2, steps=100000, every=100000,
               ckpt=ckpt, limit="1m")
    with Cluster(os.path.join(work, "cluster")) as cluster:
        r = cluster.run([os.path.join(BIN, "atom-srun"), "--sbatch-options", spec])
        check(r.returncode == 0, "atom-srun --sbatch-options: " + r.stderr)
        alloc = r.stdout.split()
        check("--time=1" in alloc and "--nodes=4" in alloc and
              "--export=ALL,ATOM_MAX_REQUEUES=3" in alloc, "allocation: %s" % alloc)
        # USR1 55 s before a one-minute limit: at most about 35 s in (slurmctld looks every 30 s).
        r = cluster.run(["sbatch", "--parsable"] + alloc +
                        ["--signal=B:USR1@55", "--output=" + out_path,
                         os.path.join(DEPLOY, "atom.sbatch"), spec], cwd=work)
        check(r.returncode == 0, "sbatch: " + r.stderr)
        job = int(r.stdout.strip().split(";")[0])

        def text():
            return open(out_path).read() if os.path.exists(out_path) else ""

        t0 = time.monotonic()
        restored = wait_for(lambda: re.search(r"restored \S+ckpt-(\d+)\.h5: continuing after "
                                              r"step (\d+)", text()), 150,
                            "the requeued run to restore its checkpoint")
        print("time limit -> checkpoint -> requeue -> restored: %.1f s" % (time.monotonic() - t0))
        out = text()
        first = re.search(r"stopped on request after step (\d+)", out)
        check(first, "the first run did not stop on request:\n" + out[-3000:])
        check("restart 0: time limit near" in out and "restart 0: checkpoint written: requeueing"
              in out and "restart 1: starting" in out,
              "the batch shell did not forward USR1 and requeue:\n" + out[-3000:])
        stopped_at = int(first.group(1))
        check(stopped_at > 0 and int(restored.group(2)) == stopped_at,
              "stopped after step %d but resumed after step %s" % (stopped_at, restored.group(2)))

        # scancel: the workers checkpoint and stop, the job is not requeued.
        r = cluster.run(["scancel", str(job)])
        check(r.returncode == 0, "scancel: " + r.stderr)
        wait_for(lambda: not any(s in ("RUNNING", "PENDING", "COMPLETING", "REQUEUED")
                                 for s in squeue_states(cluster, job)), 60,
                 "the cancelled job to end")
        r = cluster.run(["scontrol", "show", "job", "-o", str(job)])
        check("JobState=CANCELLED" in r.stdout, "after scancel: " + r.stdout)
        out = text()
        second = re.findall(r"stopped on request after step (\d+)", out)
        check(len(second) == 2 and int(second[1]) > stopped_at,
              "the rerun did not stop on request after going on:\n" + out[-3000:])
        check("restart 1: cancelled" in out and "restart 1: checkpoint written" not in out,
              "the cancelled run was handled as a time limit:\n" + out[-3000:])
        latest = os.readlink(os.path.join(ckpt, "latest"))
        check(latest.endswith("ckpt-%010d.h5" % int(second[1])),
              "latest checkpoint is %s, the rerun stopped after step %s" % (latest, second[1]))
        check(not any(f.startswith(".") or f.endswith(".tmp") for f in os.listdir(ckpt)),
              "a torn checkpoint was left behind: %s" % os.listdir(ckpt))


def case_launcher(work):
    driver = os.path.join(BUILD, "tests", "slurm", "launch_slurm_driver")
    with Cluster(os.path.join(work, "cluster")) as cluster:
        env = cluster.env()
        env["ATOM_SBATCH_TEMPLATE"] = os.path.join(DEPLOY, "atom.sbatch")
        env["ATOM_SRUN"] = os.path.join(BIN, "atom-srun")
        env["ATOM_WORKER"] = os.path.join(BIN, "atom-worker")

        def drive(mode, steps):
            run_dir = os.path.join(work, mode)
            os.makedirs(run_dir)
            spec = os.path.join(work, mode + ".yaml")
            write_spec(spec, "slurm-launcher-" + mode, tensor=2, data=4, per_node=2, steps=steps,
                       every=3, ckpt=os.path.join(work, mode + "-ckpt"))
            t0 = time.monotonic()
            r = subprocess.run([driver, mode, run_dir, spec], env=env, capture_output=True,
                               text=True, timeout=200)
            print("launcher %s: %.1f s" % (mode, time.monotonic() - t0))
            # The batch script's lines (launcher.log), then rank 0's (rank-0.log).
            out = ""
            for name in ("launcher.log", "rank-0.log"):
                path = os.path.join(run_dir, name)
                out += open(path).read() if os.path.exists(path) else ""
            check(r.returncode == 0, "launch_slurm_driver %s failed (%d): %s\n%s" %
                  (mode, r.returncode, r.stderr, out[-2000:]))
            for name in ("plan.json", "spec.yaml"):
                check(os.path.exists(os.path.join(run_dir, name)), "%s: no %s" % (mode, name))
            lines = r.stdout.strip().split("\n")
            check(len(lines) == 2 and lines[1].startswith("slurm job "), "%s: %r" % (mode, r.stdout))
            job = lines[1][len("slurm job "):]  # the launcher keeps the id (atomd: in its store)
            state = cluster.run(["scontrol", "show", "job", "-o", job]).stdout
            return lines[0], out, state

        r = subprocess.run([driver, "nodes"], env=env, capture_output=True, text=True, timeout=30)
        check(r.returncode == 0 and r.stdout.split("\n")[:4] ==
              ["n%d 8 8 1" % i for i in range(1, 5)],
              "atomd's view of the cluster from sinfo --json: %s %s" % (r.stdout, r.stderr))
        # A drained node is not offered to atomd.
        r = cluster.run(["scontrol", "update", "NodeName=n3", "State=DRAIN", "Reason=test"])
        check(r.returncode == 0, "scontrol update: " + r.stderr)
        r = subprocess.run([driver, "nodes"], env=env, capture_output=True, text=True, timeout=30)
        check(r.stdout.split() == "n1 8 8 1 n2 8 8 1 n4 8 8 1".split(),
              "after draining n3: %s" % r.stdout)
        r = cluster.run(["scontrol", "update", "NodeName=n3", "State=RESUME"])
        check(r.returncode == 0, "scontrol update: " + r.stderr)
        code, out, state = drive("run", 6)
        check(code == "exit 0" and "finished after step 6 of 6" in out,
              "run through the launcher: %s\n%s" % (code, out[-2000:]))
        # The workers report under atomd's job id and attempt, not Slurm's.
        for rank in range(8):
            path = os.path.join(work, "run", "heartbeat.rank-%d.jsonl" % rank)
            check(os.path.exists(path), "launcher run: rank %d wrote no heartbeat" % rank)
            last = json.loads(open(path).read().strip().split("\n")[-1])
            check(last["job_id"] == "j-driver" and last["attempt"] == 0 and last["step"] == 6,
                  "launcher run: rank %d's last heartbeat: %s" % (rank, last))
        check("NodeList=n[1-4]" in state and "JobState=COMPLETED" in state, "run: " + state)
        code, out, state = drive("stop", 100000)
        check(code == "exit 75" and "stopped on request" in out and
              "requeueing" not in out, "SIGUSR1 through the launcher: %s\n%s" % (code, out[-2000:]))
        check(os.path.exists(os.path.join(work, "stop-ckpt", "latest")),
              "SIGUSR1 through the launcher left no checkpoint")
        # A stop is not a cancel: the job ends by itself, with the workers' status.
        check("JobState=CANCELLED" not in state and "ExitCode=75:0" in state,
              "SIGUSR1 through the launcher: " + state)
        code, out, state = drive("cancel", 100000)
        # scancel's SIGTERM reaches the workers too: they finish the step, checkpoint and exit 75.
        check(code == "exit 75" and "JobState=CANCELLED" in state and "stopped on request" in out,
              "SIGTERM through the launcher: %s, %s\n%s" % (code, state, out[-2000:]))


CASES = {"srun": case_srun, "refusals": case_refusals, "requeue": case_requeue,
         "launcher": case_launcher}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: slurm_e2e.py %s" % "|".join(CASES), file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="atom-slurm-%s-" % sys.argv[1], dir="/tmp")
    # Slurm runs the tasks as root here; keep the folder reachable for every tool.
    os.chmod(work, 0o755)
    try:
        CASES[sys.argv[1]](work)
    except Failure as e:
        print("FAIL: %s (files kept in %s)" % (e, work), file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
