/* checkpoints/ckpt_plan.c: who writes which hyperslab of each tensor.
 *
 * The ranks whose selection of a tensor is identical hold the same floats (data-parallel
 * replicas of a shard; every rank for a replicated tensor). They split the writing: along the
 * first dimension of the selection that has enough blocks (or, with a single block, enough
 * indices) for all of them, sharer i of n takes the i-th of n near-equal ranges. Each piece is
 * one regular hyperslab, so its checksum can be stored with simple bounds, and each element of
 * the checkpoint is written exactly once.
 */
#include "checkpoints/ckpt_internal.h"

#include <stdlib.h>
#include <string.h>

/* What the ranks compare: the name (hashed), the shape and the selection. */
#define KEY_WORDS (2 + ATOM_CKPT_MAX_DIMS * 5)

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static void tensor_key(const atom_ckpt_tensor *t, int64_t *key) {
    memset(key, 0, KEY_WORDS * sizeof *key);
    key[0] = (int64_t)name_hash(t->name);
    key[1] = t->ndims;
    for (int d = 0; d < t->ndims; d++) {
        int64_t *k = key + 2 + d * 5;
        k[0] = t->dims[d];
        k[1] = t->sel[d].start;
        k[2] = t->sel[d].count > 1 ? t->sel[d].stride : 1; /* stride is moot for one block */
        k[3] = t->sel[d].count;
        k[4] = t->sel[d].block;
    }
}

/* Same tensor (name and shape) in two keys? */
static bool same_tensor(const int64_t *a, const int64_t *b) {
    if (a[0] != b[0] || a[1] != b[1]) {
        return false;
    }
    for (int d = 0; d < a[1]; d++) {
        if (a[2 + d * 5] != b[2 + d * 5]) {
            return false;
        }
    }
    return true;
}

static void split_piece(const atom_ckpt_tensor *t, int sharer, int sharers, ckpt_piece *p) {
    int nd = t->ndims;
    int64_t ext[ATOM_CKPT_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        ext[d] = t->sel[d].count * t->sel[d].block;
        p->start[d] = (hsize_t)t->sel[d].start;
        p->stride[d] = (hsize_t)(t->sel[d].count > 1 ? t->sel[d].stride : 1);
        p->count[d] = (hsize_t)t->sel[d].count;
        p->block[d] = (hsize_t)t->sel[d].block;
    }
    int split = -1;
    for (int d = 0; d < nd && sharers > 1; d++) {
        if (t->sel[d].count >= sharers || (t->sel[d].count == 1 && t->sel[d].block >= sharers)) {
            split = d;
            break;
        }
    }
    int64_t total = atom_ckpt_shard_elems(t);
    if (split < 0) {
        /* Too few indices to share (tiny tensors): the first sharer writes it all. */
        p->outer = 1;
        p->row = total;
        p->off = 0;
        p->len = sharer == 0 ? total : 0;
        p->elems = p->len;
        return;
    }
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < split; d++) {
        outer *= ext[d];
    }
    for (int d = split + 1; d < nd; d++) {
        inner *= ext[d];
    }
    const atom_ckpt_dimsel *s = &t->sel[split];
    int64_t pos0, pos1; /* range of the selection's indices along dim `split` */
    if (s->count >= sharers) {
        int64_t b0 = s->count * sharer / sharers, b1 = s->count * (sharer + 1) / sharers;
        p->start[split] = (hsize_t)(s->start + b0 * s->stride);
        p->count[split] = (hsize_t)(b1 - b0);
        pos0 = b0 * s->block;
        pos1 = b1 * s->block;
    } else {
        int64_t j0 = s->block * sharer / sharers, j1 = s->block * (sharer + 1) / sharers;
        p->start[split] = (hsize_t)(s->start + j0);
        p->block[split] = (hsize_t)(j1 - j0);
        pos0 = j0;
        pos1 = j1;
    }
    p->outer = outer;
    p->row = ext[split] * inner;
    p->off = pos0 * inner;
    p->len = (pos1 - pos0) * inner;
    p->elems = outer * p->len;
}

int ckpt_plan(MPI_Comm comm, const atom_ckpt_tensor *tensors, int ntensors, ckpt_piece *pieces,
              atom_ckpt_err *err) {
    int rank, size, rc = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    for (int i = 0; i < ntensors && rc == 0; i++) {
        rc = ckpt_check_tensor(&tensors[i], err);
    }
    int counts[2] = {ntensors, -ntensors}, agreed[2];
    MPI_Allreduce(counts, agreed, 2, MPI_INT, MPI_MAX, comm);
    if (agreed[0] != -agreed[1]) {
        return ckpt_errf(err, "ranks pass different numbers of tensors (%d to %d)", -agreed[1],
                         agreed[0]);
    }
    if (ckpt_agree(comm, rc, err) != 0) {
        return -1;
    }
    int64_t *keys = malloc(sizeof(int64_t) * KEY_WORDS * (size_t)ntensors * (size_t)(size + 1));
    if (!keys) {
        return ckpt_agree(comm, ckpt_errf(err, "out of memory planning the checkpoint"), err);
    }
    int64_t *mine = keys + (size_t)KEY_WORDS * ntensors * size;
    for (int i = 0; i < ntensors; i++) {
        tensor_key(&tensors[i], mine + (size_t)KEY_WORDS * i);
    }
    MPI_Allgather(mine, KEY_WORDS * ntensors, MPI_INT64_T, keys, KEY_WORDS * ntensors,
                  MPI_INT64_T, comm);
    for (int i = 0; i < ntensors && rc == 0; i++) {
        const int64_t *k = mine + (size_t)KEY_WORDS * i;
        int sharer = 0, sharers = 0;
        for (int r = 0; r < size; r++) {
            const int64_t *o = keys + (size_t)KEY_WORDS * (r * ntensors + i);
            if (!same_tensor(k, o)) {
                rc = ckpt_errf(err, "tensor %d (%s) differs in name or shape between ranks %d and %d",
                               i, tensors[i].name, rank, r);
                break;
            }
            if (memcmp(k, o, sizeof(int64_t) * KEY_WORDS) == 0) {
                sharer += r < rank;
                sharers++;
            }
        }
        ckpt_piece *p = &pieces[i];
        memset(p, 0, sizeof *p);
        p->name = tensors[i].name;
        p->ndims = tensors[i].ndims;
        for (int d = 0; d < p->ndims; d++) {
            p->dims[d] = (hsize_t)tensors[i].dims[d];
        }
        split_piece(&tensors[i], sharer, sharers, p);
    }
    free(keys);
    return rc;
}

bool ckpt_piece_contiguous(const ckpt_piece *p) { return p->outer == 1 || p->len == p->row; }

void ckpt_piece_gather(const ckpt_piece *p, const float *shard, float *dst) {
    if (ckpt_piece_contiguous(p)) {
        memcpy(dst, shard + p->off, sizeof(float) * (size_t)p->elems);
        return;
    }
    for (int64_t o = 0; o < p->outer; o++) {
        memcpy(dst + o * p->len, shard + o * p->row + p->off, sizeof(float) * (size_t)p->len);
    }
}

/* 96 KiB: a multiple of the CRC's three-chain block (3 x 8 KiB, ckpt_util.c), small enough to be
 * read back from L2 right after its copy. */
#define GATHER_CRC_CHUNK (3u * 8192u * 4u)

static uint32_t copy_crc(char *dst, const char *src, size_t n, uint32_t crc) {
    for (size_t at = 0; at < n; at += GATHER_CRC_CHUNK) {
        size_t len = n - at < GATHER_CRC_CHUNK ? n - at : GATHER_CRC_CHUNK;
        memcpy(dst + at, src + at, len);
        crc = atom_ckpt_crc32c(crc, dst + at, len);
    }
    return crc;
}

uint32_t ckpt_piece_gather_crc(const ckpt_piece *p, const float *shard, float *dst) {
    if (ckpt_piece_contiguous(p)) {
        return copy_crc((char *)dst, (const char *)(shard + p->off),
                        sizeof(float) * (size_t)p->elems, 0);
    }
    uint32_t crc = 0;
    for (int64_t o = 0; o < p->outer; o++) {
        crc = copy_crc((char *)(dst + o * p->len), (const char *)(shard + o * p->row + p->off),
                       sizeof(float) * (size_t)p->len, crc);
    }
    return crc;
}
