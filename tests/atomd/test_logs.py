"""Per-rank logs (issue 6): every attempt's output folder holds rank-R.log for each rank (its
stdout and stderr, untagged) and the attempt's folder launcher.log (mpirun's own messages, atomd's
file); `atomctl logs JOB --rank N` shows rank N's file, `atomctl logs JOB` rank 0's and, once the
attempt has ended, the launcher's lines after it; a rank's crash message lands in its own file.
The owner's output folder is theirs to change (issue 14): a log they swapped for a link is not
followed, not even opened by root (a link to a FIFO only root can reach is not opened: a writer
waiting on it stays blocked), and a FIFO is refused at once. Real atomd and mpirun, stand-in worker
(fake_worker.c)."""
import os
import stat
import subprocess
import tempfile
import threading
import time

import harness
from harness import check, as_nobody

NOBODY = 65534


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def test(d):
    job = d.submit(d.spec("ok-two", gpus=2, steps=12))
    info = d.wait_state(job, "done")
    run_dir, out_dir = info["attempts"][0]["run_dir"], info["attempts"][0]["output_dir"]
    for r in (0, 1):
        text = read(os.path.join(out_dir, "rank-%d.log" % r))
        lines = text.splitlines()
        check(len(lines) == 12 and all(l.startswith("rank %d attempt 1 step " % r) for l in lines),
              "rank-%d.log holds that rank's 12 lines, untagged: %r" % (r, text[:300]))
    check(os.path.exists(os.path.join(run_dir, "launcher.log")), "the attempt folder holds launcher.log")
    rc, out, err = d.ctl("logs", str(job), "--rank", "1")
    check(rc == 0 and out == read(os.path.join(out_dir, "rank-1.log")), "logs --rank 1 is rank 1's file: %r %r" % (out, err))
    rc, out, err = d.ctl("logs", str(job))
    check(rc == 0 and "rank 0 attempt 1 step 12\n" in out and "rank 1" not in out, "logs shows rank 0: %r %r" % (out, err))
    rc, out, err = d.ctl("logs", str(job), "-f", "--rank", "0")
    check(rc == 0 and out.endswith("rank 0 attempt 1 step 12\n"), "logs -f --rank 0 ends: %r %r" % (out[-200:], err))
    rc, out, err = d.ctl("logs", str(job), "--attempt", "2", "-f")
    check(rc == 1 and "no attempt 2" in err, "logs --attempt 2 of a job with one: %r" % err)
    rc, out, err = d.ctl("logs", str(job), "--rank", "2")
    check(rc == 1 and "no rank 2" in err and "0 to 1" in err, "logs --rank 2 of a 2-rank job: %r" % err)

    # the last rank crashes (SIGSEGV) at step 3: its message is in its own file, mpirun's in launcher.log
    job = d.submit(d.spec("crash-two", gpus=2, steps=200, extra="restart:\n  max_restarts: 0\n"))
    info = d.wait_state(job, "failed")
    run_dir, out_dir = info["attempts"][0]["run_dir"], info["attempts"][0]["output_dir"]
    rank1, rank0 = read(os.path.join(out_dir, "rank-1.log")), read(os.path.join(out_dir, "rank-0.log"))
    launcher = read(os.path.join(run_dir, "launcher.log"))
    check("rank 1 crashing at step 3\n" in rank1 and "crashing" not in rank0, "the crash is in rank-1.log: %r" % rank1)
    check("rank 1" in launcher and "signal 11" in launcher, "mpirun's message in launcher.log: %r" % launcher)
    rc, out, err = d.ctl("logs", str(job), "--rank", "1")
    check(rc == 0 and "rank 1 crashing at step 3" in out, "logs --rank 1 shows the crash: %r %r" % (out, err))
    rc, out, err = d.ctl("logs", str(job))
    head, sep, tail = out.partition("---- launcher.log ----\n")
    check(rc == 0 and sep and "rank 0 attempt 1 step 1\n" in head and "rank 1" not in head and "signal 11" in tail,
          "logs: rank 0, then the launcher's lines: %r %r" % (out[-600:], err))
    rc, out2, err = d.ctl("logs", str(job), "-f")
    check(rc == 0 and out2 == out, "logs -f of an ended attempt gives the same text: %r %r" % (out2[-300:], err))

    # following a running job: rank 0's lines as they come, each once, then the launcher's at the end
    job = d.submit(d.spec("sleep-follow", gpus=2))
    follower = subprocess.Popen([d.ctl_path, "logs", str(job), "-f", "--socket", d.socket], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=d.env)
    harness.wait_until(lambda: d.job(job)["job"].get("step", 0) >= 10, 30, "the followed job to pass step 10")
    rc, out, err = d.ctl("cancel", str(job))
    check(rc == 0, "cancel: %r" % err)
    try:
        out, err = follower.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        follower.kill()
        harness.fail("logs -f did not end with the cancelled job")
    run_dir, out_dir = d.job(job)["attempts"][0]["run_dir"], d.job(job)["attempts"][0]["output_dir"]
    head, sep, tail = out.partition("---- launcher.log ----\n")
    check(follower.returncode == 0 and head == read(os.path.join(out_dir, "rank-0.log")) and
          head.count("rank 0 attempt 1 step 10\n") == 1, "logs -f of a running job: %r %r" % (out[-400:], err))
    check(tail == read(os.path.join(run_dir, "launcher.log")), "then launcher.log: %r" % tail)

    # another user's job: the output files are theirs, they read them; a link they plant is refused
    rc, out, err = d.ctl("submit", d.spec("ok-nobody", gpus=2, steps=5), "--json", user=NOBODY)
    check(rc == 0, "nobody submits: %r" % err)
    job = int(out.split('"job":')[1].split(",")[0].strip(" }"))
    info = d.wait_state(job, "done")
    run_dir, out_dir = info["attempts"][0]["run_dir"], info["attempts"][0]["output_dir"]
    st = os.stat(os.path.join(out_dir, "rank-1.log"))
    check(st.st_uid == NOBODY and stat.S_ISREG(st.st_mode), "rank-1.log of nobody's job is nobody's file")
    rc, out, err = d.ctl("logs", str(job), "--rank", "1", user=NOBODY)
    check(rc == 0 and "rank 1 attempt 1 step 5" in out, "nobody reads their rank 1: %r %r" % (out, err))
    owner_plants(d, job, out_dir, "rank-0.log")


def owner_plants(d, job, out_dir, name):
    """The owner replaces the file atomd reads for `logs` (wherever it is in their output folder: the
    rank-0.log link and what it points at) with a link to /etc/shadow, to a FIFO only root can
    reach, and with a FIFO of their own: each is refused with a sentence, at once; root opens none
    of them (the root-only FIFO's writer stays blocked)."""
    paths = [os.path.join(out_dir, name)]
    if os.path.islink(paths[0]):  # mpirun's layout: rank-0.log -> ranks/rank.N/stdout
        paths.append(os.path.join(out_dir, os.readlink(paths[0])))

    def plant(kind, where):
        def fn():
            for path in paths:
                os.unlink(path)
                if kind == "fifo":
                    os.mkfifo(path, 0o600)
                else:
                    os.symlink(where, path)
        check(as_nobody(fn), "nobody could not replace their own %s" % name)

    plant("link", "/etc/shadow")
    rc, out, err = d.ctl("logs", str(job), user=NOBODY)
    check(rc == 1 and "not a regular file of the job's owner" in err and "root:" not in out,
          "a link to /etc/shadow is not followed for its owner: %r %r" % (out[:100], err))

    private = tempfile.mkdtemp(prefix="root-only-", dir=d.tmp)  # 0700, root's
    fifo = os.path.join(private, "fifo")
    os.mkfifo(fifo, 0o666)
    opened = threading.Event()

    def writer():
        fd = os.open(fifo, os.O_WRONLY)  # blocks until someone opens it for reading
        opened.set()
        os.close(fd)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    plant("link", fifo)
    rc, out, err = d.ctl("logs", str(job), user=NOBODY)
    check(rc == 1 and "not a regular file of the job's owner" in err, "a link to a FIFO: %r %r" % (out[:100], err))
    check(not opened.wait(0.5), "atomd opened, as root, the root-only FIFO nobody's link points at")
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # release the writer
    t.join(5)
    os.close(fd)

    plant("fifo", None)
    t0 = time.monotonic()
    rc, out, err = d.ctl("logs", str(job), user=NOBODY)
    check(rc == 1 and "not a regular file of the job's owner" in err and time.monotonic() - t0 < 5,
          "a FIFO in place of the log is refused at once: %r %r" % (out[:100], err))
    ans = d.request({"op": "status"})
    check(ans and ans.get("ok"), "atomd still answers: %r" % ans)


if __name__ == "__main__":
    harness.run(test, harness.parse_args())
    print("ok")
