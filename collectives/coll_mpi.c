/* collectives/coll_mpi.c: the MPI backend (CPU buffers). Every operation is MPI's non-blocking
 * one on the group's communicator; MPI has no average, so an average is a sum scaled by 1/size
 * once it has arrived. Open MPI 4.1 moves non-blocking operations only inside MPI calls, which
 * is what coll_progress(), the waits and the optional progress thread are for. Large all-reduces
 * go through atom's own ring (coll_mpi_ring.c) instead of MPI_Iallreduce. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/coll_internal.h"

static int mpi_error(coll_group *g, const char *op, const char *call, int code, coll_err *err)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, s, &len);
    return coll_errf(err, "collectives: %s on group %s (rank %d of %d, world rank %d, host %s): %s failed: %s",
                     op, coll_group_name(g), g->rank, g->size, g->ctx->world_rank,
                     g->ctx->hosts[g->ctx->world_rank], call, s);
}

/* Per group: a communicator of its own for the ring's point-to-point messages, so they never
 * meet the caller's or MPI's own collective traffic. */
typedef struct mpi_group {
    MPI_Comm p2p;
} mpi_group;

static int mpi_group_open(coll_group *g, coll_err *err)
{
    mpi_group *s = calloc(1, sizeof *s);
    if (!s)
        return coll_errf(err, "collectives: open of group %s on world rank %d: out of memory",
                         coll_group_name(g), g->ctx->world_rank);
    g->backend = s;
    int rc = MPI_Comm_dup(g->comm, &s->p2p);
    if (rc != MPI_SUCCESS) {
        s->p2p = MPI_COMM_NULL;
        return mpi_error(g, "open", "MPI_Comm_dup", rc, err);
    }
    MPI_Comm_set_errhandler(s->p2p, MPI_ERRORS_RETURN);
    return 0;
}

static void mpi_group_close(coll_group *g)
{
    mpi_group *s = g->backend;
    if (s && s->p2p != MPI_COMM_NULL)
        MPI_Comm_free(&s->p2p);
    free(s);
    g->backend = NULL;
}

static int mpi_all_reduce(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                          coll_req *r, coll_err *err)
{
    (void)dt; /* float32 only, and counts within int: checked by the caller */
    if (g->size > 1 && count * sizeof(float) >= COLL_RING_MIN_BYTES) {
        mpi_group *s = g->backend;
        return coll_ring_start(g, s->p2p, r->op, buf, count, (int)(r->seq % 32768),
                               op == COLL_AVG ? g->size : 1, &r->ring, err);
    }
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, g->comm, &r->mpi);
    if (rc != MPI_SUCCESS)
        return mpi_error(g, r->op, "MPI_Iallreduce", rc, err);
    if (op == COLL_AVG) {
        r->scale_buf = buf;
        r->scale_count = count;
    }
    return 0;
}

static int mpi_reduce_scatter(coll_group *g, const void *send, void *recv, size_t recv_count,
                              coll_dtype dt, coll_redop op, coll_req *r, coll_err *err)
{
    (void)dt;
    int rc = MPI_Ireduce_scatter_block(send, recv, (int)recv_count, MPI_FLOAT, MPI_SUM, g->comm,
                                       &r->mpi);
    if (rc != MPI_SUCCESS)
        return mpi_error(g, r->op, "MPI_Ireduce_scatter_block", rc, err);
    if (op == COLL_AVG) {
        r->scale_buf = recv;
        r->scale_count = recv_count;
    }
    return 0;
}

/* The types the MPI backend moves (bf16 is refused before this). */
static MPI_Datatype mpi_type(coll_dtype dt) { return dt == COLL_I32 ? MPI_INT32_T : MPI_FLOAT; }

static int mpi_all_gather(coll_group *g, const void *send, void *recv, size_t send_count,
                          coll_dtype dt, coll_req *r, coll_err *err)
{
    int rc = MPI_Iallgather(send, (int)send_count, mpi_type(dt), recv, (int)send_count,
                            mpi_type(dt), g->comm, &r->mpi);
    if (rc != MPI_SUCCESS)
        return mpi_error(g, r->op, "MPI_Iallgather", rc, err);
    return 0;
}

static int mpi_broadcast(coll_group *g, void *buf, size_t count, coll_dtype dt, int root,
                         coll_req *r, coll_err *err)
{
    int rc = MPI_Ibcast(buf, (int)count, mpi_type(dt), root, g->comm, &r->mpi);
    if (rc != MPI_SUCCESS)
        return mpi_error(g, r->op, "MPI_Ibcast", rc, err);
    return 0;
}

static int mpi_barrier(coll_group *g, coll_req *r, coll_err *err)
{
    int rc = MPI_Ibarrier(g->comm, &r->mpi);
    if (rc != MPI_SUCCESS)
        return mpi_error(g, r->op, "MPI_Ibarrier", rc, err);
    return 0;
}

static int mpi_test(coll_req *r, bool *done, coll_err *err)
{
    if (r->ring)
        return coll_ring_test(r->ring, done, err);
    int flag = 0;
    int rc = MPI_Test(&r->mpi, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        return mpi_error(r->group, r->op, "MPI_Test", rc, err);
    if (flag && r->scale_buf) {
        float n = (float)r->group->size;
        for (size_t i = 0; i < r->scale_count; i++)
            r->scale_buf[i] /= n;
        r->scale_buf = NULL;
    }
    *done = flag != 0;
    return 0;
}

static void mpi_req_release(coll_req *r)
{
    /* A completed MPI request is MPI_REQUEST_NULL already, and freeing an active non-blocking
     * collective is erroneous in MPI, so one abandoned on the hang path stays with MPI (the
     * group is unusable then anyway). A ring is atom's own to free. */
    coll_ring_free(r->ring);
    r->ring = NULL;
}

static void mpi_abort(coll_group *g) { (void)g; }

static void *mpi_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
static void mpi_free(void *p) { free(p); }

static int mpi_copy(coll_group *g, void *dst, const void *src, size_t bytes, coll_err *err)
{
    (void)g;
    (void)err;
    memcpy(dst, src, bytes);
    return 0;
}

static int mpi_sync(coll_group *g, coll_err *err)
{
    (void)g;
    (void)err;
    return 0;
}

const coll_backend_ops coll_mpi_ops = {
    .name = "MPI",
    .max_count = INT_MAX,
    .group_open = mpi_group_open,
    .group_close = mpi_group_close,
    .all_reduce = mpi_all_reduce,
    .reduce_scatter = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .test = mpi_test,
    .req_release = mpi_req_release,
    .abort = mpi_abort,
    .alloc = mpi_alloc,
    .free = mpi_free,
    .copy = mpi_copy,
    .sync = mpi_sync,
};
