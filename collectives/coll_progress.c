/* collectives/coll_progress.c: an optional thread that moves pending MPI operations while the
 * worker computes (Open MPI 4.1 has no asynchronous progress of its own). It tests the pending
 * requests, then sleeps: a thread that spins would take a core from compute when ranks share
 * cores. */
#include <stdio.h>
#include <time.h>

#include "collectives/coll_internal.h"

static void *progress_main(void *arg)
{
    coll_ctx *ctx = arg;
    struct timespec pause = {0, (long)ctx->cfg.progress_sleep_us * 1000L};
    while (!__atomic_load_n(&ctx->progress_stop, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&ctx->pending, __ATOMIC_RELAXED)) {
            /* A failed request keeps its error; the waiter's next test reports it. */
            pthread_mutex_lock(&ctx->lock);
            (void)coll_progress_locked(ctx, NULL);
            pthread_mutex_unlock(&ctx->lock);
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int coll_progress_thread_start(coll_ctx *ctx, coll_err *err)
{
    ctx->progress_stop = 0;
    if (pthread_create(&ctx->progress_thread, NULL, progress_main, ctx) != 0)
        return coll_errf(err, "collectives: open on world rank %d: cannot start the progress thread",
                         ctx->world_rank);
    ctx->progress_running = true;
    return 0;
}

void coll_progress_thread_stop(coll_ctx *ctx)
{
    __atomic_store_n(&ctx->progress_stop, 1, __ATOMIC_RELEASE);
    pthread_join(ctx->progress_thread, NULL);
    ctx->progress_running = false;
}
