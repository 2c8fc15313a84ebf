/* tests/checkpoints/test_ckpt_full.c: a checkpoint folder whose file system fills up.
 *
 * What a user relies on when the disk fills during a save (issue 5: a failure loses nothing):
 *  - the save fails on every rank, and its message names the file and the OS's reason;
 *  - `latest` still names the previous checkpoint, which restores bit for bit;
 *  - the failed save leaves no .tmp file behind, so the space it took is given back (a partial
 *    file left on a full disk would make every later save fail too), while committed files and
 *    other saves' .tmp files stay;
 *  - once space is freed, the next save succeeds and becomes latest.
 * The same through the async API: wait or poll reports the failure, or the next start does if
 * neither did (atom_ckpt_async_start's contract).
 *
 * DIR must be a small file system of its own (run_full_test.sh mounts a tmpfs there): a
 * ballast file fills it so that less than one checkpoint fits, at several levels from nothing
 * free to one page short of a checkpoint, so the save fails in HDF5's own writes of the file's
 * structure as well as in the writes of the data. Two ranks (TP=2). */
#include "tests/checkpoints/ckpt_test_model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PAGE 4096
/* A file system larger than this is not the test's tmpfs: filling it would hurt a real disk. */
#define MAX_FS_BYTES (64ll << 20)
#define DECOY_STEP 99 /* an uncommitted file of another save, which a failure must not touch */

static int rank;
static const char *dir;
static char ballast[1024];

static int64_t free_bytes(void) {
    struct statvfs s;
    if (statvfs(dir, &s) != 0) {
        return -1;
    }
    return (int64_t)s.f_bavail * (int64_t)s.f_frsize;
}

/* Rank 0 grows or shrinks the ballast so that exactly `want` bytes stay free (a multiple of the
 * page: tmpfs counts whole pages); then every rank goes on. */
static void leave_free(int64_t want) {
    if (rank == 0) {
        int fd = open(ballast, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        struct stat st;
        CHECK(fd >= 0 && fstat(fd, &st) == 0, "ballast %s: %s", ballast, strerror(errno));
        int64_t have = free_bytes(), size = st.st_size;
        static char zeros[64 * 1024];
        while (fd >= 0 && have > want) {
            size_t n = have - want < (int64_t)sizeof zeros ? (size_t)(have - want) : sizeof zeros;
            ssize_t k = pwrite(fd, zeros, n, size);
            CHECK(k > 0, "filling the ballast: %s", strerror(errno));
            if (k <= 0) {
                break;
            }
            size += k;
            have -= k;
        }
        if (fd >= 0 && have < want) {
            CHECK(ftruncate(fd, size - (want - have)) == 0, "shrinking the ballast: %s",
                  strerror(errno));
        }
        if (fd >= 0) {
            close(fd);
        }
        CHECK(free_bytes() == want, "%lld bytes free, %lld wanted", (long long)free_bytes(),
              (long long)want);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void checkpoint_name(char *buf, size_t size, int64_t step, bool tmp) {
    snprintf(buf, size, "ckpt-%010lld.h5%s", (long long)step, tmp ? ".tmp" : "");
}

/* The folder as a user sees it: `latest` names `step`, no .tmp file but the decoy. */
static void check_folder(const char *what, int64_t step) {
    if (rank != 0) {
        return;
    }
    char link[1024], target[256] = "", want[64];
    snprintf(link, sizeof link, "%s/latest", dir);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    checkpoint_name(want, sizeof want, step, false);
    CHECK(strcmp(target, want) == 0, "%s: latest -> '%s', %s expected", what, target, want);
    atom_ckpt_entry *entries = NULL;
    int count = 0;
    atom_ckpt_err err = {""};
    CHECK(atom_ckpt_list(dir, &entries, &count, &err) == 0, "%s: list: %s", what, err.msg);
    bool decoy = false;
    for (int i = 0; i < count; i++) {
        if (!entries[i].committed && entries[i].step == DECOY_STEP) {
            decoy = true;
        } else {
            CHECK(entries[i].committed, "%s: %.900s left behind", what, entries[i].path);
        }
    }
    CHECK(decoy, "%s: another save's .tmp file was removed", what);
    free(entries);
}

/* After a failed save: the message (every rank's) names the file and ENOSPC's text; the folder
 * is unchanged; the space the save took is free again; step 1 restores bit for bit. */
static void check_failed(const char *what, int rc, const atom_ckpt_err *err, int64_t step,
                         int64_t free_before, test_model *m) {
    char name[64];
    checkpoint_name(name, sizeof name, step, true);
    CHECK(rc != 0, "%s succeeded on a full disk", what);
    CHECK(strstr(err->msg, name) != NULL, "%s: the error does not name %s: '%s'", what, name,
          err->msg);
    CHECK(strstr(err->msg, "No space left on device") != NULL,
          "%s: the error does not give the reason: '%s'", what, err->msg);
    if (rank == 0) {
        printf("%s: %s\n", what, err->msg); /* for the log: what a user reads */
    }
    check_folder(what, 1);
    if (rank == 0) {
        CHECK(free_bytes() == free_before, "%s: %lld bytes free after it, %lld before: its space "
              "was not given back", what, (long long)free_bytes(), (long long)free_before);
    }
    atom_ckpt_meta meta;
    atom_ckpt_err lerr = {""};
    tm_poison(m);
    int lrc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m->t, TM_TENSORS, &meta, NULL, 0, &lerr);
    CHECK(lrc == 0, "%s: restore: rc %d: %s", what, lrc, lerr.msg);
    if (lrc == 0) {
        CHECK(meta.step == 1, "%s: restored step %lld, 1 expected", what, (long long)meta.step);
        CHECK(tm_mismatches(m, 1) == 0, "%s: step 1 not restored bit for bit", what);
        atom_ckpt_meta_free(&meta);
    }
}

/* One fill level: the sync save and the three ways the async API reports a failure. */
/* Starts an async save of step 2 (the snapshot is taken; the write fails later). */
static void start_async(test_model *m, atom_ckpt_async *a, const atom_ckpt_meta *meta,
                        int64_t level, atom_ckpt_err *err) {
    tm_fill(m, 2);
    err->msg[0] = '\0';
    int rc = atom_ckpt_async_start(a, dir, m->t, TM_TENSORS, meta, 0, err);
    CHECK(rc == 0, "async start with %lld bytes free: %s", (long long)level, err->msg);
}

static void fail_at_level(test_model *m, atom_ckpt_async *a, int64_t level) {
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    char what[128];
    leave_free(level);

    tm_fill(m, 2);
    atom_ckpt_meta meta = tm_meta(m, 2);
    atom_ckpt_err err = {""};
    snprintf(what, sizeof what, "sync save with %lld bytes free", (long long)level);
    int rc = atom_ckpt_save(dir, g, m->t, TM_TENSORS, &meta, 0, &err);
    check_failed(what, rc, &err, 2, level, m);

    /* reported by wait */
    start_async(m, a, &meta, level, &err);
    rc = atom_ckpt_async_wait(a, &err);
    snprintf(what, sizeof what, "async save (wait) with %lld bytes free", (long long)level);
    check_failed(what, rc, &err, 2, level, m);

    /* reported by poll */
    start_async(m, a, &meta, level, &err);
    bool done = false;
    while (!done) {
        rc = atom_ckpt_async_poll(a, &done, &err);
        if (!done) {
            usleep(1000);
        }
    }
    snprintf(what, sizeof what, "async save (poll) with %lld bytes free", (long long)level);
    check_failed(what, rc, &err, 2, level, m);

    /* neither waited for nor polled: the next start reports it and starts nothing */
    start_async(m, a, &meta, level, &err);
    rc = atom_ckpt_async_start(a, dir, m->t, TM_TENSORS, &meta, 0, &err);
    CHECK(rc != 0 && strstr(err.msg, "previous checkpoint save failed"),
          "start after an unreported failure: rc %d '%s'", rc, err.msg);
    snprintf(what, sizeof what, "async save (next start) with %lld bytes free", (long long)level);
    check_failed(what, rc, &err, 2, level, m);
    atom_ckpt_err none = {""};
    CHECK(atom_ckpt_async_poll(a, &done, &none) == 0 && done,
          "a start that reported a failure started a save (done %d): %s", done, none.msg);
}

/* A save that must succeed and become latest, restoring bit for bit. */
static void save_ok(test_model *m, atom_ckpt_async *a, int64_t step) {
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    tm_fill(m, (uint32_t)step);
    atom_ckpt_meta meta = tm_meta(m, step);
    atom_ckpt_err err = {""};
    int rc = a ? atom_ckpt_async_start(a, dir, m->t, TM_TENSORS, &meta, 0, &err) : 0;
    rc = rc ? rc : a ? atom_ckpt_async_wait(a, &err)
                     : atom_ckpt_save(dir, g, m->t, TM_TENSORS, &meta, 0, &err);
    CHECK(rc == 0, "%s save of step %lld: %s", a ? "async" : "sync", (long long)step, err.msg);
    char what[64];
    snprintf(what, sizeof what, "after the save of step %lld", (long long)step);
    check_folder(what, step);
    tm_poison(m);
    rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m->t, TM_TENSORS, &meta, NULL, 0, &err);
    CHECK(rc == 0 && meta.step == step && tm_mismatches(m, (uint32_t)step) == 0,
          "%s: restore: rc %d, step %lld: %s", what, rc, (long long)meta.step, err.msg);
    if (rc == 0) {
        atom_ckpt_meta_free(&meta);
    }
}

int main(int argc, char **argv) {
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2 || size != 2) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 2 %s DIR (DIR: a small tmpfs of its own)\n",
                    argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    dir = argv[1];
    snprintf(ballast, sizeof ballast, "%s/ballast", dir);
    struct statvfs fs;
    bool usable = statvfs(dir, &fs) == 0 &&
                  (int64_t)fs.f_blocks * (int64_t)fs.f_frsize <= MAX_FS_BYTES;
    if (!usable) {
        if (rank == 0) {
            fprintf(stderr, "%s is not a file system of at most %lld bytes: not filling it\n", dir,
                    MAX_FS_BYTES);
        }
        MPI_Finalize();
        return 2;
    }
    test_model m;
    tm_init(&m, rank, 2);
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    atom_ckpt_async *a = NULL;
    atom_ckpt_err err = {""};
    CHECK(atom_ckpt_async_create(&a, g, 1 << 24, &err) == 0, "async create: %s", err.msg);
    if (rank == 0) {
        char decoy[1024], name[64];
        checkpoint_name(name, sizeof name, DECOY_STEP, true);
        snprintf(decoy, sizeof decoy, "%s/%s", dir, name);
        FILE *f = fopen(decoy, "w");
        CHECK(f && fputs("another save's partial file\n", f) >= 0 && fclose(f) == 0,
              "cannot create %s", decoy);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    save_ok(&m, NULL, 1);
    /* What one checkpoint takes on this file system: its pages. */
    int64_t need = 0;
    if (rank == 0) {
        char path[1024], name[64];
        checkpoint_name(name, sizeof name, 1, false);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat st;
        CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
        need = (int64_t)st.st_blocks * 512;
        printf("one checkpoint takes %lld bytes; %lld bytes free\n", (long long)need,
               (long long)free_bytes());
        CHECK(free_bytes() > 2 * need, "the file system is too small for this test");
    }
    MPI_Bcast(&need, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);

    /* From nothing free (HDF5's create and close fail) to one page short (a data write fails). */
    const int64_t levels[] = {0, PAGE, need / 2 / PAGE * PAGE, (need - need / 16) / PAGE * PAGE,
                              need - PAGE};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        fail_at_level(&m, a, levels[i]);
    }

    /* the space comes back: both kinds of save succeed again */
    if (rank == 0) {
        CHECK(unlink(ballast) == 0, "removing the ballast: %s", strerror(errno));
    }
    MPI_Barrier(MPI_COMM_WORLD);
    save_ok(&m, NULL, 3);
    save_ok(&m, a, 4);

    atom_ckpt_async_destroy(a);
    tm_free(&m);
    return tm_finish("ckpt_full");
}
