/* collectives/coll_internal.h: the structs behind collectives.h and the backend operations table
 * that the MPI and NCCL backends fill in. Only the files of collectives/ include this. */
#ifndef ATOM_COLL_INTERNAL_H
#define ATOM_COLL_INTERNAL_H

#include <mpi.h>
#include <pthread.h>
#include <stdbool.h>

#include "collectives/collectives.h"

/* printf-style into err (may be NULL); always returns -1. */
int coll_errf(coll_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Seconds on a monotonic clock. */
double coll_now(void);
const char *coll_dtype_name(coll_dtype dt);

/* One operation started on a group. The backend fills what it needs (an MPI request, or CUDA
 * events); the shared code owns the list of pending requests and the hang check. */
struct coll_req {
    coll_group *group;
    const char *op;       /* "all_reduce", "reduce_scatter", ... : for messages */
    int64_t seq;          /* this rank's count on the group once it entered this operation */
    double started;       /* coll_now() at start */
    bool done;
    bool pending;         /* on ctx's pending list */
    bool busy;            /* a thread is testing it outside ctx->lock */
    bool failed;          /* the backend reported an error while testing: kept in failure */
    coll_err failure;
    /* MPI backend: the request, and the average to apply once the sum has arrived */
    MPI_Request mpi;
    float *scale_buf;
    size_t scale_count;
    /* MPI backend, large all-reduces: atom's own ring instead of the MPI request */
    struct coll_ring *ring;
    /* NCCL backend: a cudaEvent_t recorded after the operation on the group's stream */
    void *event;
    coll_req *prev, *next;
};

/* What differs between MPI and NCCL. Each start returns with the operation enqueued; test
 * reports completion (and applies whatever finishing the backend owes, e.g. the MPI average). */
typedef struct coll_backend_ops {
    const char *name;
    size_t max_count;     /* the most elements one operation may move (MPI counts are int) */
    int (*group_open)(coll_group *g, coll_err *err);
    void (*group_close)(coll_group *g);
    int (*all_reduce)(coll_group *g, void *buf, size_t count, coll_dtype dt, coll_redop op,
                      coll_req *r, coll_err *err);
    int (*reduce_scatter)(coll_group *g, const void *send, void *recv, size_t recv_count,
                          coll_dtype dt, coll_redop op, coll_req *r, coll_err *err);
    int (*all_gather)(coll_group *g, const void *send, void *recv, size_t send_count,
                      coll_dtype dt, coll_req *r, coll_err *err);
    int (*broadcast)(coll_group *g, void *buf, size_t count, coll_dtype dt, int root,
                     coll_req *r, coll_err *err);
    int (*barrier)(coll_group *g, coll_req *r, coll_err *err);
    int (*test)(coll_req *r, bool *done, coll_err *err);
    void (*req_release)(coll_req *r);
    /* The hang path: make the group's pending work fail instead of hanging (NCCL: ncclCommAbort). */
    void (*abort)(coll_group *g);
    /* Memory the buckets stage in (host or device), and copies ordered with the group's
     * operations; sync waits for the copies. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    int (*copy)(coll_group *g, void *dst, const void *src, size_t bytes, coll_err *err);
    int (*sync)(coll_group *g, coll_err *err);
} coll_backend_ops;

extern const coll_backend_ops coll_mpi_ops;
#ifdef ATOM_HAVE_NCCL
extern const coll_backend_ops coll_nccl_ops;
#endif

struct coll_group {
    coll_ctx *ctx;
    coll_group_id id;
    MPI_Comm comm;        /* the group's own communicator (errors returned, not fatal) */
    int size, rank;
    int *world_ranks;     /* world rank of each member, by group rank */
    int64_t entered;      /* also published in ctx->counts_win */
    void *backend;        /* NCCL: communicator, stream, scratch */
};

struct coll_ctx {
    coll_config cfg;
    const coll_backend_ops *ops;
    int world_rank, world_size;
    char (*hosts)[MPI_MAX_PROCESSOR_NAME]; /* by world rank */
    coll_group groups[COLL_NGROUPS];
    /* Every rank's counts (int64 x COLL_NGROUPS), readable by all through a passive-target
     * window, so a rank that waits too long can name who has not entered. */
    MPI_Win counts_win;
    int64_t *counts;      /* this rank's slot of the window */
    bool counts_separate; /* MPI_WIN_SEPARATE: local stores need MPI_Win_sync to be seen */
    /* Pending non-blocking operations. The lock guards the list and each request's flags; a
     * request is tested outside it, marked busy, so no two threads test one request at once. */
    pthread_mutex_t lock;
    pthread_cond_t work;  /* signalled when a request is tracked or the thread must stop */
    pthread_cond_t not_busy; /* broadcast when a test outside the lock ends */
    coll_req *pending;
    unsigned long moves;  /* steps of pending operations seen to advance (atomic): the
                             progress thread sleeps longer while nothing moves */
    pthread_t progress_thread;
    bool progress_running;
    int progress_stop;    /* under lock */
};

/* The MPI backend's ring all-reduce (coll_mpi_ring.c), used from this size up. */
#define COLL_RING_MIN_BYTES (32u << 10)
typedef struct coll_ring coll_ring;
/* tag: the same on every rank and distinct among the group's operations in flight (the
 * operation's count on the group); divisor: 1, or n for an average. On failure *out may still
 * need coll_ring_free. */
int coll_ring_start(coll_group *g, MPI_Comm comm, const char *op, float *buf, size_t count,
                    int tag, int divisor, coll_ring **out, coll_err *err);
int coll_ring_test(coll_ring *r, bool *done, coll_err *err);
void coll_ring_free(coll_ring *r);

/* Counts one collective entered on g (before the operation starts, so a rank stuck inside it
 * already shows it entered). Returns the new count. */
int64_t coll_enter(coll_group *g);

/* The hang diagnosis: who in r's group has not entered r's operation. Fills err and, unless the
 * config says return, prints it, aborts the backend and calls MPI_Abort. */
int coll_hang(coll_req *r, coll_err *err);

/* Progress thread (MPI backend, COLL_PROGRESS_THREAD). */
int coll_progress_thread_start(coll_ctx *ctx, coll_err *err);
void coll_progress_thread_stop(coll_ctx *ctx);
/* Tests every pending request once; the caller holds ctx->lock, which is dropped during each
 * test. */
int coll_progress_locked(coll_ctx *ctx, coll_err *err);

/* Starting and finishing requests (coll_ops.c), shared with the buckets. */
coll_req *coll_req_new(coll_group *g, const char *op);
void coll_req_free(coll_req *r);
/* After a backend start succeeded: puts r on the pending list. */
void coll_req_track(coll_req *r);

#endif
