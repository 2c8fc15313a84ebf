#!/usr/bin/env python3
"""bench/ckpt/summarize.py LOG: the medians and per-round ratios of a run_bench.sh log.

Each "== np N round R" block holds one round of atom, dd and DCP figures ("key value" pairs).
Ratios are taken within a round (the disk drifts between rounds), then their median."""
import re
import statistics
import sys

rounds = []  # (np, {key: value})
for line in open(sys.argv[1]):
    m = re.match(r"== np (\d+) round (\d+)", line)
    if m:
        rounds.append((int(m.group(1)), {}))
        continue
    if rounds:
        toks = line.split()
        for k, v in zip(toks[::1], toks[1::1]):
            if re.fullmatch(r"[a-z_]+(GBps|_s)", k) and re.fullmatch(r"[0-9.]+", v):
                rounds[-1][1][k] = float(v)

RATIOS = [  # (label, numerator, denominator)
    ("save / dd random", "save_GBps", "dd_write_random_GBps"),
    ("save / dd zeros", "save_GBps", "dd_write_zeros_GBps"),
    ("save / dd direct", "save_GBps", "dd_write_direct_GBps"),
    ("save / DCP save", "save_GBps", "dcp_save_GBps"),
    ("load / dd direct", "load_GBps", "dd_read_direct_GBps"),
    ("verified load / dd direct", "load_verified_GBps", "dd_read_direct_GBps"),
    ("load / DCP load", "load_GBps", "dcp_load_GBps"),
    ("verified load / DCP load", "load_verified_GBps", "dcp_load_GBps"),
]
FIGS = ["save_GBps", "dd_write_random_GBps", "dd_write_zeros_GBps", "dd_write_direct_GBps",
        "dcp_save_GBps",
        "load_GBps", "load_verified_GBps", "dd_read_direct_GBps", "dcp_load_GBps"]
for np_ in sorted({n for n, _ in rounds}):
    mine = [f for n, f in rounds if n == np_]
    print(f"ranks {np_} ({len(mine)} rounds), GB/s medians:")
    for k in FIGS:
        vals = [f[k] for f in mine if k in f]
        if vals:
            print(f"  {k:24s} {statistics.median(vals):6.3f}   rounds: "
                  + " ".join(f"{v:.3f}" for v in vals))
        elif k.startswith("dcp"):
            print(f"  {k:24s} skipped (torch not importable or DCP failed)")
    for label, a, b in RATIOS:
        per = [f[a] / f[b] for f in mine if a in f and b in f and f[b] > 0]
        if per:
            print(f"  {label:26s} median {statistics.median(per):5.2f}   rounds: "
                  + " ".join(f"{r:.2f}" for r in per))
