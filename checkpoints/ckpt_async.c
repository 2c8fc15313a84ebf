/* checkpoints/ckpt_async.c: asynchronous save.
 *
 * The caller's thread only copies the floats this rank writes (its piece of each tensor, about
 * 1/replicas of its shard) into a snapshot buffer and hands it to a background thread, which
 * writes the file and commits it while training goes on. That thread is the only one of the
 * process inside HDF5 while a save is in flight (Debian's HDF5 is not thread-safe), and it
 * talks MPI only on its own duplicate of the communicator, so it never matches the training
 * thread's messages. One save at most is in flight; the snapshot buffer is allocated once.
 *
 * The caller's thread also checksums what it copies, chunk by chunk while the chunk is in
 * cache, and keeps the plan (who writes what, where in the buffer) from save to save: measured
 * on gpt-tiny at DP 2, the writer's own CRC pass was 43% of its CPU time on cores busy
 * training, and the plan's collectives made the ranks wait for each other inside the step.
 */
#include "checkpoints/ckpt_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SNAPSHOT_ALIGN (2u << 20) /* a huge page */

struct atom_ckpt_async {
    atom_ckpt_group user;  /* the caller's communicator: used on the caller's thread only */
    MPI_Comm comm;         /* the background thread's duplicate */
    size_t max_bytes;
    float *buf;            /* the snapshot */
    size_t buf_bytes;
    /* the plan, kept while the tensors stay the same (plan_holds) */
    ckpt_piece *pieces;
    char **names;              /* copies: the caller's tensor names need not outlive start */
    atom_ckpt_tensor *planned; /* the shapes and selections planned for (no floats) */
    int npieces;
    bool place;                /* pieces placed page-aligned for O_DIRECT in buf */
    atom_ckpt_meta meta;   /* spec_json owned */
    char dir[4096];
    int keep;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool job;              /* a snapshot is ready for the thread */
    bool rehearse;         /* the job is prepare's rehearsal (ckpt_rehearse), not a save */
    bool busy;             /* a save is in flight (job given, not finished) */
    bool stop;
    bool unreported;       /* the last save's status has not been returned by poll/wait */
    int status;
    atom_ckpt_err err;
    double writer_cpu_s;   /* the thread's CPU time over all saves */
};

static double thread_cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_THREAD, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

/* The writer yields the CPU to training: on Linux a thread has its own nice value and its own
 * scheduling policy. ATOM_CKPT_WRITER_NICE: a nice value (0: training's priority; default 10),
 * or "idle" for SCHED_IDLE (the thread runs only on a core nothing else wants). */
static void lower_priority(void) {
    const char *env = getenv("ATOM_CKPT_WRITER_NICE");
    if (env && strcmp(env, "idle") == 0) {
        struct sched_param none = {0};
        pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
        return;
    }
    env = ckpt_env_choice("ATOM_CKPT_WRITER_NICE", NULL, "10");
    int nice_value = env ? atoi(env) : 10;
    if (nice_value > 0) {
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice_value);
    }
}

static void *writer_thread(void *arg) {
    atom_ckpt_async *a = arg;
    /* named for top -H, ps -L and perf: the thread that writes checkpoints */
    pthread_setname_np(pthread_self(), "atom-ckpt");
    lower_priority();
    for (;;) {
        pthread_mutex_lock(&a->mu);
        while (!a->job && !a->stop) {
            pthread_cond_wait(&a->cv, &a->mu);
        }
        if (!a->job) {
            pthread_mutex_unlock(&a->mu);
            return NULL;
        }
        a->job = false;
        pthread_mutex_unlock(&a->mu);
        if (a->rehearse) {
            int nranks;
            MPI_Comm_size(a->comm, &nranks);
            ckpt_rehearse(a->pieces, a->npieces, nranks, &a->meta);
            /* and the first nonblocking collectives on the thread's communicator */
            atom_ckpt_err ignored;
            ckpt_agree(a->comm, 0, &ignored);
            ckpt_meet(a->comm);
            pthread_mutex_lock(&a->mu);
            a->rehearse = false;
            a->busy = false;
            pthread_cond_broadcast(&a->cv);
            pthread_mutex_unlock(&a->mu);
            continue;
        }
        double cpu0 = thread_cpu_s();

        atom_ckpt_err e = {""};
        char path[4096];
        ckpt_file_name(path, sizeof path, a->dir, a->meta.step, true);
        /* the folder again (a mkdir that finds it): someone may have removed it since start */
        int rc = ckpt_ensure_dir(a->dir, a->comm, &e);
        rc = rc == 0 ? ckpt_write_file(path, a->comm, a->pieces, a->npieces, &a->meta, &e) : rc;
        if (rc == 0) {
            rc = atom_ckpt_commit(a->dir, a->meta.step, a->comm, a->keep, &e);
        }

        double cpu = thread_cpu_s() - cpu0;
        pthread_mutex_lock(&a->mu);
        a->writer_cpu_s += cpu;
        a->status = rc;
        a->err = e;
        a->busy = false;
        a->unreported = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
}

int atom_ckpt_async_create(atom_ckpt_async **out, atom_ckpt_group group, size_t max_bytes,
                           atom_ckpt_err *err) {
    *out = NULL;
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_MULTIPLE) {
        /* the writer thread and training both call MPI: anything less is undefined */
        return ckpt_errf(err, "async checkpoints need MPI initialised with MPI_THREAD_MULTIPLE");
    }
    atom_ckpt_async *a = calloc(1, sizeof *a);
    if (!a) {
        return ckpt_errf(err, "out of memory");
    }
    a->user = group;
    a->max_bytes = max_bytes;
    if (MPI_Comm_dup(group.comm, &a->comm) != MPI_SUCCESS) {
        free(a);
        return ckpt_errf(err, "MPI_Comm_dup failed");
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    int rc = pthread_create(&a->thread, NULL, writer_thread, a) == 0
                 ? 0
                 : ckpt_errf(err, "cannot start the checkpoint writer thread");
    if (ckpt_agree(group.comm, rc, err) != 0) {
        if (rc == 0) {
            a->stop = true;
            pthread_cond_signal(&a->cv);
            pthread_join(a->thread, NULL);
        }
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        MPI_Comm_free(&a->comm);
        free(a);
        return -1;
    }
    *out = a;
    return 0;
}

/* Drops the plan: the next start (or prepare) makes a new one. */
static void forget_plan(atom_ckpt_async *a) {
    for (int i = 0; i < a->npieces && a->names; i++) {
        free(a->names[i]);
    }
    free(a->names);
    free(a->planned);
    a->names = NULL;
    a->planned = NULL;
    a->npieces = 0;
    a->dir[0] = '\0';
}

/* True when this rank's tensors are the ones the plan was made for: the names, shapes and
 * selections decide the plan (and the snapshot's layout); where the floats are does not. */
static bool plan_holds(const atom_ckpt_async *a, const atom_ckpt_tensor *t, int n) {
    if (!a->planned || n != a->npieces) {
        return false;
    }
    for (int i = 0; i < n; i++) {
        const atom_ckpt_tensor *was = &a->planned[i];
        if (!t[i].param || !t[i].adam_m || !t[i].adam_v || !t[i].name ||
            strcmp(t[i].name, was->name) != 0 || t[i].ndims != was->ndims) {
            return false;
        }
        for (int d = 0; d < t[i].ndims; d++) {
            const atom_ckpt_dimsel *x = &t[i].sel[d], *y = &was->sel[d];
            if (t[i].dims[d] != was->dims[d] || x->start != y->start || x->stride != y->stride ||
                x->count != y->count || x->block != y->block) {
                return false;
            }
        }
    }
    return true;
}

/* Plans the pieces of tensors, checks the bound, and allocates the snapshot buffer with every
 * page touched (collective). Done once while the tensors stay the same: the plan's collectives
 * and, on this VM, faulting in fresh pages (the first gpt-tiny save's copy took 107 ms instead
 * of 3 ms) then happen at prepare, before training, instead of inside a step. */
static int make_plan(atom_ckpt_async *a, const atom_ckpt_tensor *tensors, int n,
                     atom_ckpt_err *err) {
    MPI_Comm comm = a->user.comm;
    forget_plan(a);
    size_t slots = (size_t)(n > 0 ? n : 1);
    ckpt_piece *pieces = realloc(a->pieces, sizeof *pieces * slots);
    if (pieces) {
        a->pieces = pieces;
    }
    a->names = calloc(slots, sizeof(char *));
    a->planned = calloc(slots, sizeof *a->planned);
    int rc = pieces && a->names && a->planned ? 0 : ckpt_errf(err, "out of memory");
    if (ckpt_agree(comm, rc, err) != 0 || ckpt_plan(comm, tensors, n, a->pieces, err) != 0) {
        forget_plan(a);
        return -1;
    }
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        need += sizeof(float) * CKPT_KINDS * (size_t)a->pieces[i].elems;
        if (!tensors[i].param || !tensors[i].adam_m || !tensors[i].adam_v) {
            rc = ckpt_errf(err, "tensor %s: param, adam_m and adam_v must all be given",
                           tensors[i].name);
        }
        a->names[i] = strdup(tensors[i].name);
        if (rc == 0 && !a->names[i]) {
            rc = ckpt_errf(err, "out of memory");
        }
        a->planned[i] = tensors[i];
        a->planned[i].name = a->names[i];
        a->pieces[i].name = a->names[i] ? a->names[i] : "?";
        a->planned[i].param = a->planned[i].adam_m = a->planned[i].adam_v = NULL;
    }
    a->npieces = n; /* names[] to free from here on */
    if (rc == 0 && need > a->max_bytes) {
        rc = ckpt_errf(err, "async checkpoint snapshot needs %zu bytes on this rank, more than its "
                       "bound of %zu", need, a->max_bytes);
    }
    /* Placed for O_DIRECT (each piece page-aligned where the file is: no bounce copy in the
     * writer) when the bound leaves room for the padding, else packed. */
    size_t padded = need + CKPT_DIRECT_PAD * (CKPT_KINDS * (size_t)n + 1);
    a->place = padded <= a->max_bytes;
    size_t want = a->place ? padded : need;
    if (rc == 0 && want > a->buf_bytes) {
        void *grown = NULL;
        free(a->buf); /* the old snapshot is written already: nothing to keep */
        a->buf = NULL;
        a->buf_bytes = 0;
        if (posix_memalign(&grown, SNAPSHOT_ALIGN, want) != 0) {
            rc = ckpt_errf(err, "out of memory for a %zu-byte snapshot", want);
        } else {
            a->buf = grown;
            a->buf_bytes = want;
            /* Huge pages where the kernel gives them (THP "madvise", Debian's default): fewer
             * faults now, and the copy's TLB misses and the O_DIRECT writes' page pinning drop
             * (gpt-tiny at DP 2: snapshot 2.9-4.4 ms against 3.2-5.6 ms with 4 KiB pages,
             * writer CPU per save down about 1 ms, measured in alternating runs) */
            madvise(a->buf, want, MADV_HUGEPAGE);
            memset(a->buf, 0, want); /* every page faulted in now */
        }
    }
    if (ckpt_agree(comm, rc, err) != 0) {
        forget_plan(a);
        return -1;
    }
    return 0;
}

/* Plans (when the tensors or the folder changed; collective) and copies this rank's pieces with
 * their checksums into the snapshot. The thread is idle when this runs. With the plan kept, the
 * ranks meet once, in one MPI_Allreduce of whether it still holds everywhere. */
static int snapshot(atom_ckpt_async *a, const char *dir, const atom_ckpt_tensor *tensors, int n,
                    const atom_ckpt_meta *meta, int keep, atom_ckpt_err *err) {
    MPI_Comm comm = a->user.comm;
    atom_ckpt_meta_free(&a->meta);
    a->meta = *meta;
    a->meta.spec_json = meta->spec_json ? strdup(meta->spec_json) : NULL;
    bool copied = !meta->spec_json || a->meta.spec_json;
    int holds = copied && plan_holds(a, tensors, n) && strcmp(dir, a->dir) == 0;
    MPI_Allreduce(MPI_IN_PLACE, &holds, 1, MPI_INT, MPI_MIN, comm);
    if (!holds) {
        int rc = copied ? 0 : ckpt_errf(err, "out of memory");
        /* The folder is created here, on the caller's communicator, so the thread only writes. */
        if (ckpt_agree(comm, rc, err) != 0 || ckpt_ensure_dir(dir, comm, err) != 0 ||
            make_plan(a, tensors, n, err) != 0) {
            return -1;
        }
        snprintf(a->dir, sizeof a->dir, "%s", dir);
    }
    size_t at = 0; /* bytes into the buffer */
    for (int i = 0; i < n; i++) {
        ckpt_piece *p = &a->pieces[i];
        const float *src[CKPT_KINDS] = {tensors[i].param, tensors[i].adam_m, tensors[i].adam_v};
        for (int k = 0; k < CKPT_KINDS; k++) {
            if (a->place) {
                at = ckpt_direct_place(p, at);
            }
            float *next = (float *)((char *)a->buf + at);
            p->crc[k] = p->elems > 0 ? ckpt_piece_gather_crc(p, src[k], next) : 0;
            p->data[k] = next;
            at += sizeof(float) * (size_t)p->elems;
        }
        p->crc_ready = true;
    }
    ckpt_meta_defaults(&a->meta, a->user);
    a->keep = keep;
    return 0;
}

int atom_ckpt_async_prepare(atom_ckpt_async *a, const char *dir, const atom_ckpt_tensor *tensors,
                            int ntensors, atom_ckpt_err *err) {
    pthread_mutex_lock(&a->mu);
    while (a->busy) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    if (ckpt_ensure_dir(dir, a->user.comm, err) != 0 ||
        make_plan(a, tensors, ntensors, err) != 0) {
        return -1;
    }
    snprintf(a->dir, sizeof a->dir, "%s", dir);
    /* The thread builds a checkpoint's structure once in memory, now rather than in the first
     * save: that save's writer took 17 ms of CPU against 6-8 ms later (gpt-tiny, measured). */
    pthread_mutex_lock(&a->mu);
    a->rehearse = true;
    a->job = true;
    a->busy = true;
    pthread_cond_signal(&a->cv);
    while (a->busy) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int atom_ckpt_async_start(atom_ckpt_async *a, const char *dir, const atom_ckpt_tensor *tensors,
                          int ntensors, const atom_ckpt_meta *meta, int keep, atom_ckpt_err *err) {
    pthread_mutex_lock(&a->mu);
    while (a->busy) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    /* The thread agreed its status across ranks, so every rank takes the same branch. */
    bool failed = a->unreported && a->status != 0;
    atom_ckpt_err previous = a->err;
    a->unreported = false;
    pthread_mutex_unlock(&a->mu);
    if (failed) {
        return ckpt_errf(err, "the previous checkpoint save failed: %s", previous.msg);
    }
    if (snapshot(a, dir, tensors, ntensors, meta, keep, err) != 0) {
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    a->job = true;
    a->busy = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static int report(atom_ckpt_async *a, atom_ckpt_err *err) {
    int rc = 0;
    if (a->unreported) {
        rc = a->status;
        if (rc != 0 && err) {
            *err = a->err;
        }
        a->unreported = false;
    }
    return rc;
}

int atom_ckpt_async_poll(atom_ckpt_async *a, bool *done, atom_ckpt_err *err) {
    pthread_mutex_lock(&a->mu);
    *done = !a->busy;
    int rc = *done ? report(a, err) : 0;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int atom_ckpt_async_wait(atom_ckpt_async *a, atom_ckpt_err *err) {
    pthread_mutex_lock(&a->mu);
    while (a->busy) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    int rc = report(a, err);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

size_t atom_ckpt_async_bytes(const atom_ckpt_async *a) { return a ? a->buf_bytes : 0; }

double atom_ckpt_async_writer_cpu_s(atom_ckpt_async *a) {
    pthread_mutex_lock(&a->mu);
    double s = a->writer_cpu_s;
    pthread_mutex_unlock(&a->mu);
    return s;
}

void atom_ckpt_async_destroy(atom_ckpt_async *a) {
    if (!a) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    while (a->busy) {
        pthread_cond_wait(&a->cv, &a->mu);
    }
    a->stop = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    MPI_Comm_free(&a->comm);
    forget_plan(a);
    atom_ckpt_meta_free(&a->meta);
    free(a->pieces);
    free(a->buf);
    free(a);
}
