/* scheduler/jobs.c: the job and attempt state machine of atomd (see jobs.h for the outcomes).
 *
 * Launching is ordered so that no job runs twice: the attempt row ("starting") and the job's
 * running state are committed before mpirun is spawned, so a restarted atomd always knows an
 * attempt may exist and looks for its mpirun (by pid and start time, or by the attempt's
 * application file on mpirun's command line) before it requeues the job.
 */
#include "scheduler/jobs.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scheduler/atomd.h"
#include "scheduler/proc.h"

static const char *const state_names[] = {"pending", "running", "done", "failed", "cancelled", "timeout"};

const char *atomd_job_state_name(atomd_job_state s)
{
    return (unsigned)s < sizeof state_names / sizeof *state_names ? state_names[s] : "unknown";
}

int atomd_job_state_parse(const char *name)
{
    for (size_t i = 0; i < sizeof state_names / sizeof *state_names; i++)
        if (strcmp(state_names[i], name) == 0)
            return (int)i;
    return -1;
}

atomd_job *atomd_job_new(const atom_spec *spec, const char *spec_json, uid_t owner, int n_nodes)
{
    atomd_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->spec = *spec;
    job->spec_json = strdup(spec_json);
    job->exclude = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof *job->exclude);
    if (!job->spec_json || !job->exclude) {
        atomd_job_free(job);
        return NULL;
    }
    job->n_exclude_nodes = n_nodes;
    job->owner = owner;
    job->exit_code = -1;
    job->progress.last_checkpoint = -1;
    return job;
}

static void attempt_reset(atomd_attempt *a)
{
    atom_placement_free(&a->placement);
    free(a->ranks);
    memset(a, 0, sizeof *a);
}

void atomd_job_free(atomd_job *job)
{
    if (!job)
        return;
    attempt_reset(&job->cur);
    free(job->spec_json);
    free(job->exclude);
    free(job);
}

void atomd_job_set_id(atomd_job *job, int64_t id)
{
    job->id = id;
    snprintf(job->id_text, sizeof job->id_text, "%" PRId64, id);
}

atomd_job *atomd_job_find(atomd *d, int64_t id)
{
    int lo = 0, hi = d->n_jobs - 1;  /* jobs are kept in increasing id order */
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (d->jobs[mid]->id == id)
            return d->jobs[mid];
        if (d->jobs[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int atomd_job_add(atomd *d, atomd_job *job, atom_err *err)
{
    if (d->n_jobs == d->cap_jobs) {
        int cap = d->cap_jobs ? 2 * d->cap_jobs : 256;
        atomd_job **jobs = realloc(d->jobs, (size_t)cap * sizeof *jobs);
        if (!jobs)
            return atom_errf(err, "out of memory for %d jobs", cap);
        d->jobs = jobs;
        d->cap_jobs = cap;
    }
    d->jobs[d->n_jobs++] = job;
    return 0;
}

/* Saves the job row; a store failure is logged (the daemon keeps serving from memory and the
 * iteration's COMMIT reports it). */
static void job_save(atomd *d, atomd_job *job)
{
    atom_err err = {{0}};
    if (atomd_store_save_job(&d->store, job, &d->inv, &err))
        atom_log(ATOM_LOG_ERROR, "job %s: %s", job->id_text, err.msg);
}

static void attempt_save(atomd *d, atomd_job *job, const char *state, int exit_code)
{
    atom_err err = {{0}};
    if (atomd_store_save_attempt(&d->store, job, &d->inv, state, exit_code, &err))
        atom_log(ATOM_LOG_ERROR, "job %s attempt %d: %s", job->id_text, job->cur.n, err.msg);
}

static int make_dir(const char *path, atom_err *err)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return atom_errf(err, "cannot create %s: %s", path, strerror(errno));
    return 0;
}

static void planner_mark(atomd *d, const atom_placement *pl, bool busy)
{
    for (int r = 0; pl->node && r < pl->world; r++)
        atom_planner_set_busy(&d->planner, pl->node[r], pl->gpu[r], busy, NULL);
}

static int alloc_ranks(atomd_attempt *a)
{
    free(a->ranks);
    a->ranks = calloc((size_t)(a->placement.world > 0 ? a->placement.world : 1), sizeof *a->ranks);
    if (!a->ranks)
        return -1;
    for (int r = 0; r < a->placement.world; r++)
        a->ranks[r].last_advance = a->started_mono;
    return 0;
}

/* atomd as root runs every job as its owner, never as root: mpirun is started from a child that
 * has taken the owner's uid, gid and groups (the launcher's own start runs as atomd). The
 * attempt folder becomes the owner's, so the workers can write their logs and heartbeats. */
/* The owner's account, and the attempt folder with everything in it handed to them, so that
 * their workers can write their logs, heartbeats and checkpoints there. */
static int hand_to_owner(const atomd_job *job, const atom_launch *launch, struct passwd *pw, char *buf,
                         size_t buf_len, atom_err *err)
{
    struct passwd *res = NULL;
    if (getpwuid_r(job->owner, pw, buf, buf_len, &res) != 0 || !res)
        return atom_errf(err, "the owner of job %s (uid %u) has no account here", job->id_text, (unsigned)job->owner);
    if (chown(launch->run_dir, pw->pw_uid, pw->pw_gid) != 0)
        return atom_errf(err, "cannot give %s to uid %u: %s", launch->run_dir, (unsigned)pw->pw_uid, strerror(errno));
    DIR *dir = opendir(launch->run_dir);
    if (!dir)
        return atom_errf(err, "cannot read %s: %s", launch->run_dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.' && fchownat(dirfd(dir), e->d_name, pw->pw_uid, pw->pw_gid, AT_SYMLINK_NOFOLLOW) != 0)
            rc = atom_errf(err, "cannot give %s/%s to uid %u: %s", launch->run_dir, e->d_name, (unsigned)pw->pw_uid,
                           strerror(errno));
    closedir(dir);
    return rc;
}

static int start_as_owner(const atomd_job *job, const atom_plan *plan, atom_launch *launch, int out_fd,
                          atom_err *err)
{
    struct passwd pw;
    char buf[4096];
    if (hand_to_owner(job, launch, &pw, buf, sizeof buf, err))
        return -1;
    gid_t groups[256];
    int n_groups = (int)(sizeof groups / sizeof *groups);
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n_groups) < 0)
        n_groups = (int)(sizeof groups / sizeof *groups);
    char **argv = atom_launch_argv(plan, launch);
    if (!argv)
        return atom_errf(err, "out of memory");
    pid_t pid = fork();
    if (pid < 0) {
        free(argv);
        return atom_errf(err, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* The child: its own process group (as the launcher does), default signals, the
         * owner's identity, then mpirun. Nothing here returns. */
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int defaults[] = {SIGPIPE, SIGUSR1, SIGTERM, SIGINT, SIGHUP, SIGCHLD};
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
            signal(defaults[i], SIG_DFL);
        if (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(out_fd, STDERR_FILENO) < 0 ||
            setgroups((size_t)n_groups, groups) != 0 || setgid(pw.pw_gid) != 0 || setuid(pw.pw_uid) != 0 ||
            setuid(0) == 0)
            _exit(126);
        setenv("HOME", pw.pw_dir, 1);
        setenv("USER", pw.pw_name, 1);
        setenv("LOGNAME", pw.pw_name, 1);
        unsetenv("OMPI_ALLOW_RUN_AS_ROOT");
        unsetenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM");
        if (chdir(launch->run_dir) != 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    setpgid(pid, pid); /* also here, so a signal to the group cannot race the child's own call */
    free(argv);
    launch->pid = pid;
    return 0;
}

int atomd_job_launch(atomd *d, atomd_job *job, atom_placement *placement, atom_err *err)
{
    atomd_attempt *a = &job->cur;
    attempt_reset(a);
    a->placement = *placement; /* taken over */
    memset(placement, 0, sizeof *placement);
    a->n = ++job->attempts;
    a->start_time = atomd_now(d);
    a->started_mono = atomd_mono(d);
    job->exit_code = -1;

    char dir[ATOM_PATH_MAX];
    atom_plan plan;
    memset(&plan, 0, sizeof plan);
    int rc = -1;
    dir[0] = 0;
    if (d->launcher->simulated) { /* virtual attempts leave no files */
        if (alloc_ranks(a))
            goto fail;
        goto planned_dir;
    }
    if (snprintf(dir, sizeof dir, "%s/jobs", d->cfg.state_dir) >= (int)sizeof dir || make_dir(dir, err))
        goto fail;
    if (snprintf(dir, sizeof dir, "%s/jobs/%s", d->cfg.state_dir, job->id_text) >= (int)sizeof dir ||
        make_dir(dir, err))
        goto fail;
    if ((size_t)snprintf(dir, sizeof dir, "%s/jobs/%s/attempt-%d", d->cfg.state_dir, job->id_text, a->n) >= sizeof dir) {
        atom_errf(err, "state folder path too long");
        goto fail;
    }
    if (make_dir(dir, err) || alloc_ranks(a))
        goto fail;
planned_dir:
    if (atom_plan_from_placement(&d->inv, &job->spec, &a->placement, &plan, err))
        goto fail;
    snprintf(plan.job_id, sizeof plan.job_id, "%s", job->id_text);
    plan.attempt = a->n;
    snprintf(plan.run_dir, sizeof plan.run_dir, "%s", dir);
    atomd_server_plan_addrs(d, &plan);
    if (d->launcher->prepare(&plan, dir, d->cfg.worker, &a->launch, err))
        goto fail;

    /* Durable before mpirun exists: a crash from here on finds the attempt on restart. */
    job->state = ATOMD_JOB_RUNNING;
    if (!job->start_time)
        job->start_time = a->start_time;
    snprintf(job->reason, sizeof job->reason, "running attempt %d", a->n);
    job_save(d, job);
    attempt_save(d, job, "starting", -1);
    if (atomd_store_commit(&d->store, err))
        goto fail;

    /* The launcher's own messages (mpirun's, sbatch's); each rank writes its own rank-R.log. */
    char log_path[ATOM_PATH_MAX + 16];
    snprintf(log_path, sizeof log_path, "%s/launcher.log", dir);
    int out = d->launcher->simulated ? -1 : open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0 && !d->launcher->simulated) {
        atom_errf(err, "cannot create %s: %s", log_path, strerror(errno));
        goto fail;
    }
    if (geteuid() == 0 && job->owner != 0 && !d->launcher->simulated && !d->launcher->child) {
        /* Slurm: sbatch --uid/--gid makes the job the owner's */
        struct passwd pw;
        char buf[4096];
        if (hand_to_owner(job, &a->launch, &pw, buf, sizeof buf, err)) {
            if (out >= 0)
                close(out);
            goto fail;
        }
        a->launch.as_owner = true;
        a->launch.owner_uid = pw.pw_uid;
        a->launch.owner_gid = pw.pw_gid;
    }
    rc = d->launcher->child && geteuid() == 0 && job->owner != 0
             ? start_as_owner(job, &plan, &a->launch, out, err)
             : d->launcher->start(&plan, &a->launch, out, out, err);
    if (out >= 0)
        close(out);
    if (rc)
        goto fail;
    /* Fault injection for the recovery test: die where only the "starting" row is durable. */
    const char *fault = getenv("ATOMD_FAULT");
    if (fault && strcmp(fault, "after-spawn") == 0)
        _exit(99);
    a->pid = a->launch.pid; /* 0 for a Slurm job */
    a->pid_start = a->pid > 0 ? atomd_proc_start_time(a->pid) : 0;
    a->live = true;
    attempt_save(d, job, "running", -1);
    atom_plan_free(&plan);
    atom_log(ATOM_LOG_INFO, "job %s (%s): attempt %d started, %d ranks, by %s (pid %d)", job->id_text,
             job->spec.name, a->n, a->placement.world, d->launcher->name, (int)a->pid);
    return 0;

fail:
    atom_plan_free(&plan);
    snprintf(a->stop_reason, sizeof a->stop_reason, "launch failed: %.220s", err->msg);
    atom_log(ATOM_LOG_ERROR, "job %s: attempt %d: %s", job->id_text, a->n, a->stop_reason);
    /* The placement's GPUs are free again; the attempt counts as a failure. */
    a->live = true;
    a->pid = 0;
    atomd_job_attempt_ended(d, job, 127);
    return -1;
}

/* Records where every rank ran, so that a later attempt can avoid the nodes. */
static void exclude_nodes(atomd *d, atomd_job *job, const bool *bad)
{
    bool any = false;
    for (int n = 0; n < d->inv.n_nodes; n++)
        if (bad[n]) {
            job->exclude[n] = true;
            any = true;
        }
    if (!any)
        return;
    /* If the job could never fit without those nodes (on an empty cluster), excluding them would
     * leave it pending for ever: keep trying everywhere instead. */
    atom_planner empty;
    atom_err err = {{0}};
    if (atom_planner_init(&empty, &d->inv, &err) == 0) {
        if (atom_planner_fits(&empty, &job->spec, job->exclude, NULL, 0, &err) != ATOM_PLACE_OK) {
            memset(job->exclude, 0, (size_t)d->inv.n_nodes * sizeof *job->exclude);
            atom_log(ATOM_LOG_WARN, "job %s: cannot avoid the nodes of its failed attempt (it would no "
                     "longer fit); retrying on any node", job->id_text);
        }
        atom_planner_free(&empty);
    }
}

/* After a failed mpirun: when its own messages (launcher.log) say it could not start its daemon
 * on a node, the nodes of the attempt they name (or its one remote node, when they name none) are
 * marked down, as the health check's probe does (health.h). Returns how many nodes were found
 * unreachable, their names in names. */
static int mark_unreachable_nodes(atomd *d, atomd_job *job, int exit_code, char *names, size_t names_len)
{
    atomd_attempt *a = &job->cur;
    names[0] = 0;
    if (!d->launcher->child || exit_code == 0 || a->stop != ATOMD_STOP_NONE || a->adopted || !a->placement.node ||
        !a->launch.run_dir[0])
        return 0;
    char path[ATOM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/launcher.log", a->launch.run_dir);
    size_t len = 0;
    char *text = atom_read_file(path, 1 << 20, &len, NULL);
    if (!atomd_mpirun_unreachable(text)) {
        free(text);
        return 0;
    }
    bool *hit = calloc((size_t)d->inv.n_nodes * 2, sizeof *hit), *seen = hit ? hit + d->inv.n_nodes : NULL;
    int n_remote = 0, last_remote = -1, n_hit = 0;
    for (int r = 0; hit && r < a->placement.world; r++) {
        int n = a->placement.node[r];
        const atom_node *node = &d->inv.nodes[n];
        if (seen[n] || atomd_node_is_local(d, node))
            continue;
        seen[n] = true;
        n_remote++;
        last_remote = n;
        if (atomd_node_named_in(node, text)) {
            hit[n] = true;
            n_hit++;
        }
    }
    if (hit && n_hit == 0 && n_remote == 1) { /* the message names no host: it can only be that one */
        hit[last_remote] = true;
        n_hit = 1;
    }
    char why[140], reason[160];
    atomd_mpirun_unreachable_why(text, why, sizeof why);
    size_t used = 0;
    for (int n = 0; hit && n < d->inv.n_nodes; n++) {
        if (!hit[n])
            continue;
        used += (size_t)snprintf(names + used, used < names_len ? names_len - used : 0, "%s%s", used ? ", " : "",
                                 d->inv.nodes[n].name);
        if (used >= names_len)
            used = names_len - 1;
        if (d->nodes[n].state != ATOMD_NODE_UP)
            continue; /* drained by an administrator, or down already */
        snprintf(reason, sizeof reason, "not reachable: %s", why);
        atom_log(ATOM_LOG_WARN, "node %s down (job %s attempt %d): %s", d->inv.nodes[n].name, job->id_text, a->n,
                 reason);
        atom_err err = {{0}};
        if (atomd_node_set(d, n, ATOMD_NODE_DOWN, reason, &err))
            atom_log(ATOM_LOG_ERROR, "node %s: %s", d->inv.nodes[n].name, err.msg);
    }
    free(hit);
    free(text);
    return n_hit;
}

static void write_exit_status(const atomd_attempt *a, int exit_code)
{
    if (!a->launch.run_dir[0])
        return;
    char path[ATOM_PATH_MAX + 16], text[64];
    snprintf(path, sizeof path, "%s/exit_status", a->launch.run_dir);
    int len = snprintf(text, sizeof text, "%d\n", exit_code);
    atom_write_file_atomic(path, text, (size_t)len, NULL);
}

void atomd_job_attempt_ended(atomd *d, atomd_job *job, int exit_code)
{
    atomd_attempt *a = &job->cur;
    if (!a->live)
        return;
    a->live = false;
    a->pid = 0;
    write_exit_status(a, exit_code);
    planner_mark(d, &a->placement, false);
    job->exit_code = exit_code;
    d->changed = true;

    const char *attempt_state;
    char why[256], unreachable[200];
    if (a->stop_reason[0])
        snprintf(why, sizeof why, "%s", a->stop_reason);
    else
        snprintf(why, sizeof why, "exit status %d", exit_code);
    if (job->cancel_requested) {
        job->state = ATOMD_JOB_CANCELLED;
        attempt_state = "cancelled";
        snprintf(job->reason, sizeof job->reason, "cancelled");
    } else if (exit_code == 0) {
        job->state = ATOMD_JOB_DONE;
        attempt_state = "done";
        snprintf(job->reason, sizeof job->reason, "done");
    } else if (a->stop == ATOMD_STOP_TIMEOUT) {
        job->state = ATOMD_JOB_TIMEOUT;
        attempt_state = "timeout";
        snprintf(job->reason, sizeof job->reason, "time limit of %" PRId64 " s reached (exit status %d%s)",
                 job->spec.resources.time_limit, exit_code,
                 exit_code == ATOM_EXIT_RESUMABLE ? ", checkpointed and stopped" : "");
    } else if (exit_code == ATOM_EXIT_RESUMABLE && a->stop == ATOMD_STOP_NONE) {
        job->state = ATOMD_JOB_PENDING;
        attempt_state = "stopped";
        snprintf(job->reason, sizeof job->reason, "attempt %d stopped resumable (exit 75); requeued", a->n);
    } else if (a->adopted && exit_code < 0) {
        /* Re-adopted and gone without a known status, short of its last step: not its fault. */
        job->state = ATOMD_JOB_PENDING;
        attempt_state = "lost";
        snprintf(job->reason, sizeof job->reason, "attempt %d ended while atomd was not its parent "
                 "(outcome unknown); requeued", a->n);
    } else if (mark_unreachable_nodes(d, job, exit_code, unreachable, sizeof unreachable) > 0) {
        /* The workers never ran there: not the job's failure (Slurm requeues a job whose node
         * fails the same way). The nodes are down now, so the next attempt goes elsewhere. */
        job->state = ATOMD_JOB_PENDING;
        attempt_state = "unreachable";
        snprintf(why, sizeof why, "mpirun could not reach %.200s", unreachable);
        snprintf(job->reason, sizeof job->reason, "attempt %d could not reach %.160s (now down); requeued", a->n,
                 unreachable);
    } else {
        job->failures++;
        attempt_state = a->stop == ATOMD_STOP_HUNG ? "hung" : "failed";
        bool *bad = calloc((size_t)d->inv.n_nodes, sizeof *bad);
        if (bad && a->stop != ATOMD_STOP_HUNG)
            for (int r = 0; a->placement.node && r < a->placement.world; r++)
                bad[a->placement.node[r]] = true;
        if (bad && a->stop == ATOMD_STOP_HUNG)
            for (int r = 0; a->placement.node && r < a->placement.world; r++)
                if (a->ranks && a->ranks[r].behind)
                    bad[a->placement.node[r]] = true;
        if (job->failures > job->spec.restart.max_restarts) {
            job->state = ATOMD_JOB_FAILED;
            snprintf(job->reason, sizeof job->reason, "failed after %d attempts; last: %.200s", job->attempts, why);
        } else {
            if (bad)
                exclude_nodes(d, job, bad);
            job->state = ATOMD_JOB_PENDING;
            snprintf(job->reason, sizeof job->reason, "attempt %d failed (%.160s); requeued (%d of %d restarts)",
                     a->n, why, job->failures, job->spec.restart.max_restarts);
        }
        free(bad);
    }
    if (atomd_job_final(job->state))
        job->end_time = atomd_now(d);
    snprintf(a->stop_reason, sizeof a->stop_reason, "%s", why);
    attempt_save(d, job, attempt_state, exit_code);
    job_save(d, job);
    atom_log(ATOM_LOG_INFO, "job %s (%s): attempt %d ended (%s): %s -> %s", job->id_text, job->spec.name,
             a->n, attempt_state, why, atomd_job_state_name(job->state));
}

/* Signals an attempt. A child mpirun gets SIGKILL on its whole process tree and other signals
 * itself (it forwards SIGUSR1 and SIGTERM to the ranks); a Slurm job gets them through scancel. */
static void signal_attempt(const atomd *d, const atomd_attempt *a, int sig)
{
    if (!d->launcher->child)
        d->launcher->signal(&a->launch, sig);
    else if (sig == SIGKILL)
        atomd_kill_tree(a->pid, sig);
    else if (a->pid > 0)
        kill(a->pid, sig);
}

static void stop_attempt(atomd *d, atomd_job *job, atomd_stop_kind kind, const char *reason)
{
    atomd_attempt *a = &job->cur;
    double now = atom_monotonic();
    if (a->stop == ATOMD_STOP_NONE || kind == ATOMD_STOP_HUNG || kind == ATOMD_STOP_CANCEL) {
        a->stop = kind;
        snprintf(a->stop_reason, sizeof a->stop_reason, "%s", reason);
    }
    atom_log(ATOM_LOG_INFO, "job %s attempt %d: %s", job->id_text, a->n, reason);
    if (kind == ATOMD_STOP_HUNG) {
        signal_attempt(d, a, SIGKILL);
        a->stop_deadline = now + 5;  /* re-sent until the attempt is reaped */
    } else if (kind == ATOMD_STOP_CANCEL) {
        /* Once training has begun, SIGUSR1: mpirun forwards it at once and the ranks checkpoint
         * and stop, while mpirun holds SIGTERM back and follows it with SIGKILL about a second
         * later, too soon for a checkpoint. Before any rank has reported there is nothing to
         * save, and mpirun, still starting its ranks, would drop a SIGUSR1: SIGTERM then.
         * SIGKILL follows after stop_grace either way. */
        bool training = false;
        for (int r = 0; a->ranks && r < a->placement.world; r++)
            training |= a->ranks[r].seen;
        signal_attempt(d, a, training ? SIGUSR1 : SIGTERM);
        a->stop_deadline = now + d->cfg.stop_grace;
    }
}

int atomd_job_cancel(atomd *d, atomd_job *job, atom_err *err)
{
    if (atomd_job_final(job->state))
        return atom_errf(err, "job %s has already ended (%s)", job->id_text, atomd_job_state_name(job->state));
    job->cancel_requested = true;
    if (job->state == ATOMD_JOB_PENDING) {
        job->state = ATOMD_JOB_CANCELLED;
        job->end_time = atomd_now(d);
        snprintf(job->reason, sizeof job->reason, "cancelled while pending");
        job_save(d, job);
        d->changed = true;
        return 0;
    }
    /* Durable with the answer: a restarted atomd finishes the cancel. */
    job_save(d, job);
    if (job->cur.live)
        stop_attempt(d, job, ATOMD_STOP_CANCEL, "cancelled");
    return 0;
}

void atomd_job_heartbeat(atomd *d, const atom_heartbeat *hb, uid_t sender)
{
    char *end = NULL;
    long long id = strtoll(hb->job_id, &end, 10);
    if (!end || *end || id <= 0)
        return;
    atomd_job *job = atomd_job_find(d, id);
    if (!job || job->state != ATOMD_JOB_RUNNING || !job->cur.live || hb->attempt != job->cur.n ||
        hb->rank < 0 || hb->rank >= job->cur.placement.world || !job->cur.ranks)
        return; /* a late heartbeat of an earlier attempt, or noise */
    if (sender != 0 && sender != geteuid() && sender != job->owner)
        return; /* another user's: nobody may keep someone else's hung job alive */
    atomd_rank_hb *r = &job->cur.ranks[hb->rank];
    double now = atom_monotonic();
    if (!r->seen || hb->step > r->step)
        r->last_advance = now;
    r->seen = true;
    r->step = hb->step;
    r->last_seen = now;
    r->pid = hb->pid;
    r->local = strcmp(hb->host, d->hostname) == 0;
    if (hb->has_progress) {
        job->progress.has = true;
        job->progress.step = hb->step;
        job->progress.loss = hb->loss;
        job->progress.tokens_per_s = hb->tokens_per_s;
        if (hb->last_checkpoint_step >= 0 && hb->last_checkpoint_step != job->progress.last_checkpoint)
            job->progress.checkpoint_seen = atomd_now(d);
        job->progress.last_checkpoint = hb->last_checkpoint_step;
    }
    if (hb->ckpt_skipped > 0) {
        job->progress.ckpt_skipped = hb->ckpt_skipped;
        job->progress.ckpt_skipped_attempt = hb->attempt;
        job->progress.ckpt_skipped_step = hb->ckpt_skipped_step;
        snprintf(job->progress.ckpt_skipped_why, sizeof job->progress.ckpt_skipped_why, "%s",
                 hb->ckpt_skipped_why);
    }
}

/* Whether a rank's process is stopped (SIGSTOP) or gone; known only for ranks on this machine.
 * *state gets its state letter, 0 when it is gone, '?' when unknown. */
static bool rank_process_stuck(const atomd_rank_hb *h, char *state)
{
    *state = '?'; /* unknown: another machine's, or no heartbeat yet */
    if (!h->local || h->pid <= 0)
        return false;
    *state = atomd_proc_state(h->pid);
    return *state == 0 || *state == 'T' || *state == 't' || *state == 'Z';
}

/* The hang check: the job is hung when some rank's step has not grown for longer than the
 * timeout while others moved on, or when no rank has moved for that long. The ranks named are
 * those behind: the stalled ones below the highest step; when all stalled, those whose process
 * is stopped or gone, else those at the lowest step (all of them when they are level). */
static void check_hung(atomd *d, atomd_job *job, double now)
{
    atomd_attempt *a = &job->cur;
    double timeout = (double)job->spec.restart.heartbeat_timeout;
    if (timeout <= 0 || a->stop != ATOMD_STOP_NONE || !a->ranks)
        return;
    int world = a->placement.world;
    int64_t max_step = INT64_MIN, min_step = INT64_MAX;
    int stalled = 0;
    for (int r = 0; r < world; r++) {
        int64_t s = a->ranks[r].seen ? a->ranks[r].step : -1;
        max_step = s > max_step ? s : max_step;
        min_step = s < min_step ? s : min_step;
        stalled += now - a->ranks[r].last_advance > timeout;
    }
    if (stalled == 0 || (stalled < world && min_step == max_step))
        return; /* the others still advance and have not left anyone behind yet */
    int stuck = 0;
    char *states = calloc((size_t)world, 1);
    if (!states)
        return; /* checked again at the next tick */
    for (int r = 0; r < world; r++) {
        a->ranks[r].behind = false;
        stuck += rank_process_stuck(&a->ranks[r], &states[r]);
    }
    for (int r = 0; r < world; r++) {
        atomd_rank_hb *h = &a->ranks[r];
        int64_t s = h->seen ? h->step : -1;
        if (stalled < world)
            h->behind = now - h->last_advance > timeout && s < max_step;
        else if (stuck)
            h->behind = states[r] == 0 || states[r] == 'T' || states[r] == 't' || states[r] == 'Z';
        else
            h->behind = s == min_step;
    }
    char names[200] = "";
    size_t len = 0;
    for (int r = 0; r < world; r++) {
        atomd_rank_hb *h = &a->ranks[r];
        if (!h->behind || len >= sizeof names - 48)
            continue;
        const char *node = d->inv.nodes[a->placement.node[r]].name;
        const char *how = states[r] == 'T' || states[r] == 't' ? ", stopped"
                          : states[r] == 0 || states[r] == 'Z'       ? ", process gone"
                                                                     : "";
        len += (size_t)snprintf(names + len, sizeof names - len, "%srank %d on %s (step %" PRId64 "%s)",
                                len ? ", " : "", r, node, h->seen ? h->step : (int64_t)-1, how);
    }
    free(states);
    char reason[256];
    snprintf(reason, sizeof reason, "hung: no progress for %.0f s from %s", timeout, names);
    atom_log(ATOM_LOG_WARN, "job %s attempt %d %s", job->id_text, a->n, reason);
    /* A node that hangs attempts again and again is taken out of service. */
    for (int r = 0; r < world; r++) {
        if (!a->ranks[r].behind)
            continue;
        int node = a->placement.node[r];
        d->nodes[node].failures++;
        if (d->nodes[node].failures >= ATOMD_DRAIN_AFTER_FAILURES && d->nodes[node].state == ATOMD_NODE_UP) {
            char why[160];
            snprintf(why, sizeof why, "drained after %d hung attempts", d->nodes[node].failures);
            atomd_node_set(d, node, ATOMD_NODE_DRAINED, why, NULL);
        } else {
            atomd_node_set(d, node, d->nodes[node].state, d->nodes[node].reason, NULL);
        }
    }
    stop_attempt(d, job, ATOMD_STOP_HUNG, reason);
}

/* The last step rank 0 wrote to its heartbeat file, or -1. */
static int64_t last_logged_step(const atomd_attempt *a)
{
    char path[ATOM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/heartbeat.rank-0.jsonl", a->launch.run_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[4096];
    int64_t step = -1;
    while (fgets(line, sizeof line, f)) {
        atom_heartbeat hb;
        if (atom_heartbeat_from_json(line, &hb, NULL) == 0)
            step = hb.step;
    }
    fclose(f);
    return step;
}

void atomd_jobs_tick(atomd *d)
{
    double now = atom_monotonic();
    for (int i = 0; i < d->n_jobs; i++) {
        atomd_job *job = d->jobs[i];
        atomd_attempt *a = &job->cur;
        if (job->state != ATOMD_JOB_RUNNING || !a->live)
            continue;
        if (!d->launcher->child) {
            /* A Slurm job: asked, not signalled, whether it has ended. */
            int code = -1;
            atom_err werr = {{0}};
            int r = d->launcher->wait(&a->launch, false, &code, &werr);
            if (r == 1) {
                atomd_job_attempt_ended(d, job, code);
                continue;
            }
            if (r < 0)
                atom_log(ATOM_LOG_DEBUG, "job %s attempt %d: %s", job->id_text, a->n, werr.msg);
        } else if (a->adopted && atomd_proc_start_time(a->pid) != a->pid_start) {
            /* Not our child: its status is lost; the heartbeat file tells whether it finished. */
            int64_t step = last_logged_step(a);
            atomd_job_attempt_ended(d, job, step >= job->spec.training.steps ? 0 : -1);
            continue;
        }
        if (a->stop_deadline > 0 && now >= a->stop_deadline) {
            signal_attempt(d, a, SIGKILL);
            a->stop_deadline = now + 5;
        }
        int64_t limit = job->spec.resources.time_limit;
        double elapsed = now - a->started_mono;
        /* A short limit gets at most half of itself as warning, not a signal at start. */
        double warning = d->cfg.limit_warning < (double)limit / 2 ? d->cfg.limit_warning : (double)limit / 2;
        if (limit > 0 && !a->usr1_sent && elapsed >= (double)limit - warning) {
            a->usr1_sent = true;
            a->stop = ATOMD_STOP_TIMEOUT;
            snprintf(a->stop_reason, sizeof a->stop_reason, "time limit of %" PRId64 " s", limit);
            signal_attempt(d, a, SIGUSR1); /* the ranks checkpoint and stop */
            a->stop_deadline = a->started_mono + (double)limit;
            atom_log(ATOM_LOG_INFO, "job %s attempt %d: SIGUSR1 ahead of its time limit", job->id_text, a->n);
        }
        check_hung(d, job, now);
    }
}

void atomd_jobs_reap(atomd *d)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        bool attempt = false;
        for (int i = 0; i < d->n_jobs && !attempt; i++) {
            atomd_job *job = d->jobs[i];
            if (job->cur.live && !job->cur.adopted && job->cur.pid == pid) {
                job->cur.launch.pid = 0;
                atomd_job_attempt_ended(d, job, code);
                attempt = true;
            }
        }
        if (!attempt)
            atomd_health_reaped(d, pid, code); /* or a node's health check */
    }
}

void atomd_jobs_evict(atomd *d)
{
    int ended = 0;
    for (int i = 0; i < d->n_jobs; i++)
        ended += atomd_job_final(d->jobs[i]->state);
    int drop = ended - d->cfg.keep_finished, kept = 0;
    if (drop <= 0)
        return;
    /* The oldest ended jobs go (their rows stay in the store); the rest keep their id order. */
    for (int i = 0; i < d->n_jobs; i++) {
        atomd_job *job = d->jobs[i];
        if (drop > 0 && atomd_job_final(job->state) && !job->cur.live) {
            atomd_job_free(job);
            drop--;
            continue;
        }
        d->jobs[kept++] = job;
    }
    d->n_jobs = kept;
}

void atomd_jobs_recover(atomd *d)
{
    double now_mono = atom_monotonic(), now = atom_now();
    for (int i = 0; i < d->n_jobs; i++) {
        atomd_job *job = d->jobs[i];
        if (job->state != ATOMD_JOB_RUNNING)
            continue;
        atomd_attempt *a = &job->cur;
        if (!d->launcher->child && a->placement.node && access(a->launch.app_path, R_OK) == 0) {
            /* A Slurm job outlives atomd by design: adopt it, or finish it if it has ended. */
            int code = -1;
            atom_err werr = {{0}};
            int r = d->launcher->wait(&a->launch, false, &code, &werr);
            if (r >= 0) {
                a->live = true;
                a->adopted = true;
                a->started_mono = now_mono - (now - a->start_time);
                planner_mark(d, &a->placement, true);
                alloc_ranks(a);
                if (r == 1) {
                    atomd_job_attempt_ended(d, job, code);
                    continue;
                }
                attempt_save(d, job, "running", -1);
                atom_log(ATOM_LOG_INFO, "job %s: attempt %d re-adopted (Slurm)", job->id_text, a->n);
                if (job->cancel_requested)
                    stop_attempt(d, job, ATOMD_STOP_CANCEL, "cancelled");
                continue;
            }
            atom_log(ATOM_LOG_WARN, "job %s: attempt %d: %s", job->id_text, a->n, werr.msg);
        }
        pid_t pid = 0;
        if (!d->launcher->child)
            ; /* no Slurm job to find: requeued below */
        else if (a->pid > 0 && a->pid_start && atomd_proc_start_time(a->pid) == a->pid_start)
            pid = a->pid;
        else if (a->launch.app_path[0])
            pid = atomd_find_process_with_arg(a->launch.app_path); /* crashed between commit and pid */
        if (pid > 0 && a->placement.node) {
            a->pid = pid;
            a->launch.pid = pid;
            a->pid_start = atomd_proc_start_time(pid);
            a->live = true;
            a->adopted = true;
            a->started_mono = now_mono - (now - a->start_time);
            planner_mark(d, &a->placement, true);
            alloc_ranks(a);
            attempt_save(d, job, "running", -1);
            atom_log(ATOM_LOG_INFO, "job %s: attempt %d re-adopted (mpirun pid %d)", job->id_text, a->n, (int)pid);
            if (job->cancel_requested)
                stop_attempt(d, job, ATOMD_STOP_CANCEL, "cancelled");
            continue;
        }
        if (pid > 0) {
            /* Alive, but on nodes the inventory no longer has: it cannot be watched; stop it
             * before it is requeued, so that it never runs twice. */
            atomd_kill_tree(pid, SIGKILL);
            atom_log(ATOM_LOG_WARN, "job %s: attempt %d ran on nodes no longer in the inventory; killed",
                     job->id_text, a->n);
        }
        if (job->cancel_requested) {
            /* Cancelled before the restart, and its attempt has ended since. */
            job->state = ATOMD_JOB_CANCELLED;
            job->end_time = atom_now();
            snprintf(job->reason, sizeof job->reason, "cancelled");
            snprintf(a->stop_reason, sizeof a->stop_reason, "cancelled; ended while atomd was down");
            if (a->n > 0)
                attempt_save(d, job, "cancelled", -1);
            job_save(d, job);
            continue;
        }
        job->state = ATOMD_JOB_PENDING;
        snprintf(job->reason, sizeof job->reason, "attempt %d was gone when atomd restarted; requeued", a->n);
        snprintf(a->stop_reason, sizeof a->stop_reason, "gone when atomd restarted");
        if (a->n > 0)
            attempt_save(d, job, "lost", -1);
        job_save(d, job);
        atom_log(ATOM_LOG_INFO, "job %s: %s", job->id_text, job->reason);
    }
    d->changed = true;
}
