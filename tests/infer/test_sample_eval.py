"""tests/infer/test_sample_eval.py: atomctl sample and atomctl eval (atom-infer, found beside
atomctl) on a gpt-tiny-like model that atom-worker trains for a few steps at TP 2 x DP 2:

  (a) the key/value-cache generator equals the training forward recomputed from scratch at every
      step, greedy ids identical and logits within 1e-5, also past the context (kv_check.c);
  (b) eval's loss on the batch training read at a step equals the loss training logged for it
      with the same weights (the checkpoint before that step), and perplexity = exp(loss);
  (c) a seeded sample is reproducible, another seed differs, temperature 0 ignores the seed, and
      the text printed is the prompt and the decoded ids;
  (d) bad inputs get exit status and a message naming what is wrong.
Usage: test_sample_eval.py KV_CHECK DUMP_BATCH"""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "worker_run"))
import worker_run_lib as w  # noqa: E402

ATOMCTL = os.path.join(w.BUILD, "bin", "atomctl")
KV_CHECK, DUMP_BATCH = sys.argv[1], sys.argv[2]


def run(args, expect_rc=0, text=True):
    p = subprocess.run(args, capture_output=True, text=text, timeout=60)
    if p.returncode != expect_rc:
        w.fail("%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
               % (" ".join(args), p.returncode, expect_rc, p.stdout, p.stderr))
    return p


def sample_json(ckpt, *extra):
    p = run([ATOMCTL, "sample", ckpt, "--json"] + list(extra))
    return json.loads(p.stdout)


def main():
    work = w.workdir("infer")
    ckpt = os.path.join(work, "ckpt")
    spec = w.write_spec(work, tensor=2, data=2, steps=6, global_batch=8, micro_batch=2,
                        ckpt_dir=ckpt, every=2)
    r = w.run(4, spec, os.path.join(work, "run"))
    w.check(r.returncode == 0, "training at TP 2 x DP 2 failed")
    log = w.raw_train_lines(os.path.join(work, "run"))
    T = w.TINY_MODEL["context"]

    # (a) the cache against recomputation, before and after the window slides (prompt 40 + 40)
    out = run([KV_CHECK, ckpt, "40", "40"]).stdout
    print(out.strip())
    w.check("kv_check: ok" in out and ", 0 slides" not in out, "kv_check: " + out)

    # (b) eval on the batch of step 5 (0-based 4): weights after 4 steps, ckpt-0000000004
    batch = os.path.join(work, "step4.bin")
    run([DUMP_BATCH, spec, "4", batch])
    ck4 = os.path.join(ckpt, "ckpt-0000000004.h5")
    ev = json.loads(run([ATOMCTL, "eval", ck4, batch, "--batch", "8", "--json"]).stdout)
    logged = log[5]["loss"]
    print("eval loss %.7f, training logged %.7f" % (ev["loss"], logged))
    w.check(abs(ev["loss"] - logged) < 2e-5, "eval loss %r != training's %r" % (ev["loss"], logged))
    w.check(ev["tokens"] == 8 * T and ev["sequences"] == 8, "eval counted %r" % ev)
    w.check(abs(ev["perplexity"] - math.exp(ev["loss"])) < 1e-6 * ev["perplexity"],
            "perplexity %r is not exp(loss %r)" % (ev["perplexity"], ev["loss"]))
    # batches of 3, 3 and 2 sequences: the same mean over every predicted token
    ev3 = json.loads(run([ATOMCTL, "eval", ck4, batch, "--batch", "3", "--json"]).stdout)
    w.check(abs(ev3["loss"] - ev["loss"]) < 1e-5, "uneven batches: %r vs %r" % (ev3, ev))
    line = run([ATOMCTL, "eval", ckpt, batch, "--batch", "3", "--batches", "1"]).stdout
    w.check(line.startswith("loss ") and "perplexity" in line and " %d tokens in " % (3 * T)
            in line and "tokens/s" in line, line)

    # (c) seeded sampling, from the folder (its latest) and from the `latest` link
    a = sample_json(ckpt, "--prompt", "The GNU", "--tokens", "30", "--seed", "5",
                    "--temperature", "1")
    w.check(a["prompt_ids"] == list(b"The GNU") and a["tokenizer"] == "bytes", repr(a))
    raw = run([ATOMCTL, "sample", os.path.join(ckpt, "latest"), "--prompt", "The GNU",
               "--tokens", "30", "--seed", "5", "--temperature", "1"], text=False).stdout
    w.check(raw == b"The GNU" + bytes(a["ids"]) + b"\n",
            "seed 5 printed %r, then gave %r" % (raw, a["ids"]))
    c = sample_json(ckpt, "--prompt", "The GNU", "--tokens", "30", "--seed", "6",
                    "--temperature", "1")
    w.check(a["ids"] != c["ids"], "seeds 5 and 6 gave the same ids")
    g1 = sample_json(ckpt, "--prompt", "The GNU", "--tokens", "30", "--temperature", "0",
                     "--seed", "1")
    g2 = sample_json(ckpt, "--prompt", "The GNU", "--tokens", "100", "--temperature", "0",
                     "--seed", "2")
    w.check(g1["ids"] == g2["ids"][:30], "temperature 0 depends on the seed")
    w.check(len(g2["ids"]) == 100 and g2["context_slides"] > 0, "past the context: %r" % g2)

    # (d) bad inputs
    missing = os.path.join(work, "nothing-here")
    e = run([ATOMCTL, "sample", missing, "--prompt", "x"], 1).stderr
    w.check("atomctl sample: checkpoint %s: No such file" % missing in e, e)
    empty = os.path.join(work, "empty")
    os.mkdir(empty)
    e = run([ATOMCTL, "eval", empty, batch], 1).stderr
    w.check("holds no committed checkpoint" in e, e)
    e = run([ATOMCTL, "sample", ckpt, "--prompt", "x", "--tokens", "0"], 2).stderr
    w.check("--tokens wants a whole number from 1" in e, e)
    e = run([ATOMCTL, "sample", ckpt, "--prompt", "y" * (T + 1)], 1).stderr
    w.check("the prompt is %d tokens, more than the model's context of %d" % (T + 1, T) in e, e)
    e = run([ATOMCTL, "sample", ckpt], 1).stderr
    w.check("the prompt is empty" in e, e)
    wide = os.path.join(work, "ids.u16")
    with open(wide, "wb") as f:
        for i in range(300):
            f.write(i.to_bytes(2, "little"))
    e = run([ATOMCTL, "eval", ckpt, wide, "--format", "uint16"], 1).stderr
    w.check("token 256 at token offset 256 (byte 512) is not below the vocabulary size 256" in e
            and wide in e, e)
    e = run([ATOMCTL, "eval", ckpt, missing], 1).stderr
    w.check(missing in e and "cannot open" in e, e)
    w.cleanup(work)
    print("ok")


main()
