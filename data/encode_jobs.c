/* data/encode_jobs.c: see encode_jobs.h. */
#include "data/encode_jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int encode_pool_open(encode_pool *pool, const atom_tokenizer *tok, int threads, atom_err *err)
{
    pool->tok = tok;
    pool->threads = threads < 1 ? 1 : threads;
    pool->encoders = calloc((size_t)pool->threads, sizeof *pool->encoders);
    if (!pool->encoders)
        return atom_errf(err, "out of memory");
    for (int i = 0; i < pool->threads; i++)
        if (!(pool->encoders[i] = atom_encoder_new(tok))) {
            encode_pool_close(pool);
            return atom_errf(err, "out of memory for %d encoders", pool->threads);
        }
    return 0;
}

void encode_pool_close(encode_pool *pool)
{
    if (pool->encoders)
        for (int i = 0; i < pool->threads; i++)
            atom_encoder_free(pool->encoders[i]);
    free(pool->encoders);
    pool->encoders = NULL;
}

static int read_job(encode_job *job, unsigned char **buf, size_t *cap)
{
    if (job->len > *cap) {
        unsigned char *b = realloc(*buf, job->len);
        if (!b)
            return atom_errf(&job->err, "out of memory for %llu bytes",
                             (unsigned long long)job->len);
        *buf = b;
        *cap = job->len;
    }
    int fd = open(job->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return atom_errf(&job->err, "%s: %s", job->path, strerror(errno));
    uint64_t got = 0;
    while (got < job->len) {
        ssize_t r = pread(fd, *buf + got, job->len - got, (off_t)(job->off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            close(fd);
            return atom_errf(&job->err, "%s: %s at byte %llu", job->path,
                             r < 0 ? strerror(e) : "the file became shorter while read",
                             (unsigned long long)(job->off + got));
        }
        got += (uint64_t)r;
    }
    close(fd);
    return 0;
}

typedef struct worker_arg {
    encode_pool *pool;
    atom_encoder *enc;
    encode_job *jobs;
    size_t n;
    atomic_size_t *next;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    unsigned char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        size_t i = atomic_fetch_add(a->next, 1);
        if (i >= a->n)
            break;
        encode_job *job = &a->jobs[i];
        const unsigned char *text = job->mem ? job->mem + job->off : NULL;
        if (!text) {
            if (read_job(job, &buf, &cap) != 0) {
                job->failed = 1;
                continue;
            }
            text = buf;
        }
        if (atom_encode(a->enc, text, job->len, &job->out, &job->err) != 0)
            job->failed = 1;
    }
    free(buf);
    return NULL;
}

int encode_pool_run(encode_pool *pool, encode_job *jobs, size_t n, atom_err *err)
{
    atomic_size_t next = 0;
    int threads = (size_t)pool->threads < n ? pool->threads : (int)n;
    pthread_t tid[threads > 0 ? threads : 1];
    worker_arg args[threads > 0 ? threads : 1];
    int started = 0;
    for (int t = 0; t < threads; t++) {
        args[t] = (worker_arg){.pool = pool, .enc = pool->encoders[t], .jobs = jobs, .n = n,
                               .next = &next};
        if (t == 0)
            continue; /* the calling thread is worker 0 */
        if (pthread_create(&tid[t], NULL, worker, &args[t]) != 0)
            break; /* the threads started (and this one) take every job anyway */
        started = t;
    }
    if (threads > 0)
        worker(&args[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(tid[t], NULL);
    for (size_t i = 0; i < n; i++)
        if (jobs[i].failed) {
            *err = jobs[i].err;
            return -1;
        }
    return 0;
}

int encode_jobs_cut(const unsigned char *text, uint64_t len, uint64_t job_bytes,
                    const char *path, int doc, encode_job **jobs, size_t *n, size_t *cap,
                    atom_err *err)
{
    uint64_t at = 0;
    do {
        uint64_t end = len - at > job_bytes ? atom_text_cut(text, len, at + job_bytes) : len;
        if (*n == *cap) {
            size_t c = *cap ? 2 * *cap : 256;
            encode_job *j = realloc(*jobs, c * sizeof *j);
            if (!j)
                return atom_errf(err, "out of memory for %zu jobs", c);
            *jobs = j;
            *cap = c;
        }
        (*jobs)[(*n)++] = (encode_job){.path = path, .mem = path ? NULL : text, .off = at,
                                       .len = end - at, .doc = doc, .doc_end = end == len};
        at = end;
    } while (at < len);
    return 0;
}
