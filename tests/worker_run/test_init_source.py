"""tests/worker_run/test_init_source.py: fine-tuning from existing weights (the spec's init
section), with real atom-worker runs under mpirun and real files handed from step to step:

1. a TP 2 x DP 2 run writes a checkpoint; `atomctl ckpt export` turns it into model.safetensors;
2. export -> import -> export is bit-exact: a TP 2 x DP 2 job with init.safetensors of that export,
   one step at a learning rate too small to move any weight (1e-30, no weight decay), exported
   again, gives the same tensors byte for byte (and the same config.json);
3. the same file under Hugging Face's names (no "transformer." prefix, the attention mask buffers
   and lm_head.weight beside them), at TP 1 x DP 1, loads to the same weights;
4. init.checkpoint, weights only, at another layout (TP 1 x DP 2): the step counter starts at 0,
   the weights are the checkpoint's; run again with more steps, the job resumes from its own
   checkpoint, not from the init; with weights+optimizer and resume_step from the source's step
   2 checkpoint, the one remaining step gives the source's step-3 weights bit for bit;
5. a shape that does not match fails with the tensor's name, the shape expected and the one found.
The model's vocabulary (300) is padded (to 384), so the padded rows' dropping and restoring is
exercised."""
import json
import os
import struct
import subprocess
import sys

import worker_run_lib as w

ATOMCTL = os.path.join(w.BUILD, "bin", "atomctl")
MODEL = dict(w.TINY_MODEL, vocab=300)
FROZEN = {"lr_schedule": "constant", "min_lr": 0}  # with lr 1e-30: no weight moves


def export(src, out):
    r = subprocess.run([ATOMCTL, "ckpt", "export", src, "-o", out], capture_output=True,
                       text=True, timeout=60)
    w.check(r.returncode == 0, "export %s: %d %s" % (src, r.returncode, r.stderr))
    return os.path.join(out, "model.safetensors")


def read_st(path):
    """(header without __metadata__, data bytes)"""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    return header, blob[8 + n:]


def write_st(path, tensors):
    """tensors: name -> (dtype, shape, bytes), written as safetensors."""
    header, offset = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, _, data in tensors.values():
            f.write(data)


def same_weights(a, b, what):
    ha, da = read_st(a)
    hb, db = read_st(b)
    w.check(ha == hb, "%s: the headers differ" % what)
    w.check(da == db, "%s: the tensors differ" % what)


def run_job(d, name, np, tensor, data, steps, lr, init=None, training=None, model=MODEL):
    folder = os.path.join(d, name)
    os.makedirs(folder, exist_ok=True)
    ckpt = os.path.join(folder, "ckpt")
    spec = w.write_spec(folder, tensor=tensor, data=data, steps=steps, global_batch=4,
                        micro_batch=4 // data, lr=lr, warmup=0, ckpt_dir=ckpt, every=1,
                        model=model, training=training, init=init)
    r = w.run(np, spec, os.path.join(folder, "run"))
    return r, ckpt, os.path.join(folder, "run")


def main():
    d = w.workdir("init-source")
    # 1. the source: 3 steps at TP 2 x DP 2
    r, ckpt_a, _ = run_job(d, "a", 4, 2, 2, 3, 3e-3)
    w.check(r.returncode == 0, "the source run: exit %d" % r.returncode)
    st_a = export(ckpt_a, os.path.join(d, "export-a"))

    # 2. export -> import -> export, TP 2 x DP 2
    r, ckpt_b, run_b = run_job(d, "b", 4, 2, 2, 1, 1e-30, init={"safetensors": st_a},
                               training=FROZEN)
    w.check(r.returncode == 0, "the init.safetensors run: exit %d" % r.returncode)
    w.check("initialised from %s (weights)" % st_a in r.stdout + r.stderr,
            "the log names the source")
    w.check([x["step"] for x in w.train_log(run_b)] == [1], "a fresh step counter")
    st_b = export(ckpt_b, os.path.join(d, "export-b"))
    same_weights(st_a, st_b, "export -> import (TP 2 x DP 2) -> export")
    with open(os.path.join(d, "export-a", "config.json")) as fa, \
            open(os.path.join(d, "export-b", "config.json")) as fb:
        w.check(fa.read() == fb.read(), "config.json differs after the round trip")

    # 3. Hugging Face's names, the mask buffers and lm_head beside them, at TP 1 x DP 1
    header, data = read_st(st_a)
    hf = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        hf[name[len("transformer."):]] = ("F32", e["shape"], data[b:end])
    T = MODEL["context"]
    for l in range(MODEL["layers"]):
        hf["h.%d.attn.bias" % l] = ("U8", [1, 1, T, T], bytes(T * T))
    hf["lm_head.weight"] = hf["wte.weight"]
    hf_path = os.path.join(d, "hf.safetensors")
    write_st(hf_path, dict(reversed(list(hf.items()))))
    r, ckpt_c, _ = run_job(d, "hf", 1, 1, 1, 1, 1e-30, init={"safetensors": hf_path},
                           training=FROZEN)
    w.check(r.returncode == 0, "the Hugging Face names run: exit %d" % r.returncode)
    same_weights(st_a, export(ckpt_c, os.path.join(d, "export-hf")), "Hugging Face's names")

    # 4. init.checkpoint, weights only, at TP 1 x DP 2; then a restart resumes its own
    init = {"checkpoint": ckpt_a, "load": "weights"}
    r, ckpt_d, run_d = run_job(d, "d", 2, 1, 2, 1, 1e-30, init=init, training=FROZEN)
    w.check(r.returncode == 0, "the init.checkpoint run: exit %d" % r.returncode)
    w.check([x["step"] for x in w.train_log(run_d)] == [1], "init.checkpoint: step 0 again")
    same_weights(st_a, export(ckpt_d, os.path.join(d, "export-d")), "init.checkpoint weights")
    r, _, run_d = run_job(d, "d", 2, 1, 2, 2, 1e-30, init=init, training=FROZEN)
    w.check(r.returncode == 0 and "restored" in r.stdout + r.stderr and
            "initialised from" not in r.stdout + r.stderr,
            "the job's own checkpoint wins over init: %d" % r.returncode)
    w.check([x["step"] for x in w.train_log(run_d)] == [1, 2], "the restart continued at step 2")

    # 4b. weights+optimizer with resume_step from the source's step 2: its step 3 again, bit for bit
    init = {"checkpoint": os.path.join(ckpt_a, "ckpt-0000000002.h5"), "load": "weights+optimizer",
            "resume_step": "true"}
    r, ckpt_e, run_e = run_job(d, "e", 4, 2, 2, 3, 3e-3, init=init)
    w.check(r.returncode == 0, "the resume_step run: exit %d" % r.returncode)
    w.check([x["step"] for x in w.train_log(run_e)] == [3], "resume_step continued at step 3")
    same_weights(st_a, export(ckpt_e, os.path.join(d, "export-e")),
                 "weights+optimizer from step 2, one more step")

    # 5. a shape that does not match: the tensor, the shape expected and the shape found
    small = dict(MODEL, channels=64)
    r, _, _ = run_job(d, "bad", 1, 1, 1, 1, 1e-3, init={"safetensors": st_a}, model=small)
    w.check(r.returncode != 0 and "transformer.wte.weight has shape [300, 128], this job's "
            "model needs [300, 64]" in r.stderr,
            "a shape mismatch: %d %r" % (r.returncode, r.stderr))
    w.cleanup(d)
    print("ok")


if __name__ == "__main__":
    main()
