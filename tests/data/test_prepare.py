#!/usr/bin/env python3
"""tests/data/test_prepare.py: atom-data prepare end to end, on a folder of real text files.

- gpt2 with --val-files: train.bin holds the training files' ids (from the independent Python
  reference, gpt2_reference.py) each followed by <|endoftext|> (50256), in name order, hidden and
  empty files skipped; val.bin the matching file's; the sidecars' token counts, largest id,
  tokenizer, vocabulary and sources are right; 3 threads cutting files into 4 KB parts write the
  same bytes as 1 thread; decode gives the text back.
- gpt2 with --val-fraction: train.bin then val.bin is the whole stream, val the last fraction.
- bytes: train.bin is the files' bytes, invalid UTF-8 included; no val.bin with fraction 0.
- usage: --help on stdout with status 0, usage errors status 2, a glob matching no file 1.
- atomctl validate: passes with model.vocab 50257; fails on a smaller vocabulary through the
  sidecar's largest id, and without a sidecar through a scan that reaches an id past the first
  MiB; fails on a missing data file and on a sidecar of another format.
- atom-worker trains 2 steps on the produced train.bin."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gpt2_reference  # noqa: E402

ATOM_DATA = sys.argv[1]
BUILD = os.environ.get("ATOM_BUILD_DIR", os.path.dirname(os.path.dirname(ATOM_DATA)))
ATOMCTL = os.path.join(BUILD, "bin", "atomctl")
WORKER = os.path.join(BUILD, "bin", "atom-worker")
MPIEXEC = os.environ.get("ATOM_MPIEXEC", "mpirun")
EOT = 50256


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def atom_data(*args, status=0):
    p = subprocess.run([ATOM_DATA] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != status:
        fail(f"atom-data {' '.join(args)} exited {p.returncode}, not {status}:\n{p.stdout}"
             f"{p.stderr}")
    return p


def u16(path):
    data = open(path, "rb").read()
    return [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]


def sidecar(path):
    with open(path + ".json") as f:
        return json.load(f)


def main():
    work = tempfile.mkdtemp(prefix="atom-prepare-")
    docs = os.path.join(work, "docs")
    os.makedirs(os.path.join(docs, "sub"))
    gpl = open("/usr/share/common-licenses/GPL-3", "rb").read()
    multi = open(os.path.join(HERE, "multilingual.txt"), "rb").read()
    files = {  # name order: a.txt, b.txt, big.txt, sub/c.txt, sub/d.txt
        "a.txt": "Hello world. It's a test;  tabs\there\n".encode(),
        "b.txt": multi,
        "big.txt": gpl + multi + gpl[:20000],  # several 4 KB parts
        "sub/c.txt": "The held-out file, for validation.\n".encode(),
        "sub/d.txt": "Ünïcödé ends here, no newline".encode(),
    }
    for name, data in files.items():
        open(os.path.join(docs, name), "wb").write(data)
    open(os.path.join(docs, ".hidden"), "wb").write(b"never read")
    open(os.path.join(docs, "empty.txt"), "wb").close()
    ref = gpt2_reference.Encoder(os.path.join(HERE, "..", "..", "data", "gpt2"))
    ids = {name: ref.encode(data.decode("utf-8")) + [EOT] for name, data in files.items()}
    train_names = ["a.txt", "b.txt", "big.txt", "sub/d.txt"]

    # --- gpt2, validation by file; 1 thread and 3 threads agree ---
    outs = []
    for threads, job in (("1", "1048576"), ("3", "4096")):
        out = os.path.join(work, "out-" + threads)
        p = atom_data("prepare", "--tokenizer", "gpt2", "--val-files", "c.txt", "--threads",
                      threads, "--job-bytes", job, "-o", out, docs)
        check("train.bin" in p.stdout and "val.bin" in p.stdout, "no final lines:\n" + p.stdout)
        outs.append(out)
    for name in ("train.bin", "val.bin", "train.bin.json", "val.bin.json"):
        a, b = (open(os.path.join(o, name), "rb").read() for o in outs)
        check(a == b, f"{name} differs between 1 and 3 threads")
    out = outs[1]
    train, val = os.path.join(out, "train.bin"), os.path.join(out, "val.bin")
    expected = [i for n in train_names for i in ids[n]]
    got = u16(train)
    check(got == expected, f"train.bin: {len(got)} ids, the reference {len(expected)}; first "
          f"difference at {next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), -1)}")
    check(u16(val) == ids["sub/c.txt"], "val.bin is not sub/c.txt's ids + <|endoftext|>")
    side = sidecar(train)
    check(side["tokenizer"] == "gpt2" and side["format"] == "uint16" and
          side["vocab_size"] == 50257 and side["eot_id"] == EOT, f"sidecar: {side}")
    check(side["tokens"] == len(expected) and side["max_id"] == max(expected),
          f"sidecar tokens {side['tokens']} / max_id {side['max_id']}, expected {len(expected)} / "
          f"{max(expected)}")
    check([s["path"] for s in side["sources"]] == [os.path.join(docs, n) for n in train_names],
          f"sidecar sources {side['sources']}")
    check(side["source_bytes"] == sum(len(files[n]) for n in train_names), "source_bytes")
    check(sidecar(val)["tokens"] == len(ids["sub/c.txt"]), "val sidecar's token count")
    text = atom_data("decode", val).stdout
    check(text == files["sub/c.txt"].decode() + "<|endoftext|>", f"decode val.bin: {text!r}")

    # --- gpt2, validation by fraction: one stream, its last 25% in val.bin ---
    frac = os.path.join(work, "frac")
    atom_data("prepare", "--val-fraction", "0.25", "--threads", "2", "--job-bytes", "8192",
              "-o", frac, docs)
    stream = [i for n in sorted(files) for i in ids[n]]
    t, v = u16(os.path.join(frac, "train.bin")), u16(os.path.join(frac, "val.bin"))
    check(t + v == stream, "train.bin + val.bin is not the whole stream")
    check(len(v) == int(0.25 * len(stream) + 0.5), f"val has {len(v)} of {len(stream)} ids")
    check(sidecar(os.path.join(frac, "val.bin"))["first_token"] == len(t), "val's first_token")

    # --- bytes: the files' bytes as they are, invalid UTF-8 included ---
    open(os.path.join(docs, "sub", "e.bin"), "wb").write(bytes(range(256)) + b"\xff\xfe\xc0")
    raw = os.path.join(work, "raw")
    os.makedirs(raw)
    open(os.path.join(raw, "val.bin"), "wb").write(b"stale")  # removed: no val.bin asked for
    atom_data("prepare", "--tokenizer", "bytes", "--val-fraction", "0", "-o", raw, docs)
    names = sorted(files) + ["sub/e.bin"]
    names.sort()
    want = b"".join(open(os.path.join(docs, n), "rb").read() for n in names)
    check(open(os.path.join(raw, "train.bin"), "rb").read() == want, "bytes train.bin")
    check(not os.path.exists(os.path.join(raw, "val.bin")), "a stale val.bin was left")
    side = sidecar(os.path.join(raw, "train.bin"))
    check(side["format"] == "bytes" and side["vocab_size"] == 256 and side["max_id"] == 255 and
          side["tokens"] == len(want), f"bytes sidecar {side}")
    back = subprocess.run([ATOM_DATA, "decode", os.path.join(raw, "train.bin")],
                          stdout=subprocess.PIPE, check=True).stdout
    check(back == want, "decode of the bytes file")

    # --- usage ---
    p = atom_data("--help")
    check("prepare" in p.stdout and "<|endoftext|>" in p.stdout and not p.stderr, "--help")
    atom_data("prepare", "--help")
    atom_data(status=2)
    atom_data("prepare", "--bogus", "-o", work, docs, status=2)
    atom_data("prepare", docs, status=2)  # no -o
    atom_data("prepare", "--tokenizer", "gpt3", "-o", work, docs, status=2)
    atom_data("prepare", "--val-fraction", "2", "-o", work, docs, status=2)
    p = atom_data("prepare", "--val-files", "nomatch*", "-o", os.path.join(work, "x"), docs,
                  status=1)
    check("matches none" in p.stderr, p.stderr)

    # --- atomctl validate ---
    def validate(path, vocab, fmt="uint16"):
        spec = os.path.join(work, "job.yaml")
        with open(spec, "w") as f:
            f.write("name: prep\nresources: {gpus: 1, device: cpu}\n"
                    "model: {layers: 1, channels: 32, heads: 2, vocab: %d, context: 16}\n"
                    "data: {path: %s, format: %s}\n"
                    "training: {steps: 2, global_batch: 2, micro_batch: 2, lr: 0.001}\n"
                    % (vocab, path, fmt))
        return spec, subprocess.run([ATOMCTL, "validate", spec], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    spec, p = validate(train, 50257)
    check(p.returncode == 0, "validate on train.bin: " + p.stderr)
    _, p = validate(train, 50000)
    check(p.returncode != 0 and "up to %d" % max(expected) in p.stderr and "tokenizer gpt2" in
          p.stderr, "validate with a small vocabulary (sidecar): %d %s" % (p.returncode, p.stderr))
    bare = os.path.join(work, "bare.bin")  # no sidecar: ids below 1000 but one past 1 MiB
    with open(bare, "wb") as f:
        f.write(b"".join((i % 1000).to_bytes(2, "little") for i in range(600000)))
        f.write((40000).to_bytes(2, "little"))
    _, p = validate(bare, 1000)
    check(p.returncode != 0 and "token id 40000 at byte 1200000" in p.stderr,
          "validate scans the whole file: %d %s" % (p.returncode, p.stderr))
    _, p = validate(os.path.join(work, "missing.bin"), 50257)
    check(p.returncode != 0 and "data.path" in p.stderr, "validate, missing file: " + p.stderr)
    _, p = validate(train, 50257, "bytes")
    check(p.returncode != 0 and "format" in p.stderr, "validate, gpt2 file as bytes: " + p.stderr)

    # --- a worker trains on it ---
    run_dir = os.path.join(work, "run")
    p = subprocess.run([MPIEXEC, "-np", "1", "--oversubscribe", WORKER, "--spec", spec,
                        "--run-dir", run_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=90)
    check(p.returncode == 0, "atom-worker on train.bin exited %d:\n%s%s" % (p.returncode,
                                                                         p.stdout, p.stderr))
    steps = [json.loads(line)["step"] for line in open(os.path.join(run_dir, "train.jsonl"))]
    check(steps == [1, 2], f"train.jsonl steps {steps}")
    shutil.rmtree(work)
    print("PASS")


if __name__ == "__main__":
    main()
