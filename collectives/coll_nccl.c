/* collectives/coll_nccl.c: the NCCL backend (device buffers), plain C over the NCCL and CUDA
 * runtime C APIs. One NCCL communicator per group, its ncclUniqueId broadcast over the group's
 * MPI communicator, and one CUDA stream per group; each operation first waits (on the device)
 * for the worker's compute stream, and records an event that test polls, together with
 * ncclCommGetAsyncError, so a failed or hung communicator is seen from the host. Compiled and
 * linked wherever nvcc exists; it cannot run without a GPU. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdint.h>
#include <stdlib.h>

#include "collectives/coll_internal.h"

typedef struct nccl_group {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t compute_done; /* recorded on the worker's stream before each operation */
    float *scratch;           /* one device float: a barrier is an all-reduce of it */
} nccl_group;

static nccl_group *state(coll_group *g) { return g->backend; }

static int where(coll_group *g, const char *op, coll_err *err, const char *what, const char *why)
{
    return coll_errf(err, "collectives: %s on group %s (rank %d of %d, world rank %d, host %s): %s: %s",
                     op, coll_group_name(g), g->rank, g->size, g->ctx->world_rank,
                     g->ctx->hosts[g->ctx->world_rank], what, why);
}

#define CUDA_OR_FAIL(g, op, call)                                                    \
    do {                                                                             \
        cudaError_t e_ = (call);                                                     \
        if (e_ != cudaSuccess)                                                       \
            return where((g), (op), err, #call, cudaGetErrorString(e_));             \
    } while (0)

#define NCCL_OR_FAIL(g, op, call)                                                    \
    do {                                                                             \
        ncclResult_t n_ = (call);                                                    \
        if (n_ != ncclSuccess)                                                       \
            return where((g), (op), err, #call, ncclGetErrorString(n_));             \
    } while (0)

static ncclDataType_t nccl_type(coll_dtype dt)
{
    return dt == COLL_BF16 ? ncclBfloat16 : dt == COLL_I32 ? ncclInt32 : ncclFloat32;
}
static ncclRedOp_t nccl_op(coll_redop op) { return op == COLL_AVG ? ncclAvg : ncclSum; }

static int nccl_group_open(coll_group *g, coll_err *err)
{
    nccl_group *s = calloc(1, sizeof *s);
    if (!s)
        return where(g, "open", err, "calloc", "out of memory");
    g->backend = s;
    CUDA_OR_FAIL(g, "open", cudaSetDevice(g->ctx->cfg.cuda_device));
    /* Group rank 0 makes the id; whether that worked travels with it, so no rank waits alone. */
    struct {
        int ok;
        ncclUniqueId id;
    } msg = {0};
    if (g->rank == 0)
        msg.ok = ncclGetUniqueId(&msg.id) == ncclSuccess;
    int rc = MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, 0, g->comm);
    if (rc != MPI_SUCCESS)
        return where(g, "open", err, "MPI_Bcast of the ncclUniqueId", "failed");
    if (!msg.ok)
        return where(g, "open", err, "ncclGetUniqueId", "failed on the group's rank 0");
    NCCL_OR_FAIL(g, "open", ncclCommInitRank(&s->comm, g->size, msg.id, g->rank));
    CUDA_OR_FAIL(g, "open", cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CUDA_OR_FAIL(g, "open", cudaEventCreateWithFlags(&s->compute_done, cudaEventDisableTiming));
    CUDA_OR_FAIL(g, "open", cudaMalloc((void **)&s->scratch, sizeof(float)));
    return 0;
}

static void nccl_group_close(coll_group *g)
{
    nccl_group *s = state(g);
    if (!s)
        return;
    if (s->comm)
        ncclCommDestroy(s->comm);
    if (s->scratch)
        cudaFree(s->scratch);
    if (s->compute_done)
        cudaEventDestroy(s->compute_done);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s);
    g->backend = NULL;
}

/* Orders the group's stream after the worker's compute stream (device side, no host wait). */
static int follow_compute(coll_group *g, const char *op, coll_err *err)
{
    nccl_group *s = state(g);
    if (!s->comm)
        return where(g, op, err, "communicator", "aborted after an earlier hang or error");
    cudaStream_t compute = (cudaStream_t)g->ctx->cfg.cuda_compute_stream;
    CUDA_OR_FAIL(g, op, cudaEventRecord(s->compute_done, compute));
    CUDA_OR_FAIL(g, op, cudaStreamWaitEvent(s->stream, s->compute_done, 0));
    return 0;
}

/* Records the event test polls. */
static int mark_end(coll_group *g, coll_req *r, coll_err *err)
{
    cudaEvent_t ev;
    CUDA_OR_FAIL(g, r->op, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    r->event = ev;
    CUDA_OR_FAIL(g, r->op, cudaEventRecord(ev, state(g)->stream));
    return 0;
}

static int nccl_all_reduce(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                           coll_req *r, coll_err *err)
{
    if (follow_compute(g, r->op, err) != 0)
        return -1;
    NCCL_OR_FAIL(g, r->op, ncclAllReduce(buf, buf, count, nccl_type(dt), nccl_op(op), state(g)->comm,
                                         state(g)->stream));
    return mark_end(g, r, err);
}

static int nccl_reduce_scatter(coll_group *g, const void *send, void *recv, size_t recv_count,
                               coll_dtype dt, coll_redop op, coll_req *r, coll_err *err)
{
    if (follow_compute(g, r->op, err) != 0)
        return -1;
    NCCL_OR_FAIL(g, r->op, ncclReduceScatter(send, recv, recv_count, nccl_type(dt), nccl_op(op),
                                             state(g)->comm, state(g)->stream));
    return mark_end(g, r, err);
}

static int nccl_all_gather(coll_group *g, const void *send, void *recv, size_t send_count,
                           coll_dtype dt, coll_req *r, coll_err *err)
{
    if (follow_compute(g, r->op, err) != 0)
        return -1;
    NCCL_OR_FAIL(g, r->op, ncclAllGather(send, recv, send_count, nccl_type(dt), state(g)->comm,
                                         state(g)->stream));
    return mark_end(g, r, err);
}

static int nccl_broadcast(coll_group *g, void *buf, size_t count, coll_dtype dt, int root,
                          coll_req *r, coll_err *err)
{
    if (follow_compute(g, r->op, err) != 0)
        return -1;
    NCCL_OR_FAIL(g, r->op, ncclBroadcast(buf, buf, count, nccl_type(dt), root, state(g)->comm,
                                         state(g)->stream));
    return mark_end(g, r, err);
}

static int nccl_barrier(coll_group *g, coll_req *r, coll_err *err)
{
    if (follow_compute(g, r->op, err) != 0)
        return -1;
    NCCL_OR_FAIL(g, r->op, ncclAllReduce(state(g)->scratch, state(g)->scratch, 1, ncclFloat32,
                                         ncclSum, state(g)->comm, state(g)->stream));
    return mark_end(g, r, err);
}

static int nccl_test(coll_req *r, bool *done, coll_err *err)
{
    coll_group *g = r->group;
    nccl_group *s = state(g);
    *done = false;
    cudaError_t q = cudaEventQuery((cudaEvent_t)r->event);
    if (q == cudaSuccess) {
        *done = true;
        return 0;
    }
    if (q != cudaErrorNotReady)
        return where(g, r->op, err, "cudaEventQuery", cudaGetErrorString(q));
    ncclResult_t async = ncclSuccess;
    if (!s->comm)
        return where(g, r->op, err, "communicator", "aborted");
    NCCL_OR_FAIL(g, r->op, ncclCommGetAsyncError(s->comm, &async));
    if (async != ncclSuccess && async != ncclInProgress)
        return where(g, r->op, err, "ncclCommGetAsyncError", ncclGetErrorString(async));
    return 0;
}

static void nccl_req_release(coll_req *r)
{
    if (r->event)
        cudaEventDestroy((cudaEvent_t)r->event);
    r->event = NULL;
}

static void nccl_abort(coll_group *g)
{
    nccl_group *s = state(g);
    if (s && s->comm) {
        ncclCommAbort(s->comm);
        s->comm = NULL;
    }
}

static void *nccl_alloc(size_t bytes)
{
    void *p = NULL;
    return cudaMalloc(&p, bytes ? bytes : 1) == cudaSuccess ? p : NULL;
}

static void nccl_free(void *p) { cudaFree(p); }

static int nccl_copy(coll_group *g, void *dst, const void *src, size_t bytes, coll_err *err)
{
    if (follow_compute(g, "bucket copy", err) != 0)
        return -1;
    CUDA_OR_FAIL(g, "bucket copy",
                 cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, state(g)->stream));
    return 0;
}

static int nccl_sync(coll_group *g, coll_err *err)
{
    CUDA_OR_FAIL(g, "bucket copy", cudaStreamSynchronize(state(g)->stream));
    return 0;
}

const coll_backend_ops coll_nccl_ops = {
    .name = "NCCL",
    .max_count = SIZE_MAX,
    .group_open = nccl_group_open,
    .group_close = nccl_group_close,
    .all_reduce = nccl_all_reduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .test = nccl_test,
    .req_release = nccl_req_release,
    .abort = nccl_abort,
    .alloc = nccl_alloc,
    .free = nccl_free,
    .copy = nccl_copy,
    .sync = nccl_sync,
};
