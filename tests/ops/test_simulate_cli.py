"""`atomd --simulate` as users run it: the day of trace on the 10,000-GPU inventory under the three
policies (one JSON line each, every job accounted for, the same work done by each), backfill
cutting the mean queueing delay of FIFO on it; usage errors exit 2, an unreadable trace exits 1.
usage: test_simulate_cli.py ATOMD SOURCE_DIR"""
import json
import subprocess
import sys


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    atomd, src = sys.argv[1], sys.argv[2]
    cluster = src + "/configs/clusters/cluster-10k.yaml"
    trace = src + "/configs/traces/day-10k.csv"
    r = subprocess.run([atomd, "--simulate", "--cluster", cluster, "--trace", trace, "--json"], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        fail("exit %d: %s" % (r.returncode, r.stderr))
    rows = {x["policy"]: x for x in map(json.loads, r.stdout.splitlines())}
    if set(rows) != {"fifo", "priority", "backfill"}:
        fail("policies: %r" % rows.keys())
    n = sum(1 for line in open(trace) if line[0].isdigit())
    for p, x in rows.items():
        if x["jobs"] != n or x["done"] + x["failed"] + x["timeout"] + x["unfinished"] != n or x["unfinished"]:
            fail("%s: jobs not accounted for: %r" % (p, x))
        if not 0 < x["utilisation"] <= 1 or not 0 <= x["idle_fragmented"] <= x["idle_queued"] <= 1:
            fail("%s: shares out of range: %r" % (p, x))
        if x["wait_p95_s"] < x["wait_mean_s"] * 0.5 or x["jct_mean_s"] < x["wait_mean_s"]:
            fail("%s: delays inconsistent: %r" % (p, x))
        # The same jobs run for the same time under every policy: busy GPU-seconds agree.
        busy = x["utilisation"] * x["makespan_s"]
        ref = rows["fifo"]["utilisation"] * rows["fifo"]["makespan_s"]
        if abs(busy - ref) > 1e-3 * ref:
            fail("%s: busy GPU-seconds %.0f differ from fifo's %.0f" % (p, busy, ref))
    if not rows["backfill"]["wait_mean_s"] < rows["fifo"]["wait_mean_s"]:
        fail("backfill did not cut FIFO's mean wait: %r" % rows)
    for argv, code in (([], 2), (["--cluster", cluster], 2), (["--cluster", cluster, "--trace", trace, "--policy", "lottery"], 2),
                       (["--cluster", cluster, "--trace", "/nonexistent.csv"], 1)):
        r = subprocess.run([atomd, "--simulate"] + argv, capture_output=True, text=True, timeout=60)
        if r.returncode != code:
            fail("%r: exit %d, expected %d: %s" % (argv, r.returncode, code, r.stderr))
    print("simulate: %s" % ", ".join("%s wait %.0f s" % (p, x["wait_mean_s"]) for p, x in rows.items()))


if __name__ == "__main__":
    main()
