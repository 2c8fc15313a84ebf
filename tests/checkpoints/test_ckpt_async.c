/* tests/checkpoints/test_ckpt_async.c: the asynchronous save.
 *
 *  - the checkpoint holds the values at the time of start, although training changes them
 *    right after (the snapshot), while the main thread keeps running collectives on
 *    MPI_COMM_WORLD during the background write;
 *  - the snapshot buffer is bounded and holds only this rank's share (about 1/DP of its shard);
 *  - back-to-back starts: the second waits for the first (at most one in flight); keep=2 applies;
 *  - a bound too small fails on every rank, without hanging;
 *  - a failed background write is reported by wait, or by the next start.
 *
 * Run with 4 ranks (TP=2 x DP=2): mpirun -np 4 test_ckpt_async DIR. */
#include "tests/checkpoints/ckpt_test_model.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rank;

/* Training stand-in: collectives on the world communicator while the save runs. */
static int train_until_done(atom_ckpt_async *a, atom_ckpt_err *err) {
    bool done = false;
    int rc = 0, steps = 0;
    while (!done || steps < 50) {
        double x = rank, sum = 0;
        MPI_Allreduce(&x, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        CHECK(sum == 6.0, "allreduce during the save gave %g", sum);
        steps++;
        if (!done) {
            rc = atom_ckpt_async_poll(a, &done, err);
        }
        /* every rank stops at the same step: agree on whether all are done */
        int mine = done, all = 0;
        MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        done = all;
    }
    return rc;
}

static int64_t load_latest_step(const char *dir, test_model *m) {
    atom_ckpt_meta meta;
    atom_ckpt_err err = {""};
    tm_poison(m);
    int rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m->t, TM_TENSORS, &meta, NULL, 0, &err);
    CHECK(rc == 0, "load latest: rc %d: %s", rc, err.msg);
    int64_t step = rc == 0 ? meta.step : -1;
    atom_ckpt_meta_free(&meta);
    return step;
}

int main(int argc, char **argv) {
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2 || size != 4 || provided < MPI_THREAD_MULTIPLE) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 4 %s DIR (needs MPI_THREAD_MULTIPLE)\n", argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    char dir[512], bad[600];
    snprintf(dir, sizeof dir, "%s", argv[1]);
    /* a folder the start accepts where the background write of step 4 fails: its .tmp name is
     * taken by a folder, which the save's removal of a leftover cannot remove */
    snprintf(bad, sizeof bad, "%s/unwritable", dir);
    if (rank == 0) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/ckpt-0000000004.h5.tmp'", dir, bad);
        CHECK(system(cmd) == 0, "cannot reset %s", dir);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    const int TP = 2;
    test_model m, back;
    /* argv[2] (ckpt_async_direct): channels 128, so that the large datasets (64 KiB and more)
     * start page-aligned in the file and the writer's O_DIRECT path can write from the snapshot */
    int64_t C = argc > 2 ? 128 : 32;
    tm_init_shape(&m, 2, C, 100, 128, 16, rank % TP, TP);
    tm_init_shape(&back, 2, C, 100, 128, 16, rank % TP, TP);
    int64_t shard_bytes = 0;
    for (int i = 0; i < TM_TENSORS; i++) {
        shard_bytes += 3 * 4 * atom_ckpt_shard_elems(&m.t[i]);
    }
    atom_ckpt_group g = {MPI_COMM_WORLD, rank / TP, size / TP};
    atom_ckpt_err err = {""};
    atom_ckpt_async *a = NULL;
    /* a bound of the whole shard, of which about half is used; argv[2]: bytes more, enough for
     * the snapshot to place its pieces page-aligned for O_DIRECT (ckpt_async_direct) */
    size_t bound = (size_t)shard_bytes + (argc > 2 ? (size_t)atol(argv[2]) : 0);
    CHECK(atom_ckpt_async_create(&a, g, bound, &err) == 0, "create: %s", err.msg);
    /* prepare, as the worker does before training: the buffer exists before the first start */
    CHECK(atom_ckpt_async_bytes(a) == 0, "a snapshot buffer before prepare");
    CHECK(atom_ckpt_async_prepare(a, dir, m.t, TM_TENSORS, &err) == 0, "prepare: %s", err.msg);
    CHECK(atom_ckpt_async_bytes(a) > 0, "prepare allocated no snapshot buffer");

    /* the snapshot holds the values of start time */
    tm_fill(&m, 1);
    atom_ckpt_meta meta = tm_meta(&m, 1);
    CHECK(atom_ckpt_async_start(a, dir, m.t, TM_TENSORS, &meta, 2, &err) == 0, "start: %s",
          err.msg);
    tm_fill(&m, 999); /* training goes on and changes every value */
    CHECK(train_until_done(a, &err) == 0, "async save failed: %s", err.msg);
    CHECK(atom_ckpt_async_wait(a, &err) == 0, "wait after done: %s", err.msg);
    CHECK(load_latest_step(dir, &back) == 1, "step 1 is not latest");
    CHECK(tm_mismatches(&back, 1) == 0, "the checkpoint does not hold the values of start time");
    size_t used = atom_ckpt_async_bytes(a);
    /* with room in the bound, up to 4 KiB per dataset (and one) of placement padding */
    int64_t padding = argc > 2 ? 4096 * (3 * TM_TENSORS + 1) : 0;
    CHECK(used > 0 && used <= bound && (int64_t)used < shard_bytes * 6 / 10 + padding,
          "snapshot of %zu bytes for a %lld-byte shard at DP=2", used, (long long)shard_bytes);

    /* back to back: the second start waits for the first */
    tm_fill(&m, 2);
    meta = tm_meta(&m, 2);
    CHECK(atom_ckpt_async_start(a, dir, m.t, TM_TENSORS, &meta, 2, &err) == 0, "start 2: %s",
          err.msg);
    tm_fill(&m, 3);
    meta = tm_meta(&m, 3);
    CHECK(atom_ckpt_async_start(a, dir, m.t, TM_TENSORS, &meta, 2, &err) == 0, "start 3: %s",
          err.msg);
    CHECK(atom_ckpt_async_wait(a, &err) == 0, "wait 3: %s", err.msg);
    CHECK(load_latest_step(dir, &back) == 3 && tm_mismatches(&back, 3) == 0,
          "step 3 not restored exactly");
    if (rank == 0) {
        char p1[1024], p2[1024];
        snprintf(p1, sizeof p1, "%s/ckpt-%010d.h5", dir, 1);
        snprintf(p2, sizeof p2, "%s/ckpt-%010d.h5", dir, 2);
        CHECK(access(p1, F_OK) != 0 && access(p2, F_OK) == 0, "keep=2 not applied by async saves");
    }

    /* a background write that fails: reported by wait on every rank */
    meta = tm_meta(&m, 4);
    CHECK(atom_ckpt_async_start(a, bad, m.t, TM_TENSORS, &meta, 2, &err) == 0, "start bad: %s",
          err.msg);
    err.msg[0] = '\0';
    CHECK(atom_ckpt_async_wait(a, &err) != 0 && strstr(err.msg, "unwritable"),
          "a failed save is not reported: '%s'", err.msg);
    /* ... or by the next start when nobody waited */
    CHECK(atom_ckpt_async_start(a, bad, m.t, TM_TENSORS, &meta, 2, &err) == 0, "start bad 2: %s",
          err.msg);
    meta = tm_meta(&m, 5);
    int rc = atom_ckpt_async_start(a, dir, m.t, TM_TENSORS, &meta, 2, &err);
    CHECK(rc != 0 && strstr(err.msg, "previous checkpoint save failed"),
          "start after an unreported failure: rc %d '%s'", rc, err.msg);
    CHECK(atom_ckpt_async_start(a, dir, m.t, TM_TENSORS, &meta, 2, &err) == 0,
          "start after the failure was reported: %s", err.msg);
    CHECK(atom_ckpt_async_wait(a, &err) == 0, "wait 5: %s", err.msg);
    CHECK(load_latest_step(dir, &back) == 5 && tm_mismatches(&back, 3) == 0, "step 5 not latest");
    atom_ckpt_async_destroy(a);

    /* a bound below the snapshot: every rank fails, none hangs */
    atom_ckpt_async *small = NULL;
    CHECK(atom_ckpt_async_create(&small, g, 1000, &err) == 0, "create small: %s", err.msg);
    rc = atom_ckpt_async_prepare(small, dir, m.t, TM_TENSORS, &err);
    CHECK(rc != 0 && strstr(err.msg, "bound"), "prepare over the bound: rc %d '%s'", rc, err.msg);
    meta = tm_meta(&m, 6);
    rc = atom_ckpt_async_start(small, dir, m.t, TM_TENSORS, &meta, 2, &err);
    CHECK(rc != 0 && strstr(err.msg, "bound"), "over the bound: rc %d '%s'", rc, err.msg);
    atom_ckpt_async_destroy(small);

    tm_free(&m);
    tm_free(&back);
    return tm_finish("ckpt_async");
}
