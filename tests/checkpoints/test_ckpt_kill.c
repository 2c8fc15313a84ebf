/* tests/checkpoints/test_ckpt_kill.c: a rank killed while a checkpoint is being written or
 * committed leaves the previous committed checkpoint as latest, intact and loadable.
 *
 * Every crash mode first commits step 10, then:
 *   crash-after-write   writes step 20 completely; rank 1 SIGKILLs itself before the commit;
 *   crash-mid-write     rank 1 is killed inside the write of step 20, after its 20th dataset
 *                       (the library's ATOM_CKPT_KILL_AT fault point);
 *   crash-mid-async     the same inside an async save's background thread;
 *   crash-before-latest rank 0 is killed in the commit, after the rename, before `latest` moves.
 * check DIR MODE (a new job) restores step 10 bit for bit, checks step 20 is not committed
 * (before-latest: committed but not latest, and intact), then saves step 20 and restores it.
 * run_kill_test.sh runs a crash mode, then check. Two ranks (TP=2). */
#include "tests/checkpoints/ckpt_test_model.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank;

static void die_here(void) { raise(SIGKILL); }

int main(int argc, char **argv) {
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 4 || size != 2) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 2 %s crash|check DIR MODE\n", argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    const char *action = argv[1], *dir = argv[2], *mode = argv[3];
    test_model m;
    tm_init(&m, rank, 2);
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    atom_ckpt_err err = {""};
    if (strcmp(action, "crash") == 0) {
        tm_fill(&m, 10);
        atom_ckpt_meta meta = tm_meta(&m, 10);
        if (atom_ckpt_save(dir, g, m.t, TM_TENSORS, &meta, 0, &err) != 0) {
            fprintf(stderr, "save of step 10 failed: %s\n", err.msg);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        tm_fill(&m, 20);
        meta = tm_meta(&m, 20);
        if (strcmp(mode, "mid-write") == 0 || strcmp(mode, "mid-async") == 0) {
            setenv("ATOM_CKPT_KILL_AT", "1:dataset-20", 1);
        } else if (strcmp(mode, "before-latest") == 0) {
            setenv("ATOM_CKPT_KILL_AT", "0:renamed", 1);
        }
        if (strcmp(mode, "mid-async") == 0) {
            atom_ckpt_async *a;
            if (atom_ckpt_async_create(&a, g, 1 << 24, &err) != 0 ||
                atom_ckpt_async_start(a, dir, m.t, TM_TENSORS, &meta, 0, &err) != 0) {
                fprintf(stderr, "async save of step 20 failed to start: %s\n", err.msg);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
            atom_ckpt_async_wait(a, &err); /* never returns: the writer dies */
        } else if (strcmp(mode, "after-write") == 0 || strcmp(mode, "mid-write") == 0) {
            if (atom_ckpt_write(dir, g, m.t, TM_TENSORS, &meta, &err) != 0) {
                fprintf(stderr, "write of step 20 failed: %s\n", err.msg);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
        } else {
            atom_ckpt_save(dir, g, m.t, TM_TENSORS, &meta, 0, &err);
        }
        if (rank == 1) {
            die_here();
        }
        /* rank 0 waits for a peer that never comes: mpirun ends it */
        MPI_Barrier(MPI_COMM_WORLD);
        fprintf(stderr, "rank 0 went past a barrier with a dead peer\n");
        return 4;
    }

    if (strcmp(action, "check") != 0) {
        fprintf(stderr, "unknown action %s\n", action);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    atom_ckpt_meta meta;
    char loaded[1024];
    tm_poison(&m);
    int rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, loaded,
                                   sizeof loaded, &err);
    CHECK(rc == 0, "restore after the crash: rc %d: %s", rc, err.msg);
    if (rc == 0) {
        CHECK(meta.step == 10, "restored step %lld, 10 expected", (long long)meta.step);
        CHECK(tm_mismatches(&m, 10) == 0, "step 10 not restored bit for bit");
        atom_ckpt_meta_free(&meta);
    }
    if (rank == 0) {
        atom_ckpt_entry *entries;
        int n;
        CHECK(atom_ckpt_list(dir, &entries, &n, &err) == 0, "list: %s", err.msg);
        bool renamed = strcmp(mode, "before-latest") == 0, found20 = false;
        for (int i = 0; i < n; i++) {
            found20 = found20 || entries[i].step == 20;
            CHECK(entries[i].step != 20 || entries[i].committed == renamed,
                  "step 20 %s by a crash in %s", entries[i].committed ? "committed" : "not committed",
                  mode);
            if (entries[i].step == 20 && renamed) {
                CHECK(atom_ckpt_verify(entries[i].path, NULL, &err) == 0,
                      "a renamed checkpoint is not intact: %s", err.msg);
            }
            CHECK(entries[i].latest == (entries[i].step == 10), "latest is step %lld",
                  (long long)entries[i].step);
        }
        CHECK(found20, "the crash left no file of step 20: it did not happen mid-write");
        free(entries);
    }
    /* the next save of step 20 replaces the leftover and commits */
    tm_fill(&m, 20);
    atom_ckpt_meta m20 = tm_meta(&m, 20);
    CHECK(atom_ckpt_save(dir, g, m.t, TM_TENSORS, &m20, 0, &err) == 0, "save 20: %s", err.msg);
    tm_poison(&m);
    rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, NULL, 0, &err);
    CHECK(rc == 0 && meta.step == 20 && tm_mismatches(&m, 20) == 0, "step 20 after re-save");
    if (rc == 0) {
        atom_ckpt_meta_free(&meta);
    }
    tm_free(&m);
    return tm_finish("ckpt_kill");
}
