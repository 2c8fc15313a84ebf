/* collectives/coll_ops.c: the public operations: each one counts itself entered, asks the
 * backend to start it, and tracks the request until a test, a wait or a progress call sees it
 * done. Blocking operations are a start and a wait, so the hang timeout covers them too. */
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "collectives/coll_internal.h"

coll_req *coll_req_new(coll_group *g, const char *op)
{
    coll_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->group = g;
    r->op = op;
    r->mpi = MPI_REQUEST_NULL;
    r->started = coll_now();
    return r;
}

static void unlink_locked(coll_ctx *ctx, coll_req *r)
{
    if (!r->pending)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        ctx->pending = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->pending = false;
}

void coll_req_track(coll_req *r)
{
    coll_ctx *ctx = r->group->ctx;
    pthread_mutex_lock(&ctx->lock);
    r->next = ctx->pending;
    r->prev = NULL;
    if (ctx->pending)
        ctx->pending->prev = r;
    ctx->pending = r;
    r->pending = true;
    pthread_cond_signal(&ctx->work);
    pthread_mutex_unlock(&ctx->lock);
}

void coll_req_free(coll_req *r)
{
    if (!r)
        return;
    coll_ctx *ctx = r->group->ctx;
    pthread_mutex_lock(&ctx->lock);
    while (r->busy) /* the progress thread is testing it */
        pthread_cond_wait(&ctx->not_busy, &ctx->lock);
    unlink_locked(ctx, r);
    pthread_mutex_unlock(&ctx->lock);
    ctx->ops->req_release(r);
    free(r);
}

/* Tests r once; the caller holds ctx->lock. The test itself runs without the lock, so a long one
 * (a ring step that sums a large chunk) never holds up the caller's next start or progress call;
 * r is marked busy meanwhile, so no other thread tests or frees it. *next is r's successor on the
 * pending list once the test is over (r may have left the list). */
static int test_locked(coll_req *r, coll_err *err, coll_req **next)
{
    coll_ctx *ctx = r->group->ctx;
    int rc = 0;
    if (!r->done && !r->failed && !r->busy) {
        bool done = false;
        coll_err failure;
        r->busy = true;
        pthread_mutex_unlock(&ctx->lock);
        int trc = ctx->ops->test(r, &done, &failure);
        pthread_mutex_lock(&ctx->lock);
        r->busy = false;
        pthread_cond_broadcast(&ctx->not_busy);
        if (trc != 0) {
            r->failed = true;
            r->failure = failure;
        } else if (done) {
            r->done = true;
            __atomic_add_fetch(&ctx->moves, 1, __ATOMIC_RELAXED);
        }
    }
    if (r->failed) { /* kept, so the waiter hears of an error the progress thread found */
        if (err)
            *err = r->failure;
        rc = -1;
    }
    if (next)
        *next = r->next;
    if (r->done)
        unlink_locked(ctx, r);
    return rc;
}

int coll_progress_locked(coll_ctx *ctx, coll_err *err)
{
    int rc = 0;
    coll_req *r = ctx->pending, *next;
    while (r) {
        if (test_locked(r, rc == 0 ? err : NULL, &next) != 0)
            rc = -1; /* go on: one failed request must not stall the others */
        r = next;
    }
    return rc;
}

int coll_progress(coll_ctx *ctx, coll_err *err)
{
    /* With a progress thread, pending operations are its work: a caller that tested them here
     * would do their copies and sums itself (a ring whose peer is as quick runs to its end inside
     * one test), on the thread that should be computing. Measured: gradient buckets marked ready
     * between stages of a sleeping backward were all-reduced inside coll_buckets_mark_ready,
     * none hidden. Errors reach the waiter's own test. */
    if (ctx->progress_running)
        return 0;
    /* A peek without the lock: a miss only delays progress to the next call. */
    if (!__atomic_load_n(&ctx->pending, __ATOMIC_RELAXED))
        return 0;
    pthread_mutex_lock(&ctx->lock);
    int rc = coll_progress_locked(ctx, err);
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

int coll_test(coll_req *r, int *done, coll_err *err)
{
    coll_ctx *ctx = r->group->ctx;
    pthread_mutex_lock(&ctx->lock);
    int rc = test_locked(r, err, NULL);
    /* Read under the lock: the progress thread sets r->done under it (a race ThreadSanitizer
     * found when this read came after the unlock). */
    *done = r->done;
    pthread_mutex_unlock(&ctx->lock);
    if (rc != 0)
        return -1;
    if (!*done && coll_now() - r->started > ctx->cfg.hang_timeout_s)
        return coll_hang(r, err);
    return 0;
}

/* Waiting must leave the CPU to other ranks and to compute when cores are oversubscribed: spin
 * briefly (short operations finish within it), then yield, then sleep between tests. */
static void backoff(int round)
{
    if (round < 64)
        return;
    if (round < 1024) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
}

int coll_wait(coll_req *r, coll_err *err)
{
    if (!r)
        return coll_errf(err, "collectives: wait on a NULL request");
    int done = 0, rc = 0;
    for (int round = 0;; round++) {
        if ((rc = coll_test(r, &done, err)) != 0 || done)
            break;
        /* While it waits, everything else pending moves too: a tensor-parallel all-reduce in
         * the backward pass is also a progress point for the data-parallel buckets. Their
         * errors stay with them, for their own waits. */
        if (round > 0 && round % 4 == 0)
            (void)coll_progress(r->group->ctx, NULL);
        backoff(round);
    }
    coll_req_free(r);
    return rc;
}

/* Refusals come before the operation is counted as entered: a refused call never entered. */
static int check_args(coll_group *g, coll_dtype dt, const char *op, size_t count, size_t blocks,
                      bool reduces, coll_err *err)
{
    size_t max = g->ctx->ops->max_count;
    if (blocks && count > max / blocks)
        return coll_errf(err, "collectives: %s on group %s (rank %d): %zu x %zu elements is more than the %s backend's count limit %zu",
                         op, coll_group_name(g), g->rank, blocks, count, g->ctx->ops->name, max);
    if (dt == COLL_F32)
        return 0;
    if (dt == COLL_I32 && !reduces)
        return 0;
    if (dt == COLL_I32)
        return coll_errf(err, "collectives: %s on group %s (rank %d): data type int32 is moved (all_gather, broadcast), never reduced",
                         op, coll_group_name(g), g->rank);
    if (dt == COLL_BF16 && g->ctx->cfg.backend == COLL_BACKEND_NCCL)
        return 0;
    return coll_errf(err, "collectives: %s on group %s (rank %d): data type %s is not supported by the %s backend",
                     op, coll_group_name(g), g->rank, coll_dtype_name(dt), g->ctx->ops->name);
}

static coll_req *begin(coll_group *g, const char *op, coll_err *err)
{
    coll_req *r = coll_req_new(g, op);
    if (!r) {
        coll_errf(err, "collectives: %s on group %s (rank %d): out of memory", op,
                  coll_group_name(g), g->rank);
        return NULL;
    }
    r->seq = coll_enter(g);
    return r;
}

/* The backend's start returned rc: keep r on success, free it on failure. */
static int end(coll_req *r, int rc, coll_req **out)
{
    if (rc != 0) {
        coll_req_free(r);
        return -1;
    }
    coll_req_track(r);
    *out = r;
    return 0;
}

int coll_all_reduce_start(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                          coll_req **req, coll_err *err)
{
    *req = NULL;
    if (check_args(g, dt, "all_reduce", count, 1, true, err) != 0)
        return -1;
    coll_req *r = begin(g, "all_reduce", err);
    if (!r)
        return -1;
    return end(r, g->ctx->ops->all_reduce(g, buf, count, dt, op, r, err), req);
}

int coll_reduce_scatter_start(coll_group *g, const void *send, void *recv, size_t recv_count,
                              coll_dtype dt, coll_redop op, coll_req **req, coll_err *err)
{
    *req = NULL;
    if (check_args(g, dt, "reduce_scatter", recv_count, (size_t)g->size, true, err) != 0)
        return -1;
    coll_req *r = begin(g, "reduce_scatter", err);
    if (!r)
        return -1;
    return end(r, g->ctx->ops->reduce_scatter(g, send, recv, recv_count, dt, op, r, err), req);
}

int coll_all_gather_start(coll_group *g, const void *send, void *recv, size_t send_count,
                          coll_dtype dt, coll_req **req, coll_err *err)
{
    *req = NULL;
    if (check_args(g, dt, "all_gather", send_count, (size_t)g->size, false, err) != 0)
        return -1;
    coll_req *r = begin(g, "all_gather", err);
    if (!r)
        return -1;
    return end(r, g->ctx->ops->all_gather(g, send, recv, send_count, dt, r, err), req);
}

int coll_broadcast_start(coll_group *g, void *buf, size_t count, coll_dtype dt, int root,
                         coll_req **req, coll_err *err)
{
    *req = NULL;
    if (check_args(g, dt, "broadcast", count, 1, false, err) != 0)
        return -1;
    if (root < 0 || root >= g->size)
        return coll_errf(err, "collectives: broadcast on group %s (rank %d): root %d is not a rank of the group (size %d)",
                         coll_group_name(g), g->rank, root, g->size);
    coll_req *r = begin(g, "broadcast", err);
    if (!r)
        return -1;
    return end(r, g->ctx->ops->broadcast(g, buf, count, dt, root, r, err), req);
}

int coll_barrier_start(coll_group *g, coll_req **req, coll_err *err)
{
    *req = NULL;
    coll_req *r = begin(g, "barrier", err);
    if (!r)
        return -1;
    return end(r, g->ctx->ops->barrier(g, r, err), req);
}

int coll_all_reduce(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                    coll_err *err)
{
    coll_req *r;
    if (coll_all_reduce_start(g, buf, count, dt, op, &r, err) != 0)
        return -1;
    return coll_wait(r, err);
}

int coll_reduce_scatter(coll_group *g, const void *send, void *recv, size_t recv_count,
                        coll_dtype dt, coll_redop op, coll_err *err)
{
    coll_req *r;
    if (coll_reduce_scatter_start(g, send, recv, recv_count, dt, op, &r, err) != 0)
        return -1;
    return coll_wait(r, err);
}

int coll_all_gather(coll_group *g, const void *send, void *recv, size_t send_count, coll_dtype dt,
                    coll_err *err)
{
    coll_req *r;
    if (coll_all_gather_start(g, send, recv, send_count, dt, &r, err) != 0)
        return -1;
    return coll_wait(r, err);
}

int coll_broadcast(coll_group *g, void *buf, size_t count, coll_dtype dt, int root, coll_err *err)
{
    coll_req *r;
    if (coll_broadcast_start(g, buf, count, dt, root, &r, err) != 0)
        return -1;
    return coll_wait(r, err);
}

int coll_barrier(coll_group *g, coll_err *err)
{
    coll_req *r;
    if (coll_barrier_start(g, &r, err) != 0)
        return -1;
    return coll_wait(r, err);
}
