"""tests/scheduler/test_atomctl_ckpt.py: `atomctl ckpt ls | verify | export` as a user runs them,
on checkpoints a real 2-rank atom-worker run wrote: ls lists the committed steps and latest,
verify accepts them and names the dataset of a flipped byte, export writes a safetensors file
whose header holds GPT-2's names and shapes and, beside it, the config.json transformers' GPT-2
reads; a folder, the checkpoint folder itself or `latest` give sane output names."""
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "worker_run"))
import worker_run_lib as w  # noqa: E402

ATOMCTL = os.path.join(w.BUILD, "bin", "atomctl")


def ctl(*argv):
    r = subprocess.run([ATOMCTL, "ckpt"] + list(argv), capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def main():
    d = w.workdir("ckpt-tools")
    ckpt = os.path.join(d, "ckpt")
    spec = w.write_spec(d, tensor=2, data=1, steps=4, global_batch=2, micro_batch=1, warmup=1,
                        ckpt_dir=ckpt, every=2)
    r = w.run(2, spec, os.path.join(d, "run"))
    w.check(r.returncode == 0, "the 2-rank run that writes the checkpoints: exit %d" % r.returncode)

    rc, out, err = ctl("ls", ckpt)
    w.check(rc == 0, "ckpt ls: exit %d: %s" % (rc, err))
    rows = [line.split() for line in out.splitlines()[1:]]
    w.check([r[0] for r in rows] == ["2", "4"] and rows[0][1] == "TP2xDP1", "ckpt ls rows: %r" % out)
    w.check(rows[0][-2] == "committed" and rows[1][-2] == "latest", "ckpt ls states: %r" % out)

    latest = os.path.join(ckpt, "latest")
    rc, out, err = ctl("verify", latest)
    w.check(rc == 0 and "every checksum matches" in out, "verify of a good file: %d %r %r" % (rc, out, err))

    rc, out, err = ctl("export", latest, "-o", os.path.join(d, "model.safetensors"))
    w.check(rc == 0, "export: %d %r" % (rc, err))
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    C, V, T = w.TINY_MODEL["channels"], w.TINY_MODEL["vocab"], w.TINY_MODEL["context"]
    w.check(header["transformer.wte.weight"]["shape"] == [V, C], "wte trimmed to V: %r" % header["transformer.wte.weight"])
    w.check(header["transformer.wpe.weight"]["shape"] == [T, C], "wpe: %r" % header["transformer.wpe.weight"])
    w.check(header["transformer.h.1.attn.c_attn.weight"]["shape"] == [C, 3 * C], "Conv1D layout (in, out)")
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    L, NH = w.TINY_MODEL["layers"], w.TINY_MODEL["heads"]
    want = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": L, "n_head": NH,
            "n_embd": C, "n_positions": T, "n_ctx": T, "vocab_size": V, "layer_norm_epsilon": 1e-5,
            "activation_function": "gelu_new", "tie_word_embeddings": True}
    w.check(all(config.get(k) == v for k, v in want.items()),
            "config.json beside the export: %r" % config)
    w.check("bos_token_id" not in config, "a bytes model has no GPT-2 <|endoftext|>: %r" % config)

    # A folder as OUT: model.safetensors and config.json inside it, as save_pretrained lays out.
    hf = os.path.join(d, "exports", "tiny")
    rc, out, err = ctl("export", latest, "-o", hf)
    w.check(rc == 0 and sorted(os.listdir(hf)) == ["config.json", "model.safetensors"],
            "export into a folder: %d %r %r"
            % (rc, err, os.listdir(hf) if os.path.isdir(hf) else None))
    w.check(open(os.path.join(hf, "model.safetensors"), "rb").read() ==
            open(os.path.join(d, "model.safetensors"), "rb").read(), "the same bytes in the folder")
    # The checkpoint folder, no OUT: its latest, named after the step, beside the checkpoints.
    rc, out, err = ctl("export", ckpt)
    step_dir = os.path.join(ckpt, "ckpt-0000000004-hf")
    w.check(rc == 0 and os.path.isfile(os.path.join(step_dir, "model.safetensors")) and
            os.path.isfile(os.path.join(step_dir, "config.json")),
            "export of a checkpoint folder: %d %r %r" % (rc, out, err))
    rc, out, err = ctl("ls", ckpt)
    w.check(rc == 0 and len(out.splitlines()) == 3, "the export folder is no checkpoint: %r" % out)
    rc, out, err = ctl("export", os.path.join(d, "run"))
    w.check(rc == 1 and "no committed checkpoint" in err,
            "a folder without checkpoints: %d %r" % (rc, err))

    # A flipped byte in the last dataset's data: verify names a dataset and exits 1.
    bad = os.path.join(d, "bad.h5")
    with open(os.path.realpath(latest), "rb") as f:
        data = bytearray(f.read())
    data[len(data) - 4096] ^= 0xFF
    with open(bad, "wb") as f:
        f.write(data)
    rc, out, err = ctl("verify", bad)
    w.check(rc == 1 and "/" in err and "checksum" in (out + err).lower(), "verify of a flipped byte: %d %r %r" % (rc, out, err))

    rc, out, err = ctl("ls", os.path.join(d, "no-such-folder"))
    w.check(rc == 1 and "no-such-folder" in err, "ls of a missing folder: %d %r" % (rc, err))
    rc, out, err = ctl("frobnicate", ckpt)
    w.check(rc == 2, "an unknown action is a usage error: %d" % rc)
    w.cleanup(d)
    print("ok")


if __name__ == "__main__":
    main()
