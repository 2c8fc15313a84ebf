/* scheduler/atomd.c: the scheduler daemon's main: configuration, start-up, recovery, the loop.
 *
 * Settings come from the config file (key = value lines, deploy/atomd.conf), then from flags.
 * Exit codes: 0 stopped cleanly, 1 failed to start or the state store failed, 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/atomd.h"
#include "scheduler/client.h"
#include "scheduler/sched.h"
#include "scheduler/simulate.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: atomd [options]\n"
            "  -c, --config FILE        key = value settings (default /etc/atom/atomd.conf if present)\n"
            "  -s, --socket PATH        client socket (default: $ATOM_SOCKET, /run/atom/atomd.sock as root,\n"
            "                           else $XDG_RUNTIME_DIR/atom/atomd.sock, else\n"
            "                           socket/atomd.sock in the state folder; never under /tmp)\n"
            "  -d, --state-dir DIR      database and job folders (default /var/lib/atom as root,\n"
            "                           else $XDG_STATE_HOME/atom or ~/.local/state/atom)\n"
            "      --cluster FILE       cluster inventory (default: this machine as one node)\n"
            "      --admin-group NAME   members may cancel any job and drain nodes (default atom-admin)\n"
            "      --idle-exit SECONDS  stop after this long with no jobs and no clients\n"
            "      --launcher NAME      mpirun (default) or slurm (sbatch; the cluster from sinfo\n"
            "                           unless --cluster is given)\n"
"      --metrics-port PORT  serve Prometheus metrics on http://127.0.0.1:PORT/metrics (config\n"
            "                           metrics_address for another address; default off)\n"
            "      --policy NAME        backfill (default), priority or fifo\n"
            "      --tcp-listen HOST:PORT  also listen on TCP, every message with a MUNGE credential\n"
            "                           (config tcp_listen, munge_socket; default off)\n"
            "      --simulate           run the scheduler in virtual time over a trace instead (see\n"
            "                           atomd --simulate --help)\n"
            "  -v, --verbose            debug logging\n"
            "  -h, --help\n");
}

/* A setting that is a whole number from 0 to max, the whole value; *out is left alone otherwise. */
static bool whole_number(const char *value, long max, int *out)
{
    char *end = NULL;
    long v = strtol(value, &end, 10);
    if (!end || *end || v < 0 || v > max)
        return false;
    *out = (int)v;
    return true;
}

/* A size in bytes: a whole number with an optional k, m or g (KiB, MiB, GiB; "b" or "iB" may
 * follow), at least 1 and at most max. */
static bool byte_size(const char *value, size_t max, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (!end || end == value || errno || value[0] == '-')
        return false;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end || v == 0 || v > (unsigned long long)max >> shift)
        return false;
    *out = (size_t)(v << shift);
    return true;
}

static void defaults(atomd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    atom_client_default_socket(cfg->socket_path, sizeof cfg->socket_path);
    if (geteuid() == 0)
        snprintf(cfg->state_dir, sizeof cfg->state_dir, "/var/lib/atom");
    else if (atom_user_state_dir(cfg->state_dir, sizeof cfg->state_dir, NULL) != 0)
        cfg->state_dir[0] = '\0'; /* main says why, unless --state-dir gives one */
    snprintf(cfg->admin_group, sizeof cfg->admin_group, "atom-admin");
    snprintf(cfg->launcher, sizeof cfg->launcher, "mpirun");
    snprintf(cfg->metrics_address, sizeof cfg->metrics_address, "127.0.0.1");
    cfg->health_interval = 300;
    cfg->health_fresh = 60;
    cfg->health_timeout = 60;
    cfg->usage_half_life = 7 * 24 * 3600.0;
    cfg->stop_grace = 30;
    cfg->limit_warning = 60;
    cfg->keep_finished = 10000;
    cfg->tcp_request_timeout = 30;
    cfg->max_clients = 0;          /* the descriptor limit decides (server_clients.c) */
    cfg->max_clients_per_user = 0; /* a quarter of max_clients, at most 256 */
    cfg->max_tcp_clients = 16384;  /* a heartbeat connection per rank off atomd's node */
    cfg->client_requests_per_iteration = 4;
    cfg->client_output_soft = 256u << 10;
    cfg->client_output_soft_seconds = 5;
    cfg->client_output_hard = 16u << 20;
    cfg->tcp_preauth_line = 64u << 10;
    cfg->tcp_preauth_budget = 16u << 20;
}

static int set_key(atomd_config *cfg, const char *key, const char *value, atom_err *err)
{
    int64_t secs;
#define COPY(field) snprintf(cfg->field, sizeof cfg->field, "%s", value) >= (int)sizeof cfg->field \
                        ? atom_errf(err, "%s is too long", key) : 0
    if (strcmp(key, "socket") == 0)
        return COPY(socket_path);
    if (strcmp(key, "state_dir") == 0)
        return COPY(state_dir);
    if (strcmp(key, "cluster") == 0)
        return COPY(cluster_path);
    if (strcmp(key, "admin_group") == 0)
        return COPY(admin_group);
    if (strcmp(key, "metrics_address") == 0)
        return COPY(metrics_address);
    if (strcmp(key, "health_check") == 0)
        return COPY(health_program);
    if (strcmp(key, "munge_socket") == 0)
        return COPY(munge_socket);
    if (strcmp(key, "job_env") == 0)
        return COPY(job_env);
    if (strcmp(key, "tcp_listen") == 0) {
        char host[256];
        int port;
        atom_err perr = {{0}};
        if (value[0] && atom_hostport_parse(value, host, sizeof host, &port, &perr))
            return atom_errf(err, "tcp_listen: %s (e.g. 0.0.0.0:6830; empty: off)", perr.msg);
        return COPY(tcp_listen);
    }
    if (strcmp(key, "launcher") == 0) {
        if (!atomd_launcher_named(value))
            return atom_errf(err, "launcher: \"%s\" is not mpirun or slurm", value);
        return COPY(launcher);
    }
#undef COPY
    if (strcmp(key, "policy") == 0) {
        int policy = atomd_policy_parse(value);
        if (policy < 0)
            return atom_errf(err, "policy: \"%s\" is not backfill, priority or fifo", value);
        cfg->policy = policy;
        return 0;
    }
    if (strcmp(key, "metrics_port") == 0) {
        if (!whole_number(value, 65535, &cfg->metrics_port))
            return atom_errf(err, "metrics_port: \"%s\" is not a TCP port (0: off)", value);
        return 0;
    }
    int *count = strcmp(key, "max_clients") == 0            ? &cfg->max_clients
                 : strcmp(key, "max_clients_per_user") == 0 ? &cfg->max_clients_per_user
                 : strcmp(key, "max_tcp_clients") == 0      ? &cfg->max_tcp_clients
                 : strcmp(key, "client_requests_per_iteration") == 0
                     ? &cfg->client_requests_per_iteration
                     : NULL;
    if (count) {
        /* 0 is "from the descriptor limit" for the first two, and never makes sense elsewhere. */
        bool zero_ok = count == &cfg->max_clients || count == &cfg->max_clients_per_user;
        int v = -1;
        if (!whole_number(value, 1000000, &v) || (v == 0 && !zero_ok))
            return atom_errf(err, "%s: \"%s\" is not a number %s", key, value,
                             zero_ok ? "of connections (0: from the descriptor limit)"
                                     : "of at least 1");
        *count = v;
        return 0;
    }
    size_t *bytes = strcmp(key, "client_output_soft") == 0   ? &cfg->client_output_soft
                    : strcmp(key, "client_output_hard") == 0 ? &cfg->client_output_hard
                    : strcmp(key, "tcp_preauth_line") == 0   ? &cfg->tcp_preauth_line
                    : strcmp(key, "tcp_preauth_budget") == 0 ? &cfg->tcp_preauth_budget
                                                             : NULL;
    if (bytes) {
        size_t max = bytes == &cfg->tcp_preauth_line ? ATOMD_MAX_MESSAGE : (size_t)1 << 40;
        if (!byte_size(value, max, bytes))
            return atom_errf(err, "%s: \"%s\" is not a size from 1 byte to %zu (e.g. 64k, 16m)",
                             key, value, max);
        return 0;
    }
    if (strcmp(key, "keep_finished") == 0) {
        if (!whole_number(value, 100000000, &cfg->keep_finished))
            return atom_errf(err, "keep_finished: \"%s\" is not a number of jobs", value);
        return 0;
    }
    double *dur = strcmp(key, "usage_half_life") == 0 ? &cfg->usage_half_life
                  : strcmp(key, "stop_grace") == 0     ? &cfg->stop_grace
                  : strcmp(key, "limit_warning") == 0  ? &cfg->limit_warning
                  : strcmp(key, "idle_exit") == 0      ? &cfg->idle_exit
                  : strcmp(key, "health_interval") == 0 ? &cfg->health_interval
                  : strcmp(key, "health_fresh") == 0   ? &cfg->health_fresh
                  : strcmp(key, "health_timeout") == 0 ? &cfg->health_timeout
                  : strcmp(key, "tcp_request_timeout") == 0 ? &cfg->tcp_request_timeout
                  : strcmp(key, "client_output_soft_seconds") == 0
                      ? &cfg->client_output_soft_seconds
                                                       : NULL;
    if (!dur)
        return atom_errf(err, "unknown setting \"%s\"", key);
    if (atom_parse_duration(value, &secs))
        return atom_errf(err, "%s: \"%s\" is not a duration (e.g. 30s, 10m, 7d)", key, value);
    *dur = (double)secs;
    return 0;
}

static int load_config(atomd_config *cfg, const char *path, bool must_exist, atom_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return must_exist ? atom_errf(err, "cannot read %s: %s", path, strerror(errno)) : 0;
    char line[2048];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || !*p)
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            fclose(f);
            return atom_errf(err, "%s:%d: expected key = value", path, lineno);
        }
        char *kend = eq;
        while (kend > p && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        *kend = 0;
        char *v = eq + 1 + strspn(eq + 1, " \t");
        v[strcspn(v, "\r\n")] = 0;
        for (size_t n = strlen(v); n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'); n--)
            v[n - 1] = 0;
        atom_err kerr = {{0}};
        if (set_key(cfg, p, v, &kerr)) {
            fclose(f);
            return atom_errf(err, "%s:%d: %s", path, lineno, kerr.msg);
        }
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"socket", required_argument, NULL, 's'},
        {"state-dir", required_argument, NULL, 'd'}, {"cluster", required_argument, NULL, 'C'},
        {"admin-group", required_argument, NULL, 'g'}, {"idle-exit", required_argument, NULL, 'i'},
        {"launcher", required_argument, NULL, 'L'}, {"metrics-port", required_argument, NULL, 'M'},
        {"policy", required_argument, NULL, 'P'}, {"tcp-listen", required_argument, NULL, 'T'},
        {"verbose", no_argument, NULL, 'v'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--simulate") == 0)
            return atomd_simulate_main(argc, argv);
    atomd d;
    memset(&d, 0, sizeof d);
    d.listen_fd = d.hb_fd = d.signal_fd = d.tcp_fd = -1;
    d.metrics.listen_fd = -1;
    d.loop.epoll_fd = d.server.reserve_fd = -1;
    defaults(&d.cfg);
    atom_err err = {{0}};

    /* The config file first, so that flags override it whatever their order. */
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            config = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
    }
    if (load_config(&d.cfg, config ? config : "/etc/atom/atomd.conf", config != NULL, &err)) {
        fprintf(stderr, "atomd: %s\n", err.msg);
        return 2;
    }
    atom_log_level level = ATOM_LOG_INFO;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:s:d:vh", longopts, NULL)) != -1) {
        const char *key = NULL;
        switch (opt) {
        case 'c': continue;
        case 's': key = "socket"; break;
        case 'd': key = "state_dir"; break;
        case 'C': key = "cluster"; break;
        case 'g': key = "admin_group"; break;
        case 'i': key = "idle_exit"; break;
        case 'L': key = "launcher"; break;
        case 'M': key = "metrics_port"; break;
        case 'P': key = "policy"; break;
        case 'T': key = "tcp_listen"; break;
        case 'v': level = ATOM_LOG_DEBUG; continue;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (set_key(&d.cfg, key, optarg, &err)) {
            fprintf(stderr, "atomd: %s\n", err.msg);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    atom_log_init("atomd", level);
    gethostname(d.hostname, sizeof d.hostname - 1);

    /* The heartbeat socket sits beside the client socket. */
    char sock_dir[ATOM_PATH_MAX];
    snprintf(sock_dir, sizeof sock_dir, "%s", d.cfg.socket_path);
    char *dir = dirname(sock_dir);
    if ((size_t)snprintf(d.cfg.hb_path, sizeof d.cfg.hb_path, "%s/atomd-hb.sock", dir) >= sizeof d.cfg.hb_path) {
        fprintf(stderr, "atomd: socket folder path too long: %s\n", dir);
        return 2;
    }
    /* The state folder is traversable (workers running as their job's owner read their
     * attempt's plan inside it) but not listable; the database itself is atomd's alone. */
    /* Both folders are atomd's alone (private_path.c): one another user created first would
     * let them swap the socket or the database. root's socket folder is reachable by every
     * user's atomctl; a user's private atomd's is not. */
    if (!d.cfg.state_dir[0] || !d.cfg.socket_path[0]) {
        atom_user_state_dir(d.cfg.state_dir, sizeof d.cfg.state_dir, &err);
        fprintf(stderr, "atomd: %s (or give --state-dir and --socket)\n", err.msg);
        return 1;
    }
    if (atom_private_dir(dir, geteuid() == 0 ? 0755 : 0700, &err) ||
        atom_private_dir(d.cfg.state_dir, 0711, &err)) {
        fprintf(stderr, "atomd: %s\n", err.msg);
        return 1;
    }
    if (chmod(d.cfg.state_dir, 0711) != 0) {
        fprintf(stderr, "atomd: cannot chmod %s: %s\n", d.cfg.state_dir, strerror(errno));
        return 1;
    }
    /* One atomd per state folder: two would both schedule the same queue. The lock goes with
     * the process, so a SIGKILLed atomd leaves none behind. */
    char lock_path[ATOM_PATH_MAX + 16];
    snprintf(lock_path, sizeof lock_path, "%s/atomd.lock", d.cfg.state_dir);
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "atomd: %s: %s\n", lock_path,
                lock_fd < 0 ? strerror(errno) : "another atomd is using this state folder");
        return 1;
    }
    if (atom_find_worker(d.cfg.worker, sizeof d.cfg.worker, &err))
        atom_log(ATOM_LOG_WARN, "%s (jobs will fail to launch until it exists)", err.msg);
    /* Absolute: mpirun starts in the attempt's folder when it runs as the job's owner. */
    char worker_abs[PATH_MAX];
    if (realpath(d.cfg.worker, worker_abs) && strlen(worker_abs) < sizeof d.cfg.worker)
        memcpy(d.cfg.worker, worker_abs, strlen(worker_abs) + 1);

    int rc = 1;
    if (d.cfg.cluster_path[0]) {
        atom_diags diags = {0};
        if (atom_inventory_load(d.cfg.cluster_path, &d.inv, &diags)) {
            atom_diags_print(&diags, stderr);
            atom_diags_free(&diags);
            return 1;
        }
        atom_diags_free(&diags);
    } else if (strcmp(d.cfg.launcher, "slurm") == 0) {
        int *free_gpus = NULL;
        if (atom_launch_slurm_nodes(&d.inv, &free_gpus, &err)) {
            atom_log(ATOM_LOG_ERROR, "the cluster from Slurm: %s", err.msg);
            return 1;
        }
        free(free_gpus); /* Slurm decides what is free; atomd's planner only orders the queue */
    } else {
        atom_inventory_local(&d.inv, 0);
    }
    d.launcher = atomd_launcher_named(d.cfg.launcher);
    d.nodes = calloc((size_t)d.inv.n_nodes, sizeof *d.nodes);
    char db_path[ATOM_PATH_MAX + 16];
    snprintf(db_path, sizeof db_path, "%s/atomd.db", d.cfg.state_dir);
    if (!d.nodes || atom_planner_init(&d.planner, &d.inv, &err) || atomd_store_open(&d.store, db_path, &err) ||
        atomd_store_load(&d.store, &d, &err)) {
        atom_log(ATOM_LOG_ERROR, "%s", err.msg[0] ? err.msg : "out of memory");
        goto out;
    }
    if (atomd_health_init(&d, &err) || atomd_server_open(&d, &err) || atomd_metrics_open(&d, &err)) {
        atom_log(ATOM_LOG_ERROR, "%s", err.msg);
        goto out;
    }
    if (d.launcher->child) {
        atomd_cgroups_init(&d.cgroups, d.cfg.state_dir);
        if (d.cgroups.usable)
            atom_log(ATOM_LOG_INFO, "each attempt runs in its own cgroup under %s", d.cgroups.root);
        else
            atom_log(ATOM_LOG_WARN, "no cgroup per attempt (%s): attempts are stopped by process "
                     "group and found again by pid", d.cgroups.why);
    }
    atomd_jobs_recover(&d);
    if (atomd_store_commit(&d.store, &err)) {
        atom_log(ATOM_LOG_ERROR, "%s", err.msg);
        goto out;
    }
    atom_log(ATOM_LOG_INFO, "listening on %s (cluster %s: %d nodes; state in %s; %d jobs known)",
             d.cfg.socket_path, d.inv.name, d.inv.n_nodes, d.cfg.state_dir, d.n_jobs);
    rc = atomd_server_run(&d) == 0 ? 0 : 1;
out:
    atomd_health_free(&d);
    atomd_metrics_close(&d);
    atomd_server_close(&d);
    atomd_store_close(&d.store);
    for (int i = 0; i < d.n_jobs; i++)
        atomd_job_free(d.jobs[i]);
    free(d.jobs);
    free(d.usage);
    free(d.nodes);
    atom_planner_free(&d.planner);
    atom_inventory_free(&d.inv);
    return rc;
}
