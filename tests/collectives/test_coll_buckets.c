/* tests/collectives/test_coll_buckets.c: the bucket manager over the data group:
 *   - many small tensors side by side (all-reduced in place), sizes odd and zero;
 *   - a stacked per-layer layout (each parameter holds all L layers; one piece per layer slice,
 *     registered in forward order, so a bucket's pieces are scattered and staged);
 * both packed last-piece-first into buckets no larger than the configured size (unless a single
 * piece is), with pieces marked ready in backward order on some steps and in an order that
 * differs on every rank on others (buckets must still start in the same order everywhere), and a
 * step where some pieces are never marked. The result must be the data-parallel average.
 * With a progress thread, marking pieces ready posts no message from the marking thread (it
 * should be computing): MPI's own MPI_Irecv and MPI_Isend are wrapped (PMPI) to count the calls
 * made on the main thread inside coll_buckets_mark_ready.
 *   test_coll_buckets TENSOR_SIZE [thread] */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/collectives.h"
#include "tests/collectives/coll_check.h"

static pthread_t main_thread;
static int watching;          /* atomic: the main thread is inside coll_buckets_mark_ready */
static long marking_p2p_calls; /* point-to-point calls made meanwhile on the main thread */

static void count_if_marking(void)
{
    if (__atomic_load_n(&watching, __ATOMIC_RELAXED) && pthread_equal(pthread_self(), main_thread))
        marking_p2p_calls++;
}

int MPI_Irecv(void *buf, int count, MPI_Datatype dt, int source, int tag, MPI_Comm comm,
              MPI_Request *req)
{
    count_if_marking();
    return PMPI_Irecv(buf, count, dt, source, tag, comm, req);
}

int MPI_Isend(const void *buf, int count, MPI_Datatype dt, int dest, int tag, MPI_Comm comm,
              MPI_Request *req)
{
    count_if_marking();
    return PMPI_Isend(buf, count, dt, dest, tag, comm, req);
}

static float grad_value(int wr, size_t i, int step) { return (float)((wr + 1) * 2 + (int)(i % 7) + step); }

typedef struct layout {
    size_t count;
    int npieces;
    size_t off[4096], len[4096];
} layout;

/* Many small tensors of sizes 0..95 elements, laid end to end. */
static void small_tensors(layout *l)
{
    l->count = 0;
    l->npieces = 300;
    for (int p = 0; p < l->npieces; p++) {
        l->off[p] = l->count;
        l->len[p] = (size_t)((p * 37) % 96);
        l->count += l->len[p];
    }
}

/* Stacked parameters as in the reference model: each parameter is (L, rows) in the flat buffer;
 * the forward order visits layer 0 of every parameter, then layer 1, ... */
static void layer_slices(layout *l)
{
    enum { L = 6 };
    static const size_t rows[] = {16, 16, 48 * 16, 48, 16 * 16, 16, 16, 16, 64 * 16, 64, 16 * 64, 16};
    int nparams = (int)(sizeof rows / sizeof rows[0]);
    size_t base[32];
    l->count = 0;
    for (int q = 0; q < nparams; q++) {
        base[q] = l->count;
        l->count += L * rows[q];
    }
    l->npieces = 0;
    for (int layer = 0; layer < L; layer++)
        for (int q = 0; q < nparams; q++) {
            l->off[l->npieces] = base[q] + (size_t)layer * rows[q];
            l->len[l->npieces] = rows[q];
            l->npieces++;
        }
}

static void shuffle(int *a, int n, unsigned seed)
{
    for (int i = n - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        int j = (int)((seed >> 8) % (unsigned)(i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static void run(coll_ctx *ctx, const layout *l, size_t bucket_bytes, const char *what)
{
    int wr;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    coll_err err = {""};
    coll_group *data = coll_group_of(ctx, COLL_DATA);
    int T = coll_group_size(coll_group_of(ctx, COLL_TENSOR)), n = coll_group_size(data);
    float *grads = malloc((l->count + 1) * sizeof *grads);
    coll_buckets *b;
    CHECK_OK(coll_buckets_create(data, grads, l->count, bucket_bytes, &b, &err));
    for (int p = 0; p < l->npieces; p++)
        CHECK(coll_buckets_add(b, l->off[p], l->len[p], &err) == p, "add %d: %s", p, err.msg);
    CHECK_OK(coll_buckets_seal(b, &err));
    CHECK(coll_buckets_add(b, 0, 1, &err) == -1, "add after seal");

    /* Packing: the last piece in bucket 0, buckets in reverse forward order, each within the
     * size unless it holds a single piece larger than that; every piece in exactly one. */
    int nb = coll_buckets_count(b);
    CHECK(coll_buckets_bucket_of(b, l->npieces - 1) == 0, "%s: last piece not in bucket 0", what);
    CHECK(coll_buckets_bucket_of(b, 0) == nb - 1, "%s: first piece not in the last bucket", what);
    size_t *bytes = calloc((size_t)nb, sizeof *bytes);
    int *pieces_in = calloc((size_t)nb, sizeof *pieces_in);
    for (int p = 0; p < l->npieces; p++) {
        int k = coll_buckets_bucket_of(b, p);
        CHECK(k >= 0 && k < nb, "piece %d in bucket %d of %d", p, k, nb);
        if (p > 0)
            CHECK(k <= coll_buckets_bucket_of(b, p - 1), "%s: piece %d in bucket %d after piece %d in %d",
                  what, p, k, p - 1, coll_buckets_bucket_of(b, p - 1));
        bytes[k] += l->len[p] * sizeof(float);
        pieces_in[k]++;
    }
    size_t total = 0;
    for (int k = 0; k < nb; k++) {
        CHECK(bytes[k] <= bucket_bytes || pieces_in[k] == 1, "%s: bucket %d holds %zu bytes in %d pieces (limit %zu)",
              what, k, bytes[k], pieces_in[k], bucket_bytes);
        /* a bucket is full: the next piece (in backward order) did not fit in it */
        total += bytes[k];
    }
    CHECK(total == l->count * sizeof(float), "%s: buckets hold %zu bytes of %zu", what, total,
          l->count * sizeof(float));

    int *order = malloc((size_t)l->npieces * sizeof *order);
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < l->count; i++)
            grads[i] = grad_value(wr, i, step);
        int marked = l->npieces;
        for (int p = 0; p < l->npieces; p++)
            order[p] = l->npieces - 1 - p; /* the backward pass's order */
        if (step == 1)
            shuffle(order, l->npieces, 77u + (unsigned)wr * 1000u); /* differs on every rank */
        if (step == 2)
            marked = l->npieces / 2; /* the rest is left to finish */
        for (int p = 0; p < marked; p++) {
            __atomic_store_n(&watching, 1, __ATOMIC_RELAXED);
            CHECK_OK(coll_buckets_mark_ready(b, order[p], &err));
            __atomic_store_n(&watching, 0, __ATOMIC_RELAXED);
            /* after being marked a piece is the all-reduce's: the backward pass writes elsewhere */
        }
        if (step == 0 && l->npieces > 0)
            CHECK(coll_buckets_mark_ready(b, order[0], &err) == -1 && strstr(err.msg, "twice"),
                  "marking a piece twice: %s", err.msg);
        CHECK_OK(coll_buckets_finish(b, &err));
        for (size_t i = 0; i < l->count; i++) {
            float want = 0;
            for (int m = 0; m < n; m++)
                want += grad_value(m * T + wr % T, i, step);
            want /= (float)n;
            CHECK(grads[i] == want, "%s step %d element %zu: %g want %g", what, step, i, grads[i], want);
        }
    }
    coll_buckets_free(b);
    free(order);
    free(bytes);
    free(pieces_in);
    free(grads);
}

int main(int argc, char **argv)
{
    int provided, wr, ws;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    coll_err err = {""};
    coll_config cfg = {.backend = COLL_BACKEND_MPI, .tensor_size = argc > 1 ? atoi(argv[1]) : 1,
                       .hang_timeout_s = 60,
                       .progress = argc > 2 && strcmp(argv[2], "thread") == 0 ? COLL_PROGRESS_THREAD
                                                                              : COLL_PROGRESS_POLL};
    coll_ctx *ctx;
    main_thread = pthread_self();
    CHECK_OK(coll_open(&cfg, &ctx, &err));
    bool threaded = cfg.progress == COLL_PROGRESS_THREAD;
    static layout l;
    small_tensors(&l);
    run(ctx, &l, 256, "small tensors, 256-byte buckets");
    run(ctx, &l, 4096, "small tensors, 4 KiB buckets");
    layer_slices(&l);
    run(ctx, &l, 1024, "layer slices, 1 KiB buckets");
    run(ctx, &l, 16384, "layer slices, 16 KiB buckets");
    run(ctx, &l, 1 << 20, "layer slices, one bucket");

    /* Large buckets (atom's ring, 32 KiB and up): with a progress thread their messages are
     * posted by the thread, none by the thread that marks; without one, by the marking call,
     * so that they move before the next progress call. */
    l.npieces = 8;
    l.count = 0;
    for (int p = 0; p < l.npieces; p++) {
        l.off[p] = l.count;
        l.len[p] = 16384 + (size_t)p;
        l.count += l.len[p];
    }
    marking_p2p_calls = 0;
    run(ctx, &l, 65600, "ring-sized buckets");
    if (coll_group_size(coll_group_of(ctx, COLL_DATA)) > 1)
        CHECK(threaded ? marking_p2p_calls == 0 : marking_p2p_calls > 0,
              "%ld point-to-point calls on the marking thread (progress %s)", marking_p2p_calls,
              threaded ? "thread" : "poll");

    /* Exact packing: pieces of 10, 20, 30, 40 floats (forward order) into 200-byte (50-float)
     * buckets, last piece first and greedy: {40}, {30, 20}, {10}. A 0-length piece rides along. */
    {
        float g100[101];
        coll_buckets *pk;
        CHECK_OK(coll_buckets_create(coll_group_of(ctx, COLL_DATA), g100, 101, 200, &pk, &err));
        size_t at = 0;
        const size_t lens[5] = {10, 20, 30, 0, 40};
        for (int p = 0; p < 5; p++) {
            CHECK(coll_buckets_add(pk, at, lens[p], &err) == p, "add");
            at += lens[p];
        }
        CHECK_OK(coll_buckets_seal(pk, &err));
        const int want[5] = {2, 1, 1, 0, 0};
        CHECK(coll_buckets_count(pk) == 3, "%d buckets, want 3", coll_buckets_count(pk));
        for (int p = 0; p < 5; p++)
            CHECK(coll_buckets_bucket_of(pk, p) == want[p], "piece %d in bucket %d, want %d", p,
                  coll_buckets_bucket_of(pk, p), want[p]);
        coll_buckets_free(pk);
    }

    /* overlapping pieces are refused at seal */
    float g4[8];
    coll_buckets *b;
    CHECK_OK(coll_buckets_create(coll_group_of(ctx, COLL_DATA), g4, 8, 64, &b, &err));
    CHECK(coll_buckets_add(b, 0, 5, &err) == 0 && coll_buckets_add(b, 4, 2, &err) == 1, "add");
    CHECK(coll_buckets_add(b, 6, 3, &err) == -1, "a piece past the end was accepted");
    CHECK(coll_buckets_seal(b, &err) == -1 && strstr(err.msg, "overlap"), "overlap: %s", err.msg);
    coll_buckets_free(b);

    coll_close(ctx);
    if (wr == 0)
        printf("test_coll_buckets: %d ranks, T=%d: ok\n", ws, cfg.tensor_size);
    MPI_Finalize();
    return 0;
}
