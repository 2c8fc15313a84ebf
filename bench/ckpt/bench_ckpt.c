/* bench/ckpt/bench_ckpt.c: save and load bandwidth of atom's checkpoints, and the wall time an
 * async save adds to a training loop, for a GPT state sharded over the ranks (TP = ranks).
 *
 *   mpirun -np N bench_ckpt --dir DIR --model gpt2-124m|gpt-tiny [--steps-ms 100]
 *                           [--async no] [--export no] [--cost-rounds 5] [--window-saves 2]
 *
 * Exits 1 if any save, load or export failed (the test suite's smoke run checks that).
 * Prints one line per figure ("key value unit"); run_bench.sh runs it at 1, 2 and 4 ranks beside
 * dd's write and direct-read bandwidth to the same disk in the same run (the limits).
 * Before each load the file is evicted from the page cache (posix_fadvise DONTNEED on a synced
 * file), so loads are cold reads like dd iflag=direct.
 *
 * The async cost uses a stand-in compute loop (a fixed amount of arithmetic plus a small
 * MPI_Allreduce per step, --steps-ms long): the worker's real gpt2-124m step on this CPU takes
 * seconds and would make the save a small part of a long, noisy window. The stand-in keeps the
 * state's size (what the snapshot copies and the writer writes) and competes for the cores as
 * training would. async_cost_worker.sh measures the same with the real worker on gpt-tiny. */
#include "checkpoints/checkpoints.h"
#include "tests/checkpoints/ckpt_test_model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rank, nranks;

/* The state's values do not matter to bandwidth: a cheap pattern, not the tests' hashed values. */
static void fill(test_model *m) {
    for (int i = 0; i < TM_TENSORS; i++) {
        atom_ckpt_tensor *t = &m->t[i];
        size_t n = (size_t)atom_ckpt_shard_elems(t);
        for (size_t e = 0; e < n; e++) {
            t->param[e] = (float)(e % 1000) * 1e-3f;
            t->adam_m[e] = (float)(e % 777) * 1e-4f;
            t->adam_v[e] = (float)(e % 555) * 1e-6f;
        }
    }
}

/* Global state bytes (param + 2 moments). */
static int64_t state_bytes(const atom_ckpt_tensor *t) {
    int64_t n = 0;
    for (int i = 0; i < 16; i++) {
        int64_t e = 1;
        for (int d = 0; d < t[i].ndims; d++) {
            e *= t[i].dims[d];
        }
        n += e;
    }
    return n * 3 * 4;
}

static void evict(const char *path) {
    if (rank == 0) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            fdatasync(fd);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Before each variant of the async-cost rounds: the previous variant's dirty pages written back
 * (sync) and a pause, so that no variant pays for the one before it. */
static void settle(void) {
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        sync();
        sleep(2);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Stand-in for a training step: fixed arithmetic, then a gradient-sized all-reduce. */
static float *work_buf;
static void compute_step(int64_t flops_per_rank) {
    static float acc[4096];
    float s = 0;
    int64_t iters = flops_per_rank / (2 * 4096);
    for (int64_t it = 0; it < iters; it++) {
        for (int j = 0; j < 4096; j++) {
            acc[j] = acc[j] * 0.999f + work_buf[j];
        }
    }
    for (int j = 0; j < 4096; j++) {
        s += acc[j];
    }
    float in[1024], out[1024];
    for (int j = 0; j < 1024; j++) {
        in[j] = s;
    }
    MPI_Allreduce(in, out, 1024, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

int main(int argc, char **argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    const char *dir = NULL, *model = "gpt2-124m";
    double step_ms = 100, window_saves = 2;
    int cost_rounds = 5;
    bool async = true, export = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0) {
            dir = argv[i + 1];
        } else if (strcmp(argv[i], "--model") == 0) {
            model = argv[i + 1];
        } else if (strcmp(argv[i], "--async") == 0) {
            async = strcmp(argv[i + 1], "no") != 0;
        } else if (strcmp(argv[i], "--export") == 0) {
            export = strcmp(argv[i + 1], "no") != 0;
        } else if (strcmp(argv[i], "--cost-rounds") == 0) {
            cost_rounds = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--window-saves") == 0) {
            window_saves = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--steps-ms") == 0) {
            step_ms = atof(argv[i + 1]);
        }
    }
    int64_t shape[5]; /* L, C, V, Vp, T */
    if (strcmp(model, "gpt2-124m") == 0) {
        memcpy(shape, (int64_t[5]){12, 768, 50257, 50304, 1024}, sizeof shape);
    } else if (strcmp(model, "gpt-tiny") == 0) {
        memcpy(shape, (int64_t[5]){4, 256, 256, 256, 128}, sizeof shape);
    } else {
        dir = NULL;
    }
    if (!dir || provided < MPI_THREAD_MULTIPLE) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np N %s --dir DIR --model gpt2-124m|gpt-tiny "
                            "[--steps-ms MS]\n", argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    test_model m;
    int rc = tm_init_shape(&m, shape[0], shape[1], shape[2], shape[3], shape[4], rank, nranks);
    if (rc == 0) {
        fill(&m);
    }
    atom_ckpt_tensor *t = m.t;
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rc != 0) {
        if (rank == 0) {
            fprintf(stderr, "out of memory building the state\n");
        }
        MPI_Finalize();
        return 1;
    }
    double gb = (double)state_bytes(t) / 1e9;
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    atom_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.vocab = m.V;
    snprintf(meta.writer, sizeof meta.writer, "bench_ckpt");
    atom_ckpt_err err = {""};
    char path[4096];
    int failures = 0; /* loads, export, async saves that failed: the exit status says so */
    if (rank == 0) {
        printf("model %s state_gb %.3f ranks %d layout TP%dxDP1\n", model, gb, nranks, nranks);
    }

    /* synchronous save (write + commit with fsync) */
    meta.step = 1;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    rc = atom_ckpt_save(dir, g, t, 16, &meta, 1, &err);
    double save_s = MPI_Wtime() - t0;
    if (rc != 0) {
        if (rank == 0) {
            fprintf(stderr, "save failed: %s\n", err.msg);
        }
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    snprintf(path, sizeof path, "%s/ckpt-%010d.h5", dir, 1);
    struct stat st;
    stat(path, &st);
    if (rank == 0) {
        printf("save_s %.3f save_GBps %.3f file_gb %.3f\n", save_s, gb / save_s,
               (double)st.st_size / 1e9);
    }

    /* cold loads: plain read, then the restore path (verify every checksum, then read) */
    for (int verify = 0; verify <= 1; verify++) {
        evict(path);
        t0 = MPI_Wtime();
        rc = atom_ckpt_load(path, MPI_COMM_WORLD, t, 16, NULL, verify, &err);
        double load_s = MPI_Wtime() - t0;
        failures += rc != 0;
        if (rc != 0 && rank == 0) {
            fprintf(stderr, "load failed: %s\n", err.msg);
        }
        if (rank == 0) {
            printf("%s_s %.3f %s_GBps %.3f\n", verify ? "load_verified" : "load", load_s,
                   verify ? "load_verified" : "load", gb / load_s);
        }
    }

    /* export of the weights to safetensors (rank 0, the tool's path: no MPI inside) */
    if (rank == 0 && export) {
        char out[4096];
        snprintf(out, sizeof out, "%s/model.safetensors", dir);
        t0 = MPI_Wtime();
        rc = atom_ckpt_export_safetensors(path, out, NULL, &err);
        double export_s = MPI_Wtime() - t0;
        struct stat es;
        stat(out, &es);
        failures += rc != 0;
        printf("export_ok %d export_s %.3f safetensors_gb %.3f\n", rc == 0, export_s,
               rc == 0 ? (double)es.st_size / 1e9 : 0.0);
        unlink(out);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* async cost: the same S stand-in steps run three ways, in an order rotating each round:
     * none (no save), sync (atom_ckpt_save, then the steps), async (atom_ckpt_async_start, the
     * steps polling it as the worker does, then atom_ckpt_async_wait: a write not done by then
     * counts: end_wait_s). S covers --window-saves (default 2) times a synchronous save's time,
     * so the background write overlaps the steps. Each variant starts after settle() (dirty pages synced, a pause). added =
     * window - none's window, per round; the ratio async/sync, then its median and range. A
     * second figure that the noise of the windows does not reach: (the snapshot copy + the
     * writer thread's CPU time) / the sync save call's time, i.e. what the async save takes
     * from training when every core trains, against what a sync save stalls it. The first
     * async save (the writer thread's first HDF5 file) is reported apart, after prepare, which
     * the worker calls before training. */
    if (!async) {
        MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Finalize();
        return failures ? 1 : 0;
    }
    work_buf = calloc(4096, sizeof(float));
    int64_t flops = 1;
    { /* calibrate the step to about step_ms on an idle loop */
        double c0 = MPI_Wtime();
        compute_step(1 << 24);
        double per = (MPI_Wtime() - c0) / (double)(1 << 24);
        flops = (int64_t)(step_ms / 1e3 / per);
        MPI_Allreduce(MPI_IN_PLACE, &flops, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    }
    atom_ckpt_async *a;
    size_t bound = (size_t)(gb * 1e9 / nranks) + (64u << 20);
    if (atom_ckpt_async_create(&a, g, bound, &err) != 0) {
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* as the worker does before training: plan, allocate and fault in the snapshot buffer */
    t0 = MPI_Wtime();
    rc = atom_ckpt_async_prepare(a, dir, t, 16, &err);
    double prepare_s = MPI_Wtime() - t0;
    meta.step = 2;
    t0 = MPI_Wtime();
    rc = rc == 0 ? atom_ckpt_async_start(a, dir, t, 16, &meta, 1, &err) : rc;
    double first_copy_s = MPI_Wtime() - t0;
    rc = rc == 0 ? atom_ckpt_async_wait(a, &err) : rc;
    double first_writer_s = atom_ckpt_async_writer_cpu_s(a);
    failures += rc != 0;
    if (rank == 0) {
        printf("async_first ok %d prepare_s %.3f (before training: plans, allocates and faults "
               "in the buffer) snapshot_copy_s %.3f writer_cpu_s %.3f "
               "snapshot_buffer_mb_per_rank %.1f bound_mb_per_rank %.1f\n", rc == 0, prepare_s,
               first_copy_s, first_writer_s, (double)atom_ckpt_async_bytes(a) / 1e6,
               (double)bound / 1e6);
    }
    int S = (int)(window_saves * save_s / (step_ms / 1e3)) + 1;
    MPI_Bcast(&S, 1, MPI_INT, 0, MPI_COMM_WORLD); /* every rank's save_s differs a little */
    if (rank == 0) {
        printf("async_cost steps_per_window %d step_ms %.0f rounds %d\n", S, step_ms, cost_rounds);
    }
    double *ratio = calloc((size_t)cost_rounds, sizeof(double));
    double *ratio_cpu = calloc((size_t)cost_rounds, sizeof(double));
    for (int round = 0; round < cost_rounds; round++) {
        double window[3] = {0, 0, 0}, copy_s = 0, sync_call_s = 0, writer_s = 0, end_wait_s = 0;
        for (int o = 0; o < 3; o++) {
            int mode = (o + round) % 3; /* none, sync, async */
            meta.step = 3 + 3 * round + o;
            settle();
            t0 = MPI_Wtime();
            if (mode == 1) {
                rc = atom_ckpt_save(dir, g, t, 16, &meta, 1, &err);
                sync_call_s = MPI_Wtime() - t0;
            } else if (mode == 2) {
                writer_s = atom_ckpt_async_writer_cpu_s(a);
                rc = atom_ckpt_async_start(a, dir, t, 16, &meta, 1, &err);
                copy_s = MPI_Wtime() - t0;
            }
            for (int i = 0; i < S; i++) {
                compute_step(flops);
                if (mode == 2) {
                    bool done;
                    atom_ckpt_async_poll(a, &done, &err);
                }
            }
            if (mode == 2) {
                double w0 = MPI_Wtime();
                rc = rc == 0 ? atom_ckpt_async_wait(a, &err) : rc;
                end_wait_s = MPI_Wtime() - w0;
                writer_s = atom_ckpt_async_writer_cpu_s(a) - writer_s;
            }
            MPI_Barrier(MPI_COMM_WORLD);
            window[mode] = MPI_Wtime() - t0;
            failures += rc != 0;
            if (rc != 0 && rank == 0) {
                fprintf(stderr, "save failed: %s\n", err.msg);
            }
        }
        double added_sync = window[1] - window[0], added_async = window[2] - window[0];
        /* the writer's CPU time, the most of all ranks' (a collective step waits for the
         * slowest) */
        MPI_Allreduce(MPI_IN_PLACE, &writer_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        ratio[round] = added_async / added_sync;
        ratio_cpu[round] = (copy_s + writer_s) / sync_call_s;
        if (rank == 0) {
            printf("async_cost_round %d none_s %.3f sync_s %.3f async_s %.3f sync_call_s %.3f "
                   "snapshot_copy_s %.3f writer_cpu_s %.3f end_wait_s %.3f added_sync_s %.3f "
                   "added_async_s %.3f async_vs_sync %.1f%% "
                   "snapshot_plus_writer_cpu_vs_sync_call %.1f%%\n",
                   round + 1, window[0], window[1], window[2], sync_call_s, copy_s, writer_s,
                   end_wait_s,
                   added_sync, added_async, 100 * ratio[round], 100 * ratio_cpu[round]);
        }
    }
    if (rank == 0 && cost_rounds > 0) {
        qsort(ratio, (size_t)cost_rounds, sizeof *ratio, cmp_double);
        qsort(ratio_cpu, (size_t)cost_rounds, sizeof *ratio_cpu, cmp_double);
        printf("async_cost_summary rounds %d async_vs_sync median %.1f%% range %.1f%% to %.1f%%; "
               "snapshot_plus_writer_cpu_vs_sync_call median %.1f%% range %.1f%% to %.1f%% "
               "(target <= 25%%)\n", cost_rounds, 100 * ratio[cost_rounds / 2], 100 * ratio[0],
               100 * ratio[cost_rounds - 1], 100 * ratio_cpu[cost_rounds / 2], 100 * ratio_cpu[0],
               100 * ratio_cpu[cost_rounds - 1]);
    }
    free(ratio);
    free(ratio_cpu);
    atom_ckpt_async_destroy(a);
    free(work_buf);
    tm_free(&m);
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    return failures ? 1 : 0;
}
