/* scheduler/protocol.c: the message table of atomd and its handlers (see protocol.h).
 *
 * Handlers answer from memory and write through the store; the answer of a request that changed
 * state is sent by the server only after the iteration's COMMIT.
 */
#include "scheduler/protocol.h"

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/accounts.h"
#include "scheduler/atomd.h"
#include "scheduler/owner_io.h"

typedef json_t *(*atomd_handler)(atomd *d, const atomd_caller *who, json_t *req);

typedef struct atomd_arg {
    const char *name;
    json_type type;
    bool required;
} atomd_arg;

#define ATOMD_MAX_ARGS 5

typedef struct atomd_op {
    const char *name;
    atomd_arg args[ATOMD_MAX_ARGS];
    bool admin_only;
    atomd_handler handler;
} atomd_op;

json_t *atomd_protocol_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

static void owner_name(uid_t uid, char *out, size_t len)
{
    snprintf(out, len, "%s", atomd_account_name(uid));
}

/* A job's line in status, queue and show. */
static json_t *job_json(atomd *d, const atomd_job *job)
{
    char owner[64];
    owner_name(job->owner, owner, sizeof owner);
    json_t *o = json_pack("{s:I,s:s,s:s,s:i,s:s,s:s,s:i,s:i,s:I,s:i,s:i,s:i,s:s,s:f,s:f,s:f,s:I}",
                          "id", (json_int_t)job->id, "name", job->spec.name, "owner", owner, "uid",
                          (int)job->owner, "project", job->spec.project, "state", atomd_job_state_name(job->state),
                          "priority", job->spec.priority, "gpus", job->spec.resources.gpus, "steps",
                          (json_int_t)job->spec.training.steps, "attempts", job->attempts, "restarts",
                          job->failures, "exit_code", job->exit_code, "reason", job->reason, "submit_time",
                          job->submit_time, "start_time", job->start_time, "end_time", job->end_time,
                          "time_limit", (json_int_t)job->spec.resources.time_limit);
    if (job->progress.has) {
        json_object_set_new(o, "step", json_integer(job->progress.step));
        json_object_set_new(o, "loss", isfinite(job->progress.loss) ? json_real(job->progress.loss) : json_null());
        json_object_set_new(o, "tokens_per_s", json_real(job->progress.tokens_per_s));
        json_object_set_new(o, "last_checkpoint", json_integer(job->progress.last_checkpoint));
    }
    if (job->progress.ckpt_skipped > 0) /* a restore that fell back past corrupt checkpoints */
        json_object_set_new(o, "ckpt_skipped",
                            json_pack("{s:i,s:i,s:I,s:s}", "attempt",
                                      job->progress.ckpt_skipped_attempt, "count",
                                      job->progress.ckpt_skipped, "step",
                                      (json_int_t)job->progress.ckpt_skipped_step, "why",
                                      job->progress.ckpt_skipped_why));
    if (job->state == ATOMD_JOB_RUNNING && job->cur.placement.node) {
        json_t *nodes = json_array();
        int last = -1;
        for (int r = 0; r < job->cur.placement.world; r++)
            if (job->cur.placement.node[r] != last) {
                last = job->cur.placement.node[r];
                json_array_append_new(nodes, json_string(d->inv.nodes[last].name));
            }
        json_object_set_new(o, "nodes", nodes);
        json_object_set_new(o, "attempt", json_integer(job->cur.n));
        json_object_set_new(o, "run_dir", json_string(job->cur.launch.run_dir));
        json_object_set_new(o, "output_dir", json_string(job->cur.launch.out_dir[0] ? job->cur.launch.out_dir
                                                                                    : job->cur.launch.run_dir));
    }
    return o;
}

/* The job a request names: from memory, or, for an ended job no longer kept there, from the
 * store into *loaded (which the handler frees). */
static atomd_job *job_arg(atomd *d, json_t *req, json_t **answer, atomd_job **loaded)
{
    json_int_t id = json_integer_value(json_object_get(req, "job"));
    *loaded = NULL;
    atomd_job *job = id > 0 ? atomd_job_find(d, (int64_t)id) : NULL;
    if (!job && id > 0)
        job = *loaded = atomd_store_load_job(&d->store, d, (int64_t)id);
    if (!job)
        *answer = atomd_protocol_error("no job %" JSON_INTEGER_FORMAT, id);
    return job;
}

static json_t *op_ping(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)req;
    /* commits: transactions since start, so a test or benchmark can see submissions share them. */
    return json_pack("{s:b,s:s,s:i,s:b,s:I,s:i}", "ok", 1, "version", "0.1.0", "uid", (int)who->uid, "admin",
                     who->admin, "commits", (json_int_t)d->store.commits, "jobs", d->n_jobs);
}

static json_t *op_submit(atomd *d, const atomd_caller *who, json_t *req)
{
    const char *text = json_string_value(json_object_get(req, "spec"));
    atom_spec spec;
    atom_err err = {{0}};
    if (atom_spec_from_json(text, &spec, &err))
        return atomd_protocol_error("the spec is not valid: %s", err.msg);
    atom_diags diags = {0};
    if (atom_spec_check(&spec, "spec", &diags)) {
        json_t *e = atomd_protocol_error("the spec is not valid: %s: %s", diags.count ? diags.items[0].key : "",
                                         diags.count ? diags.items[0].msg : "?");
        atom_diags_free(&diags);
        return e;
    }
    atom_diags_free(&diags);
    /* A job larger than the whole cluster would wait for ever: refuse it now. */
    atom_planner empty;
    if (atom_planner_init(&empty, &d->inv, &err))
        return atomd_protocol_error("%s", err.msg);
    char why[256] = "";
    atom_place_result fit = atom_planner_fits(&empty, &spec, NULL, why, sizeof why, &err);
    atom_planner_free(&empty);
    if (fit != ATOM_PLACE_OK)
        return atomd_protocol_error("the job can never run on cluster %s: %s", d->inv.name,
                                    fit == ATOM_PLACE_ERROR ? err.msg : why);
    /* The normalised spec is what is stored, so every reader sees the same. */
    char *normal = atom_spec_to_json(&spec);
    atomd_job *job = normal ? atomd_job_new(&spec, normal, who->uid, d->inv.n_nodes) : NULL;
    free(normal);
    if (!job)
        return atomd_protocol_error("out of memory");
    job->state = ATOMD_JOB_PENDING;
    job->submit_time = atom_now();
    snprintf(job->reason, sizeof job->reason, "submitted");
    if (atomd_store_save_job(&d->store, job, &d->inv, &err) || atomd_job_add(d, job, &err)) {
        atomd_job_free(job);
        return atomd_protocol_error("cannot store the job: %s", err.msg);
    }
    d->changed = true;
    atom_log(ATOM_LOG_INFO, "job %s (%s) submitted by uid %u: %d GPUs, project %s", job->id_text, spec.name,
             (unsigned)who->uid, spec.resources.gpus, spec.project);
    return json_pack("{s:b,s:I,s:s}", "ok", 1, "job", (json_int_t)job->id, "name", job->spec.name);
}

static json_t *nodes_json(atomd *d)
{
    json_t *a = json_array();
    for (int n = 0; n < d->inv.n_nodes; n++) {
        const atom_node *node = &d->inv.nodes[n];
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:i,s:i,s:b,s:s,s:i}", "name", node->name, "switch",
                                           d->inv.switches[node->switch_id], "state",
                                           atomd_node_state_name(d->nodes[n].state), "gpus", node->gpus, "free",
                                           d->planner.free_gpus[n], "has_gpus", node->has_gpus, "reason",
                                           d->nodes[n].reason, "failures", d->nodes[n].failures));
    }
    return a;
}

static json_t *op_status(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    (void)req;
    int up = 0, drained = 0, down = 0;
    long total = 0, busy = 0, offline = 0;
    for (int n = 0; n < d->inv.n_nodes; n++) {
        int g = d->inv.nodes[n].gpus, f = d->planner.free_gpus[n];
        total += g;
        busy += g - f;
        switch (d->nodes[n].state) {
        case ATOMD_NODE_UP: up++; break;
        case ATOMD_NODE_DRAINED: drained++; offline += f; break;
        case ATOMD_NODE_DOWN: down++; offline += f; break;
        }
    }
    json_t *jobs = json_array();
    int running = 0, pending = 0;
    for (int i = 0; i < d->n_jobs; i++) {
        const atomd_job *job = d->jobs[i];
        if (atomd_job_final(job->state))
            continue;
        running += job->state == ATOMD_JOB_RUNNING;
        pending += job->state == ATOMD_JOB_PENDING;
        json_array_append_new(jobs, job_json(d, job));
    }
    return json_pack("{s:b,s:s,s:{s:i,s:i,s:i},s:{s:I,s:I,s:I,s:I},s:i,s:i,s:o,s:o}", "ok", 1, "cluster",
                     d->inv.name, "nodes", "up", up, "drained", drained, "down", down, "gpus", "total",
                     (json_int_t)total, "busy", (json_int_t)busy, "free", (json_int_t)(total - busy - offline),
                     "offline", (json_int_t)offline, "running", running, "pending", pending, "jobs", jobs,
                     "node_list", nodes_json(d));
}

static json_t *op_queue(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    bool all = json_is_true(json_object_get(req, "all"));
    json_t *jobs = json_array();
    for (int i = 0; i < d->n_jobs; i++)
        if (all || !atomd_job_final(d->jobs[i]->state))
            json_array_append_new(jobs, job_json(d, d->jobs[i]));
    return json_pack("{s:b,s:o}", "ok", 1, "jobs", jobs);
}

static json_t *op_show(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    json_t *answer = NULL;
    atomd_job *loaded;
    atomd_job *job = job_arg(d, req, &answer, &loaded);
    if (!job)
        return answer;
    atom_err err = {{0}};
    json_t *attempts = atomd_store_attempts(&d->store, job->id, &d->inv, &err);
    json_t *spec = json_loads(job->spec_json, 0, NULL);
    answer = json_pack("{s:b,s:o,s:o,s:o}", "ok", 1, "job", job_json(d, job), "spec", spec ? spec : json_null(),
                       "attempts", attempts ? attempts : json_array());
    atomd_job_free(loaded);
    return answer;
}

static json_t *op_cancel(atomd *d, const atomd_caller *who, json_t *req)
{
    json_t *answer = NULL;
    atomd_job *loaded;
    atomd_job *job = job_arg(d, req, &answer, &loaded);
    if (!job)
        return answer;
    if (loaded) { /* only ended jobs leave memory */
        answer = atomd_protocol_error("job %s has already ended (%s)", loaded->id_text,
                                      atomd_job_state_name(loaded->state));
        atomd_job_free(loaded);
        return answer;
    }
    if (job->owner != who->uid && !who->admin)
        return atomd_protocol_error("permission denied: job %s belongs to uid %u; only its owner or an "
                                    "administrator may cancel it", job->id_text, (unsigned)job->owner);
    atom_err err = {{0}};
    if (atomd_job_cancel(d, job, &err))
        return atomd_protocol_error("%s", err.msg);
    atom_log(ATOM_LOG_INFO, "job %s: cancel requested by uid %u", job->id_text, (unsigned)who->uid);
    return json_pack("{s:b,s:I,s:s}", "ok", 1, "job", (json_int_t)job->id, "state", atomd_job_state_name(job->state));
}

/* Up to this much log text per answer; the client asks again from the new offset. */
#define LOG_CHUNK (256 * 1024)

/* One file of a log stream, with the line that introduces it (when it has any text). */
typedef struct log_part {
    char path[ATOM_PATH_MAX + 256];
    const char *header;
    uid_t uid;   /* whose file it is, and as whom atomd opens it (owner_io.h) */
    gid_t gid;
    int fd;      /* -1: the file does not exist (yet) */
    off_t size;  /* when opened: what is read of it (a file still written may grow later) */
} log_part;

/* Opens a part through owner_io.h: as its owner, never through a link, never a FIFO or device, and
 * only a regular file of that owner. A missing file is an empty part; anything else refused is an
 * error that says why. */
static int log_part_open(log_part *p, char *why, size_t why_len)
{
    p->fd = -1;
    p->size = 0;
    atom_err err = {{0}};
    struct stat st;
    int fd = atomd_owner_open(p->path, p->uid, p->gid, &st, &err);
    if (fd < 0) {
        snprintf(why, why_len, "%s", err.msg);
        return err.msg[0] ? -1 : 0;
    }
    p->fd = fd;
    p->size = st.st_size;
    return 0;
}

/* Where an attempt's logs are. The attempt's folder is atomd's; in it output/ is the owner's, with
 * rank R's file where the launcher puts it, and the launcher's messages are atomd's launcher.log
 * beside it (mpirun) or the owner's output/launcher.log (Slurm's batch output). A folder made
 * before that layout (the owner's, everything in it) is read as the owner's throughout. */
static void log_paths(atomd *d, const atomd_job *job, int attempt, int rank, log_part *rank_part,
                      log_part *launcher_part)
{
    char dir[ATOM_PATH_MAX + 64], rel[96] = "";
    snprintf(dir, sizeof dir, "%s/jobs/%s/attempt-%d", d->cfg.state_dir, job->id_text, attempt);
    gid_t gid = atomd_owner_gid(job->owner);
    struct stat st;
    bool legacy = lstat(dir, &st) == 0 && st.st_uid != geteuid();
    if (d->launcher->rank_log)
        d->launcher->rank_log(job->spec.resources.gpus, rank, rel, sizeof rel);
    rank_part->uid = launcher_part->uid = job->owner;
    rank_part->gid = launcher_part->gid = gid;
    if (legacy) {
        /* Open MPI wrote into output/ then, ranks/ now. */
        const char *sub = strncmp(rel, "ranks/", 6) == 0 ? "output/" : "";
        snprintf(rank_part->path, sizeof rank_part->path, "%s/%s%s", dir, sub, rel + (sub[0] ? 6 : 0));
        static const char *const launcher_logs[] = {"launcher.log", "slurm.out", "output.log"};
        for (size_t i = 0; i < sizeof launcher_logs / sizeof *launcher_logs; i++) {
            snprintf(launcher_part->path, sizeof launcher_part->path, "%s/%s", dir, launcher_logs[i]);
            if (lstat(launcher_part->path, &st) == 0)
                break;
        }
        return;
    }
    snprintf(rank_part->path, sizeof rank_part->path, "%s/output/%s", dir, rel);
    if (d->launcher->owner_writes_launcher_log) {
        snprintf(launcher_part->path, sizeof launcher_part->path, "%s/output/launcher.log", dir);
    } else {
        snprintf(launcher_part->path, sizeof launcher_part->path, "%s/launcher.log", dir);
        launcher_part->uid = geteuid(); /* atomd's own record */
        launcher_part->gid = getegid();
    }
}

/* An attempt's log: with a rank, that rank's own file (rank-R.log); without one, what a user looks
 * at first: rank 0's file and, once the attempt has ended, the launcher's messages after it
 * (mpirun's "rank 1 exited on signal 11", a launch error, sbatch's script). Offsets count in that
 * stream, so a follower reads each byte once. */
static json_t *logs_answer(atomd *d, const atomd_job *job, json_t *req)
{
    json_t *jr = json_object_get(req, "rank");
    int rank = jr ? (int)json_integer_value(jr) : -1;
    int attempt = (int)json_integer_value(json_object_get(req, "attempt"));
    if (attempt <= 0)
        attempt = job->attempts;
    json_int_t offset = json_integer_value(json_object_get(req, "offset"));
    if (jr && (rank < 0 || rank >= job->spec.resources.gpus))
        return atomd_protocol_error("job %s has no rank %d (its ranks are 0 to %d)", job->id_text, rank,
                                    job->spec.resources.gpus - 1);
    if (offset < 0)
        return atomd_protocol_error("logs: offset %" JSON_INTEGER_FORMAT " is negative", offset);
    if (attempt > job->attempts)
        return atomd_protocol_error("job %s has no attempt %d (it has had %d)", job->id_text, attempt, job->attempts);
    if (attempt <= 0 || !d->launcher->rank_log)
        return json_pack("{s:b,s:s,s:I,s:i,s:b}", "ok", 1, "data", "", "offset", (json_int_t)0, "attempt",
                         attempt > 0 ? attempt : 0, "ended", atomd_job_final(job->state));
    bool ended = atomd_job_final(job->state) || attempt < job->attempts ||
                 (job->state == ATOMD_JOB_PENDING && attempt == job->attempts);
    log_part parts[2];
    int n_parts = rank < 0 && ended ? 2 : 1;
    memset(parts, 0, sizeof parts);
    log_paths(d, job, attempt, rank >= 0 ? rank : 0, &parts[0], &parts[1]);
    parts[1].header = "---- launcher.log ----\n";
    char why[ATOM_PATH_MAX + 256] = "";
    char *buf = malloc(LOG_CHUNK + 1);
    size_t n = 0;
    off_t pos = 0; /* where the current part starts in the stream */
    int bad = buf ? 0 : -1;
    for (int i = 0; i < n_parts && bad == 0; i++) {
        log_part *p = &parts[i];
        if (log_part_open(p, why, sizeof why)) {
            bad = 1;
            break;
        }
        off_t header_len = p->size > 0 && p->header ? (off_t)strlen(p->header) : 0;
        off_t len = header_len + p->size;
        /* Where the stream is read next, inside this part. */
        off_t in = (off_t)offset + (off_t)n - pos;
        while (n < LOG_CHUNK && in >= 0 && in < len) {
            size_t want = LOG_CHUNK - n, got;
            if (in < header_len) {
                got = (size_t)(header_len - in) < want ? (size_t)(header_len - in) : want;
                memcpy(buf + n, p->header + in, got);
            } else {
                if ((size_t)(len - in) < want)
                    want = (size_t)(len - in);
                ssize_t r = pread(p->fd, buf + n, want, in - header_len);
                got = r > 0 ? (size_t)r : 0;
                if (got == 0)
                    break; /* shorter than its size a moment ago: read later */
            }
            n += got;
            in += (off_t)got;
        }
        pos += len;
        if (p->fd >= 0)
            close(p->fd);
        p->fd = -1;
    }
    if (bad) {
        free(buf);
        return bad < 0 ? atomd_protocol_error("out of memory") : atomd_protocol_error("%s", why);
    }
    /* All of a finished attempt's text has been read: hand it over whole, a last line without its
     * newline (a rank killed mid-line) included. Otherwise whole lines only: the rest may still be
     * written, and half a UTF-8 character is no string for JSON. */
    bool complete = ended && (off_t)offset + (off_t)n >= pos;
    size_t whole = n;
    if (!complete) {
        while (whole > 0 && buf[whole - 1] != '\n')
            whole--;
        if (whole == 0 && n == LOG_CHUNK)
            whole = n;
    }
    buf[whole] = 0;
    json_t *o = json_pack("{s:b,s:s,s:I,s:i,s:b,s:s}", "ok", 1, "data", buf, "offset",
                          (json_int_t)(offset + (json_int_t)whole), "attempt", attempt, "ended", complete,
                          "state", atomd_job_state_name(job->state));
    free(buf);
    if (!o) /* not UTF-8: jansson refuses it */
        return atomd_protocol_error("the log of job %s holds text that is not UTF-8", job->id_text);
    return o;
}

static json_t *op_logs(atomd *d, const atomd_caller *who, json_t *req)
{
    json_t *answer = NULL;
    atomd_job *loaded;
    atomd_job *job = job_arg(d, req, &answer, &loaded);
    if (!job)
        return answer;
    /* Everyone sees the queue; a job's output is its owner's (as their files would be). */
    if (job->owner != who->uid && !who->admin)
        answer = atomd_protocol_error("permission denied: the logs of job %s are its owner's (uid %u)", job->id_text,
                                      (unsigned)job->owner);
    else
        answer = logs_answer(d, job, req);
    atomd_job_free(loaded);
    return answer;
}

static json_t *op_nodes(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    (void)req;
    /* How attempts on atomd's node are kept apart and stopped (cgroup.h): ops see it here. */
    const char *isolation = !d->launcher->child ? "slurm"
                            : d->cgroups.usable ? "cgroup"
                                                : "process group";
    return json_pack("{s:b,s:o,s:{s:s,s:s,s:s}}", "ok", 1, "nodes", nodes_json(d), "isolation",
                     "kind", isolation, "cgroup_root", d->cgroups.usable ? d->cgroups.root : "",
                     "why", d->cgroups.usable || !d->launcher->child ? "" : d->cgroups.why);
}

static json_t *node_state_op(atomd *d, json_t *req, atomd_node_state state)
{
    const char *name = json_string_value(json_object_get(req, "node"));
    int n = atomd_node_index(d, name);
    if (n < 0)
        return atomd_protocol_error("no node %s in cluster %s", name, d->inv.name);
    const char *reason = json_string_value(json_object_get(req, "reason"));
    atom_err err = {{0}};
    if (atomd_node_set(d, n, state, reason ? reason : (state == ATOMD_NODE_UP ? "" : "drained by an administrator"), &err))
        return atomd_protocol_error("%s", err.msg);
    atom_log(ATOM_LOG_INFO, "node %s: %s", name, atomd_node_state_name(state));
    return json_pack("{s:b,s:s,s:s}", "ok", 1, "node", name, "state", atomd_node_state_name(state));
}

static json_t *op_drain(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    return node_state_op(d, req, ATOMD_NODE_DRAINED);
}

static json_t *op_resume(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    return node_state_op(d, req, ATOMD_NODE_UP);
}

/* Accounting: ended jobs from the store (also those no longer in memory), and GPU-hours per owner
 * and project beside each project's decayed usage (what fair share orders by). */
static json_t *op_history(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    json_t *limit = json_object_get(req, "limit");
    atom_err err = {{0}};
    json_t *jobs = atomd_store_history(&d->store, limit ? (int)json_integer_value(limit) : 100, &err);
    if (!jobs)
        return atomd_protocol_error("%s", err.msg);
    return json_pack("{s:b,s:o}", "ok", 1, "jobs", jobs);
}

static json_t *op_usage(atomd *d, const atomd_caller *who, json_t *req)
{
    (void)who;
    (void)req;
    atom_err err = {{0}};
    double now = atomd_now(d);
    json_t *rows = atomd_store_accounting(&d->store, now, &err);
    if (!rows)
        return atomd_protocol_error("%s", err.msg);
    json_t *fair = json_array();
    for (int i = 0; i < d->n_usage; i++)
        json_array_append_new(fair, json_pack("{s:s,s:f}", "project", d->usage[i].project, "decayed_gpu_hours",
                                              atomd_usage_now(d, d->usage[i].project, now) / 3600.0));
    return json_pack("{s:b,s:o,s:o,s:f}", "ok", 1, "usage", rows, "fair_share", fair, "half_life",
                     d->cfg.usage_half_life);
}

static const atomd_op ops[] = {
    {"ping", {{0}}, false, op_ping},
    {"submit", {{"spec", JSON_STRING, true}}, false, op_submit},
    {"status", {{0}}, false, op_status},
    {"queue", {{"all", JSON_TRUE, false}}, false, op_queue},
    {"show", {{"job", JSON_INTEGER, true}}, false, op_show},
    {"cancel", {{"job", JSON_INTEGER, true}}, false, op_cancel},
    {"logs", {{"job", JSON_INTEGER, true}, {"rank", JSON_INTEGER, false}, {"attempt", JSON_INTEGER, false},
              {"offset", JSON_INTEGER, false}}, false, op_logs},
    {"nodes", {{0}}, false, op_nodes},
    {"drain", {{"node", JSON_STRING, true}, {"reason", JSON_STRING, false}}, true, op_drain},
    {"resume", {{"node", JSON_STRING, true}}, true, op_resume},
    {"history", {{"limit", JSON_INTEGER, false}}, false, op_history},
    {"usage", {{0}}, false, op_usage},
};

static bool type_matches(json_t *v, json_type want)
{
    if (want == JSON_TRUE)  /* any boolean */
        return json_is_boolean(v);
    return json_typeof(v) == want;
}

static const char *type_name(json_type t)
{
    switch (t) {
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_TRUE: return "true or false";
    default: return "a value";
    }
}

json_t *atomd_protocol_handle(atomd *d, const atomd_caller *who, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req)
        return atomd_protocol_error("malformed request: %s (column %d)", jerr.text, jerr.column);
    json_t *answer = NULL;
    const atomd_op *op = NULL;
    const char *name = json_string_value(json_object_get(req, "op"));
    if (!json_is_object(req)) {
        answer = atomd_protocol_error("a request is a JSON object with an \"op\"");
        goto done;
    }
    if (!name) {
        answer = atomd_protocol_error("the request has no \"op\" string");
        goto done;
    }
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (strcmp(ops[i].name, name) == 0)
            op = &ops[i];
    if (!op) {
        answer = atomd_protocol_error("unknown op \"%.64s\"", name);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(req, key, value) {
        if (strcmp(key, "op") == 0)
            continue;
        const atomd_arg *arg = NULL;
        for (int a = 0; a < ATOMD_MAX_ARGS && op->args[a].name; a++)
            if (strcmp(op->args[a].name, key) == 0)
                arg = &op->args[a];
        if (!arg) {
            answer = atomd_protocol_error("%s: unknown argument \"%.64s\"", op->name, key);
            goto done;
        }
        if (!type_matches(value, arg->type)) {
            answer = atomd_protocol_error("%s: argument \"%s\" must be %s", op->name, key, type_name(arg->type));
            goto done;
        }
    }
    for (int a = 0; a < ATOMD_MAX_ARGS && op->args[a].name; a++)
        if (op->args[a].required && !json_object_get(req, op->args[a].name)) {
            answer = atomd_protocol_error("%s: missing argument \"%s\"", op->name, op->args[a].name);
            goto done;
        }
    if (op->admin_only && !who->admin) {
        answer = atomd_protocol_error("permission denied: %s is for administrators (root or group %s)", op->name,
                                      d->cfg.admin_group);
        goto done;
    }
    answer = op->handler(d, who, req);
    if (!answer)
        answer = atomd_protocol_error("%s: out of memory", op->name);
done:
    json_decref(req);
    return answer;
}
