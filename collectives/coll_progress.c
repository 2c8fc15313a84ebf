/* collectives/coll_progress.c: an optional thread that moves pending MPI operations while the
 * worker computes (Open MPI 4.1 has no asynchronous progress of its own). While requests are
 * pending it tests them, then sleeps progress_sleep_us (longer while nothing moves): a thread
 * that spins would take a core from compute when ranks share cores. With nothing pending it
 * waits on a condition variable. */
#include <stdio.h>
#include <time.h>

#include "collectives/coll_internal.h"

static void *progress_main(void *arg)
{
    coll_ctx *ctx = arg;
    /* While operations move, test every progress_sleep_us; while none does (the peers are
     * busy or descheduled), back off up to 16 times that, so waiting costs fewer wake-ups. */
    long base_ns = (long)ctx->cfg.progress_sleep_us * 1000L, pause_ns = base_ns;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        /* Idle costs nothing: the thread sleeps until a request is tracked. */
        while (!ctx->pending && !ctx->progress_stop) {
            pthread_cond_wait(&ctx->work, &ctx->lock);
            pause_ns = base_ns;
        }
        if (ctx->progress_stop)
            break;
        unsigned long before = __atomic_load_n(&ctx->moves, __ATOMIC_RELAXED);
        /* A failed request keeps its error; the waiter's next test reports it. */
        (void)coll_progress_locked(ctx, NULL);
        if (__atomic_load_n(&ctx->moves, __ATOMIC_RELAXED) != before)
            pause_ns = base_ns;
        else if (pause_ns < 16 * base_ns)
            pause_ns *= 2;
        pthread_mutex_unlock(&ctx->lock);
        struct timespec pause = {pause_ns / 1000000000L, pause_ns % 1000000000L};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&ctx->lock);
    }
    pthread_mutex_unlock(&ctx->lock);
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
    pthread_mutex_lock(&ctx->lock);
    ctx->progress_stop = 1;
    pthread_cond_signal(&ctx->work);
    pthread_mutex_unlock(&ctx->lock);
    pthread_join(ctx->progress_thread, NULL);
    ctx->progress_running = false;
}
