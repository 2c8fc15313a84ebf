/* tests/checkpoints/test_ckpt_roundtrip.c: save at every TP x DP layout of 1, 2 and 4 ranks,
 * load at every layout (the reshard, moments included), bit for bit; metadata round trip; each
 * element written once, with the writing shared by all ranks.
 *
 * Run with 4 ranks: mpirun -np 4 test_ckpt_roundtrip DIR. Leaves DIR/np4_tp2 etc. for the tool
 * tests. */
#include "tests/checkpoints/ckpt_test_model.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct layout {
    int np, tp;
} layout;

static const layout layouts[] = {{1, 1}, {2, 1}, {2, 2}, {4, 1}, {4, 2}, {4, 4}};
#define NLAYOUTS (int)(sizeof layouts / sizeof layouts[0])

static void layout_dir(char *buf, size_t n, const char *root, layout l) {
    snprintf(buf, n, "%s/np%d_tp%d", root, l.np, l.tp);
}

static void fill_meta(atom_ckpt_meta *m, int w, char *spec, size_t spec_size) {
    memset(m, 0, sizeof *m);
    m->step = w + 1;
    m->tokens_seen = 1000 * (int64_t)(w + 1);
    m->data_position = 77 + w;
    m->rng_state_len = 16;
    for (int i = 0; i < 16; i++) {
        m->rng_state[i] = (unsigned char)(i + w);
    }
    snprintf(spec, spec_size, "{\"model\":\"tiny\",\"w\":%d}", w);
    m->spec_json = spec;
    m->vocab = 100;
    snprintf(m->writer, sizeof m->writer, "test-roundtrip");
}

/* Rows of a dataset's checksum attribute (serial HDF5, rank 0). */
static int slab_rows(const char *path, const char *dataset) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        return -1;
    }
    hid_t ds = H5Dopen2(f, dataset, H5P_DEFAULT);
    hid_t a = H5Aopen(ds, "crc32c_slabs", H5P_DEFAULT);
    hid_t s = H5Aget_space(a);
    hsize_t d[2] = {0, 0};
    H5Sget_simple_extent_dims(s, d, NULL);
    H5Sclose(s);
    H5Aclose(a);
    H5Dclose(ds);
    H5Fclose(f);
    return (int)d[0];
}

int main(int argc, char **argv) {
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2 || size != 4) {
        if (rank == 0) {
            fprintf(stderr, "usage: mpirun -np 4 %s DIR\n", argv[0]);
        }
        MPI_Finalize();
        return 2;
    }
    const char *root = argv[1];
    if (rank == 0) {
        mkdir(root, 0755);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* ---- save at every layout ---- */
    for (int w = 0; w < NLAYOUTS; w++) {
        layout l = layouts[w];
        MPI_Comm sub;
        MPI_Comm_split(MPI_COMM_WORLD, rank < l.np ? 0 : MPI_UNDEFINED, rank, &sub);
        if (sub != MPI_COMM_NULL) {
            test_model m;
            tm_init(&m, rank % l.tp, l.tp); /* rank = dp * TP + tp */
            tm_fill(&m, 100 + (uint32_t)w);
            atom_ckpt_meta meta;
            char spec[128], dir[512];
            fill_meta(&meta, w, spec, sizeof spec);
            layout_dir(dir, sizeof dir, root, l);
            atom_ckpt_group g = {sub, rank / l.tp, l.np / l.tp};
            atom_ckpt_err err = {""};
            int rc = atom_ckpt_save(dir, g, m.t, TM_TENSORS, &meta, 0, &err);
            CHECK(rc == 0, "save at np %d TP %d: %s", l.np, l.tp, err.msg);
            tm_free(&m);
            MPI_Comm_free(&sub);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            char dir[512], path[1024];
            layout_dir(dir, sizeof dir, root, l);
            snprintf(path, sizeof path, "%s/latest", dir);
            atom_ckpt_err err = {""};
            CHECK(atom_ckpt_verify(path, NULL, &err) == 0, "verify %s: %s", path, err.msg);
            /* every rank wrote a share of every dataset, and the shares cover it once (verify
             * checks the coverage) */
            const char *names[] = {"/param/wte", "/adam_m/qkvw", "/adam_v/ln1w", "/param/lnfb",
                                   "/param/fcprojw"};
            for (int i = 0; i < 5; i++) {
                int rows = slab_rows(path, names[i]);
                CHECK(rows == l.np, "%s at np %d TP %d: %d written hyperslabs, %d expected",
                      names[i], l.np, l.tp, rows, l.np);
            }
        }
    }

    /* ---- load every saved layout at every layout ---- */
    for (int w = 0; w < NLAYOUTS; w++) {
        for (int r = 0; r < NLAYOUTS; r++) {
            layout lw = layouts[w], lr = layouts[r];
            MPI_Comm sub;
            MPI_Comm_split(MPI_COMM_WORLD, rank < lr.np ? 0 : MPI_UNDEFINED, rank, &sub);
            if (sub == MPI_COMM_NULL) {
                continue;
            }
            test_model m;
            tm_init(&m, rank % lr.tp, lr.tp);
            tm_poison(&m);
            char dir[512], path[1024];
            layout_dir(dir, sizeof dir, root, lw);
            atom_ckpt_meta meta;
            atom_ckpt_err err = {""};
            int rc;
            if (r % 2 == 0) {
                rc = atom_ckpt_load_latest(dir, sub, m.t, TM_TENSORS, &meta, path, sizeof path, &err);
            } else {
                snprintf(path, sizeof path, "%s/ckpt-%010d.h5", dir, w + 1);
                rc = atom_ckpt_load(path, sub, m.t, TM_TENSORS, &meta, r % 3 == 0, &err);
            }
            CHECK(rc == 0, "load written np %d TP %d at np %d TP %d: %s", lw.np, lw.tp, lr.np,
                  lr.tp, err.msg);
            if (rc == 0) {
                int64_t bad = tm_mismatches(&m, 100 + (uint32_t)w);
                CHECK(bad == 0, "written TP%dxDP%d read TP%dxDP%d: %lld elements differ", lw.tp,
                      lw.np / lw.tp, lr.tp, lr.np / lr.tp, (long long)bad);
                char spec[128];
                atom_ckpt_meta want;
                fill_meta(&want, w, spec, sizeof spec);
                CHECK(meta.step == want.step && meta.tokens_seen == want.tokens_seen &&
                          meta.data_position == want.data_position && meta.vocab == 100,
                      "scalars of the metadata differ (step %lld)", (long long)meta.step);
                CHECK(meta.rng_state_len == 16 && memcmp(meta.rng_state, want.rng_state, 16) == 0,
                      "rng state differs");
                CHECK(meta.spec_json && strcmp(meta.spec_json, spec) == 0, "spec differs: %s",
                      meta.spec_json ? meta.spec_json : "(null)");
                CHECK(meta.tp == lw.tp && meta.dp == lw.np / lw.tp, "layout %dx%d recorded",
                      meta.tp, meta.dp);
                CHECK(meta.format_version == ATOM_CKPT_FORMAT_VERSION, "format version %d",
                      meta.format_version);
                CHECK(strstr(meta.writer, "test-roundtrip") && strstr(meta.writer, "host"),
                      "writer '%s'", meta.writer);
                atom_ckpt_meta_free(&meta);
            }
            tm_free(&m);
            MPI_Comm_free(&sub);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    return tm_finish("ckpt_roundtrip");
}
