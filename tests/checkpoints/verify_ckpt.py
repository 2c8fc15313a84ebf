#!/usr/bin/python3
"""tests/checkpoints/verify_ckpt.py FILE: verifies an atom checkpoint without atom.

Written from docs/checkpoint-format.md alone, with h5py and numpy: for every dataset under
/param, /adam_m and /adam_v, each row of its `crc32c_slabs` attribute is
[crc32c, start[0..n), stride[0..n), count[0..n), block[0..n)]; the CRC32C (Castagnoli,
reflected, init and final xor 0xFFFFFFFF) of the hyperslab's elements as little-endian float32,
in row-major order, must equal the stored value, and the slabs together must cover the dataset
exactly once (no element in two slabs, none in no slab, none outside the dataset).
Exit status 0 when everything matches, 1 otherwise (the first bad dataset is named)."""
import sys

import h5py
import numpy as np

POLY = 0x82F63B78
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    table = TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def slab_indices(start, stride, count, block):
    return np.concatenate([start + i * stride + np.arange(block) for i in range(count)])


def verify(path):
    """Returns (ok, lines): one line per dataset, the failure last."""
    lines = []
    with h5py.File(path, "r") as f:
        for group in ("param", "adam_m", "adam_v"):
            if group not in f:
                return False, lines + [f"{path}: no group /{group}"]
            for name in sorted(f[group]):
                ds = f[group][name]
                full = ds[...]
                n = full.ndim
                rows = ds.attrs["crc32c_slabs"]
                times = np.zeros(full.shape, dtype=np.int64)  # how many slabs hold each element
                for row in rows:
                    row = [int(v) for v in row]
                    crc, start, stride = row[0], row[1:1 + n], row[1 + n:1 + 2 * n]
                    count, block = row[1 + 2 * n:1 + 3 * n], row[1 + 3 * n:1 + 4 * n]
                    idx = [slab_indices(start[d], stride[d], count[d], block[d]) for d in range(n)]
                    if any(len(i) == 0 or i.min() < 0 or i.max() >= full.shape[d]
                           for d, i in enumerate(idx)):
                        return False, lines + [f"dataset /{group}/{name}: hyperslab start {start} "
                                               f"count {count} block {block} lies outside it"]
                    sel = full[np.ix_(*idx)]
                    np.add.at(times, np.ix_(*idx), 1)
                    got = crc32c(sel.astype("<f4").tobytes())
                    if got != crc:
                        return False, lines + [
                            f"checksum mismatch in dataset /{group}/{name}, hyperslab start {start} "
                            f"count {count} block {block}: stored {crc:08x}, data gives {got:08x}"]
                if (times != 1).any():
                    return False, lines + [
                        f"dataset /{group}/{name}: {(times > 1).sum()} elements in two slabs or "
                        f"more (overlap), {(times == 0).sum()} in none"]
                lines.append(f"ok /{group}/{name} {len(rows)} hyperslabs")
    return True, lines


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ok, lines = verify(sys.argv[1])
    print("\n".join(lines))
    print(("OK " if ok else "FAILED ") + sys.argv[1])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
