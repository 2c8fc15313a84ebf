"""Accounting (atomctl history, atomctl usage): ended jobs stay queryable from atomd's store, also
once they are no longer kept in memory (keep_finished = 0) and after a restart of atomd; GPU-hours
are summed per user and project from the attempts' times (a job of 2 GPUs counts twice its run
time) for each owner (one job is another user's), and the fair-share figure per project is shown beside them.
Cluster: one node of 4 CPU slots; stand-in worker tests/atomd/fake_worker.c."""
import json
import os
import pwd
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "atomd"))
import harness  # noqa: E402
from harness import check  # noqa: E402

NOBODY = 65534

CLUSTER = """name: solo
switches: [leaf]
nodes:
  - {name: solo, switch: leaf, gpus: 4, addr: localhost, has_gpus: false}
"""


def ctl_json(d, *argv):
    rc, out, err = d.ctl(*argv, "--json")
    check(rc == 0, "atomctl %s: exit %d: %s" % (" ".join(argv), rc, err))
    return json.loads(out)


def main():
    args = harness.parse_args()

    def test(d):
        a = d.submit(d.spec("ok-acct-a", gpus=2, steps=60, extra="project: proj-a\n"))
        rc, out, err = d.ctl("submit", d.spec("failonce-acct-b", gpus=1, steps=10, extra="project: proj-b\n"), "--json",
                             user=NOBODY)
        check(rc == 0, "nobody submits: %s" % err)
        b = json.loads(out)["job"]
        d.wait_state(a, "done")
        d.wait_state(b, "done")
        for restart in (False, True):
            if restart:  # durable: the same answers from a fresh atomd on the same store
                d.stop()
                d.start()
            hist = ctl_json(d, "history")["jobs"]
            by_id = {j["id"]: j for j in hist}
            check(set(by_id) == {a, b}, "history: %r" % hist)
            check(by_id[a]["state"] == "done" and by_id[a]["project"] == "proj-a" and by_id[a]["gpus"] == 2,
                  "job a: %r" % by_id[a])
            check(by_id[b]["attempts"] == 2, "job b ran twice: %r" % by_id[b])
            check(hist[0]["end_time"] >= hist[1]["end_time"], "newest first: %r" % hist)
            use = ctl_json(d, "usage")
            rows = {r["project"]: r for r in use["usage"]}
            check(set(rows) == {"proj-a", "proj-b"}, "usage: %r" % use)
            check(rows["proj-a"]["uid"] == os.getuid() and rows["proj-b"]["uid"] == NOBODY, "per user: %r" % use)
            ran_a = by_id[a]["end_time"] - by_id[a]["start_time"]
            got = rows["proj-a"]["gpu_hours"] * 3600
            # One attempt, started and ended with the job (the same clock readings, to a few ms).
            check(abs(got - 2 * ran_a) <= 0.05 * ran_a + 0.02,
                  "proj-a: %.3f GPU-s for 2 GPUs x %.3f s" % (got, ran_a))
            check(rows["proj-b"]["gpu_hours"] > 0 and rows["proj-b"]["jobs"] == 1, "proj-b: %r" % rows["proj-b"])
            fair = {f["project"]: f["decayed_gpu_hours"] for f in use["fair_share"]}
            check("proj-a" in fair and fair["proj-a"] > 0, "fair share: %r" % use["fair_share"])
        rc, out, err = d.ctl("usage")
        check(rc == 0 and "proj-a" in out and pwd.getpwuid(os.getuid()).pw_name in out and
              pwd.getpwuid(NOBODY).pw_name in out, "usage text: %r" % out)
        rc, out, err = d.ctl("history")
        check(rc == 0 and "ok-acct-a" in out and "failonce-acct-b" in out, "history text: %r" % out)
        print("history and usage: ok (%.3f GPU-hours for proj-a)" % rows["proj-a"]["gpu_hours"])

    harness.run(test, args, config="keep_finished = 0\n", cluster=CLUSTER)


if __name__ == "__main__":
    main()
