#!/usr/bin/python3
"""tests/checkpoints/check_safetensors.py EXPORTED CHECKPOINT: checks atom's safetensors export
against the checkpoint it came from, reading both without atom: the file layout (8-byte header
length, JSON header, contiguous data), GPT-2's names, Conv1D weights stored (in, out), wte
trimmed to the vocabulary V, every value equal."""
import json
import struct
import sys

import h5py
import numpy as np

st_path, h5_path = sys.argv[1], sys.argv[2]
blob = open(st_path, "rb").read()
(hlen,) = struct.unpack("<Q", blob[:8])
header = json.loads(blob[8:8 + hlen])
data = blob[8 + hlen:]
meta = header.pop("__metadata__")
assert meta.get("format") == "pt", meta
assert (8 + hlen) % 8 == 0, "data does not start 8-byte aligned"

f = h5py.File(h5_path, "r")
p = f["param"]
V = int(f.attrs["vocab"])
L, C = p["qkvw"].shape[0], p["qkvw"].shape[2]
expect = {"transformer.wte.weight": p["wte"][:V], "transformer.wpe.weight": p["wpe"][...],
          "transformer.ln_f.weight": p["lnfw"][...], "transformer.ln_f.bias": p["lnfb"][...]}
for l in range(L):
    h = f"transformer.h.{l}."
    expect[h + "ln_1.weight"] = p["ln1w"][l]
    expect[h + "ln_1.bias"] = p["ln1b"][l]
    expect[h + "attn.c_attn.weight"] = p["qkvw"][l].T
    expect[h + "attn.c_attn.bias"] = p["qkvb"][l]
    expect[h + "attn.c_proj.weight"] = p["attprojw"][l].T
    expect[h + "attn.c_proj.bias"] = p["attprojb"][l]
    expect[h + "ln_2.weight"] = p["ln2w"][l]
    expect[h + "ln_2.bias"] = p["ln2b"][l]
    expect[h + "mlp.c_fc.weight"] = p["fcw"][l].T
    expect[h + "mlp.c_fc.bias"] = p["fcb"][l]
    expect[h + "mlp.c_proj.weight"] = p["fcprojw"][l].T
    expect[h + "mlp.c_proj.bias"] = p["fcprojb"][l]

assert set(header) == set(expect), f"names differ: {sorted(set(header) ^ set(expect))}"
spans = sorted((v["data_offsets"][0], v["data_offsets"][1]) for v in header.values())
assert spans[0][0] == 0 and spans[-1][1] == len(data), "data not fully covered"
assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "gaps or overlaps between tensors"
for name, want in expect.items():
    e = header[name]
    assert e["dtype"] == "F32", name
    assert tuple(e["shape"]) == want.shape, f"{name}: shape {e['shape']}, GPT-2 has {want.shape}"
    b, end = e["data_offsets"]
    got = np.frombuffer(data[b:end], dtype="<f4").reshape(want.shape)
    assert np.array_equal(got, want), f"{name}: values differ"
print(f"safetensors export OK: {len(expect)} GPT-2 tensors (L={L}, C={C}, V={V}) match the checkpoint")
