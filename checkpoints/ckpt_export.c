/* checkpoints/ckpt_export.c: export of a checkpoint's model weights to safetensors, under the
 * names and layouts of the common GPT-2 checkpoints, so the open ecosystem can load them.
 *
 * Mapping (docs/checkpoint-format.md): per-layer tensors are split out of atom's stacked (L, ...)
 * datasets; GPT-2's Conv1D weights are stored (in, out), the transpose of atom's (out, in);
 * wte is trimmed from Vp rows back to V. The LM head is tied to wte and, as in the published
 * GPT-2 files, not stored. safetensors: 8-byte little-endian header length, a JSON header
 * (padded with spaces to a multiple of 8), then the raw little-endian data.
 */
#include "checkpoints/ckpt_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct export_item {
    char name[128];       /* GPT-2 name */
    const char *source;   /* atom dataset under /param */
    int layer;            /* -1: not per layer */
    bool transpose;       /* Conv1D: (out, in) -> (in, out) */
    int ndims;
    int64_t shape[2];     /* exported shape */
    int64_t rows;         /* rows read from the source slice (wte: V of Vp) */
    int64_t cols;
} export_item;

typedef struct model_shape {
    int64_t L, C, Vp, V, T;
} model_shape;

static int read_shape(hid_t file, int64_t vocab, model_shape *m, atom_ckpt_err *err) {
    atom_ckpt_shape shape;
    if (ckpt_read_shape(file, &shape, err) != 0) {
        return -1;
    }
    m->L = shape.layers;
    m->C = shape.channels;
    m->Vp = shape.padded_vocab;
    m->V = vocab > 0 && vocab <= m->Vp ? vocab : m->Vp;
    m->T = shape.context;
    return 0;
}

static void add_item(export_item *it, int *k, const char *name, int layer, const char *source,
                     bool transpose, int ndims, int64_t rows, int64_t cols) {
    export_item *e = &it[(*k)++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->source = source;
    e->layer = layer;
    e->transpose = transpose;
    e->ndims = ndims;
    e->rows = rows;
    e->cols = cols;
    e->shape[0] = ndims == 1 ? rows * cols : transpose ? cols : rows;
    e->shape[1] = transpose ? rows : cols;
}

static int build_items(const model_shape *m, export_item **out, int *count) {
    int n = 4 + 12 * (int)m->L;
    export_item *it = calloc((size_t)n, sizeof *it);
    if (!it) {
        return -1;
    }
    int k = 0;
    int64_t C = m->C;
    add_item(it, &k, "transformer.wte.weight", -1, "wte", false, 2, m->V, C);
    add_item(it, &k, "transformer.wpe.weight", -1, "wpe", false, 2, m->T, C);
    static const struct {
        const char *suffix, *source;
        bool transpose;
        int ndims, rows_c, cols_c; /* rows and cols in units of C */
    } per_layer[] = {
        {"ln_1.weight", "ln1w", false, 1, 1, 1},       {"ln_1.bias", "ln1b", false, 1, 1, 1},
        {"attn.c_attn.weight", "qkvw", true, 2, 3, 1}, {"attn.c_attn.bias", "qkvb", false, 1, 1, 3},
        {"attn.c_proj.weight", "attprojw", true, 2, 1, 1},
        {"attn.c_proj.bias", "attprojb", false, 1, 1, 1},
        {"ln_2.weight", "ln2w", false, 1, 1, 1},       {"ln_2.bias", "ln2b", false, 1, 1, 1},
        {"mlp.c_fc.weight", "fcw", true, 2, 4, 1},     {"mlp.c_fc.bias", "fcb", false, 1, 1, 4},
        {"mlp.c_proj.weight", "fcprojw", true, 2, 1, 4},
        {"mlp.c_proj.bias", "fcprojb", false, 1, 1, 1},
    };
    for (int l = 0; l < m->L; l++) {
        for (size_t j = 0; j < sizeof per_layer / sizeof per_layer[0]; j++) {
            char name[128];
            snprintf(name, sizeof name, "transformer.h.%d.%s", l, per_layer[j].suffix);
            /* a 1-D per-layer tensor is one row of its (L, n) source */
            int64_t rows = per_layer[j].ndims == 1 ? 1 : per_layer[j].rows_c * C;
            int64_t cols = per_layer[j].ndims == 1 ? per_layer[j].cols_c * C : per_layer[j].cols_c * C;
            add_item(it, &k, name, l, per_layer[j].source, per_layer[j].transpose,
                     per_layer[j].ndims, rows, cols);
        }
    }
    add_item(it, &k, "transformer.ln_f.weight", -1, "lnfw", false, 1, 1, C);
    add_item(it, &k, "transformer.ln_f.bias", -1, "lnfb", false, 1, 1, C);
    *out = it;
    *count = k;
    return 0;
}

/* Reads item e's floats (rows x cols of the source, at its layer) into buf. */
static int read_item(hid_t file, const export_item *e, float *buf, atom_ckpt_err *err) {
    char dname[256];
    snprintf(dname, sizeof dname, "/param/%s", e->source);
    hid_t ds = H5Dopen2(file, dname, H5P_DEFAULT);
    if (ds < 0) {
        return ckpt_h5_errf(err, "dataset %s is missing", dname);
    }
    hid_t space = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t dims[3] = {0, 0, 0}, start[3] = {0, 0, 0}, count[3];
    H5Sget_simple_extent_dims(space, dims, NULL);
    int rc = 0;
    /* A per-layer source is (L, ...): take layer e->layer; the others are read as they are,
     * wte's first V rows only. */
    int first = e->layer >= 0 ? 1 : 0;
    if (e->layer >= 0) {
        start[0] = (hsize_t)e->layer;
        count[0] = 1;
    }
    int64_t want = e->rows * e->cols, have = 1;
    for (int d = first; d < nd; d++) {
        count[d] = dims[d];
    }
    if (nd - first == 2) {
        count[first] = (hsize_t)e->rows; /* trims wte's padded rows */
    }
    for (int d = first; d < nd; d++) {
        have *= (int64_t)count[d];
    }
    if (have != want || (e->layer >= 0 && (hsize_t)e->layer >= dims[0])) {
        rc = ckpt_errf(err, "dataset %s does not have the shape GPT-2's %s needs", dname, e->name);
    } else {
        hid_t mspace = ckpt_mem_space(nd, count, NULL);
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
        if (H5Dread(ds, H5T_NATIVE_FLOAT, mspace, space, H5P_DEFAULT, buf) < 0) {
            rc = ckpt_h5_errf(err, "cannot read dataset %s", dname);
        }
        H5Sclose(mspace);
    }
    H5Sclose(space);
    H5Dclose(ds);
    return rc;
}

static int write_header(FILE *f, const export_item *items, int n, int64_t step, const char *src,
                        atom_ckpt_err *err) {
    size_t cap = 4096 + (size_t)n * 256 + strlen(src), used = 0;
    char *h = malloc(cap);
    if (!h) {
        return ckpt_errf(err, "out of memory");
    }
    used += (size_t)snprintf(h + used, cap - used,
                             "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"atom checkpoint "
                             "step %lld\"}",
                             (long long)step);
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const export_item *e = &items[i];
        uint64_t bytes = sizeof(float) * (uint64_t)(e->rows * e->cols);
        if (e->ndims == 1) {
            used += (size_t)snprintf(h + used, cap - used,
                                     ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                                     "\"data_offsets\":[%llu,%llu]}",
                                     e->name, (long long)e->shape[0], (unsigned long long)offset,
                                     (unsigned long long)(offset + bytes));
        } else {
            used += (size_t)snprintf(h + used, cap - used,
                                     ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                                     "\"data_offsets\":[%llu,%llu]}",
                                     e->name, (long long)e->shape[0], (long long)e->shape[1],
                                     (unsigned long long)offset,
                                     (unsigned long long)(offset + bytes));
        }
        offset += bytes;
    }
    used += (size_t)snprintf(h + used, cap - used, "}");
    while (used % 8 != 0) {
        h[used++] = ' '; /* the data then starts 8-byte aligned */
    }
    uint64_t len = used;
    unsigned char le[8];
    for (int b = 0; b < 8; b++) {
        le[b] = (unsigned char)(len >> (8 * b));
    }
    int rc = fwrite(le, 1, 8, f) == 8 && fwrite(h, 1, used, f) == used
                 ? 0
                 : ckpt_errf(err, "writing the safetensors header: %s", strerror(errno));
    free(h);
    return rc;
}

int atom_ckpt_export_safetensors(const char *path, const char *out_path, FILE *out,
                                 atom_ckpt_err *err) {
    ckpt_h5_quiet();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        return ckpt_h5_errf(err, "cannot open checkpoint %s (missing, truncated or not HDF5)",
                            path);
    }
    atom_ckpt_meta meta;
    model_shape m = {0, 0, 0, 0, 0};
    export_item *items = NULL;
    int n = 0, rc = ckpt_read_meta(file, &meta, err);
    /* The weights a corrupt file holds are not exported: every checksum of /param (what is
     * written out) is checked first, and the rows must tile each dataset. */
    if (rc == 0) {
        atom_ckpt_meta_free(&meta);
        atom_ckpt_err why = {""};
        if (ckpt_verify_open(file, path, 1, 0, 1, H5P_DEFAULT, NULL, &why) != 0) {
            rc = ckpt_errf(err, "refusing to export %s: %s", path, why.msg);
        }
    }
    if (rc == 0) {
        rc = read_shape(file, meta.vocab, &m, err);
    }
    if (rc == 0 && build_items(&m, &items, &n) != 0) {
        rc = ckpt_errf(err, "out of memory");
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *f = NULL;
    if (rc == 0 && !(f = fopen(tmp, "wb"))) {
        rc = ckpt_errf(err, "cannot create %s: %s", tmp, strerror(errno));
    }
    if (rc == 0) {
        rc = write_header(f, items, n, meta.step, path, err);
    }
    int64_t biggest = 0;
    for (int i = 0; i < n; i++) {
        biggest = items[i].rows * items[i].cols > biggest ? items[i].rows * items[i].cols : biggest;
    }
    float *buf = NULL, *tbuf = NULL;
    if (rc == 0 && (!(buf = malloc(sizeof(float) * (size_t)biggest)) ||
                    !(tbuf = malloc(sizeof(float) * (size_t)biggest)))) {
        rc = ckpt_errf(err, "out of memory");
    }
    for (int i = 0; i < n && rc == 0; i++) {
        const export_item *e = &items[i];
        rc = read_item(file, e, buf, err);
        const float *src = buf;
        if (rc == 0 && e->transpose) {
            for (int64_t r = 0; r < e->rows; r++) {
                for (int64_t c = 0; c < e->cols; c++) {
                    tbuf[c * e->rows + r] = buf[r * e->cols + c];
                }
            }
            src = tbuf;
        }
        size_t cnt = (size_t)(e->rows * e->cols);
        if (rc == 0 && fwrite(src, sizeof(float), cnt, f) != cnt) {
            rc = ckpt_errf(err, "writing %s: %s", tmp, strerror(errno));
        }
    }
    free(buf);
    free(tbuf);
    if (f && fclose(f) != 0 && rc == 0) {
        rc = ckpt_errf(err, "closing %s: %s", tmp, strerror(errno));
    }
    if (rc == 0 && rename(tmp, out_path) != 0) {
        rc = ckpt_errf(err, "rename %s -> %s: %s", tmp, out_path, strerror(errno));
    }
    if (rc != 0 && f) {
        remove(tmp);
    }
    if (rc == 0 && out) {
        fprintf(out, "exported %d tensors of %s (L=%lld, C=%lld, V=%lld of Vp=%lld, T=%lld) to %s\n",
                n, path, (long long)m.L, (long long)m.C, (long long)m.V, (long long)m.Vp,
                (long long)m.T, out_path);
    }
    free(items);
    H5Fclose(file);
    return rc;
}
