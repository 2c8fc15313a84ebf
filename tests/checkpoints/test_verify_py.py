#!/usr/bin/python3
"""tests/checkpoints/test_verify_py.py FILE WORKDIR: the independent verifier (verify_ckpt.py)
accepts a checkpoint atom wrote, and rejects a copy with one flipped byte, naming the dataset,
and a copy whose checksum rows overlap (one row copied over its neighbour) to hide a flipped byte
of the neighbour's elements. So the documented format is enough to check a file without atom."""
import os
import shutil
import sys

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_ckpt import verify  # noqa: E402

path, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
ok, lines = verify(path)
if not ok:
    sys.exit(f"an intact file fails independent verification: {lines[-1]}")
if len(lines) != 48:
    sys.exit(f"{len(lines)} datasets verified, 48 expected (16 tensors x 3)")

bad = os.path.join(work, "corrupt.h5")
shutil.copyfile(path, bad)
with h5py.File(bad, "r") as f:
    ds = f["adam_m/attprojw"]
    offset = ds.id.get_offset() + ds.id.get_storage_size() // 3
with open(bad, "r+b") as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ 0x01]))
ok, lines = verify(bad)
if ok or "/adam_m/attprojw" not in lines[-1]:
    sys.exit(f"a corrupted file passes or the wrong dataset is named: {lines[-1:]}")
corrupt_line = lines[-1]

# /param/qkvw (L, 3C, C) has a row per slab written; row 0 copied over row 1, and a byte flipped
# in the first element of what row 1 covered (its start), which row 0 does not hold.
hidden = os.path.join(work, "overlap.h5")
shutil.copyfile(path, hidden)
with h5py.File(hidden, "r+") as f:
    ds = f["param/qkvw"]
    rows = ds.attrs["crc32c_slabs"].copy()
    if len(rows) < 2:
        sys.exit(f"/param/qkvw has {len(rows)} checksum rows, 2 or more expected")
    g = (int(rows[1][1]) * ds.shape[1] + int(rows[1][2])) * ds.shape[2] + int(rows[1][3])
    offset = ds.id.get_offset() + 4 * g
    rows[1] = rows[0]
    ds.attrs["crc32c_slabs"] = rows
with open(hidden, "r+b") as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ 0x01]))
ok, lines = verify(hidden)
if ok or "/param/qkvw" not in lines[-1] or "overlap" not in lines[-1]:
    sys.exit(f"overlapping checksum rows hiding a flipped byte pass: {lines[-1:]}")
print("independent verifier: intact file OK, corrupted file rejected:", corrupt_line)
print("overlapping rows rejected:", lines[-1])
