"""tests/worker_run/test_threads.py: a rank of two threads (OPENBLAS_NUM_THREADS=2: sgemm on
two OpenBLAS threads, the bf16 matmuls on two OpenMP threads of oneDNN's) trains exactly as a
rank of one: the same 6-step job (micro-batches of 16 x 64 tokens) in fp32 and in bf16, every
step's loss and gradient norm equal as written in train.jsonl."""
import os

from worker_run_lib import check, cleanup, raw_train_lines, run, workdir, write_spec

STEPS = 6
# mpirun binds a lone rank to one core, where OpenBLAS would take one thread whatever it is told
os.environ["OMPI_MCA_hwloc_base_binding_policy"] = "none"
works = []
for precision in ("fp32", "bf16"):
    logs = {}
    for threads in ("1", "2"):
        work = workdir("threads-%s-%s" % (precision, threads))
        works.append(work)
        spec = write_spec(work, tensor=1, data=1, steps=STEPS, global_batch=16, micro_batch=16,
                          precision=precision)
        run_dir = os.path.join(work, "runs", "attempt-1")
        os.environ["OPENBLAS_NUM_THREADS"] = threads
        p = run(1, spec, run_dir, extra=())
        check(p.returncode == 0, "%s, %s thread(s): exited %d" % (precision, threads,
                                                                p.returncode))
        logs[threads] = raw_train_lines(run_dir)
        check(len(logs[threads]) == STEPS, "%s, %s thread(s): %d steps logged"
              % (precision, threads, len(logs[threads])))
    for step in sorted(logs["1"]):
        one, two = logs["1"][step], logs["2"][step]
        print("%s step %s: loss %r / %r, grad norm %r / %r" % (
            precision, step, one["loss"], two["loss"], one.get("grad_norm"), two.get("grad_norm")))
        check(one["loss"] == two["loss"] and one.get("grad_norm") == two.get("grad_norm"),
              "%s step %s: 2 threads gave loss %r, grad norm %r; 1 thread %r, %r" % (
                  precision, step, two["loss"], two.get("grad_norm"), one["loss"],
                  one.get("grad_norm")))
cleanup(*works)
print("PASS")
