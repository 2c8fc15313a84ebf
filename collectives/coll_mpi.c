/* collectives/coll_mpi.c: the MPI backend (CPU buffers). Every operation is MPI's non-blocking
 * one on the group's communicator; MPI has no average, so an average is a sum scaled by 1/size
 * once it has arrived. Open MPI 4.1 moves non-blocking operations only inside MPI calls, which
 * is what coll_progress(), the waits and the optional progress thread are for. */
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

static int mpi_group_open(coll_group *g, coll_err *err)
{
    (void)g;
    (void)err;
    return 0;
}

static void mpi_group_close(coll_group *g) { (void)g; }

static int mpi_all_reduce(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                          coll_req *r, coll_err *err)
{
    (void)dt; /* float32 only, and counts within int: checked by the caller */
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

static int mpi_all_gather(coll_group *g, const void *send, void *recv, size_t send_count,
                          coll_dtype dt, coll_req *r, coll_err *err)
{
    (void)dt;
    int rc = MPI_Iallgather(send, (int)send_count, MPI_FLOAT, recv, (int)send_count, MPI_FLOAT,
                            g->comm, &r->mpi);
    if (rc != MPI_SUCCESS)
        return mpi_error(g, r->op, "MPI_Iallgather", rc, err);
    return 0;
}

static int mpi_broadcast(coll_group *g, void *buf, size_t count, coll_dtype dt, int root,
                         coll_req *r, coll_err *err)
{
    (void)dt;
    int rc = MPI_Ibcast(buf, (int)count, MPI_FLOAT, root, g->comm, &r->mpi);
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
    int flag = 0;
    int rc = MPI_Test(&r->mpi, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        return mpi_error(r->group, r->op, "MPI_Test", rc, err);
    if (flag && r->scale_buf) {
        float inv = 1.0f / (float)r->group->size;
        for (size_t i = 0; i < r->scale_count; i++)
            r->scale_buf[i] *= inv;
        r->scale_buf = NULL;
    }
    *done = flag != 0;
    return 0;
}

static void mpi_req_release(coll_req *r)
{
    /* Nothing to free: a completed request is MPI_REQUEST_NULL already, and freeing an active
     * non-blocking collective is erroneous in MPI, so one abandoned on the hang path stays
     * with MPI (the group is unusable then anyway). */
    (void)r;
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
