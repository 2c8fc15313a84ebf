"""tests/scheduler/test_atomctl_plot.py: `atomctl plot` as a researcher runs it, on the train.jsonl
of a real atom-worker run: the picture is a PNG of the promised size; the numbers drawn are the
run's (--table); a step logged again by a resumed run keeps the later value, a validation loss
appears beside the train loss, a line cut short by a killed rank is skipped; without gnuplot the
error names the package; usage errors exit 2."""
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "worker_run"))
import worker_run_lib as w  # noqa: E402

ATOMCTL = os.path.join(w.BUILD, "bin", "atomctl")


def plot(*argv, env=None):
    r = subprocess.run([ATOMCTL, "plot"] + list(argv), capture_output=True, text=True, timeout=60,
                       env=env)
    return r.returncode, r.stdout, r.stderr


def table(path):
    rc, out, err = plot(path, "--table")
    w.check(rc == 0, "plot --table: exit %d: %s" % (rc, err))
    lines = out.splitlines()
    w.check(lines[0].split("\t") == ["step", "loss", "val_loss", "lr"], "table header: %r" % lines[0])
    return {int(c[0]): [float(x) for x in c[1:]] for c in (l.split("\t") for l in lines[1:])}


def main():
    d = w.workdir("plot")
    run_dir = os.path.join(d, "run")
    spec = w.write_spec(d, tensor=1, data=1, steps=6, global_batch=2, micro_batch=2, warmup=1)
    r = w.run(1, spec, run_dir)
    w.check(r.returncode == 0, "the run whose log is plotted: exit %d" % r.returncode)
    log = w.read_jsonl(os.path.join(run_dir, "train.jsonl"))
    w.check(len(log) == 6, "train.jsonl has 6 steps: %d" % len(log))

    rows = table(run_dir)
    w.check(sorted(rows) == list(range(1, 7)), "one row per step: %s" % sorted(rows))
    for line in log:
        loss, val, lr = rows[line["step"]]
        w.check(abs(loss - line["loss"]) <= 1e-7 * abs(line["loss"]) and abs(lr - line["lr"]) <= 1e-7 * line["lr"],
                "step %d drawn as loss %g lr %g, logged %g %g" % (line["step"], loss, lr, line["loss"], line["lr"]))
        w.check(val != val, "no validation loss was logged at step %d: %g" % (line["step"], val))

    out = os.path.join(d, "loss.png")
    rc, text, err = plot(run_dir, "-o", out)
    w.check(rc == 0 and out in text, "plot -o: exit %d: %s %s" % (rc, text, err))
    with open(out, "rb") as f:
        head = f.read(24)
    w.check(head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", "a PNG file: %r" % head)
    width, height = struct.unpack(">II", head[16:24])
    w.check((width, height) == (1100, 800) and os.path.getsize(out) > 10000,
            "a 1100x800 picture with something drawn: %dx%d, %d bytes" % (width, height, os.path.getsize(out)))

    # A resumed run appends to the same log: step 5 again (the resumed value wins), a validation
    # line at step 6, and a line a killed rank cut short.
    with open(os.path.join(run_dir, "train.jsonl"), "a") as f:
        f.write('{"step":5,"steps":6,"loss":1.25,"lr":0.0005}\n')
        f.write('{"step":6,"val_loss":2.5}\n')
        f.write('{"step":7,"steps":8,"lo')
    rows = table(os.path.join(run_dir, "train.jsonl"))
    w.check(sorted(rows) == list(range(1, 7)), "the cut line is skipped: %s" % sorted(rows))
    w.check(rows[5][0] == 1.25 and rows[5][2] == 0.0005, "the resumed run's step 5: %s" % rows[5])
    w.check(rows[6][1] == 2.5 and rows[6][0] == log[5]["loss"], "step 6 with its validation loss: %s" % rows[6])
    rc, text, err = plot(run_dir, "-o", out)
    w.check(rc == 0 and "validation loss 1" in text, "plot with a validation loss: %s %s" % (text, err))

    # Without gnuplot on PATH: a sentence naming the package, exit 1.
    env = dict(os.environ, PATH=d)
    rc, text, err = plot(run_dir, "-o", os.path.join(d, "no.png"), env=env)
    w.check(rc == 1 and "gnuplot-nox" in err, "without gnuplot: exit %d: %r" % (rc, err))
    rc, text, err = plot(os.path.join(d, "missing"))
    w.check(rc == 1 and "cannot read" in err and "missing" in err, "a missing file: %d %r" % (rc, err))
    rc, text, err = plot()
    w.check(rc == 2, "no argument: exit %d" % rc)
    rc, text, err = plot(run_dir, "--bogus")
    w.check(rc == 2 and "--bogus" in err, "an unknown flag: exit %d %r" % (rc, err))
    print("atomctl plot: ok")


main()
