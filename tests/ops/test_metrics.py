"""atomd's metrics endpoint (scheduler/metrics.h): a real atomd with `metrics_port` set serves the
Prometheus text format over HTTP on 127.0.0.1; this test scrapes it while a job runs, parses every
line with the format's grammar, and checks the figures against what it knows: 2 of 4 GPUs busy,
one running job whose step advances, scheduling passes counted. A path other than /metrics is 404,
and connections that send nothing or half a request do not hold the loop.
Cluster: one node of 4 CPU slots; stand-in worker tests/atomd/fake_worker.c."""
import os
import re
import socket
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "atomd"))
import harness  # noqa: E402
from harness import check, wait_until  # noqa: E402

CLUSTER = """name: solo
switches: [leaf]
nodes:
  - {name: solo, switch: leaf, gpus: 4, addr: localhost, has_gpus: false}
"""

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.eE+-]+|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        check(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), "content type %s" % r.headers)
        text = r.read().decode()
    samples = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        check(m, "not a Prometheus sample line: %r" % line)
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        check(name in typed, "%s has no TYPE line" % name)
        samples[(name, tuple(sorted(LABEL.findall(labels))))] = value
    return samples


def get(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))))


def main():
    args = harness.parse_args()
    port = harness.free_port()

    def test(d):
        # A scraper that connects and sends nothing (or half a request) must not hold atomd: its
        # one poll loop serves the others and the job sockets meanwhile.
        idle = socket.create_connection(("127.0.0.1", port))
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /metr")
        s = scrape(port)
        check(get(s, "atom_gpus", state="free") == 4 and get(s, "atom_gpus", state="busy") == 0,
              "idle cluster: %r" % s)
        check(d.request({"op": "ping"}).get("ok"), "atomd answers its socket beside idle scrapers")
        job = d.submit(d.spec("sleep-m", gpus=2, extra="project: metrics-test\n"))
        d.wait_state(job, "running")

        def stepped():
            s = scrape(port)
            step = get(s, "atom_job_step", job=str(job), name="sleep-m", project="metrics-test")
            return s if step and step > 0 else None

        s = wait_until(stepped, 30, "atom_job_step of job %d to advance" % job)
        check(get(s, "atom_gpus", state="busy") == 2 and get(s, "atom_gpus", state="free") == 2,
              "busy/free: %r" % s)
        check(get(s, "atom_jobs", state="running") == 1 and get(s, "atom_jobs", state="pending") == 0, "jobs")
        check(get(s, "atom_nodes", state="up") == 1, "nodes")
        check(get(s, "atom_job_restarts", job=str(job), name="sleep-m", project="metrics-test") == 0, "restarts")
        check(get(s, "atom_sched_passes_total") >= 1, "passes")
        age = get(s, "atom_job_checkpoint_age_seconds", job=str(job), name="sleep-m", project="metrics-test")
        check(age is not None and 0 <= age < 60, "checkpoint age (none yet: since the attempt started): %r" % age)
        check(get(s, "atom_sched_pass_seconds") is not None, "pass seconds")
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/other" % port, timeout=10)
            check(False, "/other answered 200")
        except urllib.error.HTTPError as e:
            check(e.code == 404, "/other: %d" % e.code)
        idle.close()
        half.close()
        d.ctl("cancel", str(job))
        d.wait_state(job, "cancelled")
        s = scrape(port)
        check(get(s, "atom_jobs", state="cancelled") == 1 and get(s, "atom_gpus", state="busy") == 0,
              "after cancel: %r" % s)
        print("metrics: %d samples parsed" % len(s))

    harness.run(test, args, config="metrics_port = %d\n" % port, cluster=CLUSTER)


if __name__ == "__main__":
    main()
