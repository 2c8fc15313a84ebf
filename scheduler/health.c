/* scheduler/health.c: node health checks (see health.h). */
#include "scheduler/health.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/atomd.h"

/* Checks running at once: enough to sweep a large cluster, few enough for atomd's machine. */
#define MAX_RUNNING 8

int atomd_health_init(atomd *d, atom_err *err)
{
    memset(&d->health, 0, sizeof d->health);
    if (!d->cfg.health_program[0])
        return 0;
    if (access(d->cfg.health_program, X_OK) != 0)
        return atom_errf(err, "health_check: %s is not an executable program: %s", d->cfg.health_program,
                         strerror(errno));
    d->health.nodes = calloc((size_t)d->inv.n_nodes, sizeof *d->health.nodes);
    if (!d->health.nodes)
        return atom_errf(err, "out of memory");
    char dir[ATOM_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/health", d->cfg.state_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return atom_errf(err, "cannot create %s: %s", dir, strerror(errno));
    return 0;
}

void atomd_health_free(atomd *d)
{
    free(d->health.nodes);
    d->health.nodes = NULL;
}

static bool is_local(const atomd *d, const atom_node *node)
{
    const char *addr = node->addr[0] ? node->addr : node->name;
    return strcmp(addr, "localhost") == 0 || strcmp(addr, "127.0.0.1") == 0 || strcmp(addr, d->hostname) == 0;
}

static void log_path(const atomd *d, int node, char *path, size_t len)
{
    snprintf(path, len, "%s/health/%s.log", d->cfg.state_dir, d->inv.nodes[node].name);
}

/* Starts the check of one node (no-op when one runs). */
static void start_check(atomd *d, int node)
{
    atomd_health_node *h = &d->health.nodes[node];
    if (h->pid > 0)
        return;
    const atom_node *n = &d->inv.nodes[node];
    char path[ATOM_PATH_MAX + 96];
    log_path(d, node, path, sizeof path);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        atom_log(ATOM_LOG_ERROR, "health check of %s: cannot create %s: %s", n->name, path, strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        atom_log(ATOM_LOG_ERROR, "health check of %s: fork: %s", n->name, strerror(errno));
        close(out);
        return;
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
        if (is_local(d, n)) {
            execl(d->cfg.health_program, d->cfg.health_program, n->name, (char *)NULL);
        } else {
            const char *addr = n->addr[0] ? n->addr : n->name;
            execlp("mpirun", "mpirun", "-np", "1", "--host", addr, "-x", "ATOM_HEALTH_NODE", d->cfg.health_program,
                   n->name, (char *)NULL);
        }
        fprintf(stderr, "cannot run %s: %s\n", d->cfg.health_program, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(out);
    h->pid = pid;
    h->started = h->last_run = atom_monotonic();
    d->health.running++;
}

bool atomd_health_hold(atomd *d, const atom_placement *pl, char *why, size_t why_len)
{
    if (!d->health.nodes || !pl->node)
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
        if (d->cfg.health_interval <= 0 || h->pid > 0 || d->health.running >= MAX_RUNNING ||
            d->nodes[n].state != ATOMD_NODE_UP)
            continue;
        if (h->last_run == 0 || now - h->last_run >= d->cfg.health_interval)
            start_check(d, n);
    }
}

/* The first line the check printed, for the drain reason. */
static void first_line(const atomd *d, int node, char *line, size_t len)
{
    char path[ATOM_PATH_MAX + 96];
    log_path(d, node, path, sizeof path);
    line[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(line, (int)len, f))
        line[strcspn(line, "\r\n")] = 0;
    fclose(f);
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
        if (exit_code == 0 && !timed_out) {
            h->last_ok = now;
            return true;
        }
        char line[96], reason[160];
        first_line(d, n, line, sizeof line);
        if (timed_out)
            snprintf(reason, sizeof reason, "health check timed out after %.0f s", d->cfg.health_timeout);
        else
            snprintf(reason, sizeof reason, "health check failed (exit %d)%s%s", exit_code, line[0] ? ": " : "", line);
        atom_log(ATOM_LOG_WARN, "node %s drained: %s", d->inv.nodes[n].name, reason);
        atom_err err = {{0}};
        if (d->nodes[n].state == ATOMD_NODE_UP && atomd_node_set(d, n, ATOMD_NODE_DRAINED, reason, &err))
            atom_log(ATOM_LOG_ERROR, "node %s: %s", d->inv.nodes[n].name, err.msg);
        return true;
    }
    return false;
}
