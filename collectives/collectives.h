/* collectives/collectives.h: the public contract of atom's collectives module.
 *
 *   - a context opened collectively on MPI_COMM_WORLD that splits it into the world, tensor-parallel
 *     and data-parallel groups (rank = dp * tensor_size + tp), on one backend chosen once: MPI (CPU
 *     buffers) or NCCL (device buffers, one communicator and CUDA stream per group);
 *   - per group: all-reduce (sum, average), reduce-scatter, all-gather, broadcast and barrier, each
 *     blocking or non-blocking (start -> request -> test / wait);
 *   - per group, the number of collectives this rank has entered (the worker puts them in its
 *     heartbeat; the hang check reads the other ranks' counts through an MPI window);
 *   - a bucket manager that all-reduces the gradients of one flat buffer in DDP-style buckets,
 *     overlapped with the backward pass.
 *
 * May use: MPI and NCCL only (not common/), so it carries its own error buffer. MPI must have been
 * initialised with MPI_Init_thread(MPI_THREAD_MULTIPLE) when the progress thread is asked for.
 *
 * Buffers are host memory on the MPI backend and device memory on the NCCL backend. Counts are in
 * elements, not bytes. Every function returns 0 on success and -1 with a message in err (err may
 * be NULL) naming the group, the operation and the rank.
 */
#ifndef ATOM_COLLECTIVES_H
#define ATOM_COLLECTIVES_H

#include <stddef.h>
#include <stdint.h>

typedef struct coll_err {
    char msg[1024];
} coll_err;

typedef enum { COLL_BACKEND_MPI = 0, COLL_BACKEND_NCCL = 1 } coll_backend_kind;

typedef enum {
    COLL_F32 = 0,
    COLL_BF16 = 1, /* NCCL backend only */
    COLL_I32 = 2   /* all-gather and broadcast only: moved, never reduced (token ids) */
} coll_dtype;

typedef enum { COLL_SUM = 0, COLL_AVG = 1 /* sum divided by the group's size */ } coll_redop;

/* The three groups of a rank; also the index of its count in coll_counts(). */
typedef enum { COLL_WORLD = 0, COLL_TENSOR = 1, COLL_DATA = 2, COLL_NGROUPS = 3 } coll_group_id;

/* What a collective that outlives hang_timeout_s does. */
typedef enum {
    COLL_HANG_ABORT = 0,  /* print the diagnosis to stderr and MPI_Abort (NCCL: ncclCommAbort first) */
    COLL_HANG_RETURN = 1  /* return -1 with the diagnosis in err; the group is unusable afterwards */
} coll_hang_action;

typedef enum {
    COLL_PROGRESS_POLL = 0,   /* non-blocking MPI operations move when the worker calls
                                 coll_progress() / coll_test() / coll_wait() */
    COLL_PROGRESS_THREAD = 1  /* plus a thread that tests pending operations and sleeps between
                                 tests; large all-reduces started meanwhile post their first
                                 messages from it, so the starting thread never copies */
} coll_progress_mode;

typedef struct coll_config {
    coll_backend_kind backend;
    int tensor_size;              /* T of the layout; must divide the world size; 0 means 1 */
    double hang_timeout_s;        /* a collective not done after this long is a hang; 0 means 300 s */
    coll_hang_action hang_action;
    coll_progress_mode progress;  /* MPI backend only */
    int progress_sleep_us;        /* progress thread's sleep between rounds; 0 means 100 us */
    int cuda_device;              /* NCCL backend: the device this rank drives */
    void *cuda_compute_stream;    /* NCCL backend: the worker's cudaStream_t whose work a collective
                                     must follow (NULL = the legacy default stream) */
} coll_config;

typedef struct coll_ctx coll_ctx;
typedef struct coll_group coll_group;
typedef struct coll_req coll_req;

/* ---- context and groups ------------------------------------------------------------------ */

/* Collective over MPI_COMM_WORLD. Fails (on every rank alike) when tensor_size does not divide the
 * world size or the backend is not compiled in. */
int coll_open(const coll_config *cfg, coll_ctx **out, coll_err *err);
/* Collective over MPI_COMM_WORLD; waits for nothing: finish or wait requests first. */
void coll_close(coll_ctx *ctx);

/* 1 if the NCCL backend was compiled into this build. */
int coll_have_nccl(void);

coll_group *coll_group_of(coll_ctx *ctx, coll_group_id id);
int coll_group_size(const coll_group *g);
int coll_group_rank(const coll_group *g);
const char *coll_group_name(const coll_group *g); /* "world", "tensor", "data" */
/* The number of collectives this rank has entered on g: every operation that passed its argument
 * checks counts one, blocking or not, from the moment it starts. */
int64_t coll_group_entered(const coll_group *g);
/* All three counts, indexed by coll_group_id. */
void coll_counts(const coll_ctx *ctx, int64_t out[COLL_NGROUPS]);

/* ---- blocking operations ----------------------------------------------------------------- */

/* In place: buf holds count elements on every rank and the reduction afterwards. */
int coll_all_reduce(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                    coll_err *err);
/* send holds size * recv_count elements; rank r receives block r of the reduction. */
int coll_reduce_scatter(coll_group *g, const void *send, void *recv, size_t recv_count,
                        coll_dtype dt, coll_redop op, coll_err *err);
/* recv receives size * send_count elements, block r from rank r. */
int coll_all_gather(coll_group *g, const void *send, void *recv, size_t send_count, coll_dtype dt,
                    coll_err *err);
/* root is a rank of g. */
int coll_broadcast(coll_group *g, void *buf, size_t count, coll_dtype dt, int root, coll_err *err);
int coll_barrier(coll_group *g, coll_err *err);

/* ---- non-blocking operations ------------------------------------------------------------- */
/* Same arguments as the blocking ones; buffers must stay untouched until the request completes.
 * Every rank of a group must start the group's collectives in the same order. */

int coll_all_reduce_start(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                          coll_req **req, coll_err *err);
int coll_reduce_scatter_start(coll_group *g, const void *send, void *recv, size_t recv_count,
                              coll_dtype dt, coll_redop op, coll_req **req, coll_err *err);
int coll_all_gather_start(coll_group *g, const void *send, void *recv, size_t send_count,
                          coll_dtype dt, coll_req **req, coll_err *err);
int coll_broadcast_start(coll_group *g, void *buf, size_t count, coll_dtype dt, int root,
                         coll_req **req, coll_err *err);
int coll_barrier_start(coll_group *g, coll_req **req, coll_err *err);

/* Sets *done to 1 once the request has completed (its result in place). Never frees req. */
int coll_test(coll_req *req, int *done, coll_err *err);
/* Waits (up to the hang timeout) and frees req, whatever the outcome. */
int coll_wait(coll_req *req, coll_err *err);
/* Moves every pending non-blocking operation of ctx a step forward; cheap when none is pending.
 * The worker calls it between layers. With a progress thread (COLL_PROGRESS_THREAD) it does
 * nothing: the thread moves them, and the caller's thread stays free for compute. */
int coll_progress(coll_ctx *ctx, coll_err *err);

/* ---- gradient buckets (data-parallel all-reduce overlapped with the backward pass) -------- */

typedef struct coll_buckets coll_buckets;

/* grads: the flat gradient buffer (float32) of count elements; bucket_bytes: the target size of
 * a bucket (a piece larger than that gets a bucket of its own). Pieces are all-reduced with
 * COLL_AVG over g (normally the data group). */
int coll_buckets_create(coll_group *g, float *grads, size_t count, size_t bucket_bytes,
                        coll_buckets **out, coll_err *err);
/* Registers one gradient region, in the reverse of the order the backward pass completes them
 * (for most parameters, forward order; a tied weight whose first use in the backward completes
 * a part of it goes last): elements [offset, offset + length) of grads. A stacked per-layer
 * parameter is registered as L pieces, one per layer slice. Returns the piece's id (0, 1, 2,
 * ...) or -1. Regions must not overlap. */
int coll_buckets_add(coll_buckets *b, size_t offset, size_t length, coll_err *err);
/* Packs the pieces into buckets in reverse forward order (the last piece first, as the backward
 * pass produces them). No add after this. */
int coll_buckets_seal(coll_buckets *b, coll_err *err);
int coll_buckets_count(const coll_buckets *b);
/* The bucket that holds a piece (0 = the first to be all-reduced). */
int coll_buckets_bucket_of(const coll_buckets *b, int piece);
/* Called by the backward pass when a piece's gradient is final. Starts the all-reduce of every
 * bucket that is complete and whose predecessors have started (so every rank starts them in the
 * same order, whatever order the pieces came in). Also makes pending buckets progress. */
int coll_buckets_mark_ready(coll_buckets *b, int piece, coll_err *err);
/* Starts what is left (pieces not marked are all-reduced as they are), waits for every bucket,
 * leaves the averaged gradients in grads and resets readiness for the next step. */
int coll_buckets_finish(coll_buckets *b, coll_err *err);
void coll_buckets_free(coll_buckets *b);

#endif
