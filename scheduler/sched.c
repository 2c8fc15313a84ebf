/* scheduler/sched.c: the scheduling pass (see sched.h), fair-share usage and node states. */
#include "scheduler/sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/atomd.h"

/* ---- clocks and policies ------------------------------------------------------------------- */

double atomd_now(const atomd *d) { return d->virtual_now > 0 ? d->virtual_now : atom_now(); }
double atomd_mono(const atomd *d) { return d->virtual_now > 0 ? d->virtual_now : atom_monotonic(); }

static const char *const policy_names[] = {"backfill", "priority", "fifo"};

const char *atomd_policy_name(int policy)
{
    return policy >= 0 && policy < 3 ? policy_names[policy] : "?";
}

int atomd_policy_parse(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, policy_names[i]) == 0)
            return i;
    return -1;
}

/* ---- node states -------------------------------------------------------------------------- */

const char *atomd_node_state_name(atomd_node_state s)
{
    return s == ATOMD_NODE_DRAINED ? "drained" : s == ATOMD_NODE_DOWN ? "down" : "up";
}

int atomd_node_index(const atomd *d, const char *name)
{
    for (int i = 0; i < d->inv.n_nodes; i++)
        if (strcmp(d->inv.nodes[i].name, name) == 0)
            return i;
    return -1;
}

int atomd_node_set(atomd *d, int node, atomd_node_state state, const char *reason, atom_err *err)
{
    atomd_node_info *n = &d->nodes[node];
    if (state == ATOMD_NODE_UP && n->state != ATOMD_NODE_UP)
        n->failures = 0; /* resumed by an administrator: a fresh start */
    n->state = state;
    if (reason != n->reason)
        snprintf(n->reason, sizeof n->reason, "%s", reason ? reason : "");
    if (atom_planner_set_node_up(&d->planner, node, state == ATOMD_NODE_UP, err))
        return -1;
    d->changed = true;
    return atomd_store_save_node(&d->store, d->inv.nodes[node].name, atomd_node_state_name(state), n->reason,
                                 n->failures, err);
}

/* ---- fair share ----------------------------------------------------------------------------- */

atomd_usage *atomd_usage_get(atomd *d, const char *project)
{
    for (int i = 0; i < d->n_usage; i++)
        if (strcmp(d->usage[i].project, project) == 0)
            return &d->usage[i];
    atomd_usage *u = realloc(d->usage, (size_t)(d->n_usage + 1) * sizeof *u);
    if (!u)
        return NULL;
    d->usage = u;
    u = &d->usage[d->n_usage++];
    memset(u, 0, sizeof *u);
    snprintf(u->project, sizeof u->project, "%s", project);
    u->updated = atomd_now(d);
    return u;
}

static double decay(const atomd *d, double value, double since)
{
    if (d->cfg.usage_half_life <= 0 || since <= 0)
        return value;
    return value * exp2(-since / d->cfg.usage_half_life);
}

double atomd_usage_now(atomd *d, const char *project, double now)
{
    atomd_usage *u = atomd_usage_get(d, project);
    return u ? decay(d, u->gpu_seconds, now - u->updated) : 0;
}

void atomd_usage_add(atomd *d, const char *project, double gpu_seconds, double now)
{
    atomd_usage *u = atomd_usage_get(d, project);
    if (!u)
        return;
    u->gpu_seconds = decay(d, u->gpu_seconds, now - u->updated) + gpu_seconds;
    u->updated = now;
}

void atomd_sched_account(atomd *d, double dt)
{
    double now = atomd_now(d);
    for (int i = 0; i < d->n_jobs; i++) {
        atomd_job *job = d->jobs[i];
        if (job->state == ATOMD_JOB_RUNNING && job->cur.live)
            atomd_usage_add(d, job->spec.project, dt * job->spec.resources.gpus, now);
    }
}

void atomd_sched_save_usage(atomd *d)
{
    for (int i = 0; i < d->n_usage; i++) {
        atom_err err = {{0}};
        if (atomd_store_save_usage(&d->store, d->usage[i].project, d->usage[i].gpu_seconds, d->usage[i].updated, &err))
            atom_log(ATOM_LOG_ERROR, "%s", err.msg);
    }
}

/* ---- the pass --------------------------------------------------------------------------------- */

typedef struct pending_entry {
    atomd_job *job;
    double usage;
} pending_entry;

static int submission_cmp(const void *pa, const void *pb)
{
    const pending_entry *a = pa, *b = pb;
    return a->job->id < b->job->id ? -1 : a->job->id > b->job->id;
}

static int pending_cmp(const void *pa, const void *pb)
{
    const pending_entry *a = pa, *b = pb;
    if (a->job->spec.priority != b->job->spec.priority)
        return a->job->spec.priority > b->job->spec.priority ? -1 : 1;
    if (a->usage != b->usage)
        return a->usage < b->usage ? -1 : 1;
    return a->job->id < b->job->id ? -1 : a->job->id > b->job->id;
}

typedef struct running_end {
    const atomd_job *job;
    double end;  /* monotonic; INFINITY without a time limit */
} running_end;

static int end_cmp(const void *pa, const void *pb)
{
    const running_end *a = pa, *b = pb;
    return a->end < b->end ? -1 : a->end > b->end;
}

/* When the head job could start: release running jobs in the order of their limits on a copy of
 * the cluster until it fits. INFINITY when that depends on a job without a limit (or never). */
static double reservation_time(atomd *d, const atomd_job *head)
{
    atom_planner sim;
    atom_err err = {{0}};
    if (atom_planner_init(&sim, &d->inv, &err))
        return INFINITY;
    for (int n = 0; n < d->inv.n_nodes; n++)
        atom_planner_set_node_up(&sim, n, d->nodes[n].state == ATOMD_NODE_UP, NULL);
    running_end *ends = calloc((size_t)d->n_jobs + 1, sizeof *ends);
    int n_ends = 0;
    for (int i = 0; ends && i < d->n_jobs; i++) {
        const atomd_job *job = d->jobs[i];
        const atomd_attempt *a = &job->cur;
        if (job->state != ATOMD_JOB_RUNNING || !a->live || !a->placement.node)
            continue;
        for (int r = 0; r < a->placement.world; r++)
            atom_planner_set_busy(&sim, a->placement.node[r], a->placement.gpu[r], true, NULL);
        int64_t limit = job->spec.resources.time_limit;
        ends[n_ends].job = job;
        ends[n_ends].end = limit > 0 ? a->started_mono + (double)limit : INFINITY;
        n_ends++;
    }
    double when = INFINITY;
    if (ends) {
        qsort(ends, (size_t)n_ends, sizeof *ends, end_cmp);
        for (int i = 0; i < n_ends && isfinite(ends[i].end); i++) {
            const atom_placement *pl = &ends[i].job->cur.placement;
            for (int r = 0; r < pl->world; r++)
                atom_planner_set_busy(&sim, pl->node[r], pl->gpu[r], false, NULL);
            if (atom_planner_fits(&sim, &head->spec, head->exclude, NULL, 0, &err) == ATOM_PLACE_OK) {
                when = ends[i].end;
                break;
            }
        }
    }
    free(ends);
    atom_planner_free(&sim);
    return when;
}

static int try_start(atomd *d, atomd_job *job, char *why, size_t why_len)
{
    atom_placement pl;
    atom_err err = {{0}};
    atom_place_result r = atom_planner_place(&d->planner, &job->spec, job->exclude, &pl, why, why_len, &err);
    if (r == ATOM_PLACE_ERROR) {
        job->state = ATOMD_JOB_FAILED;
        job->end_time = atomd_now(d);
        snprintf(job->reason, sizeof job->reason, "cannot be placed: %.200s", err.msg);
        atomd_store_save_job(&d->store, job, &d->inv, &err);
        return -1;
    }
    if (r == ATOM_PLACE_NO_FIT)
        return 0;
    if (atomd_health_hold(d, &pl, why, why_len)) { /* placed again once its nodes pass */
        atom_planner_release(&d->planner, &pl);
        atom_placement_free(&pl);
        return 0;
    }
    atomd_job_launch(d, job, &pl, &err); /* a failed launch is recorded on the job */
    return 1;
}

int atomd_sched_pass(atomd *d)
{
    double pass_start = atom_monotonic();
    pending_entry *pending = malloc(((size_t)d->n_jobs + 1) * sizeof *pending);
    if (!pending)
        return 0;
    double now = atomd_now(d), now_mono = atomd_mono(d);
    int n = 0;
    for (int i = 0; i < d->n_jobs; i++)
        if (d->jobs[i]->state == ATOMD_JOB_PENDING) {
            char why[256];
            if (atomd_job_held(d, d->jobs[i], why, sizeof why)) {
                /* Waiting for atomd's probes or its launch backoff: not placed, not the head. */
                snprintf(d->jobs[i]->reason, sizeof d->jobs[i]->reason, "%s", why);
                continue;
            }
            pending[n].job = d->jobs[i];
            pending[n].usage = atomd_usage_now(d, d->jobs[i]->spec.project, now);
            n++;
        }
    qsort(pending, (size_t)n, sizeof *pending, d->cfg.policy == ATOMD_POLICY_FIFO ? submission_cmp : pending_cmp);

    int started = 0;
    const atomd_job *head = NULL;
    double reserved = INFINITY;
    for (int i = 0; i < n; i++) {
        atomd_job *job = pending[i].job;
        char why[256] = "";
        if (!head) {
            int r = try_start(d, job, why, sizeof why);
            if (r > 0)
                started++;
            if (r != 0)
                continue;
            head = job;
            if (d->cfg.policy == ATOMD_POLICY_BACKFILL)
                reserved = reservation_time(d, job);
            if (isfinite(reserved))
                snprintf(job->reason, sizeof job->reason, "next to start, in about %.0f s (%s)",
                         reserved - now_mono, why);
            else
                snprintf(job->reason, sizeof job->reason, "next to start (%s)", why);
            continue;
        }
        if (d->cfg.policy != ATOMD_POLICY_BACKFILL) {
            snprintf(job->reason, sizeof job->reason, "waiting for job %s (policy %s: no backfill)", head->id_text,
                     atomd_policy_name(d->cfg.policy));
            continue;
        }
        /* Backfill: only a job whose limit ends before the head's reservation. */
        int64_t limit = job->spec.resources.time_limit;
        if (isfinite(reserved) && (limit <= 0 || now_mono + (double)limit > reserved)) {
            snprintf(job->reason, sizeof job->reason, "waiting for job %s (%s)", head->id_text,
                     limit <= 0 ? "no time limit to backfill with" : "its time limit would delay it");
            continue;
        }
        int r = try_start(d, job, why, sizeof why);
        if (r > 0)
            started++;
        else if (r == 0)
            snprintf(job->reason, sizeof job->reason, "waiting for job %s; %s", head->id_text, why);
    }
    free(pending);
    d->last_pass_seconds = atom_monotonic() - pass_start;
    return started;
}
