"""tests/worker_run/test_threads.py: a rank of two threads (OPENBLAS_NUM_THREADS=2: sgemm on
two OpenBLAS threads, the bf16 matmuls on two OpenMP threads of oneDNN's) trains exactly as a
rank of one: the same 6-step job (micro-batches of 16 x 64 tokens) in fp32 and in bf16, every
step's loss and gradient norm equal as written in train.jsonl (fp32 to 1e-6 where OpenBLAS runs
its AVX2 kernels, below)."""
import ctypes
import os

from worker_run_lib import check, cleanup, raw_train_lines, run, workdir, write_spec


def openblas_core():
    """The kernel family OpenBLAS picked for this CPU (its dynamic-arch build), or "?"."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "?"


# OpenBLAS's AVX2 kernels (Haswell, also picked for AMD Zen, Zen 4 included in Debian's 0.3.21)
# give 2-thread sgemm results that differ from 1 thread's in the last bit (measured on an AMD
# EPYC: grad norm 3.24597059 against 3.24597043 at step 2; the SkylakeX kernels forced on the
# same machine with OPENBLAS_CORETYPE agree bit for bit). There fp32 is checked to 1e-6.
CORE = openblas_core()
FP32_EXACT = CORE.lower() not in ("haswell", "zen", "sandybridge", "excavator")
print("OpenBLAS core %s: fp32 compared %s" % (CORE, "bit for bit" if FP32_EXACT else "to 1e-6"))


def same(a, b, exact):
    if a is None or b is None or exact:
        return a == b
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))

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
        exact = FP32_EXACT or precision != "fp32"
        check(same(one["loss"], two["loss"], exact) and
              same(one.get("grad_norm"), two.get("grad_norm"), exact),
              "%s step %s: 2 threads gave loss %r, grad norm %r; 1 thread %r, %r" % (
                  precision, step, two["loss"], two.get("grad_norm"), one["loss"],
                  one.get("grad_norm")))
cleanup(*works)
print("PASS")
