#!/usr/bin/env python3
"""configs/traces/gen_trace.py: writes a synthetic job trace for `atomd --simulate` (format in
scheduler/simulate.h).

The mix follows what shared training clusters report: most jobs are small (a node or less) and
short, a few are large and long; arrivals are Poisson, and their rate is chosen so that the GPU
work offered over the day is `--load` times the cluster's capacity. A fixed seed makes the file
reproducible, so the three policies (and later versions of atomd) are compared on the same jobs.

    python3 configs/traces/gen_trace.py --gpus 10000 --hours 24 --load 0.9 --seed 7 > day-10k.csv
"""
import argparse
import math
import random

# (share of jobs, GPU counts to pick from, median duration in hours)
CLASSES = [
    (0.70, [1, 2, 4, 8], 0.5),
    (0.22, [16, 32, 64], 1.0),
    (0.07, [128, 256, 512], 2.0),
    (0.01, [1024, 2048], 6.0),
]
PROJECTS = [("llm-pretrain", 0.30), ("vision", 0.20), ("speech", 0.15), ("rl", 0.15),
            ("research", 0.15), ("eval", 0.05)]


def pick(rng, weighted):
    x, acc = rng.random(), 0.0
    for item, w in weighted:
        acc += w
        if x < acc:
            return item
    return weighted[-1][0]


def one_job(rng):
    share_classes = [((gpus, med), share) for share, gpus, med in CLASSES]
    gpus_choices, median_h = pick(rng, share_classes)
    gpus = rng.choice(gpus_choices)
    # Lognormal around the class median, kept between 5 minutes and 12 hours.
    duration = min(12 * 3600, max(300, median_h * 3600 * math.exp(rng.gauss(0, 0.8))))
    tensor = 8 if gpus >= 64 else (4 if gpus >= 16 else 1)
    # Users overestimate: the limit is 1.1x-2x the run, rounded up to 15 minutes.
    limit = math.ceil(duration * rng.uniform(1.1, 2.0) / 900) * 900
    fails_at = round(rng.uniform(0.1, 0.9), 3) if rng.random() < 0.05 else 0
    priority = 200 if rng.random() < 0.05 else 100
    return gpus, int(duration), tensor, pick(rng, PROJECTS), fails_at, limit, priority


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=10000)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--load", type=float, default=0.9, help="offered GPU work / capacity")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    horizon = args.hours * 3600
    jobs = []
    # Mean work of one job, sampled, sets the arrival rate for the asked load.
    probe = random.Random(args.seed + 1)
    mean_work = sum(g * d for g, d, *_ in (one_job(probe) for _ in range(20000))) / 20000
    rate = args.load * args.gpus / mean_work  # jobs per second
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= horizon:
            break
        jobs.append((int(t),) + one_job(rng))
    print(f"# {len(jobs)} jobs over {args.hours:g} h, offered load {args.load} of {args.gpus} GPUs, "
          f"seed {args.seed} (configs/traces/gen_trace.py)")
    print("submit_s,gpus,duration_s,tensor,project,fails_at,time_limit_s,priority")
    for submit, gpus, duration, tensor, project, fails_at, limit, priority in jobs:
        print(f"{submit},{gpus},{duration},{tensor},{project},{fails_at},{limit},{priority}")


if __name__ == "__main__":
    main()
