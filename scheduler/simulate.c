/* scheduler/simulate.c: the real scheduler in virtual time (see simulate.h). */
#include "scheduler/simulate.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/atomd.h"
#include "scheduler/sched.h"

/* Virtual time starts here, so that 0 can keep meaning "not yet" in job times. */
#define SIM_EPOCH 1.0e9

/* ---- the trace ------------------------------------------------------------------------------ */

static int parse_row(char *line, atomd_sim_job *j, atom_err *err)
{
    char *f[8] = {0};
    int n = 0;
    for (char *p = strtok(line, ",\r\n"); p && n < 8; p = strtok(NULL, ",\r\n"))
        f[n++] = p + strspn(p, " \t");
    if (n < 7)
        return atom_errf(err, "expected 7 or 8 columns, found %d", n);
    memset(j, 0, sizeof *j);
    char *end;
    j->submit = strtod(f[0], &end);
    j->gpus = (int)strtol(f[1], NULL, 10);
    j->duration = strtod(f[2], NULL);
    j->tensor = (int)strtol(f[3], NULL, 10);
    snprintf(j->project, sizeof j->project, "%s", f[4]);
    j->fails_at = strtod(f[5], NULL);
    j->time_limit = strtoll(f[6], NULL, 10);
    j->priority = n > 7 ? (int)strtol(f[7], NULL, 10) : 100;
    if (j->submit < 0 || j->gpus <= 0 || j->duration <= 0 || j->tensor <= 0 || j->gpus % j->tensor ||
        j->fails_at < 0 || j->fails_at >= 1 || j->time_limit < 0 || !j->project[0])
        return atom_errf(err, "a value is out of range (gpus a multiple of tensor, 0 <= fails_at < 1)");
    return 0;
}

int atomd_sim_trace_load(const char *path, atomd_sim_trace *t, atom_err *err)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "r");
    if (!f)
        return atom_errf(err, "cannot read %s: %s", path, strerror(errno));
    char line[1024];
    int lineno = 0, cap = 0;
    bool header = false;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[strspn(line, " \t\r\n")] == 0)
            continue;
        if (!header) { /* the first other line names the columns */
            header = true;
            continue;
        }
        if (t->n == cap) {
            cap = cap ? 2 * cap : 1024;
            atomd_sim_job *jobs = realloc(t->jobs, (size_t)cap * sizeof *jobs);
            if (!jobs) {
                fclose(f);
                atomd_sim_trace_free(t);
                return atom_errf(err, "out of memory");
            }
            t->jobs = jobs;
        }
        atom_err rerr = {{0}};
        if (parse_row(line, &t->jobs[t->n], &rerr)) {
            fclose(f);
            atomd_sim_trace_free(t);
            return atom_errf(err, "%s:%d: %s", path, lineno, rerr.msg);
        }
        t->n++;
    }
    fclose(f);
    return 0;
}

void atomd_sim_trace_free(atomd_sim_trace *t)
{
    free(t->jobs);
    memset(t, 0, sizeof *t);
}

/* ---- the simulated launcher ------------------------------------------------------------------ */

/* One trace job while it is simulated. */
typedef struct sim_row {
    const atomd_sim_job *trace;
    atomd_job *job;
    double remaining;  /* seconds of work left */
    bool failed_once;
    double end;        /* virtual: when the live attempt ends */
    int exit_code;     /* of the live attempt */
    double started;    /* virtual: when the live attempt started */
    bool timed_out;    /* the live attempt ends at its time limit */
} sim_row;

typedef struct sim_state {
    atomd *d;
    sim_row *rows;
    int n_rows;
    int *row_of_id;  /* job id -> row */
    int64_t cap_ids;
    int *running;    /* rows with a live attempt */
    int n_running;
} sim_state;

/* The launcher table has no context argument: the simulation running now (one at a time). */
static sim_state *active;

static int sim_prepare(const atom_plan *plan, const char *run_dir, const char *worker, atom_launch *launch,
                       atom_err *err)
{
    (void)plan, (void)run_dir, (void)worker, (void)err;
    memset(launch, 0, sizeof *launch);
    return 0;
}

static int sim_start(const atom_plan *plan, atom_launch *launch, int out_fd, int err_fd, atom_err *err)
{
    (void)out_fd, (void)err_fd;
    int64_t id = strtoll(plan->job_id, NULL, 10);
    if (!active || id <= 0 || id >= active->cap_ids)
        return atom_errf(err, "simulation: unknown job %s", plan->job_id);
    int row = active->row_of_id[id];
    sim_row *r = &active->rows[row];
    double now = active->d->virtual_now;
    r->started = now;
    if (r->trace->fails_at > 0 && !r->failed_once) {
        r->end = now + r->trace->fails_at * r->trace->duration;
        r->exit_code = 1;
    } else {
        r->end = now + r->remaining;
        r->exit_code = 0;
    }
    /* Past its time limit, atomd stops it there (jobs.c's timeout: SIGUSR1, checkpoint, exit 75). */
    r->timed_out = r->trace->time_limit > 0 && r->end > now + (double)r->trace->time_limit;
    if (r->timed_out) {
        r->end = now + (double)r->trace->time_limit;
        r->exit_code = ATOM_EXIT_RESUMABLE;
    }
    active->running[active->n_running++] = row;
    snprintf(launch->app_path, sizeof launch->app_path, "%d", row);
    return 0;
}

static int sim_signal(const atom_launch *launch, int sig)
{
    (void)launch, (void)sig;
    return 0;
}

static int sim_wait(atom_launch *launch, bool block, int *exit_code, atom_err *err)
{
    (void)block;
    int row = atoi(launch->app_path);
    if (!active || row < 0 || row >= active->n_rows)
        return atom_errf(err, "simulation: unknown attempt %s", launch->app_path);
    sim_row *r = &active->rows[row];
    if (active->d->virtual_now < r->end)
        return 0;
    *exit_code = r->exit_code;
    return 1;
}

static const atomd_launcher sim_launcher = {"simulated", false, true, sim_prepare, sim_start, sim_signal, sim_wait,
                                            NULL, false};

/* ---- the event loop -------------------------------------------------------------------------- */

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

static const atomd_sim_trace *sort_trace;
static int cmp_row_submit(const void *pa, const void *pb)
{
    const atomd_sim_job *a = &sort_trace->jobs[*(const int *)pa], *b = &sort_trace->jobs[*(const int *)pb];
    if (a->submit != b->submit)
        return a->submit < b->submit ? -1 : 1;
    return *(const int *)pa - *(const int *)pb;
}

static int submit_row(sim_state *s, int row, atom_err *err)
{
    atomd *d = s->d;
    const atomd_sim_job *t = s->rows[row].trace;
    atom_spec spec;
    atom_spec_defaults(&spec);
    snprintf(spec.name, sizeof spec.name, "trace-%d", row + 1);
    snprintf(spec.project, sizeof spec.project, "%s", t->project);
    spec.priority = t->priority;
    spec.resources.gpus = t->gpus;
    spec.resources.time_limit = t->time_limit;
    spec.parallelism.tensor = t->tensor;
    spec.parallelism.data = t->gpus / t->tensor;
    char *json = atom_spec_to_json(&spec);
    atomd_job *job = json ? atomd_job_new(&spec, json, 0, d->inv.n_nodes) : NULL;
    free(json);
    if (!job)
        return atom_errf(err, "out of memory");
    job->state = ATOMD_JOB_PENDING;
    job->submit_time = d->virtual_now;
    snprintf(job->reason, sizeof job->reason, "submitted");
    if (atomd_store_save_job(&d->store, job, &d->inv, err) || atomd_job_add(d, job, err)) {
        atomd_job_free(job);
        return -1;
    }
    if (job->id >= s->cap_ids) {
        int64_t cap = (job->id + 1) * 2;
        int *map = realloc(s->row_of_id, (size_t)cap * sizeof *map);
        if (!map)
            return atom_errf(err, "out of memory");
        s->row_of_id = map;
        s->cap_ids = cap;
    }
    s->row_of_id[job->id] = row;
    s->rows[row].job = job;
    d->changed = true;
    return 0;
}

/* Ends the attempts whose virtual end has come, through the launcher and jobs.c's rules. */
static void end_attempts(sim_state *s)
{
    atomd *d = s->d;
    for (int i = 0; i < s->n_running;) {
        sim_row *r = &s->rows[s->running[i]];
        int code = 0;
        atom_err err = {{0}};
        if (d->launcher->wait(&r->job->cur.launch, false, &code, &err) != 1) {
            i++;
            continue;
        }
        if (r->timed_out)
            r->job->cur.stop = ATOMD_STOP_TIMEOUT; /* as jobs.c's timer marks it */
        else if (code != 0) { /* failed partway: the next attempt resumes from the failure point */
            r->failed_once = true;
            r->remaining -= d->virtual_now - r->started;
        }
        s->running[i] = s->running[--s->n_running];
        atomd_job_attempt_ended(d, r->job, code);
    }
}

static double next_end(const sim_state *s)
{
    double t = INFINITY;
    for (int i = 0; i < s->n_running; i++)
        if (s->rows[s->running[i]].end < t)
            t = s->rows[s->running[i]].end;
    return t;
}

/* Free GPUs, and whether they are idle through fragmentation: the smallest pending job would fit
 * in their number but the planner finds no placement for it. */
static void sample_idle(atomd *d, long *free_gpus, bool *queued, bool *fragmented)
{
    long free_total = 0;
    for (int n = 0; n < d->inv.n_nodes; n++)
        if (d->nodes[n].state == ATOMD_NODE_UP)
            free_total += d->planner.free_gpus[n];
    atomd_job *smallest = NULL;
    for (int i = 0; i < d->n_jobs; i++) {
        atomd_job *job = d->jobs[i];
        if (job->state == ATOMD_JOB_PENDING && (!smallest || job->spec.resources.gpus < smallest->spec.resources.gpus))
            smallest = job;
    }
    *free_gpus = free_total;
    *queued = smallest != NULL;
    *fragmented = false;
    if (smallest && free_total >= smallest->spec.resources.gpus) {
        atom_err err = {{0}};
        *fragmented = atom_planner_fits(&d->planner, &smallest->spec, smallest->exclude, NULL, 0, &err) != ATOM_PLACE_OK;
    }
}

static void summarise(const sim_state *s, atomd_sim_result *r, double first_submit, double last_end)
{
    double *waits = malloc((size_t)(s->n_rows + 1) * sizeof *waits);
    double *jcts = malloc((size_t)(s->n_rows + 1) * sizeof *jcts);
    int n_waits = 0, n_jcts = 0;
    for (int i = 0; i < s->n_rows; i++) {
        const atomd_job *job = s->rows[i].job;
        atomd_sim_outcome *o = &r->jobs[i];
        o->start = o->end = -1;
        o->state = job ? (int)job->state : ATOMD_JOB_PENDING;
        o->attempts = job ? job->attempts : 0;
        if (!job)
            continue;
        if (job->start_time > 0) {
            o->start = job->start_time - SIM_EPOCH;
            if (waits)
                waits[n_waits++] = job->start_time - job->submit_time;
        }
        if (atomd_job_final(job->state)) {
            o->end = job->end_time - SIM_EPOCH;
            if (jcts)
                jcts[n_jcts++] = job->end_time - job->submit_time;
        }
        r->done += job->state == ATOMD_JOB_DONE;
        r->timeouts += job->state == ATOMD_JOB_TIMEOUT;
        r->failed += job->state == ATOMD_JOB_FAILED;
        r->unfinished += !atomd_job_final(job->state);
        r->restarts += job->attempts > 1 ? job->attempts - 1 : 0;
    }
    r->makespan = last_end > first_submit ? last_end - first_submit : 0;
    double sum = 0;
    for (int i = 0; i < n_waits; i++)
        sum += waits[i];
    r->wait_mean = n_waits ? sum / n_waits : 0;
    sum = 0;
    for (int i = 0; i < n_jcts; i++)
        sum += jcts[i];
    r->jct_mean = n_jcts ? sum / n_jcts : 0;
    if (n_waits) {
        qsort(waits, (size_t)n_waits, sizeof *waits, cmp_double);
        r->wait_p95 = waits[(int)ceil(0.95 * n_waits) - 1];
    }
    if (n_jcts) {
        qsort(jcts, (size_t)n_jcts, sizeof *jcts, cmp_double);
        r->jct_p95 = jcts[(int)ceil(0.95 * n_jcts) - 1];
    }
    free(waits);
    free(jcts);
}

int atomd_simulate(const atom_inventory *inv, const atomd_sim_trace *trace, int policy, double half_life,
                   atomd_sim_result *r, atom_err *err)
{
    memset(r, 0, sizeof *r);
    double wall_start = atom_monotonic();
    atomd d;
    memset(&d, 0, sizeof d);
    d.listen_fd = d.hb_fd = d.signal_fd = d.metrics.listen_fd = -1;
    d.cfg.policy = policy;
    d.cfg.usage_half_life = half_life;
    d.cfg.keep_finished = trace->n + 1;
    d.launcher = &sim_launcher;
    d.inv = *inv; /* borrowed: never freed here */
    d.virtual_now = SIM_EPOCH;
    sim_state s = {.d = &d, .n_rows = trace->n};
    s.rows = calloc((size_t)trace->n + 1, sizeof *s.rows);
    s.running = calloc((size_t)trace->n + 1, sizeof *s.running);
    int *order = calloc((size_t)trace->n + 1, sizeof *order);
    r->jobs = calloc((size_t)trace->n + 1, sizeof *r->jobs);
    r->n_jobs = trace->n;
    d.nodes = calloc((size_t)inv->n_nodes, sizeof *d.nodes);
    int rc = -1;
    if (!s.rows || !s.running || !order || !r->jobs || !d.nodes) {
        atom_errf(err, "out of memory for %d jobs", trace->n);
        goto out;
    }
    if (atom_planner_init(&d.planner, &d.inv, err) || atomd_store_open(&d.store, ":memory:", err))
        goto out;
    for (int i = 0; i < trace->n; i++) {
        s.rows[i].trace = &trace->jobs[i];
        s.rows[i].remaining = trace->jobs[i].duration;
        order[i] = i;
    }
    sort_trace = trace;
    qsort(order, (size_t)trace->n, sizeof *order, cmp_row_submit);
    active = &s;

    long gpus_up = 0;
    for (int n = 0; n < inv->n_nodes; n++)
        gpus_up += d.planner.free_gpus[n];
    double busy_gs = 0, idle_queued_gs = 0, idle_frag_gs = 0, pass_total = 0;
    long free_gpus = gpus_up;
    bool queued = false, fragmented = false;
    double first_submit = trace->n ? SIM_EPOCH + trace->jobs[order[0]].submit : SIM_EPOCH, last_end = first_submit;
    int next = 0;
    for (;;) {
        double t_submit = next < trace->n ? SIM_EPOCH + trace->jobs[order[next]].submit : INFINITY;
        double t_end = next_end(&s);
        double t = t_submit < t_end ? t_submit : t_end;
        if (!isfinite(t))
            break;
        if (t > d.virtual_now) {
            double dt = t - d.virtual_now;
            if (d.virtual_now >= first_submit) {
                busy_gs += (double)(gpus_up - free_gpus) * dt;
                idle_queued_gs += queued ? (double)free_gpus * dt : 0;
                idle_frag_gs += fragmented ? (double)free_gpus * dt : 0;
            }
            atomd_sched_account(&d, dt);
            d.virtual_now = t;
        }
        while (next < trace->n && SIM_EPOCH + trace->jobs[order[next]].submit <= t)
            if (submit_row(&s, order[next++], err))
                goto out;
        if (t_end <= t) {
            end_attempts(&s);
            last_end = t;
        }
        if (d.changed) {
            d.changed = false;
            int pending = 0;
            for (int i = 0; i < d.n_jobs; i++)
                pending += d.jobs[i]->state == ATOMD_JOB_PENDING;
            atomd_sched_pass(&d);
            if (r->passes++ == 0)
                r->pass_first_ms = d.last_pass_seconds * 1e3;
            pass_total += d.last_pass_seconds;
            if (d.last_pass_seconds * 1e3 > r->pass_max_ms) {
                r->pass_max_ms = d.last_pass_seconds * 1e3;
                r->pass_max_pending = pending;
            }
            /* The store's transaction per pass, as the daemon commits once per iteration. */
            if (atomd_store_commit(&d.store, err))
                goto out;
        }
        sample_idle(&d, &free_gpus, &queued, &fragmented);
    }
    summarise(&s, r, first_submit, last_end);
    double capacity = (double)gpus_up * r->makespan;
    if (capacity > 0) {
        r->utilisation = busy_gs / capacity;
        r->idle_queued = idle_queued_gs / capacity;
        r->idle_fragmented = idle_frag_gs / capacity;
    }
    r->pass_mean_ms = r->passes ? pass_total * 1e3 / (double)r->passes : 0;
    rc = 0;
out:
    active = NULL;
    r->wall_seconds = atom_monotonic() - wall_start;
    for (int i = 0; i < d.n_jobs; i++)
        atomd_job_free(d.jobs[i]);
    free(d.jobs);
    free(d.usage);
    free(d.nodes);
    atom_planner_free(&d.planner);
    atomd_store_close(&d.store);
    free(s.rows);
    free(s.running);
    free(s.row_of_id);
    free(order);
    if (rc)
        atomd_sim_result_free(r);
    return rc;
}

void atomd_sim_result_free(atomd_sim_result *r)
{
    free(r->jobs);
    r->jobs = NULL;
}

/* ---- atomd --simulate ------------------------------------------------------------------------ */

static void sim_usage(FILE *out)
{
    fprintf(out, "usage: atomd --simulate --cluster INVENTORY.yaml --trace TRACE.csv\n"
                 "             [--policy fifo|priority|backfill|all] [--half-life DURATION] [--json]\n"
                 "  Runs atomd's scheduler in virtual time over the trace (see scheduler/simulate.h) and\n"
                 "  reports utilisation, queueing delay, completion time, restarts and fragmentation.\n");
}

static void print_result(const char *policy, const atomd_sim_result *r, bool json)
{
    if (json) {
        printf("{\"policy\":\"%s\",\"jobs\":%d,\"done\":%d,\"failed\":%d,\"timeout\":%d,\"unfinished\":%d,\"restarts\":%d,"
               "\"makespan_s\":%.1f,\"utilisation\":%.4f,\"idle_queued\":%.4f,\"idle_fragmented\":%.4f,"
               "\"wait_mean_s\":%.1f,\"wait_p95_s\":%.1f,\"jct_mean_s\":%.1f,\"jct_p95_s\":%.1f,\"passes\":%ld,"
               "\"pass_mean_ms\":%.3f,\"pass_max_ms\":%.3f,\"pass_max_pending\":%d,\"pass_first_ms\":%.3f,"
               "\"wall_s\":%.2f}\n",
               policy, r->n_jobs, r->done, r->failed, r->timeouts, r->unfinished, r->restarts, r->makespan, r->utilisation,
               r->idle_queued, r->idle_fragmented, r->wait_mean, r->wait_p95, r->jct_mean, r->jct_p95, r->passes,
               r->pass_mean_ms, r->pass_max_ms, r->pass_max_pending, r->pass_first_ms, r->wall_seconds);
        return;
    }
    printf("%-9s %6d %6d %6d %6d %6d %8d %7.1f%% %7.1f%% %7.2f%% %9.0f %9.0f %9.0f %9.0f %7ld %7.2f %7.2f %7.2f\n",
           policy, r->n_jobs, r->done, r->failed, r->timeouts, r->unfinished, r->restarts, 100 * r->utilisation,
           100 * r->idle_queued, 100 * r->idle_fragmented, r->wait_mean, r->wait_p95, r->jct_mean, r->jct_p95,
           r->passes, r->pass_mean_ms, r->pass_max_ms, r->wall_seconds);
}

int atomd_simulate_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"simulate", no_argument, NULL, 'S'}, {"cluster", required_argument, NULL, 'C'},
        {"trace", required_argument, NULL, 'T'}, {"policy", required_argument, NULL, 'P'},
        {"half-life", required_argument, NULL, 'H'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *cluster = NULL, *trace_path = NULL, *policy = "all";
    double half_life = 7 * 24 * 3600.0;
    bool json = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int64_t secs;
        switch (opt) {
        case 'S': break;
        case 'C': cluster = optarg; break;
        case 'T': trace_path = optarg; break;
        case 'P': policy = optarg; break;
        case 'j': json = true; break;
        case 'H':
            if (atom_parse_duration(optarg, &secs)) {
                fprintf(stderr, "atomd: --half-life: \"%s\" is not a duration\n", optarg);
                return 2;
            }
            half_life = (double)secs;
            break;
        case 'h': sim_usage(stdout); return 0;
        default: sim_usage(stderr); return 2;
        }
    }
    int only = strcmp(policy, "all") == 0 ? -1 : atomd_policy_parse(policy);
    if (!cluster || !trace_path || optind < argc || (only < 0 && strcmp(policy, "all") != 0)) {
        sim_usage(stderr);
        return 2;
    }
    atom_log_init("atomd", ATOM_LOG_WARN); /* per-job lines would drown the report */
    atom_inventory inv;
    atom_diags diags = {0};
    if (atom_inventory_load(cluster, &inv, &diags)) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        return 1;
    }
    atom_diags_free(&diags);
    atomd_sim_trace trace;
    atom_err err = {{0}};
    if (atomd_sim_trace_load(trace_path, &trace, &err)) {
        fprintf(stderr, "atomd: %s\n", err.msg);
        atom_inventory_free(&inv);
        return 1;
    }
    if (!json) {
        printf("cluster %s (%d nodes), trace %s (%d jobs), fair-share half-life %.0f s\n", inv.name, inv.n_nodes,
               trace_path, trace.n, half_life);
        printf("%-9s %6s %6s %6s %6s %6s %8s %8s %8s %8s %9s %9s %9s %9s %7s %7s %7s %7s\n", "policy", "jobs", "done",
               "failed", "tmout", "unfin", "restarts", "util", "idleQ", "idleFrag", "wait_avg", "wait_p95", "jct_avg",
               "jct_p95", "passes", "pass_ms", "max_ms", "wall_s");
    }
    int rc = 0;
    const int policies[] = {ATOMD_POLICY_FIFO, ATOMD_POLICY_PRIORITY, ATOMD_POLICY_BACKFILL};
    for (int i = 0; i < 3; i++) {
        if (only >= 0 && policies[i] != only)
            continue;
        atomd_sim_result r;
        if (atomd_simulate(&inv, &trace, policies[i], half_life, &r, &err)) {
            fprintf(stderr, "atomd: simulation (%s): %s\n", atomd_policy_name(policies[i]), err.msg);
            rc = 1;
            break;
        }
        print_result(atomd_policy_name(policies[i]), &r, json);
        atomd_sim_result_free(&r);
    }
    atomd_sim_trace_free(&trace);
    atom_inventory_free(&inv);
    return rc;
}
