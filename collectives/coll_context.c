/* collectives/coll_context.c: opening and closing a context: the backend chosen once, the world /
 * tensor / data groups split from MPI_COMM_WORLD (rank = dp * T + tp), every rank's host name,
 * and the window through which ranks read each other's collective counts. */
#include <stdlib.h>
#include <string.h>

#include "collectives/coll_internal.h"

static const char *const group_names[COLL_NGROUPS] = {"world", "tensor", "data"};

int coll_have_nccl(void)
{
#ifdef ATOM_HAVE_NCCL
    return 1;
#else
    return 0;
#endif
}

static int mpi_fail(coll_err *err, int world_rank, const char *what, int code)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, s, &len);
    return coll_errf(err, "collectives: open on world rank %d: %s failed: %s", world_rank, what, s);
}

/* Splits the world into the three groups; every member's world rank is recorded for messages. */
static int open_groups(coll_ctx *ctx, MPI_Comm world, coll_err *err)
{
    int T = ctx->cfg.tensor_size, rank = ctx->world_rank;
    int dp = rank / T, tp = rank % T;
    int rc;
    for (int id = 0; id < COLL_NGROUPS; id++) {
        coll_group *g = &ctx->groups[id];
        g->ctx = ctx;
        g->id = (coll_group_id)id;
        g->comm = MPI_COMM_NULL;
    }
    if ((rc = MPI_Comm_dup(world, &ctx->groups[COLL_WORLD].comm)) != MPI_SUCCESS)
        return mpi_fail(err, rank, "MPI_Comm_dup (world group)", rc);
    if ((rc = MPI_Comm_split(world, dp, tp, &ctx->groups[COLL_TENSOR].comm)) != MPI_SUCCESS)
        return mpi_fail(err, rank, "MPI_Comm_split (tensor group)", rc);
    if ((rc = MPI_Comm_split(world, tp, dp, &ctx->groups[COLL_DATA].comm)) != MPI_SUCCESS)
        return mpi_fail(err, rank, "MPI_Comm_split (data group)", rc);
    for (int id = 0; id < COLL_NGROUPS; id++) {
        coll_group *g = &ctx->groups[id];
        MPI_Comm_set_errhandler(g->comm, MPI_ERRORS_RETURN);
        MPI_Comm_size(g->comm, &g->size);
        MPI_Comm_rank(g->comm, &g->rank);
        g->world_ranks = calloc((size_t)g->size, sizeof *g->world_ranks);
        if (!g->world_ranks)
            return coll_errf(err, "collectives: open on world rank %d: out of memory", rank);
        for (int i = 0; i < g->size; i++)
            g->world_ranks[i] = id == COLL_WORLD ? i : id == COLL_TENSOR ? dp * T + i : i * T + tp;
    }
    return 0;
}

static int open_counts_window(coll_ctx *ctx, MPI_Comm world, coll_err *err)
{
    int rc = MPI_Win_allocate((MPI_Aint)(COLL_NGROUPS * sizeof(int64_t)), sizeof(int64_t),
                              MPI_INFO_NULL, world, &ctx->counts, &ctx->counts_win);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, ctx->world_rank, "MPI_Win_allocate (collective counts)", rc);
    MPI_Win_set_errhandler(ctx->counts_win, MPI_ERRORS_RETURN);
    memset(ctx->counts, 0, COLL_NGROUPS * sizeof(int64_t));
    int *model = NULL, found = 0;
    MPI_Win_get_attr(ctx->counts_win, MPI_WIN_MODEL, &model, &found);
    ctx->counts_separate = found && model && *model == MPI_WIN_SEPARATE;
    /* One passive-target epoch for the context's whole life: a reader needs no cooperation. */
    if ((rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, ctx->counts_win)) != MPI_SUCCESS)
        return mpi_fail(err, ctx->world_rank, "MPI_Win_lock_all (collective counts)", rc);
    return 0;
}

static void close_ctx(coll_ctx *ctx)
{
    if (ctx->progress_running)
        coll_progress_thread_stop(ctx);
    for (int id = 0; id < COLL_NGROUPS; id++) {
        coll_group *g = &ctx->groups[id];
        if (g->backend && ctx->ops)
            ctx->ops->group_close(g);
        if (g->comm != MPI_COMM_NULL)
            MPI_Comm_free(&g->comm);
        free(g->world_ranks);
    }
    if (ctx->counts_win != MPI_WIN_NULL) {
        MPI_Win_unlock_all(ctx->counts_win);
        MPI_Win_free(&ctx->counts_win);
    }
    pthread_mutex_destroy(&ctx->lock);
    pthread_cond_destroy(&ctx->work);
    pthread_cond_destroy(&ctx->not_busy);
    free(ctx->hosts);
    free(ctx);
}

int coll_open(const coll_config *cfg, coll_ctx **out, coll_err *err)
{
    *out = NULL;
    int initialized = 0, thread_level = 0;
    MPI_Initialized(&initialized);
    if (!initialized)
        return coll_errf(err, "collectives: open: MPI is not initialised (call MPI_Init_thread first)");
    coll_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return coll_errf(err, "collectives: open: out of memory");
    ctx->cfg = *cfg;
    ctx->counts_win = MPI_WIN_NULL;
    for (int id = 0; id < COLL_NGROUPS; id++)
        ctx->groups[id].comm = MPI_COMM_NULL;
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_cond_init(&ctx->work, NULL);
    pthread_cond_init(&ctx->not_busy, NULL);
    if (ctx->cfg.tensor_size <= 0)
        ctx->cfg.tensor_size = 1;
    if (ctx->cfg.hang_timeout_s <= 0)
        ctx->cfg.hang_timeout_s = 300;
    if (ctx->cfg.progress_sleep_us <= 0)
        ctx->cfg.progress_sleep_us = 100;
    MPI_Comm_rank(MPI_COMM_WORLD, &ctx->world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ctx->world_size);

    /* Checks that fail alike on every rank come before the first collective call, so no rank is
     * left waiting in one. */
    if (ctx->world_size % ctx->cfg.tensor_size != 0) {
        coll_errf(err, "collectives: open: tensor size %d does not divide the world size %d",
                  ctx->cfg.tensor_size, ctx->world_size);
        goto fail;
    }
    if (ctx->cfg.backend == COLL_BACKEND_MPI) {
        ctx->ops = &coll_mpi_ops;
    } else if (ctx->cfg.backend == COLL_BACKEND_NCCL) {
#ifdef ATOM_HAVE_NCCL
        ctx->ops = &coll_nccl_ops;
#else
        coll_errf(err, "collectives: open: the NCCL backend is not compiled into this build");
        goto fail;
#endif
    } else {
        coll_errf(err, "collectives: open: unknown backend %d", (int)ctx->cfg.backend);
        goto fail;
    }
    MPI_Query_thread(&thread_level);
    if (ctx->cfg.progress == COLL_PROGRESS_THREAD && thread_level < MPI_THREAD_MULTIPLE) {
        coll_errf(err, "collectives: open: a progress thread needs MPI_THREAD_MULTIPLE "
                       "(initialise MPI with MPI_Init_thread)");
        goto fail;
    }

    MPI_Comm world = MPI_COMM_WORLD;
    if (open_groups(ctx, world, err) != 0)
        goto fail;
    ctx->hosts = calloc((size_t)ctx->world_size, sizeof *ctx->hosts);
    if (!ctx->hosts) {
        coll_errf(err, "collectives: open: out of memory");
        goto fail;
    }
    int len = 0, rc;
    MPI_Get_processor_name(ctx->hosts[ctx->world_rank], &len);
    rc = MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, ctx->hosts, MPI_MAX_PROCESSOR_NAME,
                       MPI_CHAR, ctx->groups[COLL_WORLD].comm);
    if (rc != MPI_SUCCESS) {
        mpi_fail(err, ctx->world_rank, "MPI_Allgather (host names)", rc);
        goto fail;
    }
    if (open_counts_window(ctx, ctx->groups[COLL_WORLD].comm, err) != 0)
        goto fail;
    for (int id = 0; id < COLL_NGROUPS; id++) {
        if (ctx->ops->group_open(&ctx->groups[id], err) != 0)
            goto fail;
    }
    /* Every slot is zero before anyone can read it. */
    if ((rc = MPI_Barrier(ctx->groups[COLL_WORLD].comm)) != MPI_SUCCESS) {
        mpi_fail(err, ctx->world_rank, "MPI_Barrier", rc);
        goto fail;
    }
    if (ctx->cfg.backend == COLL_BACKEND_MPI && ctx->cfg.progress == COLL_PROGRESS_THREAD &&
        coll_progress_thread_start(ctx, err) != 0)
        goto fail;
    *out = ctx;
    return 0;
fail:
    close_ctx(ctx);
    return -1;
}

void coll_close(coll_ctx *ctx)
{
    if (ctx)
        close_ctx(ctx);
}

coll_group *coll_group_of(coll_ctx *ctx, coll_group_id id)
{
    if (!ctx || id < 0 || id >= COLL_NGROUPS)
        return NULL;
    return &ctx->groups[id];
}

int coll_group_size(const coll_group *g) { return g->size; }
int coll_group_rank(const coll_group *g) { return g->rank; }
const char *coll_group_name(const coll_group *g) { return group_names[g->id]; }

int64_t coll_group_entered(const coll_group *g)
{
    return __atomic_load_n(&g->entered, __ATOMIC_RELAXED);
}

void coll_counts(const coll_ctx *ctx, int64_t out[COLL_NGROUPS])
{
    for (int id = 0; id < COLL_NGROUPS; id++)
        out[id] = coll_group_entered(&ctx->groups[id]);
}

int64_t coll_enter(coll_group *g)
{
    int64_t n = __atomic_add_fetch(&g->entered, 1, __ATOMIC_RELAXED);
    /* In MPI's unified memory model (shared memory, most networks) a plain atomic store is what
     * a remote MPI_Get reads; in the separate model the public copy needs a sync. */
    __atomic_store_n(&g->ctx->counts[g->id], n, __ATOMIC_RELEASE);
    if (g->ctx->counts_separate)
        MPI_Win_sync(g->ctx->counts_win);
    return n;
}
