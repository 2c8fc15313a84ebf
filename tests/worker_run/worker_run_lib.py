"""tests/worker_run/worker_run_lib.py: what the atom-worker end-to-end tests share: a small job
spec on a real text, running atom-worker under mpirun, and reading what a run leaves behind
(train.jsonl, heartbeat.rank-N.jsonl, checkpoints)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

BUILD = os.environ.get("ATOM_BUILD_DIR", "")
WORKER = os.path.join(BUILD, "bin", "atom-worker")
MPIEXEC = os.environ.get("ATOM_MPIEXEC", "mpirun")
TEXT = "/usr/share/common-licenses/GPL-3"

# Small enough that four ranks on two busy cores take a few seconds, big enough to learn
# English bytes: loss starts near ln(256) = 5.55.
TINY_MODEL = {"layers": 2, "channels": 128, "heads": 4, "vocab": 256, "context": 64}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def workdir(name):
    d = tempfile.mkdtemp(prefix="atom-%s-" % name)
    return d


def write_spec(folder, tensor, data, steps, global_batch, micro_batch, lr=3e-3, warmup=5,
               ckpt_dir="", every=0, async_ckpt=False, seed=7, model=None, precision=None,
               training=None, init=None, data_path=TEXT, data_format="bytes"):
    """training: more training keys (a dict); init: the init section's keys (a dict)."""
    model = model or TINY_MODEL
    lines = [
        "name: worker-test",
        "resources:",
        "  gpus: %d" % (tensor * data),
        "  device: cpu",
        "parallelism:",
        "  tensor: %d" % tensor,
        "  data: %d" % data,
        "model:",
    ]
    lines += ["  %s: %d" % (k, v) for k, v in model.items()]
    lines += [
        "data:",
        "  path: %s" % data_path,
        "  format: %s" % data_format,
        "training:",
        "  steps: %d" % steps,
        "  global_batch: %d" % global_batch,
        "  micro_batch: %d" % micro_batch,
        "  lr: %g" % lr,
        "  warmup: %d" % warmup,
        "  weight_decay: 0.0",
        "  grad_clip: 1.0",
        "  seed: %d" % seed,
    ]
    if precision:
        lines += ["  precision: %s" % precision]
    lines += ["  %s: %s" % (k, v) for k, v in (training or {}).items()]
    if init:
        lines += ["init:"] + ["  %s: %s" % (k, v) for k, v in init.items()]
    if ckpt_dir:
        lines += ["checkpoint:", "  dir: %s" % ckpt_dir, "  every: %d" % every,
                  "  keep: 0", "  async: %s" % ("true" if async_ckpt else "false")]
    path = os.path.join(folder, "job.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def worker_cmd(np, spec, run_dir, extra=()):
    return [MPIEXEC, "-np", str(np), "--oversubscribe", WORKER, "--spec", spec,
            "--run-dir", run_dir] + list(extra)


def run(np, spec, run_dir, extra=(), timeout=90):
    """Runs the job to its end; a job still running after timeout seconds is a failure (a hang),
    and mpirun goes down with every rank (its own session)."""
    proc = subprocess.Popen(worker_cmd(np, spec, run_dir, extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        fail("atom-worker still running after %d s (hung?)" % timeout)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_session(proc):
    """Kills mpirun and every rank (started with start_new_session=True); returns its output."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass  # already gone
    out, err = proc.communicate()
    sys.stdout.write(out)
    sys.stderr.write(err)


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def train_log(run_dir):
    return read_jsonl(os.path.join(run_dir, "train.jsonl"))


def heartbeats(run_dir, rank):
    return read_jsonl(os.path.join(run_dir, "heartbeat.rank-%d.jsonl" % rank))


def raw_train_lines(run_dir):
    """The JSON lines as text, keyed by step: compares numbers exactly as written."""
    out = {}
    for d in train_log(run_dir):
        out[d["step"]] = d
    return out


def cleanup(*dirs):
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
