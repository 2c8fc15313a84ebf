"""tests/worker_run/test_bad_token.py: a token outside the vocabulary that only ONE rank reads
stops the whole job at once (no rank left waiting in a collective), with a message naming the
rank, the host, the file and the token's offset. The test finds such a step by recomputing the
documented data order (worker/data.c: SplitMix64 chained over seed, step, sample), which also
pins that order: changing it would silently change what a resumed job trains on."""
import os
import struct
import time

from worker_run_lib import check, cleanup, run, workdir

M64 = (1 << 64) - 1


def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def sample_offset(seed, step, sample, n_tokens, context):
    h = mix64(seed ^ 0x6A09E667F3BCC909)
    h = mix64(h ^ step)
    return mix64(h ^ sample) % (n_tokens - context)


N, T, SEED, BAD_AT, GLOBAL, MICRO = 4000, 16, 11, 2500, 4, 2
per_replica = GLOBAL // 2


def covers(step, replica):
    return any(o <= BAD_AT <= o + T for o in
               (sample_offset(SEED, step, replica * per_replica + i, N, T) for i in range(per_replica)))


# The first step at which replica 1 reads the bad token and replica 0 does not, and no earlier
# step touches it at all.
bad_step = None
for s in range(2000):
    r0, r1 = covers(s, 0), covers(s, 1)
    if r0 or r1:
        if r1 and not r0:
            bad_step = s
        break
check(bad_step is not None, "no step where only replica 1 reads the bad token (change SEED)")

work = workdir("bad-token")
data = os.path.join(work, "tokens.u16")
with open(data, "wb") as f:
    f.write(b"".join(struct.pack("<H", 300 if i == BAD_AT else i % 256) for i in range(N)))
spec = os.path.join(work, "job.yaml")
with open(spec, "w") as f:
    f.write("""name: bad-token
resources: {gpus: 2, device: cpu}
parallelism: {tensor: 1, data: 2}
model: {layers: 1, channels: 32, heads: 2, vocab: 256, context: %d}
data: {path: %s, format: uint16}
training: {steps: %d, global_batch: %d, micro_batch: %d, lr: 0.001, seed: %d}
""" % (T, data, bad_step + 5, GLOBAL, MICRO, SEED))
start = time.time()
p = run(2, spec, work, timeout=60)
check(p.returncode not in (0, 75), "the job must fail, exited %d" % p.returncode)
check("rank 1 on " in p.stderr, "the error names rank 1")
check(data in p.stderr and "token 300 at token offset %d" % BAD_AT in p.stderr,
      "the error names the file and the offset %d" % BAD_AT)
check(sum(1 for line in p.stdout.splitlines() if line.startswith("step ")) == bad_step,
      "steps before %d ran; the error came at step %d" % (bad_step, bad_step + 1))
cleanup(work)
print("PASS: bad token at step %d on rank 1 stopped the job in %.1f s" % (bad_step + 1, time.time() - start))
