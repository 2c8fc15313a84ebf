/* collectives/coll_buckets.c: DDP-style gradient buckets. The pieces of one flat gradient buffer
 * (registered in forward order) are packed, last piece first, into buckets of about
 * bucket_bytes; a bucket's average all-reduce over the group starts as soon as all its pieces
 * are ready and every earlier bucket has started, so it overlaps the rest of the backward pass
 * and every rank starts the same buckets in the same order. A bucket whose pieces sit side by
 * side in the buffer is all-reduced in place; any other is staged in a contiguous buffer of its
 * own (the backend's memory) and copied back by finish. */
#include <stdlib.h>
#include <string.h>

#include "collectives/coll_internal.h"

typedef struct coll_piece {
    size_t offset, length; /* elements of grads */
    int bucket;
    size_t bucket_offset;  /* where the piece sits in its bucket's data */
    bool ready;
} coll_piece;

typedef struct coll_bucket {
    int first, npieces;    /* its pieces are order[first .. first + npieces) */
    size_t count;          /* elements */
    float *data;           /* what is all-reduced: inside grads (in place) or staging */
    float *staging;        /* NULL when in place */
    int nready;
    coll_req *req;         /* the running all-reduce, NULL before start and after finish */
} coll_bucket;

struct coll_buckets {
    coll_group *g;
    float *grads;
    size_t count, bucket_elems;
    coll_piece *pieces;
    int npieces, cap;
    int *order;            /* piece ids, bucket by bucket */
    coll_bucket *buckets;
    int nbuckets;
    int next_start;        /* the first bucket not started yet */
    bool sealed;
};

static const char *group_of(const coll_buckets *b) { return coll_group_name(b->g); }

int coll_buckets_create(coll_group *g, float *grads, size_t count, size_t bucket_bytes,
                        coll_buckets **out, coll_err *err)
{
    *out = NULL;
    if (bucket_bytes < sizeof(float))
        return coll_errf(err, "collectives: buckets on group %s: bucket size %zu bytes is less than one float",
                         coll_group_name(g), bucket_bytes);
    coll_buckets *b = calloc(1, sizeof *b);
    if (!b)
        return coll_errf(err, "collectives: buckets on group %s: out of memory", coll_group_name(g));
    b->g = g;
    b->grads = grads;
    b->count = count;
    b->bucket_elems = bucket_bytes / sizeof(float);
    *out = b;
    return 0;
}

int coll_buckets_add(coll_buckets *b, size_t offset, size_t length, coll_err *err)
{
    if (b->sealed)
        return coll_errf(err, "collectives: buckets on group %s: add after seal", group_of(b));
    if (offset > b->count || length > b->count - offset)
        return coll_errf(err, "collectives: buckets on group %s: piece [%zu, %zu) is outside the %zu-element buffer",
                         group_of(b), offset, offset + length, b->count);
    if (b->npieces == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        coll_piece *p = realloc(b->pieces, (size_t)cap * sizeof *p);
        if (!p)
            return coll_errf(err, "collectives: buckets on group %s: out of memory", group_of(b));
        b->pieces = p;
        b->cap = cap;
    }
    b->pieces[b->npieces] = (coll_piece){.offset = offset, .length = length, .bucket = -1};
    return b->npieces++;
}

static int by_offset(const void *x, const void *y)
{
    const coll_piece *a = x, *c = y;
    return a->offset < c->offset ? -1 : a->offset > c->offset;
}

static int check_overlap(coll_buckets *b, coll_err *err)
{
    coll_piece *sorted = malloc((size_t)b->npieces * sizeof *sorted + 1);
    if (!sorted)
        return coll_errf(err, "collectives: buckets on group %s: out of memory", group_of(b));
    memcpy(sorted, b->pieces, (size_t)b->npieces * sizeof *sorted);
    qsort(sorted, (size_t)b->npieces, sizeof *sorted, by_offset);
    int rc = 0;
    for (int i = 1; i < b->npieces && rc == 0; i++) {
        if (sorted[i - 1].length && sorted[i].length &&
            sorted[i - 1].offset + sorted[i - 1].length > sorted[i].offset)
            rc = coll_errf(err, "collectives: buckets on group %s: pieces at %zu and %zu overlap",
                           group_of(b), sorted[i - 1].offset, sorted[i].offset);
    }
    free(sorted);
    return rc;
}

/* Lays out bucket k's pieces: in place when they cover one contiguous span, else staged. */
static int layout_bucket(coll_buckets *b, coll_bucket *k, coll_err *err)
{
    size_t lo = SIZE_MAX, hi = 0;
    for (int i = 0; i < k->npieces; i++) {
        coll_piece *p = &b->pieces[b->order[k->first + i]];
        if (p->offset < lo)
            lo = p->offset;
        if (p->offset + p->length > hi)
            hi = p->offset + p->length;
    }
    if (k->count == 0 || hi - lo == k->count) { /* no overlaps, so the span is exactly covered */
        k->data = b->grads + (k->count ? lo : 0);
        for (int i = 0; i < k->npieces; i++) {
            coll_piece *p = &b->pieces[b->order[k->first + i]];
            p->bucket_offset = p->offset - (k->count ? lo : p->offset);
        }
        return 0;
    }
    const coll_backend_ops *ops = b->g->ctx->ops;
    k->staging = ops->alloc(k->count * sizeof(float));
    if (!k->staging)
        return coll_errf(err, "collectives: buckets on group %s: cannot allocate a %zu-byte bucket",
                         group_of(b), k->count * sizeof(float));
    k->data = k->staging;
    size_t at = 0;
    for (int i = 0; i < k->npieces; i++) {
        coll_piece *p = &b->pieces[b->order[k->first + i]];
        p->bucket_offset = at;
        at += p->length;
    }
    return 0;
}

int coll_buckets_seal(coll_buckets *b, coll_err *err)
{
    if (b->sealed)
        return coll_errf(err, "collectives: buckets on group %s: sealed twice", group_of(b));
    if (check_overlap(b, err) != 0)
        return -1;
    b->order = malloc((size_t)b->npieces * sizeof *b->order + 1);
    b->buckets = calloc((size_t)b->npieces + 1, sizeof *b->buckets); /* at most one per piece */
    if (!b->order || !b->buckets)
        return coll_errf(err, "collectives: buckets on group %s: out of memory", group_of(b));
    int n = 0;
    coll_bucket *k = NULL;
    for (int id = b->npieces - 1; id >= 0; id--) { /* the backward pass's order */
        coll_piece *p = &b->pieces[id];
        if (!k || (k->count > 0 && k->count + p->length > b->bucket_elems)) {
            k = &b->buckets[b->nbuckets++];
            k->first = n;
        }
        b->order[n++] = id;
        k->npieces++;
        k->count += p->length;
        p->bucket = (int)(k - b->buckets);
    }
    for (int i = 0; i < b->nbuckets; i++) {
        if (layout_bucket(b, &b->buckets[i], err) != 0)
            return -1;
    }
    b->sealed = true;
    return 0;
}

int coll_buckets_count(const coll_buckets *b) { return b->nbuckets; }

int coll_buckets_bucket_of(const coll_buckets *b, int piece)
{
    if (!b->sealed || piece < 0 || piece >= b->npieces)
        return -1;
    return b->pieces[piece].bucket;
}

/* Copies a piece into its bucket's staging buffer (nothing to do in place). */
static int stage(coll_buckets *b, coll_piece *p, coll_err *err)
{
    coll_bucket *k = &b->buckets[p->bucket];
    if (!k->staging || p->length == 0)
        return 0;
    return b->g->ctx->ops->copy(b->g, k->staging + p->bucket_offset, b->grads + p->offset,
                                p->length * sizeof(float), err);
}

/* Starts every complete bucket in order; stops at the first incomplete one. */
static int start_ready(coll_buckets *b, coll_err *err)
{
    while (b->next_start < b->nbuckets) {
        coll_bucket *k = &b->buckets[b->next_start];
        if (k->nready < k->npieces)
            break;
        if (coll_all_reduce_start(b->g, k->data, k->count, COLL_F32, COLL_AVG, &k->req, err) != 0)
            return -1;
        b->next_start++;
    }
    return 0;
}

int coll_buckets_mark_ready(coll_buckets *b, int piece, coll_err *err)
{
    if (!b->sealed)
        return coll_errf(err, "collectives: buckets on group %s: mark_ready before seal", group_of(b));
    if (piece < 0 || piece >= b->npieces)
        return coll_errf(err, "collectives: buckets on group %s: no piece %d (%d registered)",
                         group_of(b), piece, b->npieces);
    coll_piece *p = &b->pieces[piece];
    if (p->ready)
        return coll_errf(err, "collectives: buckets on group %s: piece %d marked ready twice in one step",
                         group_of(b), piece);
    if (stage(b, p, err) != 0)
        return -1;
    p->ready = true;
    b->buckets[p->bucket].nready++;
    if (start_ready(b, err) != 0)
        return -1;
    return coll_progress(b->g->ctx, err);
}

int coll_buckets_finish(coll_buckets *b, coll_err *err)
{
    if (!b->sealed)
        return coll_errf(err, "collectives: buckets on group %s: finish before seal", group_of(b));
    int rc = 0;
    /* Pieces nobody marked (parameters without a gradient this step) go as they are. */
    for (int i = b->next_start; i < b->nbuckets && rc == 0; i++) {
        coll_bucket *k = &b->buckets[i];
        for (int j = 0; j < k->npieces && rc == 0; j++) {
            coll_piece *p = &b->pieces[b->order[k->first + j]];
            if (!p->ready) {
                rc = stage(b, p, err);
                p->ready = true;
                k->nready++;
            }
        }
    }
    if (rc == 0)
        rc = start_ready(b, err);
    const coll_backend_ops *ops = b->g->ctx->ops;
    for (int i = 0; i < b->nbuckets; i++) {
        coll_bucket *k = &b->buckets[i];
        if (k->req) {
            if (coll_wait(k->req, rc == 0 ? err : NULL) != 0)
                rc = -1;
            k->req = NULL;
        }
        for (int j = 0; j < k->npieces && rc == 0 && k->staging; j++) {
            coll_piece *p = &b->pieces[b->order[k->first + j]];
            if (p->length)
                rc = ops->copy(b->g, b->grads + p->offset, k->staging + p->bucket_offset,
                               p->length * sizeof(float), err);
        }
    }
    if (rc == 0)
        rc = ops->sync(b->g, err);
    for (int i = 0; i < b->npieces; i++)
        b->pieces[i].ready = false;
    for (int i = 0; i < b->nbuckets; i++)
        b->buckets[i].nready = 0;
    b->next_start = 0;
    return rc;
}

void coll_buckets_free(coll_buckets *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->nbuckets; i++) {
        if (b->buckets[i].req)
            coll_req_free(b->buckets[i].req);
        if (b->buckets[i].staging)
            b->g->ctx->ops->free(b->buckets[i].staging);
    }
    free(b->buckets);
    free(b->order);
    free(b->pieces);
    free(b);
}
