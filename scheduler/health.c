/* scheduler/health.c: node health checks (see health.h). */
#include "scheduler/health.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/atomd.h"
#include "scheduler/owner_io.h"

/* Checks running at once: enough to sweep a large cluster, few enough for atomd's machine. */
#define MAX_RUNNING 8
/* Seconds between probes of a down node when health_interval is 0. */
#define DOWN_PROBE_INTERVAL 60.0

/* Open MPI 4.1's words when mpirun could not start, or lost, its daemon on a node (help-plm-base,
 * help-errmgr-base): the node was not reached, whatever the program would have done there. */
static const char *const unreachable_marks[] = {
    "ORTE was unable to reliably start one or more daemons",
    "ORTE has lost communication with a remote daemon",
    "An ORTE daemon has unexpectedly failed after launch",
    "ORTE does not know how to route a message",
};

bool atomd_mpirun_unreachable(const char *text)
{
    for (size_t i = 0; text && i < sizeof unreachable_marks / sizeof *unreachable_marks; i++)
        if (strstr(text, unreachable_marks[i]))
            return true;
    return false;
}

void atomd_mpirun_unreachable_why(const char *text, char *why, size_t len)
{
    /* The first line before Open MPI's box: ssh's (or the launch agent's) own message. */
    snprintf(why, len, "mpirun could not start its daemon there");
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 0 && strncmp(line, "-----", 5) != 0) {
            if (strncmp(line, "ORTE ", 5) != 0)
                snprintf(why, len, "mpirun could not start its daemon there: %.*s", (int)n, line);
            return;
        }
        line = nl ? nl + 1 : line + n;
    }
}

bool atomd_node_named_in(const atom_node *node, const char *text)
{
    /* The address as given, and as Open MPI passes it to ssh: without its domain. */
    const char *addr = node->addr[0] ? node->addr : node->name;
    char names[2][ATOM_NAME_MAX + 64];
    snprintf(names[0], sizeof names[0], "%s", addr);
    snprintf(names[1], sizeof names[1], "%s", addr);
    char *dot = strchr(names[1], '.');
    bool numeric = strspn(addr, "0123456789.") == strlen(addr) || strchr(addr, ':');
    if (dot && !numeric)
        *dot = 0;
    for (int k = 0; k < 2; k++) {
        size_t n = strlen(names[k]);
        for (const char *p = text; n && (p = strstr(p, names[k])) != NULL; p++) {
            char before = p > text ? p[-1] : ' ', after = p[n];
            bool word = !(isalnum((unsigned char)before) || before == '-' || before == '.') &&
                        !(isalnum((unsigned char)after) || after == '-' || (after == '.' && isalnum((unsigned char)p[n + 1])));
            if (word)
                return true;
        }
    }
    return false;
}

int atomd_health_init(atomd *d, atom_err *err)
{
    memset(&d->health, 0, sizeof d->health);
    if (d->launcher->simulated || (!d->launcher->child && !d->cfg.health_program[0]))
        return 0; /* virtual nodes, or Slurm's, which Slurm marks down itself */
    if (d->cfg.health_program[0] && access(d->cfg.health_program, X_OK) != 0)
        return atom_errf(err, "health_check: %s is not an executable program: %s", d->cfg.health_program,
                         strerror(errno));
    /* Always: a node that is down is probed for its return even without a health program. */
    d->health.nodes = calloc((size_t)(d->inv.n_nodes > 0 ? d->inv.n_nodes : 1), sizeof *d->health.nodes);
    if (!d->health.nodes)
        return atom_errf(err, "out of memory");
    /* The checks' output is atomd's alone (0700): a node's reason, which everyone sees, comes
     * from it. */
    char dir[ATOM_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/health", d->cfg.state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return atom_errf(err, "cannot create %s: %s", dir, strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        return atom_errf(err, "%s is not a folder of atomd's user (uid %u)", dir, (unsigned)geteuid());
    if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) != 0)
        return atom_errf(err, "cannot set the mode of %s to 0700: %s", dir, strerror(errno));
    return 0;
}

void atomd_health_free(atomd *d)
{
    free(d->health.nodes);
    d->health.nodes = NULL;
}

bool atomd_node_is_local(const atomd *d, const atom_node *node)
{
    const char *addr = node->addr[0] ? node->addr : node->name;
    return strcmp(addr, "localhost") == 0 || strcmp(addr, "127.0.0.1") == 0 || strcmp(addr, d->hostname) == 0;
}

static void log_path(const atomd *d, int node, char *path, size_t len)
{
    snprintf(path, len, "%s/health/%s.log", d->cfg.state_dir, d->inv.nodes[node].name);
}

/* Starts the check of one node (true when one runs, started now or before). */
static bool start_check(atomd *d, int node)
{
    atomd_health_node *h = &d->health.nodes[node];
    if (h->pid > 0)
        return true;
    const atom_node *n = &d->inv.nodes[node];
    char path[ATOM_PATH_MAX + 96];
    log_path(d, node, path, sizeof path);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        atom_log(ATOM_LOG_ERROR, "health check of %s: cannot create %s: %s", n->name, path, strerror(errno));
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        atom_log(ATOM_LOG_ERROR, "health check of %s: fork: %s", n->name, strerror(errno));
        close(out);
        return false;
    }
    if (pid == 0) {
        /* The child: atomd's blocked signals (signalfd) back to normal, its own group, output to
         * the log, then the program; nothing here returns. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        if (dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
            _exit(126);
        setenv("ATOM_HEALTH_NODE", n->name, 1);
        /* Without a health program (a down node's probe) the check is only whether mpirun reaches
         * the node: `true` there. */
        const char *program = d->cfg.health_program[0] ? d->cfg.health_program : "true";
        if (atomd_node_is_local(d, n)) {
            execlp(program, program, n->name, (char *)NULL);
        } else {
            const char *addr = n->addr[0] ? n->addr : n->name;
            char *argv[16];
            int k = 0;
            argv[k++] = "mpirun";
            if (geteuid() == 0) /* atomd's own check, run as atomd: as root, mpirun wants to be told */
                argv[k++] = "--allow-run-as-root";
            char *rest[] = {"-np", "1", "--host", (char *)addr, "-x", "ATOM_HEALTH_NODE", (char *)program,
                            (char *)n->name, NULL};
            memcpy(argv + k, rest, sizeof rest);
            execvp("mpirun", argv);
        }
        fprintf(stderr, "cannot run %s: %s\n", program, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(out);
    h->pid = pid;
    h->started = h->last_run = atom_monotonic();
    d->health.running++;
    return true;
}

bool atomd_health_probe(atomd *d, int node)
{
    return d->health.nodes && node >= 0 && node < d->inv.n_nodes && start_check(d, node);
}

bool atomd_health_hold(atomd *d, const atom_placement *pl, char *why, size_t why_len)
{
    if (!d->health.nodes || !d->cfg.health_program[0] || !pl->node)
        return false;
    double now = atom_monotonic();
    bool hold = false;
    for (int r = 0; r < pl->world; r++) {
        int node = pl->node[r];
        atomd_health_node *h = &d->health.nodes[node];
        if (h->last_ok > 0 && now - h->last_ok <= d->cfg.health_fresh)
            continue;
        if (!hold && why)
            snprintf(why, why_len, "waiting for the health check of node %s", d->inv.nodes[node].name);
        hold = true;
        start_check(d, node); /* before a job: not limited to MAX_RUNNING, the job waits for it */
    }
    return hold;
}

void atomd_health_tick(atomd *d)
{
    if (!d->health.nodes)
        return;
    double now = atom_monotonic();
    for (int n = 0; n < d->inv.n_nodes; n++) {
        atomd_health_node *h = &d->health.nodes[n];
        if (h->pid > 0 && now - h->started > d->cfg.health_timeout) {
            kill(-h->pid, SIGKILL); /* reaped through SIGCHLD: a failure */
            continue;
        }
        if (h->pid > 0 || d->health.running >= MAX_RUNNING)
            continue;
        /* Up nodes: the periodic health check, when configured. Down nodes: probed until they
         * answer (as Slurm's ReturnToService), at the same interval or every DOWN_PROBE_INTERVAL. */
        double interval = d->cfg.health_interval;
        if (d->nodes[n].state == ATOMD_NODE_DOWN)
            interval = interval > 0 ? interval : DOWN_PROBE_INTERVAL;
        else if (d->nodes[n].state != ATOMD_NODE_UP || !d->cfg.health_program[0])
            continue;
        if (interval > 0 && (h->last_run == 0 || now - h->last_run >= interval))
            start_check(d, n);
    }
}

static void set_state(atomd *d, int node, atomd_node_state state, const char *reason)
{
    atom_err err = {{0}};
    atom_log(state == ATOMD_NODE_UP ? ATOM_LOG_INFO : ATOM_LOG_WARN, "node %s %s%s%s", d->inv.nodes[node].name,
             atomd_node_state_name(state), reason[0] ? ": " : "", reason);
    if (atomd_node_set(d, node, state, reason, &err))
        atom_log(ATOM_LOG_ERROR, "node %s: %s", d->inv.nodes[node].name, err.msg);
}

bool atomd_health_reaped(atomd *d, pid_t pid, int exit_code)
{
    if (!d->health.nodes)
        return false;
    for (int n = 0; n < d->inv.n_nodes; n++) {
        atomd_health_node *h = &d->health.nodes[n];
        if (h->pid != pid)
            continue;
        double now = atom_monotonic();
        bool timed_out = now - h->started > d->cfg.health_timeout;
        h->pid = 0;
        d->health.running--;
        d->changed = true; /* a held job may start now, or must be placed elsewhere */
        atomd_node_state state = d->nodes[n].state;
        if (exit_code == 0 && !timed_out) {
            h->last_ok = now;
            if (state == ATOMD_NODE_DOWN) /* reached again; an administrator's drain is not undone */
                set_state(d, n, ATOMD_NODE_UP, "");
            atomd_jobs_probed(d, n, true);
            return true;
        }
        char path[ATOM_PATH_MAX + 96], reason[160];
        log_path(d, n, path, sizeof path);
        size_t len = 0;
        /* atomd's own file (in its 0700 folder), read as one: no link, no FIFO, bounded. */
        char *text = atomd_owner_read(path, geteuid(), getegid(), 64 * 1024, &len, NULL);
        bool reached = true;
        if (timed_out) {
            /* A probe of a down node that hangs (ssh to an address that drops packets) leaves it
             * down; an up node whose check hangs is drained, as before. */
            snprintf(reason, sizeof reason, "health check timed out after %.0f s", d->cfg.health_timeout);
            if (state == ATOMD_NODE_UP)
                set_state(d, n, ATOMD_NODE_DRAINED, reason);
            reached = false;
        } else if (!atomd_node_is_local(d, &d->inv.nodes[n]) && atomd_mpirun_unreachable(text)) {
            /* Not reached: mpirun could not start its daemon there. Down, not drained: it comes
             * back by itself once a probe reaches it. */
            char why[140];
            atomd_mpirun_unreachable_why(text, why, sizeof why);
            snprintf(reason, sizeof reason, "not reachable: %s", why);
            if (state == ATOMD_NODE_UP || (state == ATOMD_NODE_DOWN && strcmp(reason, d->nodes[n].reason) != 0))
                set_state(d, n, ATOMD_NODE_DOWN, reason);
            reached = false;
        } else {
            /* Reached, and the program said no: drained (an administrator resumes it). */
            char line[96] = "";
            if (text) {
                size_t end = strcspn(text, "\r\n");
                snprintf(line, sizeof line, "%.*s", (int)end, text);
            }
            snprintf(reason, sizeof reason, "health check failed (exit %d)%s%s", exit_code, line[0] ? ": " : "", line);
            if (state == ATOMD_NODE_UP || state == ATOMD_NODE_DOWN)
                set_state(d, n, ATOMD_NODE_DRAINED, reason);
        }
        free(text);
        atomd_jobs_probed(d, n, reached);
        return true;
    }
    return false;
}
