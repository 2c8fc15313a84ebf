/* checkpoints/ckpt_tools.c: `atomctl ckpt ls` and `atomctl ckpt verify` as library calls.
 *
 * They run in a process that never calls MPI_Init: files are opened with HDF5's default (sec2)
 * driver, which the parallel HDF5 library serves without MPI. They print only into the FILE*
 * they are given.
 */
#include "checkpoints/ckpt_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int cmp_entry(const void *a, const void *b) {
    const atom_ckpt_entry *x = a, *y = b;
    if (x->step != y->step) {
        return x->step < y->step ? -1 : 1;
    }
    return (int)y->committed - (int)x->committed;
}

/* Layout from the file's attributes; false if the file cannot be read (e.g. still being
 * written). */
static bool read_layout(const char *path, int *tp, int *dp) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        return false;
    }
    int32_t layout[2] = {0, 0};
    bool ok = false;
    hid_t attr = H5Aopen(file, "layout_tp_dp", H5P_DEFAULT);
    if (attr >= 0) {
        ok = H5Aread(attr, H5T_NATIVE_INT32, layout) >= 0;
        H5Aclose(attr);
    }
    H5Fclose(file);
    *tp = layout[0];
    *dp = layout[1];
    return ok;
}

int atom_ckpt_list(const char *dir, atom_ckpt_entry **entries, int *count, atom_ckpt_err *err) {
    ckpt_h5_quiet();
    *entries = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) {
        return ckpt_errf(err, "cannot read checkpoint folder %s: %s", dir, strerror(errno));
    }
    char link[4096], target[4096] = "";
    snprintf(link, sizeof link, "%s/latest", dir);
    ssize_t tn = readlink(link, target, sizeof target - 1);
    target[tn > 0 ? tn : 0] = '\0';
    int cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        bool tmp;
        if (!ckpt_parse_name(e->d_name, &step, &tmp)) {
            continue;
        }
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            atom_ckpt_entry *grown = realloc(*entries, sizeof **entries * (size_t)cap);
            if (!grown) {
                rc = ckpt_errf(err, "out of memory listing %s", dir);
                break;
            }
            *entries = grown;
        }
        atom_ckpt_entry *en = &(*entries)[(*count)++];
        memset(en, 0, sizeof *en);
        snprintf(en->path, sizeof en->path, "%s/%s", dir, e->d_name);
        en->step = step;
        en->committed = !tmp;
        en->latest = !tmp && strcmp(target, e->d_name) == 0;
        struct stat st;
        if (stat(en->path, &st) == 0) {
            en->bytes = (int64_t)st.st_size;
            en->mtime_unix = (int64_t)st.st_mtime;
        }
        read_layout(en->path, &en->tp, &en->dp);
    }
    closedir(d);
    if (rc != 0) {
        free(*entries);
        *entries = NULL;
        *count = 0;
        return -1;
    }
    if (*count > 1) {
        qsort(*entries, (size_t)*count, sizeof **entries, cmp_entry);
    }
    return 0;
}

static void human_size(char *buf, size_t size, int64_t bytes) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

int atom_ckpt_print_list(const char *dir, FILE *out, atom_ckpt_err *err) {
    atom_ckpt_entry *entries;
    int n;
    if (atom_ckpt_list(dir, &entries, &n, err) != 0) {
        return -1;
    }
    if (out) {
        fprintf(out, "%-12s %-9s %10s  %-20s %-10s %s\n", "STEP", "LAYOUT", "SIZE", "TIME (UTC)",
                "STATE", "FILE");
        for (int i = 0; i < n; i++) {
            const atom_ckpt_entry *en = &entries[i];
            char layout[32] = "?", size[32], when[32] = "?";
            if (en->tp > 0) {
                snprintf(layout, sizeof layout, "TP%dxDP%d", en->tp, en->dp);
            }
            human_size(size, sizeof size, en->bytes);
            time_t t = (time_t)en->mtime_unix;
            struct tm tm;
            if (gmtime_r(&t, &tm)) {
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            }
            const char *base = strrchr(en->path, '/') ? strrchr(en->path, '/') + 1 : en->path;
            fprintf(out, "%-12lld %-9s %10s  %-20s %-10s %s\n", (long long)en->step, layout, size,
                    when, en->latest ? "latest" : en->committed ? "committed" : "partial", base);
        }
    }
    free(entries);
    return 0;
}

int atom_ckpt_verify(const char *path, FILE *out, atom_ckpt_err *err) {
    ckpt_h5_quiet();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        ckpt_h5_errf(err, "cannot open checkpoint %s (missing, truncated or not HDF5)", path);
        if (out) {
            fprintf(out, "FAILED %s\n", err ? err->msg : path);
        }
        return -1;
    }
    int rc = ckpt_verify_open(file, path, CKPT_KINDS, 0, 1, H5P_DEFAULT, out, err);
    if (rc == 0) {
        atom_ckpt_meta meta;
        rc = ckpt_read_meta(file, &meta, err);
        if (rc == 0 && out) {
            fprintf(out, "OK %s: step %lld, TP%dxDP%d, every checksum matches\n", path,
                    (long long)meta.step, meta.tp, meta.dp);
        }
        atom_ckpt_meta_free(&meta);
    }
    if (rc != 0 && out) {
        fprintf(out, "FAILED %s\n", err ? err->msg : path);
    }
    H5Fclose(file);
    return rc;
}
