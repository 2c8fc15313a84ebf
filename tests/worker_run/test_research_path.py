"""tests/worker_run/test_research_path.py: a researcher's whole path, each hand-over checked with
the file the next step reads:

  raw text -> atom-data prepare (GPT-2 BPE, a held-out val.bin) -> atomctl validate -> training at
  TP 2 x DP 2 -> atomctl sample (decoded through the tokenizer the checkpoint recorded) ->
  atomctl eval on val.bin -> atomctl ckpt export (model.safetensors, config.json and GPT-2's
  tokenizer files) -> a fresh job at TP 2 x DP 2 initialised from that export -> export again:
  the same weights, bit for bit."""
import json
import math
import os
import struct
import subprocess
import sys

import worker_run_lib as w

BIN = os.path.join(w.BUILD, "bin")
SRC = os.environ.get("ATOM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = {"layers": 2, "channels": 64, "heads": 4, "vocab": 50257, "context": 64}
FROZEN = {"lr_schedule": "constant", "min_lr": 0}


def run(args, rc=0, stdin=None):
    p = subprocess.run(args, capture_output=True, timeout=120, input=stdin)
    w.check(p.returncode == rc, "%s: exit %d, wanted %d\n%s\n%s"
            % (" ".join(args), p.returncode, rc, p.stdout[-2000:], p.stderr[-2000:]))
    return p


def tensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    return header, blob[8 + n:]


def main():
    d = w.workdir("research-path")
    texts = os.path.join(d, "texts")
    os.makedirs(texts)
    for name in ("GPL-3", "LGPL-2.1", "Apache-2.0"):
        with open("/usr/share/common-licenses/" + name, "rb") as src, \
                open(os.path.join(texts, name + ".txt"), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(SRC, "tests", "data", "multilingual.txt"), "rb") as src, \
            open(os.path.join(texts, "multilingual.txt"), "wb") as dst:
        dst.write(src.read())

    # 1. prepare: train.bin + val.bin and their sidecars
    data = os.path.join(d, "data")
    run([os.path.join(BIN, "atom-data"), "prepare", "--tokenizer", "gpt2", "--val-fraction", "0.1",
         "-o", data, texts])
    side = json.load(open(os.path.join(data, "train.bin.json")))
    w.check(side["tokenizer"] == "gpt2" and side["vocab_size"] == 50257 and
            side["tokens"] * 2 == os.path.getsize(os.path.join(data, "train.bin")),
            "the sidecar of train.bin: %s" % side)

    # 2. validate and train at TP 2 x DP 2 on it
    ckpt = os.path.join(d, "a", "ckpt")
    os.makedirs(os.path.join(d, "a"))
    spec = w.write_spec(os.path.join(d, "a"), tensor=2, data=2, steps=8, global_batch=8,
                        micro_batch=2, warmup=2, ckpt_dir=ckpt, every=4, model=MODEL,
                        data_path=os.path.join(data, "train.bin"), data_format="uint16")
    run([os.path.join(BIN, "atomctl"), "validate", spec])
    r = w.run(4, spec, os.path.join(d, "a", "run"), timeout=180)
    w.check(r.returncode == 0, "training on the prepared file: exit %d" % r.returncode)
    losses = [x["loss"] for x in w.train_log(os.path.join(d, "a", "run"))]
    w.check(len(losses) == 8 and losses[-1] < losses[0], "the loss falls: %s" % losses)

    # 3. sample: the checkpoint says it was trained on GPT-2's tokens; the text is their decoding
    prompt = "The GNU General Public License"
    ids = [int(x) for x in run([os.path.join(BIN, "atom-data"), "encode", "--tokenizer", "gpt2"],
                               stdin=prompt.encode()).stdout.split()]
    s = json.loads(run([os.path.join(BIN, "atomctl"), "sample", ckpt, "--prompt", prompt,
                        "--tokens", "12", "--seed", "3", "--json"]).stdout)
    w.check(s["tokenizer"] == "gpt2" and s["prompt_ids"] == ids, "sample's prompt: %s vs %s" % (s, ids))
    w.check(len(s["ids"]) == 12 and all(0 <= i < 50257 for i in s["ids"]), "sampled ids: %s" % s["ids"])
    both = os.path.join(d, "sampled.bin")
    with open(both, "wb") as f:
        f.write(b"".join(struct.pack("<H", i) for i in ids + s["ids"]))
    text = run([os.path.join(BIN, "atomctl"), "sample", ckpt, "--prompt", prompt, "--tokens", "12",
                "--seed", "3"]).stdout
    decoded = run([os.path.join(BIN, "atom-data"), "decode", "--tokenizer", "gpt2", both]).stdout
    w.check(text.rstrip(b"\n") == decoded.rstrip(b"\n"),
            "sample printed %r, atom-data decodes its ids as %r" % (text, decoded))

    # 4. eval on the held-out tokens
    ev = json.loads(run([os.path.join(BIN, "atomctl"), "eval", ckpt,
                         os.path.join(data, "val.bin"), "--json"]).stdout)
    w.check(ev["tokens"] > 0 and 0 < ev["loss"] < math.log(50257) + 1 and
            abs(ev["perplexity"] - math.exp(ev["loss"])) < 1e-6 * ev["perplexity"], "eval: %s" % ev)

    # 5. export: the model, its config and GPT-2's tokenizer files as data/gpt2/ has them
    e1 = os.path.join(d, "export-1")
    run([os.path.join(BIN, "atomctl"), "ckpt", "export", ckpt, "-o", e1])
    cfg = json.load(open(os.path.join(e1, "config.json")))
    w.check(cfg["vocab_size"] == 50257 and cfg["n_ctx"] == 64 and cfg["n_layer"] == 2, "config: %s" % cfg)
    vocab = json.load(open(os.path.join(e1, "vocab.json"), encoding="utf-8"))
    w.check(vocab == json.load(open(os.path.join(SRC, "data", "gpt2", "encoder.json"), encoding="utf-8")),
            "vocab.json differs from GPT-2's encoder.json")
    merges = open(os.path.join(e1, "merges.txt"), encoding="utf-8").read().split("\n")
    want = open(os.path.join(SRC, "data", "gpt2", "vocab.bpe"), encoding="utf-8").read().split("\n")
    w.check([m for m in merges if m] == [m for m in want if m], "merges.txt differs from vocab.bpe")
    tc = json.load(open(os.path.join(e1, "tokenizer_config.json")))
    w.check(tc["model_max_length"] == 64 and tc["eos_token"] == "<|endoftext|>", "tokenizer_config: %s" % tc)

    # 6. import into a fresh job (frozen: one step at lr 1e-30), export again: bit-exact
    b = os.path.join(d, "b")
    os.makedirs(b)
    spec_b = w.write_spec(b, tensor=2, data=2, steps=1, global_batch=8, micro_batch=2, lr=1e-30,
                          warmup=0, ckpt_dir=os.path.join(b, "ckpt"), every=1, model=MODEL,
                          data_path=os.path.join(data, "train.bin"), data_format="uint16",
                          training=FROZEN, init={"safetensors": os.path.join(e1, "model.safetensors")})
    r = w.run(4, spec_b, os.path.join(b, "run"), timeout=180)
    w.check(r.returncode == 0, "the fine-tune from the export: exit %d" % r.returncode)
    e2 = os.path.join(d, "export-2")
    run([os.path.join(BIN, "atomctl"), "ckpt", "export", os.path.join(b, "ckpt"), "-o", e2])
    h1, d1 = tensors(os.path.join(e1, "model.safetensors"))
    h2, d2 = tensors(os.path.join(e2, "model.safetensors"))
    w.check(h1 == h2 and d1 == d2, "export -> import -> export is not bit-exact")
    w.cleanup(d)
    print("research path: ok (loss %.3f -> %.3f, eval %.3f, perplexity %.1f)"
          % (losses[0], losses[-1], ev["loss"], ev["perplexity"]))


main()
