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
#include "scheduler/cgroup.h"
#include "scheduler/job_env.h"
#include "scheduler/owner_io.h"
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
    free(a->probe_nodes);
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

/* A folder of atomd's with exactly mode: made, or found as a real folder of atomd's user (not a
 * link, not someone else's) and set to mode. Only atomd writes the folders above it. */
static int make_dir(const char *path, mode_t mode, atom_err *err)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return atom_errf(err, "cannot create %s: %s", path, strerror(errno));
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        return atom_errf(err, "%s is not a folder of atomd's user (uid %u)", path, (unsigned)geteuid());
    if ((st.st_mode & 07777) != mode && chmod(path, mode) != 0)
        return atom_errf(err, "cannot set the mode of %s to %04o: %s", path, (unsigned)mode, strerror(errno));
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
 * has taken the owner's uid, gid and groups (launch_mpirun.c), a Slurm job is submitted with
 * sbatch --uid/--gid. Only the
 * attempt's output folder becomes the owner's, with what atomd put in it (the rank log links),
 * so that their workers can write their logs and heartbeats there; the attempt's folder and
 * atomd's records in it (plan, ranks.app, launcher.log, exit_status) stay atomd's. */
static int hand_to_owner(const atomd_job *job, const atom_launch *launch, struct passwd *pw, char *buf,
                         size_t buf_len, atom_err *err)
{
    struct passwd *res = NULL;
    if (getpwuid_r(job->owner, pw, buf, buf_len, &res) != 0 || !res)
        return atom_errf(err, "the owner of job %s (uid %u) has no account here", job->id_text, (unsigned)job->owner);
    const char *out = launch->out_dir;
    /* Still atomd's alone (made 0700 just now): nobody else can have put anything in it. */
    DIR *dir = opendir(out);
    if (!dir)
        return atom_errf(err, "cannot read %s: %s", out, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.' && fchownat(dirfd(dir), e->d_name, pw->pw_uid, pw->pw_gid, AT_SYMLINK_NOFOLLOW) != 0)
            rc = atom_errf(err, "cannot give %s/%s to uid %u: %s", out, e->d_name, (unsigned)pw->pw_uid,
                           strerror(errno));
    closedir(dir);
    if (rc == 0 && chown(out, pw->pw_uid, pw->pw_gid) != 0)
        rc = atom_errf(err, "cannot give %s to uid %u: %s", out, (unsigned)pw->pw_uid, strerror(errno));
    return rc;
}

/* mpirun's output is copied into launcher.log up to this; what is beyond is read and dropped. */
#define LAUNCHER_LOG_MAX ((size_t)16 << 20)
/* What one call of the pipe's handler copies at most: one chatty mpirun does not hold the loop. */
#define LAUNCHER_READ_BUDGET ((size_t)64 << 10)

/* Copies what the pipe holds now into launcher.log, at most budget bytes. Returns true at the
 * pipe's end (every writer gone) or on an error, false when it would block or the budget is
 * spent. */
static bool copy_launcher_output(atomd_attempt *a, size_t budget)
{
    char buf[8192];
    for (size_t done = 0; done < budget;) {
        ssize_t n = read(a->pipe_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n <= 0)
            return true;
        done += (size_t)n;
        size_t room = a->log_bytes < LAUNCHER_LOG_MAX ? LAUNCHER_LOG_MAX - a->log_bytes : 0;
        size_t keep = (size_t)n < room ? (size_t)n : room;
        for (size_t w = 0; w < keep;) {
            ssize_t r = write(a->log_fd, buf + w, keep - w);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break; /* a full disk: the record stops here, the pipe is still drained */
            w += (size_t)r;
        }
        if (keep < (size_t)n && room > 0) {
            static const char note[] = "\n[atomd: launcher output beyond 16 MiB not kept]\n";
            (void)!write(a->log_fd, note, sizeof note - 1);
        }
        a->log_bytes += (size_t)n;
    }
    return false;
}

static void close_launcher_output(atomd *d, atomd_attempt *a)
{
    if (!a->piping)
        return;
    atomd_loop_del(&d->loop, a->pipe_fd);
    close(a->pipe_fd);
    close(a->log_fd);
    a->piping = false;
    a->pipe_fd = a->log_fd = -1;
}

static void on_launcher_output(atomd *d, int fd, unsigned mask, void *arg)
{
    (void)fd, (void)mask;
    atomd_attempt *a = &((atomd_job *)arg)->cur;
    if (a->piping && copy_launcher_output(a, LAUNCHER_READ_BUDGET))
        close_launcher_output(d, a); /* mpirun and everything it started have closed it */
}

/* mpirun's stdout and stderr: the write end of a pipe whose read end atomd watches in its loop
 * and copies into log_fd (launcher.log). A file in a folder the owner could reach would be theirs
 * to swap or fill; a pipe atomd made is not (its inode is atomd's, mode 0600: not reopened
 * through /proc by the owner's processes either). Returns the write end for mpirun, which the
 * caller closes once mpirun has it; -1 with err on failure (log_fd closed). */
static int open_launcher_pipe(atomd *d, atomd_job *job, int log_fd, atom_err *err)
{
    atomd_attempt *a = &job->cur;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        atom_errf(err, "pipe for mpirun's output: %s", strerror(errno));
        close(log_fd);
        return -1;
    }
    /* Only atomd's end is non-blocking: mpirun waits on a full pipe rather than lose a line. */
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0 ||
        atomd_loop_add(&d->loop, p[0], ATOMD_READABLE, on_launcher_output, job, err)) {
        if (!err->msg[0])
            atom_errf(err, "pipe for mpirun's output: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        close(log_fd);
        return -1;
    }
    a->piping = true;
    a->pipe_fd = p[0];
    a->log_fd = log_fd;
    a->log_bytes = 0;
    return p[1];
}

/* The launcher's own messages (mpirun's): atomd's file, in the attempt's folder, made new
 * (O_EXCL: never one found there) and never through a link. */
static int open_launcher_log(const char *dir, atom_err *err)
{
    char path[ATOM_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/launcher.log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return atom_errf(err, "cannot create %s: %s", path, strerror(errno));
    return fd;
}

/* The attempt's folder <state>/jobs/ID/attempt-N (atomd's, 0711: the owner's processes pass
 * through it to their output folder and read the plan, they list and change nothing) and the
 * output folder in it (0700, handed to the owner before mpirun starts). */
static int make_attempt_dirs(atomd *d, const atomd_job *job, int n, char *dir, size_t dir_len, char *out,
                             size_t out_len, atom_err *err)
{
    if ((size_t)snprintf(dir, dir_len, "%s/jobs", d->cfg.state_dir) >= dir_len || make_dir(dir, 0711, err))
        return atom_errf(err, "%s", err->msg[0] ? err->msg : "state folder path too long");
    if ((size_t)snprintf(dir, dir_len, "%s/jobs/%s", d->cfg.state_dir, job->id_text) >= dir_len ||
        make_dir(dir, 0711, err))
        return atom_errf(err, "%s", err->msg[0] ? err->msg : "state folder path too long");
    if ((size_t)snprintf(dir, dir_len, "%s/jobs/%s/attempt-%d", d->cfg.state_dir, job->id_text, n) >=
            dir_len ||
        (size_t)snprintf(out, out_len, "%s/output", dir) >= out_len)
        return atom_errf(err, "state folder path too long");
    return make_dir(dir, 0711, err) || make_dir(out, 0700, err) ? -1 : 0;
}

/* Backoff after atomd's own launch failures: 1 s, doubling, at most 5 minutes. */
#define LAUNCH_RETRY_FIRST 1.0
#define LAUNCH_RETRY_MAX 300.0

/* A launch that failed before the job's own code ran (no folder, no descriptor, no fork, a
 * launcher that cannot start, sbatch refusing): atomd's failure, not the job's. The job waits
 * pending for a backoff that doubles with each such failure, and its restarts are not charged. */
static void launch_failed(atomd *d, atomd_job *job, const atom_err *err)
{
    atomd_attempt *a = &job->cur;
    planner_mark(d, &a->placement, false);
    a->live = false;
    a->pid = 0;
    job->launch_errors++;
    double delay = LAUNCH_RETRY_FIRST;
    for (int i = 1; i < job->launch_errors && delay < LAUNCH_RETRY_MAX; i++)
        delay *= 2;
    if (delay > LAUNCH_RETRY_MAX)
        delay = LAUNCH_RETRY_MAX;
    job->launch_retry_at = atomd_mono(d) + delay;
    snprintf(a->stop_reason, sizeof a->stop_reason, "launch failed (atomd's, not charged): %.190s", err->msg);
    job->state = ATOMD_JOB_PENDING;
    snprintf(job->reason, sizeof job->reason,
             "attempt %d could not be launched (%.150s); atomd retries in %.0f s", a->n, err->msg, delay);
    d->changed = true;
    if (a->n > 0)
        attempt_save(d, job, "launch failed", -1);
    job_save(d, job);
    atom_log(ATOM_LOG_ERROR, "job %s: attempt %d: launch failed: %s (atomd's own failure, not charged to the "
             "job; retrying in %.0f s)", job->id_text, a->n, err->msg, delay);
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

    char dir[ATOM_PATH_MAX], out_dir[ATOM_PATH_MAX];
    atom_plan plan;
    memset(&plan, 0, sizeof plan);
    int rc = -1, out = -1;
    dir[0] = out_dir[0] = 0;
    if (d->launcher->simulated) { /* virtual attempts leave no files */
        if (alloc_ranks(a))
            goto fail;
        goto planned_dir;
    }
    if (make_attempt_dirs(d, job, a->n, dir, sizeof dir, out_dir, sizeof out_dir, err) || alloc_ranks(a))
        goto fail;
planned_dir:
    if (atom_plan_from_placement(&d->inv, &job->spec, &a->placement, &plan, err))
        goto fail;
    snprintf(plan.job_id, sizeof plan.job_id, "%s", job->id_text);
    plan.attempt = a->n;
    snprintf(plan.run_dir, sizeof plan.run_dir, "%s", out_dir); /* where the workers write */
    atomd_server_plan_addrs(d, &plan);
    if (d->launcher->prepare(&plan, dir, d->cfg.worker, &a->launch, err))
        goto fail;
    /* The owner's processes read the plan and application file, whatever atomd's umask. */
    if (!d->launcher->simulated &&
        (chmod(a->launch.plan_path, 0644) != 0 || chmod(a->launch.app_path, 0644) != 0)) {
        atom_errf(err, "cannot make %s readable to the job: %s", a->launch.run_dir, strerror(errno));
        goto fail;
    }
    /* mpirun's messages go to atomd's own launcher.log, through a pipe atomd holds (without an
     * event loop, as in a test, straight into the file); Slurm writes the batch script's output
     * into the output folder itself, as the job's owner. */
    if (d->launcher->child) {
        int log = open_launcher_log(dir, err);
        if (log < 0)
            goto fail;
        out = d->loop.epoll_fd >= 0 ? open_launcher_pipe(d, job, log, err) : log;
        if (out < 0)
            goto fail;
    }
    struct passwd pw, *who = NULL;
    char pw_buf[4096];
    if (geteuid() == 0 && job->owner != 0 && !d->launcher->simulated) {
        /* The output folder is the owner's; the launch takes the owner's identity. */
        if (hand_to_owner(job, &a->launch, &pw, pw_buf, sizeof pw_buf, err))
            goto fail;
        who = &pw;
        a->launch.as_owner = true;
        a->launch.owner_uid = pw.pw_uid;
        a->launch.owner_gid = pw.pw_gid;
        a->launch.n_groups = (int)(sizeof a->launch.groups / sizeof *a->launch.groups);
        if (getgrouplist(pw.pw_name, pw.pw_gid, a->launch.groups, &a->launch.n_groups) < 0)
            a->launch.n_groups = (int)(sizeof a->launch.groups / sizeof *a->launch.groups);
    }
    /* The job's environment (job_env.h) and, on atomd's node, its own cgroup (cgroup.h), made
     * before the attempt is durable: a crash finds the folder, empty or holding the attempt. */
    if (!d->launcher->simulated) {
        atomd_job_identity id = {0};
        if (who)
            id = (atomd_job_identity){who->pw_name, who->pw_dir, who->pw_shell};
        a->launch.envp = atomd_job_environ(d->cfg.job_env, who ? &id : NULL);
        if (!a->launch.envp) {
            atom_errf(err, "out of memory for the job's environment");
            goto fail;
        }
    }
    if (d->launcher->child && d->cgroups.usable &&
        atomd_cgroup_path(&d->cgroups, job->id_text, a->n, a->launch.cgroup, sizeof a->launch.cgroup) == 0 &&
        atomd_cgroup_create(a->launch.cgroup, err) != 0)
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

    rc = d->launcher->start(&plan, &a->launch, out, out, err);
    atomd_job_environ_free(a->launch.envp);
    a->launch.envp = NULL;
    if (out >= 0)
        close(out);
    out = -1;
    if (rc)
        goto fail;
    /* Fault injection for the recovery test: die where only the "starting" row is durable. */
    const char *fault = getenv("ATOMD_FAULT");
    if (fault && strcmp(fault, "after-spawn") == 0)
        _exit(99);
    a->pid = a->launch.pid; /* 0 for a Slurm job */
    a->pid_start = a->pid > 0 ? atomd_proc_start_time(a->pid) : 0;
    a->live = true;
    job->launch_errors = 0;
    attempt_save(d, job, "running", -1); /* with the Slurm job id, which only this store holds */
    if (a->launch.slurm_job[0]) {
        /* Durable now, not at the end of the iteration: a restarted atomd adopts the Slurm job
         * by this id, or would submit the attempt again. */
        atom_err cerr = {{0}};
        if (atomd_store_commit(&d->store, &cerr))
            atom_log(ATOM_LOG_ERROR, "job %s attempt %d: %s", job->id_text, a->n, cerr.msg);
    }
    atom_plan_free(&plan);
    atom_log(ATOM_LOG_INFO, "job %s (%s): attempt %d started, %d ranks, by %s (pid %d)", job->id_text,
             job->spec.name, a->n, a->placement.world, d->launcher->name, (int)a->pid);
    return 0;

fail:
    if (out >= 0)
        close(out);
    atomd_job_environ_free(a->launch.envp);
    a->launch.envp = NULL;
    close_launcher_output(d, a);
    atom_plan_free(&plan);
    launch_failed(d, job, err);
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

/* After a failed mpirun: when its messages (atomd's launcher.log) say it could not start its
 * daemon on a node, the attempt's nodes they name (or its one remote node, when they name none)
 * are suspects, in a->probe_nodes. That text only starts atomd's own probes of them: mpirun ran as
 * the job's owner, who chooses its launch agent (~/.openmpi) and so what it prints. Returns how
 * many nodes are suspects. */
static int unreachable_suspects(atomd *d, atomd_job *job, int exit_code)
{
    atomd_attempt *a = &job->cur;
    if (!d->launcher->child || exit_code == 0 || a->stop != ATOMD_STOP_NONE || a->adopted || !a->placement.node ||
        !a->launch.run_dir[0] || !d->health.nodes)
        return 0;
    char path[ATOM_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/launcher.log", a->launch.run_dir);
    size_t len = 0;
    /* atomd's own file (mpirun's output through atomd's pipe), read as one */
    char *text = atomd_owner_read(path, geteuid(), getegid(), 1 << 20, &len, NULL);
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
    free(text);
    if (n_hit == 0) {
        free(hit);
        return 0;
    }
    /* The first n_nodes entries: still probed; the next n_nodes: found unreachable. */
    memset(seen, 0, (size_t)d->inv.n_nodes * sizeof *seen);
    free(a->probe_nodes);
    a->probe_nodes = hit;
    return n_hit;
}

static void write_exit_status(const atomd_attempt *a, int exit_code)
{
    if (!a->launch.run_dir[0])
        return;
    char path[ATOM_PATH_MAX + 16], text[64];
    snprintf(path, sizeof path, "%s/exit_status", a->launch.run_dir); /* atomd's folder */
    int len = snprintf(text, sizeof text, "%d\n", exit_code);
    atom_write_file_atomic(path, text, (size_t)len, NULL);
}

/* The names of the nodes in mask, as "n1, n2". */
static void node_names(const atomd *d, const bool *mask, char *names, size_t len)
{
    size_t used = 0;
    names[0] = 0;
    for (int n = 0; mask && n < d->inv.n_nodes && used < len; n++)
        if (mask[n])
            used += (size_t)snprintf(names + used, len - used, "%s%s", used ? ", " : "",
                                     d->inv.nodes[n].name);
}

/* The attempt's outcome once atomd knows it (see jobs.h): exit_code, and whether atomd's own
 * probes found a node the attempt's mpirun could not reach. */
static void attempt_outcome(atomd *d, atomd_job *job, int exit_code, bool unreached)
{
    atomd_attempt *a = &job->cur;
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
    } else if (unreached) {
        /* The workers never ran there: not the job's failure (Slurm requeues a job whose node
         * fails the same way). atomd's probe marked the nodes down, so the next attempt goes
         * elsewhere. */
        const bool *unreached_nodes = a->probe_nodes ? a->probe_nodes + d->inv.n_nodes : NULL;
        node_names(d, unreached_nodes, unreachable, sizeof unreachable);
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
    d->changed = true;
    atom_log(ATOM_LOG_INFO, "job %s (%s): attempt %d ended (%s): %s -> %s", job->id_text, job->spec.name,
             a->n, attempt_state, why, atomd_job_state_name(job->state));
}

void atomd_job_attempt_ended(atomd *d, atomd_job *job, int exit_code)
{
    atomd_attempt *a = &job->cur;
    if (!a->live)
        return;
    a->live = false;
    a->pid = 0;
    /* mpirun is gone; whatever of the job is left on this node (a rank's daemonised child) goes
     * with it, as a Slurm step's processes do. The empty folder is removed by the next sweep. */
    if (a->launch.cgroup[0] && atomd_cgroup_kill(a->launch.cgroup) > 0)
        atom_log(ATOM_LOG_INFO, "job %s attempt %d: killed processes it left behind", job->id_text,
                 a->n);
    if (a->piping) {
        /* mpirun has exited: what it wrote is in the pipe. A process it left behind that still
         * holds the write end gets EPIPE from now on. */
        copy_launcher_output(a, LAUNCHER_LOG_MAX + LAUNCHER_READ_BUDGET);
        close_launcher_output(d, a);
    }
    write_exit_status(a, exit_code);
    planner_mark(d, &a->placement, false);
    job->exit_code = exit_code;
    d->changed = true;
    if (!job->cancel_requested && unreachable_suspects(d, job, exit_code) > 0) {
        /* Pending, not placed, until atomd's probes of the suspects end (atomd_jobs_probed). */
        char names[200];
        node_names(d, a->probe_nodes, names, sizeof names);
        a->probing = true;
        a->probe_exit = exit_code;
        a->probe_unreached = false;
        job->state = ATOMD_JOB_PENDING;
        snprintf(job->reason, sizeof job->reason, "attempt %d: mpirun says it could not reach %.150s; atomd is "
                 "probing it", a->n, names);
        attempt_save(d, job, "probing", exit_code);
        job_save(d, job);
        atom_log(ATOM_LOG_WARN, "job %s attempt %d: mpirun says it could not reach %s; probing", job->id_text,
                 a->n, names);
        for (int n = 0; n < d->inv.n_nodes; n++)
            if (a->probe_nodes[n] && !atomd_health_probe(d, n))
                atomd_jobs_probed(d, n, true); /* no probe could start: taken as reached */
        return;
    }
    attempt_outcome(d, job, exit_code, false);
}

void atomd_jobs_probed(atomd *d, int node, bool reached)
{
    for (int i = 0; i < d->n_jobs; i++) {
        atomd_job *job = d->jobs[i];
        atomd_attempt *a = &job->cur;
        if (!a->probing || !a->probe_nodes || !a->probe_nodes[node])
            continue;
        a->probe_nodes[node] = false;
        if (!reached) {
            a->probe_unreached = true;
            a->probe_nodes[d->inv.n_nodes + node] = true;
        }
        bool left = false;
        for (int n = 0; n < d->inv.n_nodes; n++)
            left |= a->probe_nodes[n];
        if (left)
            continue;
        a->probing = false;
        if (job->state != ATOMD_JOB_PENDING)
            continue; /* cancelled meanwhile */
        attempt_outcome(d, job, a->probe_exit, a->probe_unreached);
    }
}

bool atomd_job_held(const atomd *d, const atomd_job *job, char *why, size_t why_len)
{
    if (job->cur.probing) {
        snprintf(why, why_len, "%s", job->reason); /* "atomd is probing" the nodes */
        return true;
    }
    double now = atomd_mono(d);
    if (job->launch_errors > 0 && now < job->launch_retry_at) {
        snprintf(why, why_len, "attempt %d could not be launched (atomd's own failure, not charged); retrying in "
                 "%.0f s", job->cur.n, job->launch_retry_at - now);
        return true;
    }
    return false;
}

/* Signals an attempt. A child mpirun gets SIGKILL on its whole process tree and other signals
 * itself (it forwards SIGUSR1 and SIGTERM to the ranks); a Slurm job gets them through scancel. */
static void signal_attempt(const atomd *d, const atomd_attempt *a, int sig)
{
    if (!d->launcher->child)
        d->launcher->signal(&a->launch, sig);
    else if (sig == SIGKILL && a->launch.cgroup[0] && atomd_cgroup_kill(a->launch.cgroup) >= 0)
        ; /* every process of the attempt on this node, however it was forked or renamed */
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
        if (job->cur.probing) { /* its last attempt was waiting for atomd's probes */
            job->cur.probing = false;
            attempt_save(d, job, "cancelled", job->cur.probe_exit);
        }
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
            /* Not our child: its status is lost. Whether it finished is what rank 0 last told
             * atomd (heartbeats, kept with the job), never a file in the owner's folder. */
            int64_t step = job->progress.has ? job->progress.step : -1;
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
        if (!d->launcher->child && !d->launcher->simulated && a->placement.node && !a->launch.slurm_job[0]) {
            /* Died between sbatch and the commit of its id: Slurm knows the job by its name. */
            atom_err ferr = {{0}};
            unsigned uid = geteuid() == 0 ? (unsigned)job->owner : (unsigned)geteuid();
            if (atom_launch_slurm_find(&a->launch, job->id_text, uid, &ferr) < 0)
                atom_log(ATOM_LOG_WARN, "job %s: attempt %d: %s", job->id_text, a->n, ferr.msg);
        }
        if (!d->launcher->child && a->placement.node && a->launch.slurm_job[0]) {
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
        /* With a cgroup per attempt, what is in the attempt's folder is the attempt: its first
         * process is mpirun, whoever else names ranks.app on their command line. The folder
         * exists before mpirun does, so a crash between the commit and the pid leaves it. */
        int in_cgroup = -1;
        if (d->launcher->child && d->cgroups.usable &&
            atomd_cgroup_path(&d->cgroups, job->id_text, a->n, a->launch.cgroup,
                              sizeof a->launch.cgroup) == 0)
            in_cgroup = atomd_cgroup_populated(a->launch.cgroup);
        if (in_cgroup < 0)
            a->launch.cgroup[0] = 0;
        if (!d->launcher->child)
            ; /* no Slurm job to find: requeued below */
        else if (in_cgroup == 1)
            pid = atomd_cgroup_leader(a->launch.cgroup);
        else if (in_cgroup == 0)
            ; /* its folder is empty: the attempt is gone */
        else if (a->pid > 0 && a->pid_start && atomd_proc_start_time(a->pid) == a->pid_start)
            pid = a->pid; /* started before atomd had cgroups, or where it has none */
        else if (a->launch.app_path[0] && !d->cgroups.usable)
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
            if (!a->launch.cgroup[0] || atomd_cgroup_kill(a->launch.cgroup) < 0)
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
