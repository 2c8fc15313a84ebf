/* collectives/coll_hang.c: what happens when a collective outlives the hang timeout. The waiting
 * rank reads every group member's count of collectives entered (through the counts window, which
 * needs nothing from the target rank) and names those still behind this operation, with their
 * hosts; then, unless told to return, it prints that and ends the job: a silent hang of
 * thousands of GPUs is the failure this exists to prevent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/coll_internal.h"

/* Reads world rank target's count on group id; returns 0, or -1 when it did not come within
 * `patience` seconds (an MPI implementation whose one-sided reads need the target's help). */
static int read_count(coll_ctx *ctx, int target, coll_group_id id, double patience, int64_t *out)
{
    if (target == ctx->world_rank) {
        *out = __atomic_load_n(&ctx->counts[id], __ATOMIC_ACQUIRE);
        return 0;
    }
    int64_t value = -1;
    MPI_Request q;
    if (MPI_Rget(&value, 1, MPI_INT64_T, target, (MPI_Aint)id, 1, MPI_INT64_T, ctx->counts_win,
                 &q) != MPI_SUCCESS)
        return -1;
    double deadline = coll_now() + patience;
    int flag = 0;
    while (!flag) {
        if (MPI_Test(&q, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return -1;
        if (!flag && coll_now() > deadline)
            return -1; /* the request stays with MPI; the job is about to end */
    }
    *out = value;
    return 0;
}

int coll_hang(coll_req *r, coll_err *err)
{
    coll_group *g = r->group;
    coll_ctx *ctx = g->ctx;
    char behind[768] = "";
    size_t used = 0;
    int listed = 0, more = 0;
    for (int i = 0; i < g->size; i++) {
        int wr = g->world_ranks[i];
        int64_t count = -1;
        int answered = read_count(ctx, wr, g->id, 1.0, &count) == 0;
        if (answered && count >= r->seq)
            continue;
        if (listed >= 16 || used + 96 > sizeof behind) {
            more++;
            continue;
        }
        int n = answered
                    ? snprintf(behind + used, sizeof behind - used,
                               "%sworld rank %d (host %s, entered %lld on this group)",
                               listed ? "; " : "", wr, ctx->hosts[wr], (long long)count)
                    : snprintf(behind + used, sizeof behind - used,
                               "%sworld rank %d (host %s, its count could not be read)",
                               listed ? "; " : "", wr, ctx->hosts[wr]);
        if (n > 0)
            used += (size_t)n < sizeof behind - used ? (size_t)n : sizeof behind - used - 1;
        listed++;
    }
    if (more)
        snprintf(behind + used, sizeof behind - used, "; and %d more", more);
    coll_err diag;
    coll_errf(&diag,
              "collectives: hang: %s on group %s (rank %d of %d; world rank %d, host %s) not finished "
              "after %.1f s; it is collective #%lld of this rank on the group; %s%s",
              r->op, coll_group_name(g), g->rank, g->size, ctx->world_rank,
              ctx->hosts[ctx->world_rank], coll_now() - r->started, (long long)r->seq,
              listed ? "ranks behind: " : "no rank is behind (every member entered it: a backend or network fault)",
              behind);
    if (err)
        *err = diag;
    if (ctx->cfg.hang_action == COLL_HANG_RETURN)
        return -1;
    fprintf(stderr, "%s; aborting the job\n", diag.msg);
    fflush(stderr);
    ctx->ops->abort(g);
    MPI_Abort(MPI_COMM_WORLD, 3);
    return -1;
}
