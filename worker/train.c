/* worker/train.c: the training loop of one rank: gradient accumulation over micro-batches,
 * data-parallel gradient averaging, clipping, AdamW, the learning-rate schedule, progress lines
 * and the JSON-lines log, heartbeats, checkpoints and the SIGUSR1/SIGTERM stop (train.h). */
#include "worker/train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <mpi.h>

#include "checkpoints/checkpoints.h"
#include "collectives/collectives.h"
#include "worker/ckpt_tensors.h"
#include "worker/data.h"
#include "worker/init_source.h"
#include "worker/infer.h"
#include "worker/model.h"

/* Heartbeats go out at most this often (and on the first and last step), so a fast loop does
 * not flood atomd or the run folder; hang detection works in tens of seconds. */
#define HEARTBEAT_MIN_INTERVAL_S 1.0
/* Over TCP atomd's loop pays a MUNGE decode per heartbeat (tens of microseconds, bench/sched):
 * 10,000 remote ranks at 1/s would keep it busy. Ranks other than 0 (whose heartbeat carries the
 * progress users watch) send over TCP at most every heartbeat_timeout / 10, within 1 to 10 s,
 * which still shows a hang well within the timeout. */
#define HEARTBEAT_TCP_MAX_INTERVAL_S 10.0

atom_lr_cfg atom_lr_cfg_of(const atom_spec *spec)
{
    atom_lr_cfg c = {spec->training.lr_schedule, spec->training.lr, spec->training.min_lr,
                     spec->training.warmup, spec->training.lr_decay_steps,
                     spec->training.cooldown_steps, spec->training.cooldown_shape};
    if (c.horizon <= 0)
        c.horizon = spec->training.steps;
    if (c.cooldown <= 0)
        c.cooldown = c.horizon / 5; /* the fifth Hagele et al. (2024) found to match cosine */
    return c;
}

double atom_lr_at(const atom_lr_cfg *c, int64_t step)
{
    if (step < c->warmup)
        return c->lr * (double)(step + 1) / (double)c->warmup;
    if (c->schedule == ATOM_LR_CONSTANT)
        return c->lr;
    double progress, factor;
    if (c->schedule == ATOM_LR_WSD) {
        if (c->cooldown <= 0)
            return c->lr;
        /* the step before the cooldown is the last at lr; step horizon-1 the first at min_lr */
        progress = (double)(step - (c->horizon - c->cooldown - 1)) / (double)c->cooldown;
    } else {
        int64_t decay_steps = c->horizon - 1 - c->warmup;
        /* A run with no step after warm-up but the last has nothing to decay over. */
        progress = decay_steps > 0 ? (double)(step - c->warmup) / (double)decay_steps : 0.0;
    }
    progress = progress < 0.0 ? 0.0 : progress > 1.0 ? 1.0 : progress;
    if (c->schedule == ATOM_LR_WSD)
        factor = c->cooldown_shape == ATOM_COOLDOWN_LINEAR ? 1.0 - progress : 1.0 - sqrt(progress);
    else if (c->schedule == ATOM_LR_LINEAR)
        factor = 1.0 - progress;
    else
        factor = 0.5 * (1.0 + cos(M_PI * progress));
    return c->min_lr + factor * (c->lr - c->min_lr);
}

/* ------------------------------------------------------------------------------------------ */
/* Heartbeats: a JSON line per message, appended to this rank's file in the run folder and sent,
 * without blocking, to atomd: to its Unix socket from a rank on atomd's own node, over TCP with
 * a MUNGE credential (common's atom_hb_tcp) from a rank on any other node when atomd has a TCP
 * port. Which node is atomd's: the plan's atomd_host, compared with this rank's plan node name
 * (inventory names are host names).                                                          */

typedef struct hb_sender {
    FILE *file;                 /* RUN_DIR/heartbeat.rank-N.jsonl, or NULL */
    struct sockaddr_un addr;
    bool have_addr;
    int fd;                     /* -1: not connected (atomd absent or gone): retried next time */
    int sock_type;              /* SOCK_DGRAM first; SOCK_STREAM if atomd listens on a stream */
    bool use_tcp;               /* this rank is on another node than atomd: tcp, not addr */
    atom_hb_tcp *tcp;           /* NULL: the address did not resolve (logged) */
    double last_sent;           /* monotonic seconds; -inf before the first */
    double last_sent_tcp;       /* the same for what went over TCP */
    double tcp_interval;        /* seconds between heartbeats over TCP */
    atom_heartbeat hb;          /* identity fields filled once */
} hb_sender;

static void hb_open(hb_sender *s, const atom_plan *plan, int rank, const char *host)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->sock_type = SOCK_DGRAM;
    s->last_sent = s->last_sent_tcp = -INFINITY;
    s->tcp_interval = HEARTBEAT_MIN_INTERVAL_S;
    if (rank != 0) {
        double t = (double)plan->spec.restart.heartbeat_timeout / 10.0;
        s->tcp_interval = t < HEARTBEAT_MIN_INTERVAL_S       ? HEARTBEAT_MIN_INTERVAL_S
                          : t > HEARTBEAT_TCP_MAX_INTERVAL_S ? HEARTBEAT_TCP_MAX_INTERVAL_S
                                                             : t;
    }
    snprintf(s->hb.job_id, sizeof s->hb.job_id, "%s", plan->job_id);
    s->hb.attempt = plan->attempt;
    s->hb.rank = rank;
    snprintf(s->hb.host, sizeof s->hb.host, "%s", host);
    s->hb.pid = (int)getpid();
    s->hb.last_checkpoint_step = -1;
    if (plan->run_dir[0]) {
        char path[ATOM_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/heartbeat.rank-%d.jsonl", plan->run_dir, rank);
        s->file = fopen(path, "a");
        if (!s->file)
            atom_log(ATOM_LOG_WARN, "rank %d: cannot open %s: %s (heartbeats not written)", rank,
                     path, strerror(errno));
    }
    const char *node = plan->nodes[plan->ranks[rank].node].name;
    if (plan->heartbeat_tcp[0] && plan->atomd_host[0] && strcmp(node, plan->atomd_host) != 0) {
        s->use_tcp = true;
        s->tcp = atom_hb_tcp_open(plan->heartbeat_tcp, plan->munge_socket);
    } else if (plan->heartbeat_addr[0]) {
        if (strlen(plan->heartbeat_addr) >= sizeof s->addr.sun_path) {
            atom_log(ATOM_LOG_WARN, "rank %d: heartbeat socket path too long: %s", rank,
                     plan->heartbeat_addr);
        } else {
            s->addr.sun_family = AF_UNIX;
            memcpy(s->addr.sun_path, plan->heartbeat_addr, strlen(plan->heartbeat_addr) + 1);
            s->have_addr = true;
        }
    }
}

/* Connects if not connected; false when atomd is not there (yet). Never blocks. */
static bool hb_connect(hb_sender *s)
{
    if (s->fd >= 0)
        return true;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = socket(AF_UNIX, s->sock_type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return false;
        if (connect(fd, (const struct sockaddr *)&s->addr, sizeof s->addr) == 0) {
            s->fd = fd;
            return true;
        }
        int e = errno;
        close(fd);
        /* A datagram socket connected to a stream listener fails with EPROTOTYPE: switch. */
        if (e == EPROTOTYPE && s->sock_type == SOCK_DGRAM) {
            s->sock_type = SOCK_STREAM;
            continue;
        }
        return false;
    }
    return false;
}

/* line ends in '\n': a stream needs it to frame messages, a datagram is one already. */
static void hb_send_line(hb_sender *s, const char *line, size_t len)
{
    if (!s->have_addr || !hb_connect(s))
        return;
    if (s->sock_type == SOCK_DGRAM)
        len--;
    ssize_t n = send(s->fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return; /* atomd is busy: drop this one rather than stall training */
    /* atomd went away, or a stream took half a line: start afresh next time so every line
     * atomd reads is whole. */
    close(s->fd);
    s->fd = -1;
}

static void hb_send(hb_sender *s, int64_t step, const coll_ctx *coll, bool force)
{
    double now = atom_monotonic();
    if (!force && now - s->last_sent < HEARTBEAT_MIN_INTERVAL_S)
        return;
    s->last_sent = now;
    s->hb.step = step;
    int64_t counts[COLL_NGROUPS];
    coll_counts(coll, counts);
    /* collectives' group ids are common's heartbeat groups: world, tensor, data. */
    for (int g = 0; g < ATOM_HB_GROUPS && g < COLL_NGROUPS; g++)
        s->hb.collectives[g] = counts[g];
    s->hb.time = atom_now();
    char *json = atom_heartbeat_to_json(&s->hb);
    if (!json)
        return;
    size_t len = strlen(json);
    if (s->file) {
        fprintf(s->file, "%s\n", json);
        fflush(s->file);
    }
    if (s->use_tcp) {
        if (force || now - s->last_sent_tcp >= s->tcp_interval) {
            s->last_sent_tcp = now;
            atom_hb_tcp_send(s->tcp, json);
        }
        free(json);
        return;
    }
    char *line = malloc(len + 2);
    if (line) {
        memcpy(line, json, len);
        line[len] = '\n';
        line[len + 1] = '\0';
        hb_send_line(s, line, len + 1);
        free(line);
    }
    free(json);
}

static void hb_close(hb_sender *s)
{
    if (s->file)
        fclose(s->file);
    if (s->fd >= 0)
        close(s->fd);
    atom_hb_tcp_close(s->tcp);
    s->tcp = NULL;
    s->file = NULL;
    s->fd = -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints: the model's parameter table as checkpoint tensors, save (sync or async) and
 * restore.                                                                                     */

typedef struct ckpt_io {
    const atom_plan *plan;
    atom_model *model;
    atom_ckpt_group group;
    atom_ckpt_tensor tensors[ATOM_N_PARAMS];
    float *host[3];          /* params, adam_m, adam_v in host memory (staging on a device) */
    bool staged;             /* host[] are copies that must be downloaded / uploaded */
    atom_ckpt_async *async;  /* NULL: synchronous saves */
    int64_t pending_step;    /* an async save in flight (-1: none) */
    int64_t last_step;       /* newest checkpoint written (or restored); -1: none */
    atom_ckpt_restore restore; /* what the restore loaded and skipped */
} ckpt_io;

static const atom_model_buffer ckpt_buffers[3] = {ATOM_BUF_PARAMS, ATOM_BUF_ADAM_M,
                                                  ATOM_BUF_ADAM_V};

static int ckpt_open(ckpt_io *c, const atom_plan *plan, atom_model *model, const atom_backend *be,
                     int rank, atom_err *err)
{
    memset(c, 0, sizeof *c);
    c->plan = plan;
    c->model = model;
    c->pending_step = -1;
    c->last_step = -1;
    c->group.comm = MPI_COMM_WORLD;
    c->group.replica = plan->ranks[rank].dp;
    c->group.replicas = plan->spec.parallelism.data;
    const atom_param_table *table = atom_model_table(model);
    c->staged = be->device_memory;
    for (int b = 0; b < 3; b++) {
        if (c->staged) {
            c->host[b] = malloc((size_t)table->total * sizeof(float));
            if (!c->host[b])
                return atom_errf(err, "rank %d: out of memory for checkpoint staging", rank);
        } else {
            c->host[b] = atom_model_buffer_ptr(model, ckpt_buffers[b]);
        }
    }
    atom_ckpt_tensors_of(table, c->host[0], c->host[1], c->host[2], c->tensors);
    if (plan->spec.checkpoint.dir[0]) {
        /* Rank 0 makes the folder (or checks it is the job owner's alone); the others wait so
         * load_latest finds it on every rank. */
        atom_ckpt_err mk = {""};
        int mk_rc = rank == 0 ? atom_ckpt_prepare_dir(plan->spec.checkpoint.dir, &mk) : 0;
        MPI_Bcast(&mk_rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
        MPI_Bcast(mk.msg, (int)sizeof mk.msg, MPI_CHAR, 0, MPI_COMM_WORLD);
        if (mk_rc)
            return atom_errf(err, "%s", mk.msg);
        if (plan->spec.checkpoint.async) {
            /* the whole shard (a rank writes 1/DP of it), plus room for the snapshot to place
             * its pieces page-aligned for O_DIRECT (checkpoints.h) */
            size_t bytes = 3 * (size_t)table->total * sizeof(float) + (1u << 20);
            atom_ckpt_err cerr;
            if (atom_ckpt_async_create(&c->async, c->group, bytes, &cerr) != 0 ||
                atom_ckpt_async_prepare(c->async, plan->spec.checkpoint.dir, c->tensors,
                                        ATOM_N_PARAMS, &cerr) != 0)
                return atom_errf(err, "rank %d: async checkpoints: %s", rank, cerr.msg);
        }
    }
    return 0;
}

static int ckpt_stage_out(ckpt_io *c, atom_err *err)
{
    for (int b = 0; c->staged && b < 3; b++)
        if (atom_model_download(c->model, ckpt_buffers[b], c->host[b], err) != 0)
            return -1;
    return 0;
}

/* Polls an async save in flight; records it once done. */
static int ckpt_poll(ckpt_io *c, atom_err *err)
{
    if (!c->async || c->pending_step < 0)
        return 0;
    bool done = false;
    atom_ckpt_err cerr;
    int rc = atom_ckpt_async_poll(c->async, &done, &cerr);
    if (!done)
        return 0;
    int64_t step = c->pending_step;
    c->pending_step = -1;
    if (rc != 0)
        return atom_errf(err, "checkpoint of step %lld: %s", (long long)step, cerr.msg);
    c->last_step = step;
    return 0;
}

static int ckpt_wait(ckpt_io *c, atom_err *err)
{
    if (!c->async || c->pending_step < 0)
        return 0;
    atom_ckpt_err cerr;
    int rc = atom_ckpt_async_wait(c->async, &cerr);
    int64_t step = c->pending_step;
    c->pending_step = -1;
    if (rc != 0)
        return atom_errf(err, "checkpoint of step %lld: %s", (long long)step, cerr.msg);
    c->last_step = step;
    return 0;
}

/* Saves the state after `step` optimizer steps. force_sync: wait for it to be committed (a
 * stop, the end of the run). */
static int ckpt_save(ckpt_io *c, int64_t step, bool force_sync, atom_err *err)
{
    const atom_spec *spec = &c->plan->spec;
    if (ckpt_wait(c, err) != 0)
        return -1;
    if (ckpt_stage_out(c, err) != 0)
        return -1;
    atom_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = step;
    meta.tokens_seen = step * spec->training.global_batch * spec->model.context;
    meta.data_position = step * spec->training.global_batch;
    meta.spec_json = atom_spec_to_json(spec);
    meta.tp = spec->parallelism.tensor;
    meta.dp = spec->parallelism.data;
    meta.vocab = spec->model.vocab;
    atom_infer_data_tokenizer(spec, meta.tokenizer, sizeof meta.tokenizer);
    snprintf(meta.writer, sizeof meta.writer, "atom-worker %s job %s attempt %d", "0.1.0",
             c->plan->job_id[0] ? c->plan->job_id : "-", c->plan->attempt);
    atom_ckpt_err cerr;
    int rc;
    if (c->async && !force_sync) {
        rc = atom_ckpt_async_start(c->async, spec->checkpoint.dir, c->tensors, ATOM_N_PARAMS,
                                   &meta, spec->checkpoint.keep, &cerr);
        if (rc == 0)
            c->pending_step = step;
    } else {
        rc = atom_ckpt_save(spec->checkpoint.dir, c->group, c->tensors, ATOM_N_PARAMS, &meta,
                            spec->checkpoint.keep, &cerr);
        if (rc == 0)
            c->last_step = step;
    }
    free(meta.spec_json);
    if (rc != 0)
        return atom_errf(err, "checkpoint of step %lld in %s: %s", (long long)step,
                         spec->checkpoint.dir, cerr.msg);
    return 0;
}

/* Restores the newest committed checkpoint: *step is its step, or 0 when there is none (then
 * the weights are the seeded initial ones). */
static int ckpt_restore(ckpt_io *c, int rank, int64_t *step, atom_err *err)
{
    const atom_spec *spec = &c->plan->spec;
    *step = 0;
    if (!spec->checkpoint.dir[0])
        return 0;
    atom_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    atom_ckpt_err cerr;
    int rc = atom_ckpt_restore_latest(spec->checkpoint.dir, MPI_COMM_WORLD, c->tensors,
                                      ATOM_N_PARAMS, &meta, &c->restore, &cerr);
    const char *loaded = c->restore.path;
    if (rc == 1)
        return 0;
    if (rc != 0)
        return atom_errf(err, "restoring from %s: %s", spec->checkpoint.dir, cerr.msg);
    int bad = meta.vocab != spec->model.vocab || meta.step < 0 || meta.step > spec->training.steps;
    int64_t meta_step = meta.step;
    atom_ckpt_meta_free(&meta);
    if (bad)
        return atom_errf(err, "checkpoint %s does not belong to this job (vocabulary or step)",
                         loaded);
    for (int b = 0; c->staged && b < 3; b++)
        if (atom_model_upload(c->model, ckpt_buffers[b], c->host[b], err) != 0)
            return -1;
    /* One AdamW step per optimizer step: the bias correction continues where it stopped. */
    atom_model_set_adam_steps(c->model, meta_step);
    atom_model_zero_grads(c->model);
    c->last_step = meta_step;
    *step = meta_step;
    /* A fallback past corrupt checkpoints trains their steps again: never silently (rank 0's
     * log here; its heartbeats carry it to `atomctl show` and the metrics). */
    if (rank == 0 && c->restore.skipped > 0)
        atom_log(ATOM_LOG_WARN, "restore skipped %d newer checkpoint%s that failed to load, the "
                 "newest of step %lld (steps %lld-%lld are trained again): %s",
                 c->restore.skipped, c->restore.skipped == 1 ? "" : "s",
                 (long long)c->restore.skipped_step, (long long)meta_step + 1,
                 (long long)c->restore.skipped_step, c->restore.why.msg);
    if (rank == 0)
        atom_log(ATOM_LOG_INFO, "restored %s: continuing after step %lld", loaded,
                 (long long)meta_step);
    return 0;
}

/* With no checkpoint of the job's own restored, the spec's init source (init_source.h): its
 * weights, with or without its AdamW state, and its step when init.resume_step asks. *step is
 * left alone when the spec has none. */
static int ckpt_init_from_source(ckpt_io *c, int rank, int64_t *step, atom_err *err)
{
    const atom_spec *spec = &c->plan->spec;
    if (c->last_step >= 0 || (!spec->init.checkpoint[0] && !spec->init.safetensors[0]))
        return 0;
    atom_init_result res;
    if (atom_init_from_spec(spec, atom_model_table(c->model), c->tensors, MPI_COMM_WORLD, &res,
                            err) != 0)
        return -1;
    const atom_param_table *table = atom_model_table(c->model);
    for (int b = 1; !res.moments && b < 3; b++)
        memset(c->host[b], 0, (size_t)table->total * sizeof(float));
    for (int b = 0; c->staged && b < 3; b++)
        if (atom_model_upload(c->model, ckpt_buffers[b], c->host[b], err) != 0)
            return -1;
    atom_model_set_adam_steps(c->model, res.adam_steps);
    atom_model_zero_grads(c->model);
    *step = res.step;
    if (rank == 0)
        atom_log(ATOM_LOG_INFO, "initialised from %s (%s%s); training starts after step %lld",
                 res.source, res.moments ? "weights and optimizer state" : "weights",
                 spec->init.resume_step ? ", its step" : "", (long long)res.step);
    return 0;
}

static void ckpt_close(ckpt_io *c)
{
    if (c->async)
        atom_ckpt_async_destroy(c->async);
    c->async = NULL;
    for (int b = 0; c->staged && b < 3; b++)
        free(c->host[b]);
    memset(c->host, 0, sizeof c->host);
}

/* ------------------------------------------------------------------------------------------ */
/* Progress: rank 0's line per step on stdout and its JSON line in RUN_DIR/train.jsonl.         */

typedef struct step_report {
    int64_t step, steps;      /* step is 1-based here: steps done after it */
    double loss, lr, grad_norm, tokens_per_s, ms;
    double mfu;               /* < 0: not shown (CPU) */
    double ckpt_writer_cpu_s; /* async checkpoints' writer thread CPU so far; < 0: none */
} step_report;

static void report_step(FILE *progress, FILE *log, const step_report *r)
{
    if (progress) {
        fprintf(progress, "step %lld/%lld | loss %.4f | lr %.3e | grad norm %.4f | %.0f tok/s | "
                          "%.1f ms/step",
                (long long)r->step, (long long)r->steps, r->loss, r->lr, r->grad_norm,
                r->tokens_per_s, r->ms);
        if (r->mfu >= 0)
            fprintf(progress, " | MFU %.1f%%", 100 * r->mfu);
        fputc('\n', progress);
        fflush(progress);
    }
    if (log) {
        fprintf(log, "{\"step\":%lld,\"steps\":%lld,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                     "\"tokens_per_s\":%.6g,\"ms_per_step\":%.6g,\"time\":%.6f",
                (long long)r->step, (long long)r->steps, r->loss, r->lr, r->grad_norm,
                r->tokens_per_s, r->ms, atom_now());
        if (r->mfu >= 0)
            fprintf(log, ",\"mfu\":%.6g", r->mfu);
        if (r->ckpt_writer_cpu_s >= 0)
            fprintf(log, ",\"ckpt_writer_cpu_s\":%.6f", r->ckpt_writer_cpu_s);
        fputs("}\n", log);
        fflush(log);
    }
}

/* Model FLOPs per trained token (forward + backward): 6 per parameter plus attention's
 * 6 L T C (PaLM's appendix B count). Used for MFU on a GPU. */
static double flops_per_token(const atom_model_cfg *cfg)
{
    return 6.0 * (double)atom_model_params(cfg) + 6.0 * cfg->layers * cfg->context * cfg->channels;
}

/* ------------------------------------------------------------------------------------------ */
/* The loop.                                                                                    */

typedef struct trainer {
    const atom_train_opts *opts;
    const atom_plan *plan;
    const atom_spec *spec;
    int rank;
    char host[ATOM_NAME_MAX];
    coll_ctx *coll;
    atom_model *model;
    atom_data data;
    bool data_open;
    ckpt_io ckpt;
    bool ckpt_open;
    hb_sender hb;
    FILE *log;                /* rank 0: RUN_DIR/train.jsonl */
    int *tokens;              /* (micro_batch, T+1) */
} trainer;

static int trainer_open(trainer *t, atom_err *err)
{
    const atom_plan *plan = t->plan;
    const atom_spec *spec = t->spec;
    int world = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &t->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (gethostname(t->host, sizeof t->host) != 0)
        snprintf(t->host, sizeof t->host, "?");
    t->host[sizeof t->host - 1] = '\0';
    if (world != plan->world || plan->world != spec->parallelism.tensor * spec->parallelism.data)
        return atom_errf(err, "rank %d: the plan is for %d ranks (tensor %d x data %d) but "
                              "MPI_COMM_WORLD has %d", t->rank, plan->world,
                         spec->parallelism.tensor, spec->parallelism.data, world);
    if (plan->ranks[t->rank].rank != t->rank)
        return atom_errf(err, "rank %d: the plan's rank table is out of order", t->rank);
    int data = spec->parallelism.data;
    if (spec->training.micro_batch < 1 ||
        spec->training.global_batch % (spec->training.micro_batch * data) != 0)
        return atom_errf(err, "global_batch %d is not a multiple of micro_batch %d x data %d",
                         spec->training.global_batch, spec->training.micro_batch, data);

    coll_config cc;
    memset(&cc, 0, sizeof cc);
    cc.backend = t->opts->backend->device_memory ? COLL_BACKEND_NCCL : COLL_BACKEND_MPI;
    cc.tensor_size = spec->parallelism.tensor;
    cc.hang_action = COLL_HANG_ABORT;
    /* A thread moves the gradient all-reduce while the backward computes (under polling it
     * moved only when the backward marked a bucket ready). Measured at DP 2 on gpt-tiny, 2
     * cores, 3 interleaved pairs at load 1.7: 8748/8810/8909 tokens/s against polling's
     * 8745/8807/8902, the same; kept for larger models, where the all-reduce is longer. */
    cc.progress = COLL_PROGRESS_THREAD;
    cc.cuda_device = 0; /* the launcher leaves only the plan's GPU visible */
    coll_err cerr;
    if (coll_open(&cc, &t->coll, &cerr) != 0)
        return atom_errf(err, "rank %d: collectives: %s", t->rank, cerr.msg);

    atom_model_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.cfg = spec->model;
    mo.max_batch = spec->training.micro_batch;
    mo.backend = t->opts->backend;
    mo.tp_rank = plan->ranks[t->rank].tp;
    mo.tp_size = spec->parallelism.tensor;
    mo.tensor_group = mo.tp_size > 1 ? coll_group_of(t->coll, COLL_TENSOR) : NULL;
    mo.data_group = data > 1 ? coll_group_of(t->coll, COLL_DATA) : NULL;
    mo.precision = spec->training.precision;
    if (atom_model_create(&mo, &t->model, err) != 0)
        return -1;

    if (atom_data_open(&t->data, spec->data.path, spec->data.format, spec->model.vocab,
                       spec->model.context, err) != 0)
        return -1;
    t->data_open = true;
    size_t sample_tokens = (size_t)spec->model.context + 1;
    t->tokens = malloc((size_t)spec->training.micro_batch * sample_tokens * sizeof(int));
    if (!t->tokens)
        return atom_errf(err, "rank %d: out of memory", t->rank);

    if (ckpt_open(&t->ckpt, plan, t->model, t->opts->backend, t->rank, err) != 0)
        return -1;
    t->ckpt_open = true;
    /* Every rank may be first to need the run folder (each writes its heartbeats there). */
    int mk = plan->run_dir[0] ? atom_make_dirs(plan->run_dir, 0755) : 0;
    if (mk)
        return atom_errf(err, "rank %d: run folder %s: cannot create: %s", t->rank,
                         plan->run_dir, strerror(mk));
    hb_open(&t->hb, plan, t->rank, t->host);
    if (t->rank == 0 && plan->run_dir[0]) {
        char path[ATOM_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/train.jsonl", plan->run_dir);
        t->log = fopen(path, "a");
        if (!t->log)
            return atom_errf(err, "cannot open %s: %s", path, strerror(errno));
    }
    return 0;
}

/* failed: this rank is leaving on an error while the others may be inside a collective, so
 * nothing collective is called (closing the collectives or the async checkpointer would wait
 * for them forever); the caller aborts the job, which ends every rank. */
static void trainer_close(trainer *t, bool failed)
{
    if (t->ckpt_open && !failed)
        ckpt_close(&t->ckpt);
    hb_close(&t->hb);
    if (t->log)
        fclose(t->log);
    free(t->tokens);
    if (t->data_open)
        atom_data_close(&t->data);
    if (failed)
        return;
    if (t->model)
        atom_model_free(t->model);
    if (t->coll)
        coll_close(t->coll);
}

/* One optimizer step: step is 0-based (the steps done before it). */
static int train_step(trainer *t, int64_t step, float *loss_out, double *norm_out,
                      double *lr_out, atom_err *err)
{
    const atom_spec *spec = t->spec;
    int B = spec->training.micro_batch;
    int accum = atom_spec_accum_steps(spec);
    int per_replica = spec->training.global_batch / spec->parallelism.data;
    int replica = t->plan->ranks[t->rank].dp;
    atom_model_zero_grads(t->model);
    double loss_sum = 0;
    for (int m = 0; m < accum; m++) {
        int64_t first = atom_data_first_sample(replica, per_replica, m, B);
        if (atom_data_read(&t->data, spec->training.seed, step, first, B, t->tokens, err) != 0)
            return -1;
        float loss = 0;
        if (atom_model_forward_backward(t->model, t->tokens, B, 1.0f / (float)accum,
                                        m == accum - 1, &loss, err) != 0)
            return -1;
        loss_sum += loss;
    }
    double norm = 0;
    if (atom_model_grad_norm(t->model, &norm, err) != 0)
        return -1;
    double clip = spec->training.grad_clip;
    float multiplier = clip > 0 && norm > clip ? (float)(clip / norm) : 1.0f;
    atom_lr_cfg schedule = atom_lr_cfg_of(spec);
    double lr = atom_lr_at(&schedule, step);
    if (atom_model_adamw_step(t->model, (float)lr, (float)spec->training.weight_decay, multiplier,
                              err) != 0)
        return -1;
    *loss_out = (float)(loss_sum / accum);
    *norm_out = norm;
    *lr_out = lr;
    return 0;
}

int atom_train_run(const atom_train_opts *opts, atom_train_result *result, atom_err *err)
{
    trainer t;
    memset(&t, 0, sizeof t);
    t.opts = opts;
    t.plan = opts->plan;
    t.spec = &opts->plan->spec;
    memset(result, 0, sizeof *result);
    result->last_checkpoint_step = -1;
    int rc = -1;
    if (trainer_open(&t, err) != 0)
        goto out;

    const atom_spec *spec = t.spec;
    int64_t step = 0;
    if (atom_model_init_weights(t.model, spec->training.seed, err) != 0)
        goto out;
    if (ckpt_restore(&t.ckpt, t.rank, &step, err) != 0)
        goto out;
    if (ckpt_init_from_source(&t.ckpt, t.rank, &step, err) != 0)
        goto out;
    result->start_step = step;
    result->first_loss = result->last_loss = NAN;
    if (t.rank == 0 && t.ckpt.restore.skipped > 0) {
        t.hb.hb.ckpt_skipped = t.ckpt.restore.skipped;
        t.hb.hb.ckpt_skipped_step = t.ckpt.restore.skipped_step;
        /* its start names the file and the dataset; the rank log has it whole */
        snprintf(t.hb.hb.ckpt_skipped_why, sizeof t.hb.hb.ckpt_skipped_why, "%.*s",
                 (int)sizeof t.hb.hb.ckpt_skipped_why - 1, t.ckpt.restore.why.msg);
    }
    coll_group *world = coll_group_of(t.coll, COLL_WORLD);
    int world_size = coll_group_size(world);
    double tokens_per_step = (double)spec->training.global_batch * spec->model.context;
    double peak = opts->backend->device_memory ? 989e12 * world_size : 0; /* H100 bf16 dense */
    const char *peak_env = getenv("ATOM_PEAK_FLOPS_PER_RANK");
    if (peak_env && atof(peak_env) > 0)
        peak = atof(peak_env) * world_size;
    hb_send(&t.hb, step, t.coll, true);

    /* A stop asked for before the first step (a launcher's signal during MPI_Init or start-up,
     * on any rank): the ranks agree on it as on each step's flag, and leave with nothing new
     * to save (what was restored is the newest checkpoint). */
    bool stop = false;
    if (opts->stop_request) {
        float early = *opts->stop_request ? 1.0f : 0.0f;
        atom_err serr;
        if (atom_model_sum_scalars(t.model, world, &early, 1, &serr) != 0) {
            atom_errf(err, "rank %d: before the first step: %s", t.rank, serr.msg);
            goto out;
        }
        stop = early > 0 && step < spec->training.steps;
    }
    while (step < spec->training.steps && !stop) {
        double t0 = atom_monotonic();
        float loss = 0;
        double norm = 0, lr = 0;
        if (train_step(&t, step, &loss, &norm, &lr, err) != 0)
            goto out;
        step++;
        /* One small all-reduce a step carries both the loss (TP ranks hold the same value, so
         * the world mean is the mean over replicas) and the stop flag, so every rank leaves
         * after the same step. */
        bool want_stop = (opts->stop_request && *opts->stop_request) ||
                         (opts->stop_after > 0 && step >= opts->stop_after);
        float shared[2] = {loss / (float)world_size, want_stop ? 1.0f : 0.0f};
        atom_err serr;
        if (atom_model_sum_scalars(t.model, world, shared, 2, &serr) != 0) {
            atom_errf(err, "rank %d: step %lld: %s", t.rank, (long long)step, serr.msg);
            goto out;
        }
        stop = shared[1] > 0 && step < spec->training.steps;
        double dt = atom_monotonic() - t0;
        if (opts->on_step)
            opts->on_step(opts->on_step_arg, step);
        if (isnan(result->first_loss))
            result->first_loss = shared[0];
        result->last_loss = shared[0];

        if (ckpt_poll(&t.ckpt, err) != 0)
            goto out;
        bool at_end = step == spec->training.steps;
        if (spec->checkpoint.dir[0] &&
            (stop || at_end || (spec->checkpoint.every > 0 && step % spec->checkpoint.every == 0)))
            if (ckpt_save(&t.ckpt, step, stop || at_end, err) != 0)
                goto out;

        if (t.rank == 0) {
            step_report r = {step, spec->training.steps, shared[0], lr, norm,
                             tokens_per_step / dt, 1000 * dt, -1, -1};
            if (t.ckpt.async)
                r.ckpt_writer_cpu_s = atom_ckpt_async_writer_cpu_s(t.ckpt.async);
            if (peak > 0)
                r.mfu = flops_per_token(&spec->model) * r.tokens_per_s / peak;
            report_step(opts->progress, t.log, &r);
            t.hb.hb.has_progress = true;
            t.hb.hb.loss = shared[0];
            t.hb.hb.tokens_per_s = r.tokens_per_s;
        }
        t.hb.hb.last_checkpoint_step = t.ckpt.last_step;
        hb_send(&t.hb, step, t.coll, stop || at_end);
    }
    if (ckpt_wait(&t.ckpt, err) != 0)
        goto out;
    result->steps_done = step;
    result->stopped = stop;
    result->last_checkpoint_step = t.ckpt.last_step;
    rc = 0;
out:
    trainer_close(&t, rc != 0);
    return rc;
}
