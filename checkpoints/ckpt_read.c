/* checkpoints/ckpt_read.c: verifying and loading checkpoints, at any layout.
 *
 * Loading reads, for every tensor, the hyperslab the NEW layout's shard selects from the global
 * dataset, whatever layout wrote it: that is the whole reshard. Verification recomputes the
 * CRC32C of every hyperslab recorded in a dataset's checksum attribute.
 */
#include "checkpoints/ckpt_internal.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- read-ahead ----
 * A cold buffered read goes at the kernel's read-ahead pace (measured here: 0.54 GB/s for dd
 * without iflag=direct, 1.8 GB/s with it). Telling the kernel the whole byte range a rank will
 * read (POSIX_FADV_WILLNEED) lets it issue large reads at once (1.27 GB/s measured for the same
 * file). The range is from the selection's first to its last element in the dataset's contiguous
 * storage, or every column-block chunk the selection reaches. */
typedef struct chunk_reach {
    int fd, dim;
    hsize_t lo, hi, width; /* the selection's columns [lo, hi) along dim; a chunk's width */
} chunk_reach;

static void prefetch_chunk(haddr_t at, hsize_t bytes, const hsize_t *origin, void *arg) {
    const chunk_reach *r = arg;
    if (origin[r->dim] < r->hi && origin[r->dim] + r->width > r->lo) {
        posix_fadvise(r->fd, (off_t)at, (off_t)bytes, POSIX_FADV_WILLNEED);
    }
}

static void prefetch(int fd, hid_t ds, int nd, const hsize_t *dims, const hsize_t *start,
                     const hsize_t *stride, const hsize_t *count, const hsize_t *block) {
    if (fd < 0) {
        return;
    }
    haddr_t base = H5Dget_offset(ds);
    if (base == HADDR_UNDEF) {
        /* column-block chunks (ckpt_chunk_width): every chunk the selection's columns reach */
        const int l = nd - 1;
        chunk_reach reach = {fd, l, start[l], start[l] + (count[l] - 1) * stride[l] + block[l], 0};
        hid_t plist = H5Dget_create_plist(ds);
        hsize_t shape[ATOM_CKPT_MAX_DIMS] = {0};
        if (plist >= 0 && H5Pget_chunk(plist, nd, shape) == nd) {
            reach.width = shape[l];
            ckpt_each_chunk(ds, prefetch_chunk, &reach);
        }
        if (plist >= 0) {
            H5Pclose(plist);
        }
        return;
    }
    hsize_t first = 0, last = 0;
    for (int d = 0; d < nd; d++) {
        hsize_t hi = start[d] + (count[d] - 1) * stride[d] + block[d] - 1;
        first = first * dims[d] + start[d];
        last = last * dims[d] + hi;
    }
    posix_fadvise(fd, (off_t)(base + first * sizeof(float)),
                  (off_t)((last - first + 1) * sizeof(float)), POSIX_FADV_WILLNEED);
}

/* ---- dataset names of a group, in name order ---- */

typedef struct name_list {
    char **names;
    int count, cap;
} name_list;

static herr_t collect_name(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group;
    (void)info;
    name_list *l = data;
    if (l->count == l->cap) {
        int cap = l->cap ? l->cap * 2 : 32;
        char **grown = realloc(l->names, sizeof(char *) * (size_t)cap);
        if (!grown) {
            return -1;
        }
        l->names = grown;
        l->cap = cap;
    }
    l->names[l->count] = strdup(name);
    return l->names[l->count++] ? 0 : -1;
}

static void free_names(name_list *l) {
    for (int i = 0; i < l->count; i++) {
        free(l->names[i]);
    }
    free(l->names);
}

static void format_slab(char *buf, size_t size, const uint64_t *row, int nd) {
    size_t used = 0;
    const char *labels[4] = {"start", "stride", "count", "block"};
    for (int q = 0; q < 4 && used < size; q++) {
        used += (size_t)snprintf(buf + used, size - used, "%s%s (", q ? ", " : "", labels[q]);
        for (int d = 0; d < nd && used < size; d++) {
            used += (size_t)snprintf(buf + used, size - used, "%s%llu", d ? "," : "",
                                     (unsigned long long)row[1 + q * nd + d]);
        }
        if (used < size) {
            used += (size_t)snprintf(buf + used, size - used, ")");
        }
    }
}

/* ---- the checksum rows must tile the dataset ----
 * docs/checkpoint-format.md promises that a dataset's slabs do not overlap and together cover it
 * exactly once. Checking only their total let a row copied over its neighbour hide a flipped
 * byte in the neighbour's elements, which no row covered any more. The rows come from the file:
 * every size below is computed with checked arithmetic, so a crafted value cannot wrap. */

/* One row as checked: its elements, and the row-major indices of its first and last element. */
typedef struct slab_span {
    const uint64_t *row;
    uint64_t first, last;
} slab_span;

/* The distance between a dimension's blocks (count 1: the block itself, so that a stride the
 * writer had no reason to set is never used). */
static uint64_t dim_step(uint64_t count, uint64_t stride, uint64_t block) {
    return count > 1 ? stride : block;
}

/* Checks row's pattern along every dimension against dims: blocks of at least one index that do
 * not overlap one another (stride >= block), the last ending inside the dimension. Fills its
 * element count and first and last linear index (mult[d]: elements per index of dimension d). */
static bool slab_inside(const uint64_t *row, int nd, const hsize_t *dims, const uint64_t *mult,
                        slab_span *span, uint64_t *elems) {
    uint64_t n = 1, first = 0, last = 0;
    for (int d = 0; d < nd; d++) {
        uint64_t st = row[1 + d], sr = row[1 + nd + d], ct = row[1 + 2 * nd + d],
                 bl = row[1 + 3 * nd + d], reach, end, blocks;
        if (ct < 1 || bl < 1 || (ct > 1 && sr < bl) ||
            __builtin_mul_overflow(ct - 1, dim_step(ct, sr, bl), &reach) ||
            __builtin_add_overflow(reach, bl, &reach) || __builtin_add_overflow(st, reach, &end) ||
            end > dims[d] || __builtin_mul_overflow(ct, bl, &blocks) ||
            __builtin_mul_overflow(n, blocks, &n)) {
            return false;
        }
        first += st * mult[d]; /* no wrap: both sums stay below the dataset's element count */
        last += (end - 1) * mult[d];
    }
    span->row = row;
    span->first = first;
    span->last = last;
    *elems = n;
    return true;
}

/* Whether two one-dimensional patterns (start, stride, count, block) share an index. Walks the
 * blocks of the one with fewer blocks, from the first that reaches the other's span, asking of
 * each in O(1) whether the other has an index inside it. */
static bool dims_meet(const uint64_t *a, const uint64_t *b) {
    if (a[2] > b[2]) {
        const uint64_t *t = a;
        a = b;
        b = t;
    }
    uint64_t a_step = dim_step(a[2], a[1], a[3]), b_step = dim_step(b[2], b[1], b[3]);
    uint64_t b_end = b[0] + (b[2] - 1) * b_step + b[3]; /* no wrap: checked by slab_inside */
    uint64_t c = a[0] + a[3] > b[0] ? 0 : (b[0] - a[0] - a[3]) / a_step + 1;
    for (; c < a[2]; c++) {
        uint64_t x = a[0] + c * a_step; /* this block of a is [x, x + a[3]) */
        if (x >= b_end) {
            return false;
        }
        uint64_t y = x > b[0] ? x : b[0], rel = y - b[0], e = rel / b_step;
        if (rel % b_step < b[3]) {
            return true; /* y, in block e of b */
        }
        if (e + 1 < b[2] && b[0] + (e + 1) * b_step < x + a[3]) {
            return true; /* the next block of b starts inside this block of a */
        }
    }
    return false;
}

/* Two hyperslabs share an element when their patterns meet along every dimension. */
static bool slabs_meet(const uint64_t *x, const uint64_t *y, int nd) {
    for (int d = 0; d < nd; d++) {
        uint64_t a[4] = {x[1 + d], x[1 + nd + d], x[1 + 2 * nd + d], x[1 + 3 * nd + d]};
        uint64_t b[4] = {y[1 + d], y[1 + nd + d], y[1 + 2 * nd + d], y[1 + 3 * nd + d]};
        if (!dims_meet(a, b)) {
            return false;
        }
    }
    return true;
}

static int cmp_span(const void *a, const void *b) {
    const slab_span *x = a, *y = b;
    if (x->first != y->first) {
        return x->first < y->first ? -1 : 1;
    }
    return x->last < y->last ? -1 : x->last > y->last;
}

/* The rows of dataset dname (shape dims) tile it: each lies inside it, no two share an element
 * (sorted by their first element, each is compared with those that start before it ends), and
 * their elements add up to the dataset's, so that none is left out. */
static int check_tiling(const char *dname, int nd, const hsize_t *dims, const uint64_t *rows,
                        hsize_t nslabs, atom_ckpt_err *err) {
    uint64_t mult[ATOM_CKPT_MAX_DIMS], total = 1, bytes;
    for (int d = nd - 1; d >= 0; d--) {
        mult[d] = total;
        if (__builtin_mul_overflow(total, (uint64_t)dims[d], &total)) {
            total = UINT64_MAX;
            break;
        }
    }
    if (total == UINT64_MAX || __builtin_mul_overflow(total, sizeof(float), &bytes) ||
        bytes > INT64_MAX) {
        return ckpt_errf(err, "dataset %s: its shape holds more floats than a file can", dname);
    }
    const int width = 1 + 4 * nd;
    slab_span *spans = malloc(sizeof *spans * (size_t)(nslabs ? nslabs : 1));
    if (!spans) {
        return ckpt_errf(err, "dataset %s: out of memory for %llu checksum rows", dname,
                         (unsigned long long)nslabs);
    }
    uint64_t covered = 0;
    char slab[256], other[256];
    for (hsize_t s = 0; s < nslabs; s++) {
        uint64_t n;
        if (!slab_inside(rows + s * width, nd, dims, mult, &spans[s], &n)) {
            format_slab(slab, sizeof slab, rows + s * width, nd);
            free(spans);
            return ckpt_errf(err, "dataset %s: hyperslab %s lies outside the dataset", dname,
                             slab);
        }
        if (__builtin_add_overflow(covered, n, &covered)) {
            covered = UINT64_MAX; /* more than the dataset: said below, after any overlap */
        }
    }
    qsort(spans, (size_t)nslabs, sizeof *spans, cmp_span);
    for (hsize_t i = 0; i < nslabs; i++) {
        for (hsize_t j = i + 1; j < nslabs && spans[j].first <= spans[i].last; j++) {
            if (slabs_meet(spans[i].row, spans[j].row, nd)) {
                format_slab(slab, sizeof slab, spans[i].row, nd);
                format_slab(other, sizeof other, spans[j].row, nd);
                free(spans);
                return ckpt_errf(err,
                                 "dataset %s: checksummed hyperslabs %s and %s overlap (each "
                                 "element must be checksummed exactly once)",
                                 dname, slab, other);
            }
        }
    }
    free(spans);
    if (covered != total) {
        return ckpt_errf(err,
                         "dataset %s: its checksummed hyperslabs hold %llu elements of %llu "
                         "(the others are not checksummed)",
                         dname, (unsigned long long)covered, (unsigned long long)total);
    }
    return 0;
}

/* Reads a dataset's checksum rows ([crc, start.., stride.., count.., block..] per slab, width
 * 1 + 4 nd) into *rows (malloc'ed) and checks that they tile the dataset (check_tiling). */
static int read_crc_rows(hid_t ds, const char *dname, int nd, const hsize_t *dims,
                         uint64_t **rows_out, hsize_t *nslabs, atom_ckpt_err *err) {
    hid_t attr = H5Aopen(ds, CKPT_CRC_ATTR, H5P_DEFAULT);
    if (attr < 0) {
        return ckpt_h5_errf(err, "dataset %s has no %s attribute", dname, CKPT_CRC_ATTR);
    }
    hid_t aspace = H5Aget_space(attr);
    hsize_t adims[2] = {0, 0};
    int arank = H5Sget_simple_extent_ndims(aspace);
    H5Sget_simple_extent_dims(aspace, adims, NULL);
    H5Sclose(aspace);
    int width = 1 + 4 * nd;
    size_t bytes;
    if (arank != 2 || adims[1] != (hsize_t)width) {
        H5Aclose(attr);
        return ckpt_errf(err, "dataset %s: %s attribute is not (slabs, %d)", dname, CKPT_CRC_ATTR,
                         width);
    }
    if (__builtin_mul_overflow((size_t)(adims[0] ? adims[0] : 1), sizeof(uint64_t) * width,
                               &bytes)) {
        H5Aclose(attr);
        return ckpt_errf(err, "dataset %s: %llu checksum rows, more than memory holds", dname,
                         (unsigned long long)adims[0]);
    }
    uint64_t *rows = malloc(bytes);
    if (!rows || H5Aread(attr, H5T_NATIVE_UINT64, rows) < 0) {
        H5Aclose(attr);
        free(rows);
        return ckpt_h5_errf(err, "dataset %s: cannot read its checksums", dname);
    }
    H5Aclose(attr);
    if (check_tiling(dname, nd, dims, rows, adims[0], err) != 0) {
        free(rows);
        return -1;
    }
    *rows_out = rows;
    *nslabs = adims[0];
    return 0;
}

/* Checks one dataset's slabs; *k counts slabs over the whole file to share them among ranks. */
static int verify_dataset(hid_t ds, const char *dname, int rank, int nranks, hid_t dxpl, int fd,
                          int64_t *k, float **buf, int64_t *buf_cap, int *nslabs_out,
                          atom_ckpt_err *err) {
    hid_t fspace = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(fspace);
    hsize_t dims[ATOM_CKPT_MAX_DIMS];
    if (nd < 1 || nd > ATOM_CKPT_MAX_DIMS) {
        H5Sclose(fspace);
        return ckpt_errf(err, "dataset %s has %d dims", dname, nd);
    }
    H5Sget_simple_extent_dims(fspace, dims, NULL);
    uint64_t *rows;
    hsize_t nslabs;
    int width = 1 + 4 * nd, rc = read_crc_rows(ds, dname, nd, dims, &rows, &nslabs, err);
    if (rc != 0) {
        H5Sclose(fspace);
        return rc;
    }
    for (hsize_t s = 0; s < nslabs; s++) { /* announce this rank's reads first */
        const uint64_t *row = rows + s * width;
        hsize_t st[ATOM_CKPT_MAX_DIMS], sr[ATOM_CKPT_MAX_DIMS], ct[ATOM_CKPT_MAX_DIMS],
            bl[ATOM_CKPT_MAX_DIMS];
        for (int d = 0; d < nd; d++) {
            st[d] = row[1 + d], sr[d] = row[1 + nd + d], ct[d] = row[1 + 2 * nd + d];
            bl[d] = row[1 + 3 * nd + d];
        }
        if ((*k + (int64_t)s) % nranks == rank) {
            prefetch(fd, ds, nd, dims, st, sr, ct, bl);
        }
    }
    for (hsize_t s = 0; s < nslabs && rc == 0; s++, (*k)++) {
        const uint64_t *row = rows + s * width;
        hsize_t start[ATOM_CKPT_MAX_DIMS], stride[ATOM_CKPT_MAX_DIMS], count[ATOM_CKPT_MAX_DIMS],
            block[ATOM_CKPT_MAX_DIMS];
        int64_t n = 1;
        for (int d = 0; d < nd; d++) {
            start[d] = row[1 + d];
            stride[d] = row[1 + nd + d];
            count[d] = row[1 + 2 * nd + d];
            block[d] = row[1 + 3 * nd + d];
            n *= (int64_t)(count[d] * block[d]);
        }
        if (*k % nranks != rank) {
            continue;
        }
        char slab[256];
        format_slab(slab, sizeof slab, row, nd);
        if (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, stride, count, block) < 0 ||
            !H5Sselect_valid(fspace)) {
            rc = ckpt_h5_errf(err, "dataset %s: hyperslab %s lies outside the dataset", dname, slab);
            break;
        }
        if (n > *buf_cap) {
            float *grown = realloc(*buf, sizeof(float) * (size_t)n);
            if (!grown) {
                rc = ckpt_errf(err, "out of memory verifying %s", dname);
                break;
            }
            *buf = grown;
            *buf_cap = n;
        }
        hid_t mspace = ckpt_mem_space(nd, count, block);
        if (H5Dread(ds, H5T_IEEE_F32LE, mspace, fspace, dxpl, *buf) < 0) {
            rc = ckpt_h5_errf(err, "dataset %s: cannot read hyperslab %s (truncated file?)", dname,
                              slab);
        } else {
            uint32_t crc = atom_ckpt_crc32c(0, *buf, sizeof(float) * (size_t)n);
            if (crc != (uint32_t)row[0]) {
                rc = ckpt_errf(err,
                               "checksum mismatch in dataset %s, hyperslab %s: stored crc32c "
                               "%08x, data gives %08x",
                               dname, slab, (unsigned)row[0], (unsigned)crc);
            }
        }
        H5Sclose(mspace);
    }
    *nslabs_out = (int)nslabs;
    free(rows);
    H5Sclose(fspace);
    return rc;
}

int ckpt_verify_open(hid_t file, const char *path, int kinds, int rank, int nranks, hid_t dxpl,
                     FILE *out, atom_ckpt_err *err) {
    int64_t k = 0, buf_cap = 0;
    float *buf = NULL;
    int rc = 0, datasets = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* for read-ahead hints only */
    for (int kind = 0; kind < kinds && kind < CKPT_KINDS && rc == 0; kind++) {
        hid_t group = H5Gopen2(file, ckpt_kind_names[kind], H5P_DEFAULT);
        if (group < 0) {
            rc = ckpt_h5_errf(err, "%s has no group /%s: not an atom checkpoint", path,
                              ckpt_kind_names[kind]);
            break;
        }
        name_list names = {0};
        hsize_t idx = 0;
        if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, &names) < 0) {
            rc = ckpt_h5_errf(err, "%s: cannot list /%s", path, ckpt_kind_names[kind]);
        }
        for (int i = 0; i < names.count && rc == 0; i++) {
            char dname[512];
            snprintf(dname, sizeof dname, "/%s/%s", ckpt_kind_names[kind], names.names[i]);
            hid_t ds = H5Dopen2(group, names.names[i], H5P_DEFAULT);
            if (ds < 0) {
                rc = ckpt_h5_errf(err, "%s: cannot open dataset %s", path, dname);
                break;
            }
            int nslabs = 0;
            rc = verify_dataset(ds, dname, rank, nranks, dxpl, fd, &k, &buf, &buf_cap, &nslabs,
                                err);
            H5Dclose(ds);
            datasets++;
            if (out && rc == 0) {
                fprintf(out, "ok  %-28s %d hyperslab%s\n", dname, nslabs, nslabs == 1 ? "" : "s");
            }
        }
        free_names(&names);
        H5Gclose(group);
    }
    free(buf);
    if (fd >= 0) {
        close(fd);
    }
    if (rc == 0 && datasets == 0) {
        rc = ckpt_errf(err, "%s holds no datasets", path);
    }
    return rc;
}

/* ---- metadata ---- */

static int read_attr(hid_t obj, const char *name, hid_t mem_type, void *value, size_t max_elems,
                     int *elems, atom_ckpt_err *err) {
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) {
        return ckpt_h5_errf(err, "missing attribute %s", name);
    }
    hid_t space = H5Aget_space(attr);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    int rc = 0;
    if (n < 0 || (size_t)n > max_elems) {
        rc = ckpt_errf(err, "attribute %s has %lld values (at most %zu expected)", name,
                       (long long)n, max_elems);
    } else if (n > 0 && H5Aread(attr, mem_type, value) < 0) {
        rc = ckpt_h5_errf(err, "cannot read attribute %s", name);
    }
    if (elems) {
        *elems = (int)n;
    }
    H5Aclose(attr);
    return rc;
}

static char *read_string_attr(hid_t obj, const char *name, atom_ckpt_err *err) {
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) {
        ckpt_h5_errf(err, "missing attribute %s", name);
        return NULL;
    }
    hid_t type = H5Aget_type(attr);
    char *s = NULL;
    if (H5Tget_class(type) == H5T_STRING && !H5Tis_variable_str(type)) {
        size_t n = H5Tget_size(type);
        s = calloc(n + 1, 1);
        if (s && H5Aread(attr, type, s) < 0) {
            free(s);
            s = NULL;
        }
    }
    if (!s) {
        ckpt_errf(err, "attribute %s is not a readable fixed-length string", name);
    }
    H5Tclose(type);
    H5Aclose(attr);
    return s;
}

int ckpt_read_meta(hid_t file, atom_ckpt_meta *meta, atom_ckpt_err *err) {
    memset(meta, 0, sizeof *meta);
    int32_t layout[2] = {0, 0};
    int rc = read_attr(file, "format_version", H5T_NATIVE_INT32, &meta->format_version, 1, NULL, err);
    rc = rc ? rc : read_attr(file, "step", H5T_NATIVE_INT64, &meta->step, 1, NULL, err);
    rc = rc ? rc : read_attr(file, "tokens_seen", H5T_NATIVE_INT64, &meta->tokens_seen, 1, NULL, err);
    rc = rc ? rc : read_attr(file, "data_position", H5T_NATIVE_INT64, &meta->data_position, 1, NULL, err);
    rc = rc ? rc : read_attr(file, "rng_state", H5T_NATIVE_UINT8, meta->rng_state,
                             ATOM_CKPT_MAX_RNG_BYTES, &meta->rng_state_len, err);
    rc = rc ? rc : read_attr(file, "layout_tp_dp", H5T_NATIVE_INT32, layout, 2, NULL, err);
    rc = rc ? rc : read_attr(file, "vocab", H5T_NATIVE_INT64, &meta->vocab, 1, NULL, err);
    rc = rc ? rc : read_attr(file, "created_unix", H5T_NATIVE_INT64, &meta->created_unix, 1, NULL, err);
    meta->tp = layout[0];
    meta->dp = layout[1];
    if (rc == 0) {
        char *writer = read_string_attr(file, "writer", err);
        if (!writer) {
            return -1;
        }
        snprintf(meta->writer, sizeof meta->writer, "%s", writer);
        free(writer);
        meta->spec_json = read_string_attr(file, "job_spec", err);
        rc = meta->spec_json ? 0 : -1;
    }
    /* optional: checkpoints written before it was recorded have none */
    if (rc == 0 && H5Aexists(file, "tokenizer") > 0) {
        char *tokenizer = read_string_attr(file, "tokenizer", err);
        if (!tokenizer) {
            atom_ckpt_meta_free(meta);
            return -1;
        }
        snprintf(meta->tokenizer, sizeof meta->tokenizer, "%s", tokenizer);
        free(tokenizer);
    }
    if (rc == 0 && meta->format_version != ATOM_CKPT_FORMAT_VERSION) {
        atom_ckpt_meta_free(meta);
        rc = ckpt_errf(err, "format version %d, this build reads version %d",
                       meta->format_version, ATOM_CKPT_FORMAT_VERSION);
    }
    return rc;
}

/* ---- loading ---- */

/* ---- checking what was read ----
 * A verified load reads each byte once: the checksum of a writer's hyperslab (a "slab") that
 * lies wholly inside the rank's selection is computed from the elements just read into the
 * shard; a slab that the selection cuts (a reshard to a finer layout) is read again on its own,
 * only its part outside the shard being extra. Slabs the selection does not touch are not this
 * rank's concern: every element a rank loads lies in a slab it has checked. */

/* Where file index x of one dimension lies in the rank's selection sel: the shard's index along
 * that dimension, or -1 when x is not selected. */
static int64_t sel_index(const atom_ckpt_dimsel *sel, uint64_t x) {
    if (x < (uint64_t)sel->start) {
        return -1;
    }
    uint64_t rel = x - (uint64_t)sel->start;
    uint64_t stride = sel->count > 1 ? (uint64_t)sel->stride : (uint64_t)sel->block;
    uint64_t blk = rel / stride, in = rel % stride;
    if (blk >= (uint64_t)sel->count || in >= (uint64_t)sel->block) {
        return -1;
    }
    return (int64_t)(blk * (uint64_t)sel->block + in);
}

/* For one dimension: does the selection hold every index of the slab's pattern, and any? */
static void slab_vs_sel(const atom_ckpt_dimsel *sel, uint64_t st, uint64_t sr, uint64_t ct,
                        uint64_t bl, bool *all, bool *any) {
    *all = true;
    *any = false;
    for (uint64_t c = 0; c < ct; c++) {
        for (uint64_t b = 0; b < bl; b++) {
            bool in = sel_index(sel, st + c * (ct > 1 ? sr : 0) + b) >= 0;
            *all = *all && in;
            *any = *any || in;
        }
    }
}

/* CRC32C of a slab's elements, in row-major order of their coordinates, taken from the shard
 * (the slab lies wholly inside the selection). Consecutive selected file indices are
 * consecutive in the shard, so each block of the last dimension is one run of memory. */
static uint32_t slab_crc_from_shard(const atom_ckpt_tensor *t, const float *shard,
                                    const uint64_t *row, int nd) {
    const uint64_t *st = row + 1, *sr = row + 1 + nd, *ct = row + 1 + 2 * nd,
                   *bl = row + 1 + 3 * nd;
    int64_t shard_stride[ATOM_CKPT_MAX_DIMS];
    int64_t step = 1;
    for (int d = nd - 1; d >= 0; d--) {
        shard_stride[d] = step;
        step *= t->sel[d].count * t->sel[d].block;
    }
    uint64_t idx[ATOM_CKPT_MAX_DIMS] = {0}; /* odometer over the slab's outer dimensions */
    uint32_t crc = 0;
    const int last = nd - 1;
    for (;;) {
        int64_t base = 0;
        for (int d = 0; d < last; d++) {
            uint64_t x = st[d] + (idx[d] / bl[d]) * (ct[d] > 1 ? sr[d] : 0) + idx[d] % bl[d];
            base += sel_index(&t->sel[d], x) * shard_stride[d];
        }
        for (uint64_t c = 0; c < ct[last]; c++) {
            uint64_t x = st[last] + c * (ct[last] > 1 ? sr[last] : 0);
            const float *run = shard + base + sel_index(&t->sel[last], x);
            crc = atom_ckpt_crc32c(crc, run, sizeof(float) * bl[last]);
        }
        int d = last - 1;
        while (d >= 0 && ++idx[d] == ct[d] * bl[d]) {
            idx[d--] = 0;
        }
        if (d < 0) {
            return crc;
        }
    }
}

/* Checks every slab of dataset ds that the selection of t touches; dst holds what was just read
 * of it. dxpl: independent transfers (the slabs read again differ between ranks). */
static int verify_read(hid_t ds, hid_t fspace, const char *dname, const atom_ckpt_tensor *t,
                       const float *dst, hid_t dxpl, atom_ckpt_err *err) {
    int nd = t->ndims;
    hsize_t dims[ATOM_CKPT_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        dims[d] = (hsize_t)t->dims[d];
    }
    uint64_t *rows = NULL;
    hsize_t nslabs = 0;
    int rc = read_crc_rows(ds, dname, nd, dims, &rows, &nslabs, err);
    const int width = 1 + 4 * nd;
    float *buf = NULL;
    int64_t buf_cap = 0;
    for (hsize_t s = 0; s < nslabs && rc == 0; s++) {
        const uint64_t *row = rows + s * width;
        bool all = true, any = true;
        for (int d = 0; d < nd && any; d++) {
            bool all_d, any_d;
            slab_vs_sel(&t->sel[d], row[1 + d], row[1 + nd + d], row[1 + 2 * nd + d],
                        row[1 + 3 * nd + d], &all_d, &any_d);
            all = all && all_d;
            any = any && any_d;
        }
        if (!any) {
            continue;
        }
        char slab[256];
        format_slab(slab, sizeof slab, row, nd);
        uint32_t crc;
        if (all) {
            crc = slab_crc_from_shard(t, dst, row, nd);
        } else {
            hsize_t start[ATOM_CKPT_MAX_DIMS], stride[ATOM_CKPT_MAX_DIMS],
                count[ATOM_CKPT_MAX_DIMS], block[ATOM_CKPT_MAX_DIMS];
            int64_t n = 1;
            for (int d = 0; d < nd; d++) {
                start[d] = row[1 + d];
                stride[d] = row[1 + 2 * nd + d] > 1 ? row[1 + nd + d] : 1;
                count[d] = row[1 + 2 * nd + d];
                block[d] = row[1 + 3 * nd + d];
                n *= (int64_t)(count[d] * block[d]);
            }
            if (n > buf_cap) {
                float *grown = realloc(buf, sizeof(float) * (size_t)n);
                if (!grown) {
                    rc = ckpt_errf(err, "out of memory verifying %s", dname);
                    break;
                }
                buf = grown;
                buf_cap = n;
            }
            hid_t mspace = ckpt_mem_space(nd, count, block);
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, stride, count, block);
            if (H5Dread(ds, H5T_IEEE_F32LE, mspace, fspace, dxpl, buf) < 0) {
                rc = ckpt_h5_errf(err, "dataset %s: cannot read hyperslab %s (truncated file?)",
                                  dname, slab);
            }
            H5Sclose(mspace);
            crc = rc == 0 ? atom_ckpt_crc32c(0, buf, sizeof(float) * (size_t)n) : 0;
        }
        if (rc == 0 && crc != (uint32_t)row[0]) {
            rc = ckpt_errf(err,
                           "checksum mismatch in dataset %s, hyperslab %s: stored crc32c %08x, "
                           "data gives %08x",
                           dname, slab, (unsigned)row[0], (unsigned)crc);
        }
    }
    free(buf);
    free(rows);
    return rc;
}

static int finish_read_tensor(hid_t ds, hid_t fspace) {
    H5Sclose(fspace);
    H5Dclose(ds);
    return 0;
}

/* Reads one kind of tensor t (the rank's selection) into its shard. fd >= 0: only announce the
 * read (read-ahead hint). verify_dxpl >= 0: check the checksums of what was read. */
static int read_tensor(hid_t file, const atom_ckpt_tensor *t, int kind, hid_t dxpl,
                       hid_t verify_dxpl, const char *path, int fd, ckpt_direct *direct,
                       atom_ckpt_err *err) {
    char dname[512];
    snprintf(dname, sizeof dname, "/%s/%s", ckpt_kind_names[kind], t->name);
    hid_t ds = H5Dopen2(file, dname, H5P_DEFAULT);
    if (ds < 0) {
        return ckpt_h5_errf(err, "%s: dataset %s is missing", path, dname);
    }
    hid_t fspace = H5Dget_space(ds);
    hsize_t dims[ATOM_CKPT_MAX_DIMS] = {0};
    int nd = H5Sget_simple_extent_ndims(fspace);
    bool same = nd == t->ndims;
    if (same) {
        H5Sget_simple_extent_dims(fspace, dims, NULL);
        for (int d = 0; d < nd; d++) {
            same = same && dims[d] == (hsize_t)t->dims[d];
        }
    }
    int rc = 0;
    if (!same) {
        rc = ckpt_errf(err, "%s: dataset %s has a different shape (%d dims: %llu x %llu ...) than "
                       "the model's %s (%d dims: %lld x %lld ...)",
                       path, dname, nd, (unsigned long long)dims[0], (unsigned long long)dims[1],
                       t->name, t->ndims, (long long)t->dims[0],
                       (long long)(t->ndims > 1 ? t->dims[1] : 0));
    } else {
        hsize_t start[ATOM_CKPT_MAX_DIMS], stride[ATOM_CKPT_MAX_DIMS], count[ATOM_CKPT_MAX_DIMS],
            block[ATOM_CKPT_MAX_DIMS];
        for (int d = 0; d < nd; d++) {
            start[d] = (hsize_t)t->sel[d].start;
            stride[d] = (hsize_t)(t->sel[d].count > 1 ? t->sel[d].stride : 1);
            count[d] = (hsize_t)t->sel[d].count;
            block[d] = (hsize_t)t->sel[d].block;
        }
        /* read past the page cache (ckpt_direct.c) where the runs are long */
        ckpt_piece sel = {.name = t->name, .ndims = nd, .elems = atom_ckpt_shard_elems(t)};
        memcpy(sel.dims, dims, sizeof dims);
        memcpy(sel.start, start, sizeof start);
        memcpy(sel.stride, stride, sizeof stride);
        memcpy(sel.count, count, sizeof count);
        memcpy(sel.block, block, sizeof block);
        ckpt_piece view;
        haddr_t at = HADDR_UNDEF;
        bool direct_read = ckpt_direct_locate(direct, ds, &sel, &view, &at) == 1;
        if (fd >= 0) {
            if (!direct_read) {
                prefetch(fd, ds, nd, dims, start, stride, count, block);
            }
            return finish_read_tensor(ds, fspace);
        }
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, stride, count, block);
        hid_t mspace = ckpt_mem_space(nd, count, block);
        float *dst = kind == 0 ? t->param : kind == 1 ? t->adam_m : t->adam_v;
        atom_ckpt_err why = {""};
        if (direct_read && ckpt_direct_read(direct, at, &view, dst, &why) != 0) {
            rc = ckpt_errf(err, "%s: cannot read dataset %s (truncated file?): %s", path, dname,
                           why.msg);
        } else if (!direct_read && H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, dst) < 0) {
            rc = ckpt_h5_errf(err, "%s: cannot read dataset %s (truncated file?)", path, dname);
        } else if (verify_dxpl >= 0) {
            rc = verify_read(ds, fspace, dname, t, dst, verify_dxpl, err);
        }
        H5Sclose(mspace);
    }
    H5Sclose(fspace);
    H5Dclose(ds);
    return rc;
}

/* "PATH: message", unless the message already names the file. */
static void prefix_path(atom_ckpt_err *err, const char *path) {
    if (!err || strstr(err->msg, path)) {
        return;
    }
    char msg[sizeof err->msg];
    size_t plen = strlen(path);
    if (plen + 2 >= sizeof msg) {
        return;
    }
    memcpy(msg, path, plen);
    memcpy(msg + plen, ": ", 2);
    size_t rest = sizeof msg - plen - 3, mlen = strlen(err->msg);
    mlen = mlen < rest ? mlen : rest;
    memcpy(msg + plen + 2, err->msg, mlen);
    msg[plen + 2 + mlen] = '\0';
    memcpy(err->msg, msg, sizeof msg);
}

int atom_ckpt_load(const char *path, MPI_Comm comm, atom_ckpt_tensor *tensors, int ntensors,
                   atom_ckpt_meta *meta, bool verify, atom_ckpt_err *err) {
    ckpt_h5_quiet();
    int rc = 0;
    if (meta) {
        memset(meta, 0, sizeof *meta); /* freeing it after a failure must be safe */
    }
    for (int i = 0; i < ntensors && rc == 0; i++) {
        rc = ckpt_check_tensor(&tensors[i], err);
        if (rc == 0 && (!tensors[i].param || !tensors[i].adam_m || !tensors[i].adam_v)) {
            rc = ckpt_errf(err, "tensor %s: param, adam_m and adam_v must all be given",
                           tensors[i].name);
        }
    }
    if (ckpt_agree(comm, rc, err) != 0) {
        return -1;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    MPI_Info info = ckpt_mpi_info();
    H5Pset_fapl_mpio(fapl, comm, info);
    MPI_Info_free(&info);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        rc = ckpt_h5_errf(err, "cannot open checkpoint %s (missing, truncated or not HDF5)", path);
        return ckpt_agree(comm, rc, err);
    }
    if (rc == 0) {
        hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
        H5Pset_dxpl_mpio(dxpl, ckpt_xfer_mode());
        hid_t verify_dxpl = -1;
        if (verify) {
            verify_dxpl = H5Pcreate(H5P_DATASET_XFER);
            H5Pset_dxpl_mpio(verify_dxpl, H5FD_MPIO_INDEPENDENT);
        }
        /* First pass: announce every range this rank will read (fd >= 0 only prefetches);
         * second pass: read. Collective reads are all made even after an error (the first is
         * kept), so that no rank is left waiting in one. */
        bool collective = ckpt_xfer_mode() == H5FD_MPIO_COLLECTIVE;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ckpt_direct reader;
        bool direct = ckpt_direct_enabled() && ckpt_direct_open_read(&reader, path) == 0;
        for (int pass = fd >= 0 ? 0 : 1; pass < 2; pass++) {
            for (int i = 0; i < ntensors && (rc == 0 || collective); i++) {
                for (int kind = 0; kind < CKPT_KINDS && (rc == 0 || collective); kind++) {
                    atom_ckpt_err later;
                    int trc = read_tensor(file, &tensors[i], kind, dxpl,
                                          rc == 0 ? verify_dxpl : -1, path, pass == 0 ? fd : -1,
                                          direct ? &reader : NULL, rc == 0 ? err : &later);
                    rc = rc != 0 ? rc : trc;
                }
            }
        }
        if (fd >= 0) {
            close(fd);
        }
        if (direct) {
            ckpt_direct_close_read(&reader);
        }
        H5Pclose(dxpl);
        if (verify_dxpl >= 0) {
            H5Pclose(verify_dxpl);
        }
        if (rc != 0) {
            prefix_path(err, path); /* name the file as well as the dataset */
        }
        if (rc == 0 && meta) {
            rc = ckpt_read_meta(file, meta, err);
            if (rc != 0) {
                prefix_path(err, path);
            }
        }
    }
    H5Fclose(file);
    rc = ckpt_agree(comm, rc, err);
    if (rc != 0 && meta) {
        atom_ckpt_meta_free(meta);
    }
    return rc;
}

int atom_ckpt_restore_latest(const char *dir, MPI_Comm comm, atom_ckpt_tensor *tensors,
                             int ntensors, atom_ckpt_meta *meta, atom_ckpt_restore *info,
                             atom_ckpt_err *err) {
    int rank, rc = 0, ncand = 0;
    MPI_Comm_rank(comm, &rank);
    memset(info, 0, sizeof *info);
    info->skipped_step = -1;
    int64_t *cand = NULL;
    if (rank == 0) {
        int64_t *steps, latest;
        int n;
        rc = ckpt_dir_committed(dir, &steps, &n, &latest, err);
        if (rc == 0) {
            cand = malloc(sizeof(int64_t) * (size_t)(n + 1));
            if (!cand) {
                rc = ckpt_errf(err, "out of memory");
            } else {
                /* latest's target first; then older committed ones, newest first. A committed
                 * file newer than latest (a crash before latest moved) is not preferred. */
                if (latest >= 0) {
                    cand[ncand++] = latest;
                }
                for (int i = 0; i < n; i++) {
                    if (latest < 0 || steps[i] < latest) {
                        cand[ncand++] = steps[i];
                    }
                }
            }
            free(steps);
        }
    }
    if (ckpt_agree(comm, rc, err) != 0) {
        free(cand);
        return -1;
    }
    MPI_Bcast(&ncand, 1, MPI_INT, 0, comm);
    if (ncand == 0) {
        free(cand);
        return 1;
    }
    if (rank != 0 && !(cand = malloc(sizeof(int64_t) * (size_t)ncand))) {
        return -1; /* cannot happen for a few steps; the broadcast below would hang otherwise */
    }
    MPI_Bcast(cand, ncand, MPI_INT64_T, 0, comm);
    for (int i = 0; i < ncand; i++) {
        char path[4096];
        ckpt_file_name(path, sizeof path, dir, cand[i], false);
        atom_ckpt_err e;
        if (atom_ckpt_load(path, comm, tensors, ntensors, meta, true, &e) == 0) {
            snprintf(info->path, sizeof info->path, "%s", path);
            if (err) {
                *err = info->why; /* why newer ones were skipped, "" when none was */
            }
            free(cand);
            return 0;
        }
        if (info->skipped++ == 0) {
            info->skipped_step = cand[i];
            info->why = e;
        }
    }
    free(cand);
    return ckpt_errf(err, "no committed checkpoint in %s could be loaded; the newest failed: %s",
                     dir, info->why.msg);
}

int atom_ckpt_load_latest(const char *dir, MPI_Comm comm, atom_ckpt_tensor *tensors,
                          int ntensors, atom_ckpt_meta *meta, char *loaded_path,
                          size_t loaded_path_size, atom_ckpt_err *err) {
    atom_ckpt_restore info;
    int rc = atom_ckpt_restore_latest(dir, comm, tensors, ntensors, meta, &info, err);
    if (rc == 0 && loaded_path) {
        snprintf(loaded_path, loaded_path_size, "%s", info.path);
    }
    return rc;
}
