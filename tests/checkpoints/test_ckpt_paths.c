/* tests/checkpoints/test_ckpt_paths.c: checkpoint folders in places other users can reach.
 *
 *  - a ckpt-STEP.h5.tmp planted as a symlink to a root-only 0600 file: the save replaces the
 *    link with its own file and the target stays byte-identical (H5Fcreate's TRUNC followed it);
 *  - a folder owned by another user (uid 65534) is refused at save and at load, with a sentence
 *    naming the folder and its owner, and nothing is written into it;
 *  - a folder others may write (0777) is refused;
 *  - a `latest` swapped for a link to another folder's file does not steer the load: the
 *    newest committed checkpoint of the folder itself is loaded.
 *
 * Runs as root (the tests' user) with 2 ranks: mpirun -np 2 test_ckpt_paths DIR. */
#include "tests/checkpoints/ckpt_test_model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OTHER_UID 65534

static int rank;

static int save(const char *dir, test_model *m, int64_t step, atom_ckpt_err *err) {
    tm_fill(m, (uint32_t)step);
    atom_ckpt_meta meta = tm_meta(m, step);
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    return atom_ckpt_save(dir, g, m->t, TM_TENSORS, &meta, 0, err);
}

static int load_latest(const char *dir, test_model *m, int64_t *step, atom_ckpt_err *err) {
    atom_ckpt_meta meta;
    tm_poison(m);
    int rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m->t, TM_TENSORS, &meta, NULL, 0, err);
    *step = rc == 0 ? meta.step : -1;
    if (rc == 0) {
        atom_ckpt_meta_free(&meta);
    }
    return rc;
}

static void run(const char *cmd) {
    CHECK(system(cmd) == 0, "%s failed", cmd);
}

static bool same_bytes(const char *path, const char *want) {
    char got[256] = "";
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(got, 1, sizeof got - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    return n == strlen(want) && memcmp(got, want, n) == 0;
}

int main(int argc, char **argv) {
    int size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2 || size != 2 || geteuid() != 0) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 2 %s DIR (as root)\n", argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    const char *root = argv[1];
    char planted[600], victim[600], theirs[600], open_dir[600], own[600], other[600];
    snprintf(planted, sizeof planted, "%s/planted", root);
    snprintf(victim, sizeof victim, "%s/root-only", root);
    snprintf(theirs, sizeof theirs, "%s/theirs", root);
    snprintf(open_dir, sizeof open_dir, "%s/open", root);
    snprintf(own, sizeof own, "%s/own", root);
    snprintf(other, sizeof other, "%s/other", root);
    const char *secret = "root's own bytes, mode 0600\n";
    char cmd[8192];
    if (rank == 0) {
        snprintf(cmd, sizeof cmd,
                 "rm -rf '%s' && mkdir -p '%s' '%s' '%s' '%s' && chmod 0755 '%s' && "
                 "printf %%s \"%s\" > '%s' && chmod 0600 '%s' && "
                 "ln -s '%s' '%s/ckpt-0000000001.h5.tmp' && "
                 "chown %d:%d '%s' && chmod 0777 '%s'",
                 root, planted, theirs, open_dir, own, root, secret, victim, victim, victim,
                 planted, OTHER_UID, OTHER_UID, theirs, open_dir);
        run(cmd);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    test_model m;
    tm_init(&m, rank, 2);
    atom_ckpt_err err = {""};
    int64_t step = -1;

    /* the planted .tmp link: the save replaces it (or fails); the target never changes */
    int rc = save(planted, &m, 1, &err);
    if (rank == 0) {
        CHECK(same_bytes(victim, secret), "the save wrote through the planted link into %s",
              victim);
        struct stat st;
        char path[700];
        snprintf(path, sizeof path, "%s/ckpt-0000000001.h5", planted);
        CHECK(rc != 0 || (lstat(path, &st) == 0 && S_ISREG(st.st_mode)),
              "the committed checkpoint is not a regular file of its own");
    }
    CHECK(rc == 0, "a save over a planted link failed: %s", err.msg);

    /* a folder of another user: refused at save and at load, nothing written into it */
    err.msg[0] = '\0';
    rc = save(theirs, &m, 2, &err);
    CHECK(rc != 0 && strstr(err.msg, theirs) && strstr(err.msg, "uid 65534") &&
              strstr(err.msg, "not to you"),
          "a save into another user's folder: rc %d, '%s'", rc, err.msg);
    if (rank == 0) {
        snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", theirs);
        CHECK(system(cmd) == 0, "the save wrote into %s", theirs);
        /* their folder holding a checkpoint (made by root, as if theirs) */
        snprintf(cmd, sizeof cmd, "cp '%s/ckpt-0000000001.h5' '%s/' && chown -R %d '%s'", planted,
                 theirs, OTHER_UID, theirs);
        run(cmd);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    err.msg[0] = '\0';
    rc = load_latest(theirs, &m, &step, &err);
    CHECK(rc < 0 && strstr(err.msg, theirs) && strstr(err.msg, "uid 65534"),
          "a load from another user's folder: rc %d (step %lld), '%s'", rc, (long long)step,
          err.msg);

    /* a folder everyone may write */
    err.msg[0] = '\0';
    rc = save(open_dir, &m, 2, &err);
    CHECK(rc != 0 && strstr(err.msg, open_dir) && strstr(err.msg, "writable"),
          "a save into a 0777 folder: rc %d, '%s'", rc, err.msg);

    /* `latest` swapped for a link into another folder: the folder's own newest is loaded */
    err.msg[0] = '\0';
    CHECK(save(own, &m, 1, &err) == 0 && save(own, &m, 2, &err) == 0, "saves: %s", err.msg);
    CHECK(save(other, &m, 1, &err) == 0, "save other: %s", err.msg);
    if (rank == 0) {
        snprintf(cmd, sizeof cmd, "ln -sfn ../other/ckpt-0000000001.h5 '%s/latest'", own);
        run(cmd);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rc = load_latest(own, &m, &step, &err);
    CHECK(rc == 0 && step == 2 && tm_mismatches(&m, 2) == 0,
          "with latest -> ../other/ckpt-0000000001.h5: rc %d, step %lld loaded (2 expected): %s",
          rc, (long long)step, err.msg);

    tm_free(&m);
    return tm_finish("ckpt_paths");
}
