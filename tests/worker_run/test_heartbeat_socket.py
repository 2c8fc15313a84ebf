"""tests/worker_run/test_heartbeat_socket.py: atom-worker sends its heartbeats to atomd's Unix
socket as one JSON datagram each (step, collective counts, and from rank 0 loss and tokens/s),
or as JSON lines when atomd listens on a stream socket, and a missing atomd never stops
training."""
import json
import os
import socket

from worker_run_lib import check, cleanup, run, workdir, write_spec

STEPS = 6
work = workdir("heartbeat")
spec = write_spec(work, tensor=1, data=2, steps=STEPS, global_batch=4, micro_batch=2)
sock_path = os.path.join(work, "atomd.sock")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listener.bind(sock_path)
p = run(2, spec, work, ["--heartbeat", sock_path])
check(p.returncode == 0, "atom-worker exited %d" % p.returncode)
listener.setblocking(False)
messages = []
while True:
    try:
        messages.append(json.loads(listener.recv(65536).decode()))
    except BlockingIOError:
        break
listener.close()
by_rank = {0: [], 1: []}
for m in messages:
    by_rank[m["rank"]].append(m)
for rank, ms in by_rank.items():
    check(ms, "no heartbeat datagram from rank %d" % rank)
    check(ms[-1]["step"] == STEPS, "rank %d's last heartbeat is at step %d" % (rank, ms[-1]["step"]))
    check(ms[-1]["pid"] > 0 and ms[-1]["host"], "rank %d's heartbeat names no pid or host" % rank)
check("loss" in by_rank[0][-1] and by_rank[0][-1]["tokens_per_s"] > 0,
      "rank 0's heartbeat carries loss and tokens/s: %s" % by_rank[0][-1])

# atomd listening on a stream socket instead: one JSON object per line, every line whole.
os.unlink(sock_path)
stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
stream.bind(sock_path)
stream.listen(8)  # the workers' connections wait in the backlog until the job is done
p = run(2, spec, work, ["--heartbeat", sock_path])
check(p.returncode == 0, "atom-worker exited %d (stream socket)" % p.returncode)
stream.setblocking(False)
lines = []
while True:
    try:
        conn, _ = stream.accept()
    except BlockingIOError:
        break
    conn.setblocking(True)
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.close()
    check(data.endswith(b"\n"), "a stream heartbeat ends mid-line")
    lines += [json.loads(line) for line in data.decode().splitlines()]
stream.close()
check(sorted({m["rank"] for m in lines}) == [0, 1] and max(m["step"] for m in lines) == STEPS,
      "stream heartbeats from both ranks up to step %d: %s" % (STEPS, lines))

# Nobody listening (atomd down, or not started yet): the job runs to its end all the same.
os.unlink(sock_path)
p = run(2, spec, os.path.join(work), ["--heartbeat", sock_path])
check(p.returncode == 0, "without atomd atom-worker exited %d" % p.returncode)
cleanup(work)
print("PASS: %d heartbeat datagrams" % len(messages))
