/* scheduler/launch_mpirun.c: the mpirun launcher (see launch.h).
 *
 * Open MPI's application file gives every rank its own context: `-np 1 --host H -x
 * CUDA_VISIBLE_DEVICES=G worker --plan P`, in rank order, so MPI_COMM_WORLD ranks match the plan's.
 * mpirun splits the file's lines on white space itself (no shell is involved), so every string that
 * goes into it is checked to hold none.
 *
 * Logs: each rank's stdout and stderr go to its own file in the output folder (OUT, the job's
 * owner's), and mpirun's own messages to RUN/launcher.log, atomd's (jobs.c opens it; the owner
 * cannot write it). The rank files are written by Open MPI's I/O forwarding (`--output-filename
 * OUT/ranks:nojobid,nocopy --merge-stderr-to-stdout`): the ORTE daemon on the rank's node holds the
 * other end of the rank's stdout and stderr from exec on, so a file gets every line of that
 * process, what it prints before MPI_Init, a sanitizer report at exit and Open MPI's backtrace of
 * a segfault, not only what the worker writes once it has redirected itself; "exited on signal
 * 11" and launch errors are mpirun's and land in launcher.log. Each node's daemon writes its
 * ranks' files under the same path, so they meet in one folder on the storage all nodes share
 * (which the plan file, read by every rank, needs already). Open MPI 4.1 names the file
 * OUT/ranks/rank.NN/stdout with NN padded to the digits of the world size; OUT/rank-R.log is a
 * symbolic link to it made here, before the file exists, for the user: atomd itself reads the
 * file (atom_launch_rank_log), never the link.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scheduler/cgroup.h"
#include "scheduler/launch_files.h"

extern char **environ;

/* A word of the application file: non-empty, printable, no white space, no quotes, no '#'. */
static int check_word(const char *what, const char *s, atom_err *err)
{
    if (!s[0])
        return atom_errf(err, "%s is empty", what);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == 0x7f || c == '"' || c == '\'' || c == '#' || c == '\\')
            return atom_errf(err, "%s \"%s\" holds a character mpirun's application file cannot carry "
                             "(white space, a quote, '#' or '\\')", what, s);
    }
    return 0;
}

static bool plan_has_gpus(const atom_plan *plan)
{
    for (int i = 0; i < plan->n_nodes; i++)
        if (plan->nodes[i].has_gpus)
            return true;
    return false;
}

int atom_launch_rank_log(int world, int rank, char *target, size_t len)
{
    char digits[16], world_digits[16];
    int n = snprintf(digits, sizeof digits, "%d", rank);
    int width = snprintf(world_digits, sizeof world_digits, "%d", world); /* Open MPI pads to it */
    char padded[32] = "";
    for (int i = 0; i < width - n && i < (int)sizeof padded - 16; i++)
        padded[i] = '0';
    strcat(padded, digits);
    return snprintf(target, len, "ranks/rank.%s/stdout", padded) >= (int)len ? -1 : 0;
}

/* OUT/rank-R.log -> ranks/rank.NN/stdout for every rank (relative: the folder may move). */
static int link_rank_logs(const atom_plan *plan, const char *dir, atom_err *err)
{
    for (int r = 0; r < plan->world; r++) {
        char target[64], link[ATOM_PATH_MAX + 32];
        atom_launch_rank_log(plan->world, r, target, sizeof target);
        snprintf(link, sizeof link, "%s/rank-%d.log", dir, r);
        if (symlink(target, link) != 0 && errno != EEXIST)
            return atom_errf(err, "cannot create %s: %s", link, strerror(errno));
    }
    return 0;
}

int atom_launch_prepare(const atom_plan *plan, const char *run_dir, const char *worker,
                        atom_launch *launch, atom_err *err)
{
    const char *dir = plan->run_dir[0] ? plan->run_dir : run_dir; /* the output folder */
    if (check_word("the worker path", worker, err) || check_word("the run folder", run_dir, err) ||
        check_word("the output folder", dir, err))
        return -1;
    if (strchr(dir, ':') || strchr(dir, ','))
        return atom_errf(err, "the output folder \"%s\" holds ':' or ',', which mpirun's --output-filename "
                         "takes for its options", dir);
    for (int i = 0; i < plan->n_nodes; i++) {
        const char *host = plan->nodes[i].addr[0] ? plan->nodes[i].addr : plan->nodes[i].name;
        if (check_word("a node address", host, err))
            return -1;
    }
    if (atom_launch_write_plan(plan, run_dir, "ranks.app", launch, err))
        return -1;
    if ((size_t)snprintf(launch->output_opt, sizeof launch->output_opt, "%s/ranks:nojobid,nocopy", dir) >=
        sizeof launch->output_opt)
        return atom_errf(err, "run folder path too long: %s", dir);

    size_t cap = 256 + (size_t)plan->world * (strlen(worker) + strlen(launch->plan_path) + 2 * ATOM_NAME_MAX + 64);
    char *text = malloc(cap);
    if (!text)
        return atom_errf(err, "out of memory for the application file of %d ranks", plan->world);
    size_t len = (size_t)snprintf(text, cap, "# atom: one context per rank, in rank order (job %s, attempt %d)\n",
                                  plan->job_id[0] ? plan->job_id : plan->spec.name, plan->attempt);
    for (int r = 0; r < plan->world; r++) {
        const atom_rank_place *rp = &plan->ranks[r];
        const atom_node *node = &plan->nodes[rp->node];
        const char *host = node->addr[0] ? node->addr : node->name;
        len += (size_t)snprintf(text + len, cap - len, "-np 1 --host %s", host);
        if (node->has_gpus)
            len += (size_t)snprintf(text + len, cap - len, " -x CUDA_VISIBLE_DEVICES=%d", rp->gpu);
        len += (size_t)snprintf(text + len, cap - len, " %s --plan %s\n", worker, launch->plan_path);
    }
    int rc = atom_write_file_atomic(launch->app_path, text, len, err);
    free(text);
    return rc ? rc : link_rank_logs(plan, launch->out_dir, err);
}

char **atom_launch_argv(const atom_plan *plan, const atom_launch *launch)
{
    const char *mpirun = getenv("ATOM_MPIRUN");
    char **argv = calloc(32, sizeof *argv);
    if (!argv)
        return NULL;
    int n = 0;
    argv[n++] = (char *)(mpirun && mpirun[0] ? mpirun : "mpirun");
    argv[n++] = "--app";
    argv[n++] = (char *)launch->app_path;
    /* Ranks place themselves on their plan GPU; CPU binding is left to the site (and on a
     * machine whose "GPUs" are CPU slots there may be more ranks than cores). */
    /* mpirun refuses root without this. atomd runs other users' jobs under their own uid, so
     * only root's own jobs get here as root: root asked for it. */
    if (geteuid() == 0)
        argv[n++] = "--allow-run-as-root";
    /* One log per rank (see the top of this file); nothing is copied to mpirun's own output. */
    argv[n++] = "--output-filename";
    argv[n++] = (char *)launch->output_opt;
    argv[n++] = "--merge-stderr-to-stdout";
    argv[n++] = "--bind-to";
    argv[n++] = "none";
    if (!plan_has_gpus(plan))
        argv[n++] = "--oversubscribe";
    /* ROMIO wrote checkpoints at about the disk's speed here; Open MPI's default MPI-IO at half. */
    argv[n++] = "--mca";
    argv[n++] = "io";
    argv[n++] = "romio321";
    if (plan->n_nodes == 1) {
        /* One node: shared memory only, which halves MPI_Init's time. */
        argv[n++] = "--mca";
        argv[n++] = "pml";
        argv[n++] = "ob1";
        argv[n++] = "--mca";
        argv[n++] = "btl";
        argv[n++] = "self,vader";
    }
    argv[n] = NULL;
    return argv;
}

/* In the forked child: tells the parent why it could not exec (the step and errno), then ends. */
static void child_failed(int report_fd, int step)
{
    int msg[2] = {step, errno};
    ssize_t w = write(report_fd, msg, sizeof msg);
    (void)w;
    _exit(127);
}

enum { STEP_FDS = 1, STEP_CGROUP, STEP_IDENTITY, STEP_FOLDER, STEP_EXEC };

int atom_launch_start(const atom_plan *plan, atom_launch *launch, int out_fd, int err_fd,
                      atom_err *err)
{
    char **argv = atom_launch_argv(plan, launch);
    if (!argv)
        return atom_errf(err, "out of memory");
    /* The child reports a failure before exec through this pipe; exec closes it (O_CLOEXEC),
     * so end-of-file means mpirun runs. */
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        atom_errf(err, "cannot start %s: pipe: %s", argv[0], strerror(errno));
        free(argv);
        return -1;
    }
    char **envp = launch->envp ? launch->envp : environ;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        atom_errf(err, "cannot start %s: fork: %s", argv[0], strerror(e));
        free(argv);
        return -1;
    }
    if (pid == 0) {
        /* The child: its own process group (a signal to it reaches mpirun and its local ranks),
         * default signals, the attempt's cgroup while still root, then the owner's identity. */
        close(report[0]);
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int defaults[] = {SIGUSR1, SIGTERM, SIGINT, SIGHUP, SIGCHLD};
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
            signal(defaults[i], SIG_DFL);
        /* mpirun's output is a pipe to atomd: a restarted atomd no longer reads it, and mpirun
         * must not die of SIGPIPE for a message then (Open MPI gives its ranks the default). */
        signal(SIGPIPE, SIG_IGN);
        if ((out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0) ||
            (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0))
            child_failed(report[1], STEP_FDS);
        if (launch->cgroup[0] && atomd_cgroup_join(launch->cgroup) != 0)
            child_failed(report[1], STEP_CGROUP);
        if (launch->as_owner &&
            (setgroups((size_t)launch->n_groups, launch->groups) != 0 ||
             setgid((gid_t)launch->owner_gid) != 0 || setuid((uid_t)launch->owner_uid) != 0 ||
             (launch->owner_uid != 0 && setuid(0) == 0)))
            child_failed(report[1], STEP_IDENTITY);
        /* Checkpoints and logs readable by the owner's group, by no one else. */
        umask(027);
        if (chdir(launch->out_dir[0] ? launch->out_dir : launch->run_dir) != 0)
            child_failed(report[1], STEP_FOLDER);
        execvpe(argv[0], argv, envp);
        child_failed(report[1], STEP_EXEC);
    }
    setpgid(pid, pid); /* also here, so a signal to the group cannot race the child's own call */
    close(report[1]);
    int msg[2];
    ssize_t got;
    do
        got = read(report[0], msg, sizeof msg);
    while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof msg) {
        static const char *const steps[] = {"", "its output", "the attempt's cgroup",
                                            "the owner's identity", "the output folder", "exec"};
        int step = msg[0] >= STEP_FDS && msg[0] <= STEP_EXEC ? msg[0] : STEP_EXEC;
        waitpid(pid, NULL, 0);
        atom_errf(err, "cannot start %s (%s): %s", argv[0], steps[step], strerror(msg[1]));
        free(argv);
        launch->pid = 0;
        return -1;
    }
    free(argv);
    launch->pid = pid;
    return 0;
}

int atom_launch_signal(const atom_launch *launch, int sig)
{
    if (launch->pid <= 0)
        return -1;
    return kill(launch->pid, sig);
}

int atom_launch_wait(atom_launch *launch, bool block, int *exit_code, atom_err *err)
{
    if (launch->pid <= 0)
        return atom_errf(err, "no launch is running");
    int status;
    pid_t r;
    do {
        r = waitpid(launch->pid, &status, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return atom_errf(err, "waiting for mpirun (pid %d): %s", (int)launch->pid, strerror(errno));
    if (r == 0)
        return 0;
    launch->pid = 0;
    *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return 1;
}
