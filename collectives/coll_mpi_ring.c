/* collectives/coll_mpi_ring.c: the MPI backend's all-reduce for large float32 buffers: a ring
 * (reduce-scatter, then all-gather) over point-to-point messages, as a state machine that each
 * test call moves forward. Open MPI 4.1's non-blocking all-reduce (libnbc) picks a binomial tree
 * whenever the buffer is in place or the group has fewer than 4 ranks: the root then does all
 * the summing and every byte crosses 2 log2(n) links in turn. The ring spreads the work evenly
 * (each rank sums (n-1)/n of the buffer and sends 2(n-1)/n of it), works in place with one
 * chunk of scratch, and divides for an average only the one chunk a rank owns, before it is
 * shared.
 * Every rank sums each chunk in the same order, so all ranks end with identical bits. */
#include <stdlib.h>

#include "collectives/coll_internal.h"

struct coll_ring {
    coll_group *g;
    MPI_Comm comm;          /* the group's point-to-point communicator */
    const char *op;
    float *buf;
    size_t count;
    int divisor;            /* 1 for a sum, n for an average */
    int n, me, left, right, tag;
    int step;               /* 0 .. 2(n-1); n-1 steps of reduce-scatter, then n-1 of all-gather */
    float *scratch;         /* one chunk, received before it is summed in */
    MPI_Request reqs[2];
    bool posted;
};

static size_t chunk_begin(const coll_ring *r, int c) { return (size_t)c * r->count / (size_t)r->n; }
static size_t chunk_len(const coll_ring *r, int c) { return chunk_begin(r, c + 1) - chunk_begin(r, c); }
static int wrap(int c, int n) { return ((c % n) + n) % n; }

static int ring_error(coll_ring *r, const char *call, int code, coll_err *err)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, s, &len);
    coll_group *g = r->g;
    return coll_errf(err, "collectives: %s on group %s (rank %d of %d, world rank %d, host %s): %s failed in ring step %d: %s",
                     r->op, coll_group_name(g), g->rank, g->size, g->ctx->world_rank,
                     g->ctx->hosts[g->ctx->world_rank], call, r->step, s);
}

/* Posts the sends and receives of the current step. */
static int post(coll_ring *r, coll_err *err)
{
    int n = r->n, send_c, recv_c, rc;
    float *recv_to;
    if (r->step < n - 1) { /* reduce-scatter: pass on a partial sum, receive the next one */
        send_c = wrap(r->me - r->step, n);
        recv_c = wrap(r->me - r->step - 1, n);
        recv_to = r->scratch;
    } else { /* all-gather: pass on a finished chunk, receive the next one in place */
        int t = r->step - (n - 1);
        send_c = wrap(r->me + 1 - t, n);
        recv_c = wrap(r->me - t, n);
        recv_to = r->buf + chunk_begin(r, recv_c);
    }
    rc = MPI_Irecv(recv_to, (int)chunk_len(r, recv_c), MPI_FLOAT, r->left, r->tag, r->comm, &r->reqs[0]);
    if (rc != MPI_SUCCESS)
        return ring_error(r, "MPI_Irecv", rc, err);
    rc = MPI_Isend(r->buf + chunk_begin(r, send_c), (int)chunk_len(r, send_c), MPI_FLOAT, r->right,
                   r->tag, r->comm, &r->reqs[1]);
    if (rc != MPI_SUCCESS)
        return ring_error(r, "MPI_Isend", rc, err);
    r->posted = true;
    return 0;
}

/* The current step's messages have arrived: sum (reduce-scatter), scale the chunk this rank now
 * owns (after the last reduce-scatter step), and go to the next step. */
static void finish_step(coll_ring *r)
{
    int n = r->n;
    if (r->step < n - 1) {
        int c = wrap(r->me - r->step - 1, n);
        float *dst = r->buf + chunk_begin(r, c);
        const float *src = r->scratch;
        size_t len = chunk_len(r, c);
        for (size_t i = 0; i < len; i++)
            dst[i] += src[i];
        if (r->step == n - 2 && r->divisor != 1) { /* c is now this rank's finished chunk */
            float d = (float)r->divisor; /* a division rounds once, as sum / n computed anywhere */
            for (size_t i = 0; i < len; i++)
                dst[i] /= d;
        }
    }
    r->posted = false;
    r->step++;
}

int coll_ring_start(coll_group *g, MPI_Comm comm, const char *op, float *buf, size_t count,
                    int tag, int divisor, coll_ring **out, coll_err *err)
{
    coll_ring *r = calloc(1, sizeof *r);
    if (!r)
        return coll_errf(err, "collectives: %s on group %s (rank %d): out of memory", op,
                         coll_group_name(g), g->rank);
    *r = (coll_ring){.g = g, .comm = comm, .op = op, .buf = buf, .count = count, .divisor = divisor,
                     .n = g->size, .me = g->rank, .tag = tag};
    r->left = wrap(r->me - 1, r->n);
    r->right = wrap(r->me + 1, r->n);
    r->reqs[0] = r->reqs[1] = MPI_REQUEST_NULL;
    r->scratch = malloc((count / (size_t)r->n + 1) * sizeof(float));
    if (!r->scratch) {
        free(r);
        return coll_errf(err, "collectives: %s on group %s (rank %d): out of memory for a %zu-element chunk",
                         op, coll_group_name(g), g->rank, count / (size_t)g->size + 1);
    }
    *out = r;
    /* With a progress thread, the first step's messages are posted by the first test (the
     * thread's): a receive posted after the peer's send has arrived does the whole copy inside
     * MPI_Irecv, and the caller's thread is the one that should be computing. */
    if (g->ctx->progress_running)
        return 0;
    if (post(r, err) != 0)
        return -1; /* the caller frees r */
    return 0;
}

int coll_ring_test(coll_ring *r, bool *done, coll_err *err)
{
    int last = 2 * (r->n - 1);
    if (r->step == 0 && !r->posted && post(r, err) != 0)
        return -1;
    /* Go as far as the messages that have arrived allow. */
    while (r->step < last) {
        int flag = 0;
        int rc = MPI_Testall(2, r->reqs, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS)
            return ring_error(r, "MPI_Testall", rc, err);
        if (!flag)
            break;
        finish_step(r);
        __atomic_add_fetch(&r->g->ctx->moves, 1, __ATOMIC_RELAXED);
        if (r->step < last && post(r, err) != 0)
            return -1;
    }
    *done = r->step >= last;
    return 0;
}

void coll_ring_free(coll_ring *r)
{
    if (!r)
        return;
    if (r->step < 2 * (r->n - 1) && r->posted) {
        /* Abandoned on an error or hang path with messages in flight. The send is left to MPI
         * (its buffer is the caller's). The receive is cancelled: once MPI says it is over
         * (cancelled, or arrived after all) the scratch it writes to can go; if MPI does not
         * say so soon, the scratch stays with it, a small leak on a path after which the group
         * is unusable anyway. */
        if (r->reqs[1] != MPI_REQUEST_NULL)
            MPI_Request_free(&r->reqs[1]);
        if (r->reqs[0] != MPI_REQUEST_NULL) {
            MPI_Cancel(&r->reqs[0]);
            double deadline = coll_now() + 0.1;
            int over = 0;
            while (!over && coll_now() < deadline)
                if (MPI_Test(&r->reqs[0], &over, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                    break;
            if (!over) {
                MPI_Request_free(&r->reqs[0]);
                free(r);
                return;
            }
        }
    }
    free(r->scratch);
    free(r);
}
