/* tests/checkpoints/test_ckpt_faults.c: what a user relies on when files go bad.
 *
 *  - a flipped byte in one dataset: verify fails naming that dataset; restore falls back to the
 *    previous committed checkpoint and gets its values bit for bit;
 *  - a truncated file: a clear error; restore falls back again;
 *  - every checkpoint bad: restore fails with the reason, never loads torn data;
 *  - the same when the file is read at another layout: a corrupted hyperslab that the new
 *    layout's shards cut (checked by reading it again) and one they hold whole (checked from
 *    what was read) are both refused, naming the dataset;
 *  - checksum rows that do not tile a dataset: a row copied over its neighbour (which hid a
 *    flipped byte of the neighbour's elements) and a row whose start wraps 64 bits past the
 *    end are refused by verify and by loads, naming the dataset; restore falls back;
 *  - an empty folder: "nothing to restore", not an error;
 *  - keep=N removes only older committed checkpoints, never a .tmp being written;
 *  - a model whose shape differs from the file's: an error naming the dataset.
 *
 * Run with 2 ranks (TP=2): mpirun -np 2 test_ckpt_faults DIR. */
#include "tests/checkpoints/ckpt_test_model.h"

#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rank;

static int save_step(const char *dir, test_model *m, int64_t step, int keep, atom_ckpt_err *err) {
    tm_fill(m, (uint32_t)step);
    atom_ckpt_meta meta = tm_meta(m, step);
    atom_ckpt_group g = {MPI_COMM_WORLD, 0, 1};
    return atom_ckpt_save(dir, g, m->t, TM_TENSORS, &meta, keep, err);
}

/* Flips one byte in the middle of a dataset's data (rank 0, serial HDF5 to find it). */
static void corrupt_dataset(const char *path, const char *dataset) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
    haddr_t off = H5Dget_offset(ds);
    hsize_t bytes = H5Dget_storage_size(ds);
    H5Dclose(ds);
    H5Fclose(f);
    int fd = open(path, O_RDWR);
    unsigned char b;
    off_t at = (off_t)(off + bytes / 2);
    CHECK(fd >= 0 && pread(fd, &b, 1, at) == 1, "cannot read %s", path);
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, at) == 1, "cannot corrupt %s", path);
    close(fd);
}

/* A dataset's checksum rows (rank 0, serial HDF5): read into *rows (malloc'ed), or written
 * back over the attribute (same shape). */
static hsize_t read_rows(const char *path, const char *dataset, uint64_t **rows, int *width) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
    hid_t attr = H5Aopen(ds, "crc32c_slabs", H5P_DEFAULT);
    hid_t space = H5Aget_space(attr);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(space, dims, NULL);
    *width = (int)dims[1];
    *rows = calloc(dims[0] * dims[1], sizeof(uint64_t));
    CHECK(*rows && H5Aread(attr, H5T_NATIVE_UINT64, *rows) >= 0, "cannot read %s's rows", dataset);
    H5Sclose(space);
    H5Aclose(attr);
    H5Dclose(ds);
    H5Fclose(f);
    return dims[0];
}

static void write_rows(const char *path, const char *dataset, const uint64_t *rows) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
    hid_t attr = H5Aopen(ds, "crc32c_slabs", H5P_DEFAULT);
    CHECK(attr >= 0 && H5Awrite(attr, H5T_NATIVE_UINT64, rows) >= 0, "cannot write %s's rows",
          dataset);
    H5Aclose(attr);
    H5Dclose(ds);
    H5Fclose(f);
}

/* Flips one bit of element g (row-major) of a contiguous dataset. */
static void flip_element(const char *path, const char *dataset, int64_t g) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
    haddr_t off = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    CHECK(off != HADDR_UNDEF, "%s is not contiguous", dataset);
    int fd = open(path, O_RDWR);
    unsigned char b;
    off_t at = (off_t)(off + (haddr_t)g * sizeof(float) + 1);
    CHECK(fd >= 0 && pread(fd, &b, 1, at) == 1, "cannot read %s", path);
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, at) == 1, "cannot corrupt %s", path);
    close(fd);
}

static void path_of(char *buf, size_t n, const char *dir, int64_t step) {
    snprintf(buf, n, "%s/ckpt-%010lld.h5", dir, (long long)step);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static void test_fallback(const char *root) {
    char dir[512], p10[1024], p20[1024], p30[1024], loaded[1024];
    snprintf(dir, sizeof dir, "%s/fallback", root);
    test_model m;
    tm_init(&m, rank, 2);
    atom_ckpt_err err = {""};
    for (int64_t s = 10; s <= 30; s += 10) {
        CHECK(save_step(dir, &m, s, 0, &err) == 0, "save %lld: %s", (long long)s, err.msg);
    }
    path_of(p10, sizeof p10, dir, 10);
    path_of(p20, sizeof p20, dir, 20);
    path_of(p30, sizeof p30, dir, 30);

    /* a flipped byte in step 30's /adam_v/fcw */
    if (rank == 0) {
        corrupt_dataset(p30, "/adam_v/fcw");
        atom_ckpt_err verr = {""};
        CHECK(atom_ckpt_verify(p30, NULL, &verr) != 0, "verify passed a corrupted file");
        CHECK(strstr(verr.msg, "/adam_v/fcw") != NULL, "the error does not name the dataset: %s",
              verr.msg);
        CHECK(atom_ckpt_verify(p20, NULL, &verr) == 0, "an intact file fails: %s", verr.msg);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    atom_ckpt_meta meta;
    tm_poison(&m);
    int rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, loaded,
                                   sizeof loaded, &err);
    CHECK(rc == 0 && strcmp(loaded, p20) == 0, "restore after corruption: rc %d, loaded %s: %s",
          rc, loaded, err.msg);
    CHECK(strstr(err.msg, "/adam_v/fcw") != NULL, "why the newest was skipped is not said: %s",
          err.msg);
    if (rc == 0) {
        CHECK(meta.step == 20, "step %lld restored", (long long)meta.step);
        CHECK(tm_mismatches(&m, 20) == 0, "step 20's values are not restored bit for bit");
        atom_ckpt_meta_free(&meta);
    }
    /* the plain load of the corrupted file, with verification, refuses it */
    rc = atom_ckpt_load(p30, MPI_COMM_WORLD, m.t, TM_TENSORS, NULL, true, &err);
    CHECK(rc != 0 && strstr(err.msg, "/adam_v/fcw") && strstr(err.msg, p30),
          "load of a corrupted file: rc %d: %s", rc, err.msg);

    /* step 20 truncated to half its size */
    if (rank == 0) {
        struct stat st;
        stat(p20, &st);
        CHECK(truncate(p20, st.st_size / 2) == 0, "truncate");
        atom_ckpt_err verr = {""};
        CHECK(atom_ckpt_verify(p20, NULL, &verr) != 0 && strstr(verr.msg, "truncated"),
              "verify of a truncated file: %s", verr.msg);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    tm_poison(&m);
    rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, loaded, sizeof loaded,
                               &err);
    CHECK(rc == 0 && strcmp(loaded, p10) == 0, "restore after truncation: rc %d, loaded %s: %s",
          rc, loaded, err.msg);
    if (rc == 0) {
        CHECK(meta.step == 10 && tm_mismatches(&m, 10) == 0, "step 10 not restored exactly");
        atom_ckpt_meta_free(&meta);
    }

    /* every checkpoint bad: an error, never torn data */
    if (rank == 0) {
        corrupt_dataset(p10, "/param/wte");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, loaded, sizeof loaded,
                               &err);
    CHECK(rc == -1 && strstr(err.msg, "no committed checkpoint"), "all bad: rc %d: %s", rc,
          err.msg);

    /* an empty folder: nothing to restore */
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty", root);
    if (rank == 0) {
        mkdir(empty, 0755);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rc = atom_ckpt_load_latest(empty, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, loaded,
                               sizeof loaded, &err);
    CHECK(rc == 1, "empty folder: rc %d: %s", rc, err.msg);
    tm_free(&m);
}

/* Written at TP=1 x DP=2 (each tensor's slabs split by layer between the two ranks), read at
 * TP=2 (column/row shards: each rank's shard cuts every slab) and at TP=1 (each rank holds every
 * slab whole). */
static void test_reshard_corruption(const char *root) {
    char dir[512], p30[1024], p40[1024], loaded[1024];
    snprintf(dir, sizeof dir, "%s/reshard", root);
    test_model full;
    tm_init(&full, 0, 1);
    atom_ckpt_group dp2 = {MPI_COMM_WORLD, rank, 2};
    atom_ckpt_err err = {""};
    for (int64_t s = 30; s <= 40; s += 10) {
        tm_fill(&full, (uint32_t)s);
        atom_ckpt_meta meta = tm_meta(&full, s);
        CHECK(atom_ckpt_save(dir, dp2, full.t, TM_TENSORS, &meta, 0, &err) == 0, "save %lld: %s",
              (long long)s, err.msg);
    }
    path_of(p30, sizeof p30, dir, 30);
    path_of(p40, sizeof p40, dir, 40);
    if (rank == 0) {
        corrupt_dataset(p40, "/param/fcw");
    }
    MPI_Barrier(MPI_COMM_WORLD);

    test_model tp2;
    tm_init(&tp2, rank, 2);
    tm_poison(&tp2);
    atom_ckpt_meta meta;
    int rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, tp2.t, TM_TENSORS, &meta, loaded,
                                   sizeof loaded, &err);
    CHECK(rc == 0 && strcmp(loaded, p30) == 0 && strstr(err.msg, "/param/fcw"),
          "TP=2 restore of a corrupted TP=1 file: rc %d, loaded %s: %s", rc, loaded, err.msg);
    if (rc == 0) {
        CHECK(meta.step == 30 && tm_mismatches(&tp2, 30) == 0, "step 30 not restored exactly");
        atom_ckpt_meta_free(&meta);
    }
    rc = atom_ckpt_load(p40, MPI_COMM_WORLD, full.t, TM_TENSORS, NULL, true, &err);
    CHECK(rc != 0 && strstr(err.msg, "checksum mismatch in dataset /param/fcw"),
          "TP=1 load of a corrupted file: rc %d: %s", rc, err.msg);
    tm_free(&tp2);
    tm_free(&full);
}

/* Checksum rows that do not tile their dataset. Saved at TP=2, /param/qkvw has two rows (the
 * two column shards, q, k and v rows each). Copying row 0 over row 1 leaves shard 1's elements
 * checked by no row while the rows still add up to the dataset: a flipped byte there was
 * accepted by verify and loaded. Then a row whose start is 2^64 - 1 along dimension 0 (start
 * plus its extent wraps back inside the dataset): refused as lying outside it. */
static void test_rows_must_tile(const char *root) {
    char dir[512], p50[1024], p60[1024], loaded[1024];
    snprintf(dir, sizeof dir, "%s/tile", root);
    test_model m;
    tm_init(&m, rank, 2);
    atom_ckpt_err err = {""};
    for (int64_t s = 50; s <= 60; s += 10) {
        CHECK(save_step(dir, &m, s, 0, &err) == 0, "save %lld: %s", (long long)s, err.msg);
    }
    path_of(p50, sizeof p50, dir, 50);
    path_of(p60, sizeof p60, dir, 60);
    const char *qkvw = "/param/qkvw";
    if (rank == 0) {
        uint64_t *rows;
        int width;
        hsize_t n = read_rows(p60, qkvw, &rows, &width);
        CHECK(n == 2 && width == 13, "%s has %llu rows of %d, 2 of 13 expected", qkvw,
              (unsigned long long)n, width);
        if (n == 2 && width == 13) {
            /* the first element of row 1 (its start), which row 0 does not hold */
            int64_t g = (int64_t)((rows[13 + 1] * m.t[4].dims[1] + rows[13 + 2]) * m.t[4].dims[2] +
                                  rows[13 + 3]);
            memcpy(rows + 13, rows, 13 * sizeof(uint64_t));
            write_rows(p60, qkvw, rows);
            flip_element(p60, qkvw, g);
            atom_ckpt_err verr = {""};
            CHECK(atom_ckpt_verify(p60, NULL, &verr) != 0 && strstr(verr.msg, qkvw) &&
                      strstr(verr.msg, "overlap"),
                  "verify of overlapping rows hiding a flipped byte: %s", verr.msg);
        }
        free(rows);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    int rc = atom_ckpt_load(p60, MPI_COMM_WORLD, m.t, TM_TENSORS, NULL, true, &err);
    CHECK(rc != 0 && strstr(err.msg, qkvw) && strstr(err.msg, "overlap"),
          "load of overlapping rows: rc %d: %s", rc, err.msg);
    atom_ckpt_meta meta;
    tm_poison(&m);
    rc = atom_ckpt_load_latest(dir, MPI_COMM_WORLD, m.t, TM_TENSORS, &meta, loaded,
                               sizeof loaded, &err);
    CHECK(rc == 0 && strcmp(loaded, p50) == 0 && strstr(err.msg, "overlap"),
          "restore past overlapping rows: rc %d, loaded %s: %s", rc, loaded, err.msg);
    if (rc == 0) {
        CHECK(meta.step == 50 && tm_mismatches(&m, 50) == 0, "step 50 not restored exactly");
        atom_ckpt_meta_free(&meta);
    }

    /* step 50's /param/wpe (T, C): its first row's start along dim 0 set to 2^64 - 1 */
    const char *wpe = "/param/wpe";
    if (rank == 0) {
        uint64_t *rows;
        int width;
        hsize_t n = read_rows(p50, wpe, &rows, &width);
        CHECK(n >= 1 && width == 9, "%s has %llu rows of %d", wpe, (unsigned long long)n, width);
        if (n >= 1 && width == 9) {
            rows[1] = UINT64_MAX;
            write_rows(p50, wpe, rows);
            atom_ckpt_err verr = {""};
            CHECK(atom_ckpt_verify(p50, NULL, &verr) != 0 && strstr(verr.msg, wpe) &&
                      strstr(verr.msg, "lies outside the dataset"),
                  "verify of a wrapping start: %s", verr.msg);
        }
        free(rows);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rc = atom_ckpt_load(p50, MPI_COMM_WORLD, m.t, TM_TENSORS, NULL, true, &err);
    CHECK(rc != 0 && strstr(err.msg, wpe) && strstr(err.msg, "lies outside the dataset"),
          "load of a wrapping start: rc %d: %s", rc, err.msg);
    tm_free(&m);
}

static void test_retention(const char *root) {
    char dir[512], decoy[1024], path[1024];
    snprintf(dir, sizeof dir, "%s/keep", root);
    test_model m;
    tm_init(&m, rank, 2);
    atom_ckpt_err err = {""};
    CHECK(save_step(dir, &m, 1, 2, &err) == 0, "save: %s", err.msg);
    /* a save in flight (or a crash's leftover) that is older than what keep removes */
    snprintf(decoy, sizeof decoy, "%s/ckpt-%010d.h5.tmp", dir, 0);
    if (rank == 0) {
        FILE *f = fopen(decoy, "w");
        CHECK(f != NULL, "cannot create %s", decoy);
        if (f) {
            fclose(f);
        }
    }
    for (int64_t s = 2; s <= 5; s++) {
        CHECK(save_step(dir, &m, s, 2, &err) == 0, "save %lld: %s", (long long)s, err.msg);
    }
    if (rank == 0) {
        for (int64_t s = 1; s <= 5; s++) {
            path_of(path, sizeof path, dir, s);
            CHECK(exists(path) == (s >= 4), "step %lld %s after keep=2", (long long)s,
                  exists(path) ? "kept" : "removed");
        }
        CHECK(exists(decoy), "keep removed an uncommitted file");
        atom_ckpt_entry *entries;
        int n;
        CHECK(atom_ckpt_list(dir, &entries, &n, &err) == 0, "list: %s", err.msg);
        CHECK(n == 3, "%d entries listed, 3 expected", n);
        if (n == 3) {
            CHECK(entries[0].step == 0 && !entries[0].committed, "the .tmp is not listed partial");
            CHECK(entries[2].step == 5 && entries[2].latest && entries[2].committed &&
                      entries[2].tp == 2 && entries[2].dp == 1 && entries[2].bytes > 0,
                  "latest entry wrong: step %lld latest %d tp %d", (long long)entries[2].step,
                  entries[2].latest, entries[2].tp);
            CHECK(!entries[1].latest, "two latest");
        }
        free(entries);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    tm_free(&m);
}

static void test_shape_mismatch(const char *root) {
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/keep", root);
    path_of(path, sizeof path, dir, 5);
    test_model m;
    tm_init(&m, rank, 2);
    /* a model with a longer context than the checkpoint's: wpe (T, C) differs */
    atom_ckpt_tensor saved = m.t[1];
    float *bigger = calloc((size_t)(2 * m.T * m.C), sizeof(float));
    m.t[1].dims[0] = 2 * m.T;
    atom_ckpt_select_all(&m.t[1]);
    m.t[1].param = m.t[1].adam_m = m.t[1].adam_v = bigger;
    atom_ckpt_err err = {""};
    int rc = atom_ckpt_load(path, MPI_COMM_WORLD, m.t, TM_TENSORS, NULL, false, &err);
    CHECK(rc != 0 && strstr(err.msg, "/param/wpe"), "shape mismatch: rc %d: %s", rc, err.msg);
    m.t[1] = saved;
    free(bigger);
    tm_free(&m);
}

int main(int argc, char **argv) {
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2 || size != 2) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 2 %s DIR\n", argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    if (rank == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", argv[1], argv[1]);
        CHECK(system(cmd) == 0, "cannot reset %s", argv[1]);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    test_fallback(argv[1]);
    test_reshard_corruption(argv[1]);
    test_rows_must_tile(argv[1]);
    test_retention(argv[1]);
    test_shape_mismatch(argv[1]);
    return tm_finish("ckpt_faults");
}
