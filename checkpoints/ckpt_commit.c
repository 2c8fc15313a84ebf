/* checkpoints/ckpt_commit.c: making a written checkpoint count, and the checkpoint folder.
 *
 * The order is what makes a crash at any instant harmless: fsync the file (its data is on disk
 * before its name says it is complete), rename it into place, fsync the folder (the rename is on
 * disk), then replace the `latest` symlink by renaming a new one over it (rename is atomic, so
 * `latest` always names one complete checkpoint) and fsync the folder again. Until the last
 * rename, `latest` still names the previous checkpoint.
 */
#include "checkpoints/ckpt_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fsync_path(const char *path, int flags, atom_ckpt_err *err) {
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        return ckpt_errf(err, "cannot open %s to sync it: %s", path, strerror(errno));
    }
    int rc = fsync(fd) == 0 ? 0 : ckpt_errf(err, "fsync %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* The step `latest` points at, or -1. Only a link to a committed file's name in the folder
 * itself counts (the commit writes nothing else): a link to another folder's file (or with
 * '/' or "..") is ignored, not taken for a step of this one. */
static int64_t latest_step(const char *dir) {
    char link[4096], target[4096];
    snprintf(link, sizeof link, "%s/latest", dir);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) {
        return -1;
    }
    target[n] = '\0';
    int64_t step;
    bool tmp;
    return !strchr(target, '/') && ckpt_parse_name(target, &step, &tmp) && !tmp ? step : -1;
}

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ckpt_dir_committed(const char *dir, int64_t **steps, int *count, int64_t *latest,
                       atom_ckpt_err *err) {
    *steps = NULL;
    *count = 0;
    *latest = -1;
    /* a folder that is not the caller's is refused before anything in it is read */
    if (ckpt_dir_check(dir, err) < 0) {
        return -1;
    }
    *latest = latest_step(dir);
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) {
            return 0;
        }
        return ckpt_errf(err, "cannot read checkpoint folder %s: %s", dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        bool tmp;
        if (!ckpt_parse_name(e->d_name, &step, &tmp) || tmp) {
            continue;
        }
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *grown = realloc(*steps, sizeof(int64_t) * (size_t)cap);
            if (!grown) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return ckpt_errf(err, "out of memory listing %s", dir);
            }
            *steps = grown;
        }
        (*steps)[(*count)++] = step;
    }
    closedir(d);
    if (*count > 1) {
        qsort(*steps, (size_t)*count, sizeof(int64_t), cmp_desc);
    }
    return 0;
}

/* Removes committed checkpoints beyond the newest `keep`, never latest's target. Removing
 * never touches a .tmp file (a save may be writing it). */
static int apply_retention(const char *dir, int keep, atom_ckpt_err *err) {
    int64_t *steps, latest;
    int n;
    if (ckpt_dir_committed(dir, &steps, &n, &latest, err) != 0) {
        return -1;
    }
    int rc = 0, removed = 0;
    for (int i = keep; i < n; i++) {
        if (steps[i] == latest) {
            continue;
        }
        char path[4096];
        ckpt_file_name(path, sizeof path, dir, steps[i], false);
        if (unlink(path) != 0 && errno != ENOENT && rc == 0) {
            rc = ckpt_errf(err, "cannot remove old checkpoint %s: %s", path, strerror(errno));
        }
        removed++;
    }
    free(steps);
    if (removed > 0 && rc == 0) {
        rc = fsync_path(dir, O_RDONLY | O_DIRECTORY, err);
    }
    return rc;
}

static int commit_local(const char *dir, int64_t step, int keep, MPI_Comm comm,
                        atom_ckpt_err *err) {
    char tmp[4096], final[4096], link_tmp[4096], link[4096];
    ckpt_file_name(tmp, sizeof tmp, dir, step, true);
    ckpt_file_name(final, sizeof final, dir, step, false);
    snprintf(link_tmp, sizeof link_tmp, "%s/latest.tmp", dir);
    snprintf(link, sizeof link, "%s/latest", dir);
    /* Until the rename, the file is this save's alone and every rank is done writing it: if
     * it cannot be made durable or put in place, it is removed, so that a full disk gets its
     * space back (a .tmp is never loaded anyway). */
    int rc = fsync_path(tmp, O_RDONLY | O_NOFOLLOW, err);
    if (rc == 0 && rename(tmp, final) != 0) {
        rc = ckpt_errf(err, "rename %s -> %s: %s", tmp, final, strerror(errno));
    }
    if (rc != 0) {
        bool removed = unlink(tmp) == 0;
        if (err) {
            size_t used = strlen(err->msg);
            snprintf(err->msg + used, sizeof err->msg - used, " (the partial file was %sremoved)",
                     removed ? "" : "not ");
        }
        return -1;
    }
    if (fsync_path(dir, O_RDONLY | O_DIRECTORY, err) != 0) {
        return -1;
    }
    ckpt_fault_point(comm, "renamed");
    /* The link is relative so that the folder can be moved or mounted elsewhere. */
    const char *target = strrchr(final, '/') ? strrchr(final, '/') + 1 : final;
    unlink(link_tmp);
    if (symlink(target, link_tmp) != 0) {
        return ckpt_errf(err, "symlink %s: %s", link_tmp, strerror(errno));
    }
    if (rename(link_tmp, link) != 0) {
        return ckpt_errf(err, "rename %s -> %s: %s", link_tmp, link, strerror(errno));
    }
    if (fsync_path(dir, O_RDONLY | O_DIRECTORY, err) != 0) {
        return -1;
    }
    return keep > 0 ? apply_retention(dir, keep, err) : 0;
}

int atom_ckpt_commit(const char *dir, int64_t step, MPI_Comm comm, int keep, atom_ckpt_err *err) {
    int rank, rc = 0;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        rc = commit_local(dir, step, keep, comm, err);
    }
    return ckpt_agree(comm, rc, err);
}
