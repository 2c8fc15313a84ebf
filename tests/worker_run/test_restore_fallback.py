"""tests/worker_run/test_restore_fallback.py: a restart that falls back past a corrupt newest
checkpoint says so. Two sync checkpoints (steps 2 and 4), a flipped byte in step 4's /param/wte,
then a rerun: it restores step 2, and rank 0's log names the skipped file, its step and why
(the checksum mismatch in /param/wte), and rank 0's heartbeats carry the same to atomd."""
import os

import h5py

from worker_run_lib import check, cleanup, heartbeats, run, train_log, workdir, write_spec

work = workdir("fallback")
ckpt = os.path.join(work, "ckpt")
spec = write_spec(work, tensor=1, data=1, steps=100, global_batch=4, micro_batch=2,
                  ckpt_dir=ckpt, every=2)
p = run(1, spec, work, ["--stop-after", "4"])
check(p.returncode == 75, "the first run exited %d, expected 75" % p.returncode)
newest = os.path.join(ckpt, "ckpt-%010d.h5" % 4)
check(os.path.realpath(os.path.join(ckpt, "latest")) == os.path.realpath(newest),
      "latest is not step 4's checkpoint: %s" % sorted(os.listdir(ckpt)))

with h5py.File(newest, "r") as f:
    ds = f["param/wte"]
    offset = ds.id.get_offset() + ds.id.get_storage_size() // 2
with open(newest, "r+b") as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ 0x20]))

p = run(1, spec, work, ["--stop-after", "5"])
check(p.returncode == 75, "the rerun exited %d, expected 75" % p.returncode)
warn = [l for l in p.stderr.splitlines() if "restore skipped" in l]
check(len(warn) == 1, "rank 0 did not say which checkpoint it skipped: %r" % p.stderr[-2000:])
for part in ("1 newer checkpoint", "step 4", "steps 3-4 are trained again", newest,
             "checksum mismatch in dataset /param/wte"):
    check(part in warn[0], "the fallback line lacks %r: %s" % (part, warn[0]))
check([d["step"] for d in train_log(work)] == [1, 2, 3, 4, 3, 4, 5],
      "the rerun should train steps 3-5 again: %s" % [d["step"] for d in train_log(work)])
hb = [h for h in heartbeats(work, 0) if "ckpt_skipped" in h]
check(hb and hb[-1]["ckpt_skipped"] == 1 and hb[-1]["ckpt_skipped_step"] == 4 and
      newest in hb[-1]["ckpt_skipped_why"] and "/param/wte" in hb[-1]["ckpt_skipped_why"],
      "rank 0's heartbeats do not carry the skipped checkpoint: %s" % (hb[-1:] or "none"))
cleanup(work)
print("PASS: " + warn[0])
