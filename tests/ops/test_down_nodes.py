"""Down nodes (issue 6), as Slurm's DOWN: a node mpirun cannot reach is marked down with the reason
(not drained), gets no jobs, and returns to up by itself once a probe reaches it again; a node an
administrator drained stays drained. The health program's own failure on a node that is reached
still drains it. mpirun's word alone (it runs as the job's owner, who picks its launch agent) marks
no node down: atomd's own probe decides (issue 14).

Real mpirun, real ssh. Node n1 is this machine (localhost); node n2's address is node-b.invalid,
which mpirun reaches through its launch agent (Open MPI's plm_rsh_agent, as Kubeflow's MPI
Operator reaches pods with kubexec.sh): while the test's file `reachable` exists the agent starts
mpirun's daemon here, as the node's; otherwise it hands over to ssh, which cannot resolve node-b.
Stand-in worker tests/atomd/fake_worker.c."""
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "atomd"))
import harness  # noqa: E402
from harness import check, wait_until  # noqa: E402

CLUSTER = """name: pair
switches: [leaf]
nodes:
  - {name: n1, switch: leaf, gpus: 2, addr: localhost, has_gpus: false}
  - {name: n2, switch: leaf, gpus: 2, addr: node-b.invalid, has_gpus: false}
"""

AGENT = """#!/bin/sh
# Open MPI's launch agent: AGENT HOST COMMAND...
host=$1
shift
if [ -e "%(dir)s/forge" ] && [ "$(id -u)" != 0 ]; then
    # A job's owner chooses their mpirun's launch agent (~/.openmpi/mca-params.conf): theirs says
    # the node cannot be reached, and mpirun reports it so.
    echo "ssh: connect to host $host port 22: No route to host" >&2
    exit 255
fi
if [ -e "%(dir)s/reachable" ]; then
    exec sh -c "$*"
fi
exec ssh -o BatchMode=yes "$host" "$@"
"""

HEALTH = """#!/bin/sh
echo run >> "%(dir)s/runs.$1"
if [ -e "%(dir)s/sick.$1" ]; then
    echo "$1: GPU 1 has uncorrectable ECC errors"
    exit 1
fi
"""


def nodes(d):
    rc, out, err = d.ctl("nodes", "--json")
    check(rc == 0, "nodes: %s" % err)
    return {n["name"]: n for n in json.loads(out)["nodes"]}


def write_script(d, name, text):
    path = os.path.join(d.tmp, name)
    with open(path, "w") as f:
        f.write(text % {"dir": d.tmp})
    os.chmod(path, 0o755)
    return path


def with_daemon(args, settings, test):
    def setup(d):
        d.env["OMPI_MCA_plm_rsh_agent"] = write_script(d, "agent.sh", AGENT)
        d.port = harness.free_port()
        conf = os.path.join(d.tmp, "atomd.conf")
        with open(conf, "w") as f:
            f.write("metrics_port = %d\n" % d.port + settings % {"health": write_script(d, "health.sh", HEALTH)})
        d.extra += ["--config", conf]
    harness.run(test, args, setup=setup, cluster=CLUSTER)


def reachable(d, yes):
    path = os.path.join(d.tmp, "reachable")
    if yes:
        open(path, "w").close()
    elif os.path.exists(path):
        os.unlink(path)


def launch_fails(d):
    """No health program: the attempt's mpirun cannot reach n2 -> n2 down, the job requeued without
    counting a failure; the probe brings n2 back once it is reachable and the job runs."""
    job = d.submit(d.spec("ok-wide", gpus=4, steps=5))
    wait_until(lambda: nodes(d)["n2"]["state"] == "down", 20, "n2 to be down")
    n2 = nodes(d)["n2"]
    check("not reachable" in n2["reason"] and "Could not resolve hostname node-b" in n2["reason"],
          "n2's reason names what failed: %r" % n2["reason"])
    check(nodes(d)["n1"]["state"] == "up", "n1 stays up")
    info = d.job(job)
    a = info["attempts"]
    check(info["job"]["state"] == "pending" and info["job"]["restarts"] == 0 and a[0]["state"] == "unreachable",
          "the job is requeued, not charged: %s %s" % (info["job"], a))
    rc, out, err = d.ctl("status")
    check(rc == 0 and "1 down" in out and "node n2 down: not reachable" in out, "status: %r" % out)
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.port, timeout=10).read().decode()
    check('atom_nodes{state="down"} 1' in metrics and
          'atom_node_unavailable{node="n2",state="down",reason="not reachable: ' in metrics,
          "metrics show n2 down with its reason: %r" % [l for l in metrics.splitlines() if "node" in l])
    time.sleep(2.5)  # probes at health_interval (1 s) keep failing: still down, the job waits
    check(nodes(d)["n2"]["state"] == "down" and d.state_of(job) == "pending", "n2 stays down while unreachable")
    reachable(d, True)
    wait_until(lambda: nodes(d)["n2"]["state"] == "up", 20, "n2 to be up again")
    check(nodes(d)["n2"]["reason"] == "", "no reason once up: %r" % nodes(d)["n2"])
    info = d.wait_state(job, "done", timeout=30)
    check(info["attempts"][-1]["nodes"] == ["n1", "n2"], "the job ran on both nodes: %s" % info["attempts"])

    # An administrator's drain outlives reachability: a down node drained stays drained.
    reachable(d, False)
    job = d.submit(d.spec("ok-wide2", gpus=4, steps=5))
    wait_until(lambda: nodes(d)["n2"]["state"] == "down", 20, "n2 to be down again")
    rc, out, err = d.ctl("drain", "n2", "--reason", "cable swap")
    check(rc == 0, "drain: %s" % err)
    reachable(d, True)
    time.sleep(3)
    n2 = nodes(d)["n2"]
    check(n2["state"] == "drained" and n2["reason"] == "cable swap" and d.state_of(job) == "pending",
          "a drained node is not brought back by the probe: %r" % n2)
    rc, out, err = d.ctl("resume", "n2")
    check(rc == 0, "resume: %s" % err)
    d.wait_state(job, "done", timeout=30)


def health_checks(d):
    """With a health program: n2 unreachable -> down (the program never ran there), reachable ->
    up; the program failing on n2 -> drained, not down."""
    wait_until(lambda: nodes(d)["n2"]["state"] == "down", 20, "n2 to be down")
    check("not reachable" in nodes(d)["n2"]["reason"], "down, not drained: %r" % nodes(d)["n2"])
    check(not os.path.exists(os.path.join(d.tmp, "runs.n2")), "the health program did not run on n2")
    check(nodes(d)["n1"]["state"] == "up", "n1 up: %r" % nodes(d)["n1"])
    reachable(d, True)
    wait_until(lambda: nodes(d)["n2"]["state"] == "up", 20, "n2 to be up again")
    check(os.path.exists(os.path.join(d.tmp, "runs.n2")), "the health program ran on n2 once reached")
    open(os.path.join(d.tmp, "sick.n2"), "w").close()
    wait_until(lambda: nodes(d)["n2"]["state"] == "drained", 20, "n2 to be drained")
    check("health check failed (exit 1): n2: GPU 1 has uncorrectable ECC errors" in nodes(d)["n2"]["reason"],
          "drained with the program's message: %r" % nodes(d)["n2"])


def forged(d):
    """A job's owner makes their mpirun say it could not reach n2 (issue 14): atomd's own probe
    reaches n2, so no node goes down, and the attempt is charged as the failure it is."""
    reachable(d, True)
    open(os.path.join(d.tmp, "forge"), "w").close()
    path = d.spec("ok-forged", gpus=4, steps=5, extra="restart:\n  max_restarts: 0\n")
    rc, out, err = d.ctl("submit", path, "--json", user=65534)
    check(rc == 0, "nobody submits: %r" % err)
    job = json.loads(out)["job"]
    info = d.wait_state(job, "failed", timeout=30)
    check(info["job"]["restarts"] == 1 and info["attempts"][0]["state"] == "failed",
          "charged, not requeued as unreachable: %s %s" % (info["job"], info["attempts"]))
    check(all(n["state"] == "up" for n in nodes(d).values()), "no node down: %r" % nodes(d))
    check("probing" in d.log(), "atomd probed the node the attempt named")


def main():
    args = harness.parse_args()
    with_daemon(args, "health_interval = 1s\n", launch_fails)
    with_daemon(args, "health_check = %(health)s\nhealth_interval = 1s\nhealth_fresh = 60s\n", health_checks)
    with_daemon(args, "", forged)
    print("down nodes: ok")


if __name__ == "__main__":
    main()
