/* scheduler/launch_slurm.c: atomd's Slurm launcher, with the same shapes as the mpirun launcher
 * (launch.h), so that one ops table can hold both.
 *
 * Under Slurm, Slurm owns placement: an attempt is one sbatch allocation that runs
 * deploy/slurm/atom.sbatch, which starts the workers through atom-srun; each worker builds its plan
 * from the allocation. atomd's scheduling rules still decide the order in which jobs reach sbatch.
 *
 *   prepare  writes run_dir/plan.json (the record) and run_dir/spec.yaml (the normalised spec, as
 *            JSON, which is YAML too) for atom-srun and the workers; both are atomd's, read-only
 *            to the job;
 *   start    sbatch --parsable ... atom.sbatch --run-dir OUT --worker W RUN/spec.yaml, where OUT
 *            is the job's output folder: the batch script's output (OUT/launcher.log) and each
 *            rank's (OUT/rank-R.log) are written there by Slurm as the job's owner. The Slurm job
 *            id goes to launch->slurm_job, which atomd keeps in its store (attempts.slurm_job):
 *            never in a file, since which job root signals must not be the owner's to choose;
 *   signal   SIGUSR1 -> `scancel --signal=USR1 ID` (the steps: workers checkpoint and exit 75, the
 *            batch shell does not requeue); any other signal -> `scancel ID`;
 *   wait     `squeue --json --jobs ID` while the job is queued or running, then
 *            `scontrol show job -o ID` for its end state and exit code (sacct needs accounting
 *            storage, which a site may not have).
 * Every command runs from an argv array (posix_spawnp, no shell). ATOM_SBATCH_TEMPLATE names the
 * template (default: atom.sbatch next to atomd), ATOM_SRUN the wrapper (default: next to atomd).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scheduler/launch_files.h"

extern char **environ;

/* Output of a command kept in memory: squeue --json for one job is a few kilobytes. */
#define CMD_MAX_OUTPUT (4 << 20)

/* Runs argv (no shell), its stdout into a malloc'd string; stderr is appended to err on failure.
 * Returns the exit status (128 + signal), or -1 when it could not run. */
static int run_capture_env(char *const argv[], char *const envp[], char **out, atom_err *err);

static int run_capture(char *const argv[], char **out, atom_err *err)
{
    return run_capture_env(argv, environ, out, err);
}

/* run_capture with envp as the program's environment. */
static int run_capture_env(char *const argv[], char *const envp[], char **out, atom_err *err)
{
    *out = NULL;
    int pipe_out[2];
    if (pipe2(pipe_out, O_CLOEXEC) != 0)
        return atom_errf(err, "pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipe_out[1], STDOUT_FILENO);
    pid_t pid;
    /* sbatch hands its umask to the job (SLURM_UMASK): the owner's group may read what the
     * job writes, no one else. atomd is one thread: the mask is its own again at once. */
    mode_t mask = umask(027);
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, envp);
    umask(mask);
    posix_spawn_file_actions_destroy(&fa);
    close(pipe_out[1]);
    if (rc != 0) {
        close(pipe_out[0]);
        return atom_errf(err, "cannot run %s: %s", argv[0], strerror(rc));
    }
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 == cap) {
            if (cap >= CMD_MAX_OUTPUT)
                break;
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(pipe_out[0], buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(pipe_out[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!buf)
        return atom_errf(err, "out of memory reading %s's output", argv[0]);
    buf[len] = '\0';
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int atom_launch_slurm_prepare(const atom_plan *plan, const char *run_dir, const char *worker,
                              atom_launch *launch, atom_err *err)
{
    if (access(worker, X_OK) != 0)
        return atom_errf(err, "the worker %s cannot be run: %s", worker, strerror(errno));
    if (atom_launch_write_plan(plan, run_dir, "spec.yaml", launch, err))
        return -1;
    char *spec = atom_spec_to_json(&plan->spec);
    if (!spec)
        return atom_errf(err, "cannot encode the job's spec");
    char spec_path[ATOM_PATH_MAX + 16];
    snprintf(spec_path, sizeof spec_path, "%s/spec.yaml", launch->run_dir);
    int rc = atom_write_file_atomic(spec_path, spec, strlen(spec), err);
    free(spec);
    return rc;
}

/* The Slurm job id start got from sbatch (kept by atomd), as text of digits. */
static int read_job_id(const atom_launch *launch, char *id, size_t len, atom_err *err)
{
    size_t digits = strspn(launch->slurm_job, "0123456789");
    if (digits == 0 || digits >= len || launch->slurm_job[digits])
        return atom_errf(err, "the attempt in %s has no Slurm job id", launch->run_dir);
    memcpy(id, launch->slurm_job, digits + 1);
    return 0;
}

int atom_launch_slurm_rank_log(int world, int rank, char *path, size_t len)
{
    (void)world;
    return snprintf(path, len, "rank-%d.log", rank) >= (int)len ? -1 : 0;
}

int atom_launch_slurm_start(const atom_plan *plan, atom_launch *launch, int out_fd, int err_fd,
                            atom_err *err)
{
    (void)out_fd; /* the batch script's output goes to out_dir/launcher.log, written by Slurm, and
                   * each rank's to out_dir/rank-R.log (atom-srun's srun --output) */
    (void)err_fd;
    char template[PATH_MAX], srun[PATH_MAX], worker[PATH_MAX];
    if (atom_program_path("ATOM_SBATCH_TEMPLATE", "atom.sbatch", template, sizeof template, err) ||
        atom_program_path("ATOM_SRUN", "atom-srun", srun, sizeof srun, err) ||
        atom_find_worker(worker, sizeof worker, err))
        return -1;
    const atom_spec *s = &plan->spec;
    int tensor = s->parallelism.tensor, world = tensor * s->parallelism.data;
    int per_node = s->resources.gpus_per_node > 0 ? s->resources.gpus_per_node : world;
    if (per_node % tensor || world % per_node)
        return atom_errf(err, "%d ranks do not fill nodes of %d tasks with whole tensor groups "
                         "of %d", world, per_node, tensor);
    char uid_opt[32], gid_opt[32];
    char name[ATOM_NAME_MAX + 16], nodes[32], tasks[48], time_opt[48], output[ATOM_PATH_MAX + 32],
        chdir_opt[ATOM_PATH_MAX + 16], export_opt[PATH_MAX + ATOM_PATH_MAX + 512],
        spec_path[ATOM_PATH_MAX + 16];
    snprintf(name, sizeof name, "--job-name=atom-%s", plan->job_id[0] ? plan->job_id : s->name);
    /* The atom-srun options go before the spec (the template passes them first). */
    snprintf(nodes, sizeof nodes, "--nodes=%d", world / per_node);
    snprintf(tasks, sizeof tasks, "--ntasks-per-node=%d", per_node);
    snprintf(output, sizeof output, "--output=%s/launcher.log", launch->out_dir);
    snprintf(chdir_opt, sizeof chdir_opt, "--chdir=%s", launch->out_dir);
    /* The workers name atomd's job and attempt in heartbeats and checkpoints (ATOM_JOB_ID,
     * ATOM_ATTEMPT); --export splits on commas, so nothing in it may hold one. */
    const char *job_id = plan->job_id[0] ? plan->job_id : s->name;
    if (strpbrk(job_id, ",= \t\n") || strchr(srun, ','))
        return atom_errf(err, "the job id \"%s\" or the wrapper path %s holds a character sbatch "
                         "--export cannot carry", job_id, srun);
    /* Ranks on other nodes than atomd's send heartbeats over TCP (common.h's atom_hb_tcp). */
    if (strpbrk(plan->heartbeat_tcp, ",") || strpbrk(plan->atomd_host, ",") || strchr(plan->munge_socket, ','))
        return atom_errf(err, "atomd's TCP address, host name or munge_socket holds a comma, which "
                         "sbatch --export cannot carry");
    if ((size_t)snprintf(export_opt, sizeof export_opt, "--export=ALL,ATOM_SRUN=%s,ATOM_JOB_ID=%s,ATOM_ATTEMPT=%d,"
                         "ATOM_HEARTBEAT_TCP=%s,ATOM_ATOMD_HOST=%s,ATOM_MUNGE_SOCKET=%s", srun, job_id,
                         plan->attempt, plan->heartbeat_tcp, plan->atomd_host, plan->munge_socket) >= sizeof export_opt)
        return atom_errf(err, "sbatch --export: the paths are too long");
    snprintf(spec_path, sizeof spec_path, "%s/spec.yaml", launch->run_dir);
    char *argv[32];
    int n = 0;
    argv[n++] = "sbatch";
    argv[n++] = "--parsable";
    if (launch->as_owner) {
        snprintf(uid_opt, sizeof uid_opt, "--uid=%u", launch->owner_uid);
        snprintf(gid_opt, sizeof gid_opt, "--gid=%u", launch->owner_gid);
        argv[n++] = uid_opt;
        argv[n++] = gid_opt;
    }
    argv[n++] = name;
    argv[n++] = nodes;
    argv[n++] = tasks;
    if (s->resources.device != ATOM_DEVICE_CPU)
        argv[n++] = "--gpus-per-task=1";
    if (s->resources.time_limit > 0) {
        snprintf(time_opt, sizeof time_opt, "--time=%lld",
                 (long long)(s->resources.time_limit + 59) / 60);
        argv[n++] = time_opt;
    }
    argv[n++] = output;
    argv[n++] = chdir_opt;
    argv[n++] = export_opt;
    argv[n++] = template;
    argv[n++] = spec_path;
    argv[n++] = "--run-dir";
    argv[n++] = launch->out_dir;
    argv[n++] = "--worker";
    argv[n++] = worker;
    if (plan->heartbeat_addr[0]) {
        argv[n++] = "--heartbeat";
        argv[n++] = (char *)plan->heartbeat_addr;
    }
    argv[n] = NULL;
    char *out = NULL;
    /* sbatch gets the job's environment (job_env.h: an allow-list, the owner's identity), and
     * --export=ALL passes that on: none of atomd's own variables reach the job. */
    int rc = run_capture_env(argv, launch->envp ? launch->envp : environ, &out, err);
    if (rc != 0) {
        free(out);
        return rc < 0 ? -1 : atom_errf(err, "sbatch exited with status %d", rc);
    }
    /* --parsable prints "ID" or "ID;cluster". */
    size_t digits = strspn(out, "0123456789");
    if (digits == 0 || digits >= sizeof launch->slurm_job) {
        atom_errf(err, "sbatch printed no job id: %.200s", out);
        free(out);
        return -1;
    }
    memcpy(launch->slurm_job, out, digits);
    launch->slurm_job[digits] = '\0';
    free(out);
    launch->pid = 0; /* the job runs under slurmctld, not as atomd's child */
    return 0;
}

int atom_launch_slurm_signal(const atom_launch *launch, int sig)
{
    char id[32];
    atom_err err = {{0}};
    if (read_job_id(launch, id, sizeof id, &err))
        return -1;
    char *argv[5];
    int n = 0;
    argv[n++] = "scancel";
    /* USR1: the job steps only (the workers checkpoint and exit 75; the batch shell, which did not
     * get the signal, does not requeue). Anything else cancels the job. */
    if (sig == SIGUSR1)
        argv[n++] = "--signal=USR1";
    argv[n++] = id;
    argv[n] = NULL;
    char *out = NULL;
    int rc = run_capture(argv, &out, &err);
    free(out);
    return rc == 0 ? 0 : -1;
}

static bool state_is_live(const char *state)
{
    static const char *const live[] = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                       "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
                                       "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED"};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (!strcmp(state, live[i]))
            return true;
    return false;
}

int atom_launch_slurm_find(atom_launch *launch, const char *job_id, unsigned uid, atom_err *err)
{
    char name_opt[64], user_opt[32];
    if ((size_t)snprintf(name_opt, sizeof name_opt, "--name=atom-%s", job_id) >= sizeof name_opt)
        return atom_errf(err, "job id too long: %s", job_id);
    snprintf(user_opt, sizeof user_opt, "--user=%u", uid);
    char *argv[] = {"squeue", "--json", name_opt, user_opt, NULL};
    char *out = NULL;
    int rc = run_capture(argv, &out, err);
    if (rc != 0) {
        free(out);
        return rc < 0 ? -1 : atom_errf(err, "squeue --json %s exited with status %d", name_opt, rc);
    }
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    free(out);
    if (!root)
        return atom_errf(err, "squeue --json: not JSON: %s", jerr.text);
    json_int_t newest = -1;
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(root, "jobs"), i, job) {
        json_t *jid = json_object_get(job, "job_id"), *st = json_object_get(job, "job_state");
        /* job_state: a string (Slurm 22.05) or a list of them (later) */
        const char *state = json_is_array(st) ? json_string_value(json_array_get(st, 0)) : json_string_value(st);
        if (json_is_integer(jid) && state && state_is_live(state) && json_integer_value(jid) > newest)
            newest = json_integer_value(jid);
    }
    json_decref(root);
    if (newest < 0)
        return 0;
    snprintf(launch->slurm_job, sizeof launch->slurm_job, "%lld", (long long)newest);
    return 1;
}

/* The job's state from squeue --json ("" when squeue no longer lists it). */
static int squeue_state(const char *id, char *state, size_t len, atom_err *err)
{
    char jobs_opt[48];
    snprintf(jobs_opt, sizeof jobs_opt, "--jobs=%s", id);
    char *argv[] = {"squeue", "--json", jobs_opt, NULL};
    char *out = NULL;
    int rc = run_capture(argv, &out, err);
    state[0] = '\0';
    if (rc != 0) {
        free(out);
        /* squeue fails for a job id slurmctld has forgotten; scontrol will say so too. */
        return rc < 0 ? -1 : 0;
    }
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    free(out);
    if (!root)
        return atom_errf(err, "squeue --json: not JSON: %s", jerr.text);
    json_t *jobs = json_object_get(root, "jobs");
    size_t i;
    json_t *job;
    json_array_foreach(jobs, i, job) {
        json_t *jid = json_object_get(job, "job_id");
        json_t *st = json_object_get(job, "job_state");
        if (json_is_integer(jid) && json_is_string(st) &&
            json_integer_value(jid) == strtoll(id, NULL, 10))
            snprintf(state, len, "%s", json_string_value(st));
    }
    json_decref(root);
    return 0;
}

/* JobState and ExitCode (status:signal) from scontrol show job -o. */
static int scontrol_end(const char *id, char *state, size_t len, int *exit_code, atom_err *err)
{
    char *argv[] = {"scontrol", "show", "job", "-o", (char *)id, NULL};
    char *out = NULL;
    int rc = run_capture(argv, &out, err);
    if (rc != 0) {
        free(out);
        return rc < 0 ? -1 : atom_errf(err, "scontrol show job %s: status %d (job unknown?)", id, rc);
    }
    const char *js = strstr(out, "JobState="), *ec = strstr(out, " ExitCode=");
    if (!js || !ec) {
        free(out);
        return atom_errf(err, "scontrol show job %s: no JobState or ExitCode", id);
    }
    js += strlen("JobState=");
    size_t n = strcspn(js, " \n");
    snprintf(state, len, "%.*s", (int)(n < len ? n : len - 1), js);
    int status = 0, sig = 0;
    if (sscanf(ec + strlen(" ExitCode="), "%d:%d", &status, &sig) != 2) {
        free(out);
        return atom_errf(err, "scontrol show job %s: ExitCode is not N:M", id);
    }
    free(out);
    *exit_code = sig ? 128 + sig : status;
    /* A cancelled job that left no status of its own ended on Slurm's SIGTERM. */
    if (!strcmp(state, "CANCELLED") && *exit_code == 0)
        *exit_code = 128 + SIGTERM;
    return 0;
}


int atom_launch_slurm_wait(atom_launch *launch, bool block, int *exit_code, atom_err *err)
{
    char id[32];
    if (read_job_id(launch, id, sizeof id, err))
        return -1;
    for (;;) {
        char state[64];
        if (squeue_state(id, state, sizeof state, err))
            return -1;
        if (!state[0] || !state_is_live(state)) {
            if (scontrol_end(id, state, sizeof state, exit_code, err))
                return -1;
            if (!state_is_live(state))
                return 1;
        }
        if (!block)
            return 0;
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- nodes and GPUs from Slurm (sinfo --json), instead of atomd's own inventory ------------- */

/* GPUs in a gres string: "gpu:8", "gpu:h100:8(S:0-1)", "gpu:(null):2(IDX:0-1)", several
 * comma-separated resources; 0 when none is a GPU. */
static int gres_gpus(const char *gres)
{
    int total = 0;
    const char *p = gres;
    while (p && *p) {
        const char *end = p;
        int depth = 0;
        while (*end && (depth || *end != ',')) {
            depth += *end == '(';
            depth -= *end == ')';
            end++;
        }
        if (!strncmp(p, "gpu:", 4)) {
            /* The count is the last ':'-separated field before any '('. */
            const char *paren = memchr(p, '(', (size_t)(end - p));
            const char *stop = paren ? paren : end;
            const char *colon = stop;
            while (colon > p && colon[-1] != ':')
                colon--;
            char *num_end;
            long n = strtol(colon, &num_end, 10);
            if (num_end == stop && n > 0 && n < (1 << 20))
                total += (int)n;
        }
        p = *end ? end + 1 : end;
    }
    return total;
}

/* Node states atom may place work on. */
static bool node_usable(json_t *node)
{
    /* Slurm 22.05: "state": "idle", "state_flags": ["DRAIN"]; later: "state": ["IDLE", "DRAIN"]. */
    json_t *state = json_object_get(node, "state"), *flags = json_object_get(node, "state_flags");
    if (json_is_array(state)) {
        flags = state;
        state = json_array_get(state, 0);
    }
    if (!json_is_string(state))
        return false;
    const char *s = json_string_value(state);
    if (strcasecmp(s, "idle") && strcasecmp(s, "mixed") && strcasecmp(s, "allocated"))
        return false;
    size_t i;
    json_t *flag;
    json_array_foreach(flags, i, flag) {
        const char *f = json_string_value(flag);
        if (f && (!strcasecmp(f, "DRAIN") || !strcasecmp(f, "DRAINING") ||
                  !strcasecmp(f, "DRAINED") || !strcasecmp(f, "NOT_RESPONDING") ||
                  !strcasecmp(f, "MAINTENANCE") || !strcasecmp(f, "RESERVED")))
            return false;
    }
    return true;
}

int atom_slurm_nodes_from_json(const char *json, atom_inventory *inv, int **free_gpus,
                               atom_err *err)
{
    memset(inv, 0, sizeof *inv);
    *free_gpus = NULL;
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        return atom_errf(err, "sinfo --json: not JSON at line %d: %s", jerr.line, jerr.text);
    json_t *nodes = json_object_get(root, "nodes");
    if (!json_is_array(nodes)) {
        json_decref(root);
        return atom_errf(err, "sinfo --json: no \"nodes\" list");
    }
    size_t n = json_array_size(nodes);
    inv->nodes = calloc(n ? n : 1, sizeof *inv->nodes);
    *free_gpus = calloc(n ? n : 1, sizeof **free_gpus);
    inv->switches = calloc(1, sizeof *inv->switches);
    if (!inv->nodes || !*free_gpus || !inv->switches) {
        json_decref(root);
        atom_inventory_free(inv);
        free(*free_gpus);
        *free_gpus = NULL;
        return atom_errf(err, "out of memory");
    }
    snprintf(inv->name, sizeof inv->name, "slurm");
    /* Slurm knows the topology (topology/tree); atom sees one switch and lets Slurm place. */
    snprintf(inv->switches[0], sizeof inv->switches[0], "slurm");
    inv->n_switches = 1;
    size_t i;
    json_t *node;
    json_array_foreach(nodes, i, node) {
        json_t *name = json_object_get(node, "name");
        if (!json_is_string(name) || !node_usable(node))
            continue;
        /* sinfo --json lists a node once per partition it is in: keep the first. */
        bool seen = false;
        for (int k = 0; k < inv->n_nodes && !seen; k++)
            seen = !strcmp(inv->nodes[k].name, json_string_value(name));
        if (seen || strlen(json_string_value(name)) >= ATOM_NAME_MAX)
            continue;
        atom_node *out = &inv->nodes[inv->n_nodes];
        snprintf(out->name, sizeof out->name, "%s", json_string_value(name));
        json_t *gres = json_object_get(node, "gres"), *used = json_object_get(node, "gres_used");
        int gpus = json_is_string(gres) ? gres_gpus(json_string_value(gres)) : 0;
        int busy = json_is_string(used) ? gres_gpus(json_string_value(used)) : 0;
        if (gpus > 0) {
            out->gpus = gpus;
            out->has_gpus = true;
            (*free_gpus)[inv->n_nodes] = gpus > busy ? gpus - busy : 0;
        } else {
            /* No GPUs: CPU slots, as atom's own inventory counts them. */
            json_t *cpus = json_object_get(node, "cpus"), *alloc = json_object_get(node, "alloc_cpus");
            out->gpus = json_is_integer(cpus) ? (int)json_integer_value(cpus) : 0;
            int taken = json_is_integer(alloc) ? (int)json_integer_value(alloc) : 0;
            (*free_gpus)[inv->n_nodes] = out->gpus > taken ? out->gpus - taken : 0;
            if (out->gpus <= 0)
                continue;
        }
        inv->n_nodes++;
    }
    json_decref(root);
    return 0;
}

int atom_launch_slurm_nodes(atom_inventory *inv, int **free_gpus, atom_err *err)
{
    char *argv[] = {"sinfo", "--json", NULL};
    char *out = NULL;
    int rc = run_capture(argv, &out, err);
    if (rc != 0) {
        free(out);
        return rc < 0 ? -1 : atom_errf(err, "sinfo --json exited with status %d", rc);
    }
    rc = atom_slurm_nodes_from_json(out, inv, free_gpus, err);
    free(out);
    return rc;
}
