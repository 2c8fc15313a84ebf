/* scheduler/atomd.h: the state of the scheduler daemon, shared by its parts (private to atomd).
 *
 * One struct per concern: the configuration, the cluster (inventory, planner, node states), the
 * jobs (jobs.h), the store (store.h), the clients (server.c). atomd owns all of them; every part
 * gets the one atomd and touches only its own concern plus what the header of another part offers.
 */
#ifndef ATOM_SCHEDULER_ATOMD_H
#define ATOM_SCHEDULER_ATOMD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/common.h"
#include "scheduler/cgroup.h"
#include "scheduler/health.h"
#include "scheduler/jobs.h"
#include "scheduler/launchers.h"
#include "scheduler/loop.h"
#include "scheduler/metrics.h"
#include "scheduler/planner.h"
#include "scheduler/store.h"

/* Requests and answers are single lines of JSON of at most this many bytes. */
#define ATOMD_MAX_MESSAGE (1u << 20)

typedef struct atomd_config {
    char socket_path[108];          /* the Unix socket clients connect to */
    char hb_path[108];              /* the datagram socket workers send heartbeats to */
    char state_dir[ATOM_PATH_MAX];  /* atomd.db and jobs/<id>/attempt-<n>/ */
    char cluster_path[ATOM_PATH_MAX]; /* "" : the embedded one-node cluster */
    char admin_group[64];           /* members may act on any job and on nodes */
    char worker[ATOM_PATH_MAX];     /* the atom-worker executable */
    char launcher[16];              /* "mpirun" (standalone cluster) or "slurm" */
    double usage_half_life;         /* seconds: fair-share usage halves in this time */
    double idle_exit;               /* > 0: exit after this long with no jobs and no clients */
    double stop_grace;              /* seconds between a polite stop signal and SIGKILL */
    int keep_finished;              /* ended jobs kept in memory (older ones stay in the store) */
    double limit_warning;           /* seconds before a time limit when SIGUSR1 goes out (at most
                                     * half the limit) */
    int policy;                     /* atomd_policy: how the pass orders and fills the queue */
    int metrics_port;               /* 0: no metrics endpoint (metrics.h) */
    char metrics_address[64];       /* where it listens: 127.0.0.1 unless set */
    char health_program[ATOM_PATH_MAX]; /* "" : no node health checks (health.h) */
    double health_interval;         /* seconds between checks of every node (0: before jobs only) */
    double health_fresh;            /* a check passed this recently counts as "before the job" */
    double health_timeout;          /* a check running longer fails */
    char tcp_listen[300];           /* "" : no TCP port; else HOST:PORT (every message carries a
                                     * MUNGE credential; server.c) */
    char munge_socket[ATOM_PATH_MAX]; /* munged's socket ("" : libmunge's default), here and on
                                     * every node the workers run on */
    double tcp_request_timeout;     /* seconds a TCP peer may take to finish a request line */
    /* The governor (server.c): what one client, one user, or everyone together may hold. */
    int max_clients;                /* connections at once, both transports (0: the descriptor
                                     * limit less ATOMD_RESERVED_FDS) */
    int max_clients_per_user;       /* Unix socket connections of one uid (0: a quarter of
                                     * max_clients, at most 256) */
    int max_tcp_clients;            /* connections on the TCP port (at most max_clients) */
    int client_requests_per_iteration; /* request lines of one client per loop iteration */
    size_t client_output_soft;      /* unsent answer bytes above which a client is not read */
    double client_output_soft_seconds; /* ... and after which, still above, it is closed */
    size_t client_output_hard;      /* unsent bytes at which a client is closed at once */
    size_t tcp_preauth_line;        /* longest line from a TCP peer before a valid credential */
    size_t tcp_preauth_budget;      /* bytes held for all TCP peers without a valid credential */
    char job_env[1024];             /* names and patterns of atomd's environment that jobs also
                                     * get, beside job_env.c's allow-list ("A,B_*") */
} atomd_config;

/* Descriptors kept back from max_clients for atomd's own files, launches and metrics. */
#define ATOMD_RESERVED_FDS 32

/* Scheduling policies (config `policy`). Backfill is the daemon's default; the other two exist so
 * that the simulation (simulate.h) can compare them on the same trace with the same code. */
typedef enum {
    ATOMD_POLICY_BACKFILL = 0,  /* priority, fair share, then EASY backfill behind the head job */
    ATOMD_POLICY_PRIORITY,      /* priority and fair share; nothing starts behind a waiting head */
    ATOMD_POLICY_FIFO,          /* submission order only; nothing starts behind a waiting head */
} atomd_policy;
const char *atomd_policy_name(int policy);
int atomd_policy_parse(const char *name);  /* -1 when unknown */

typedef enum { ATOMD_NODE_UP = 0, ATOMD_NODE_DRAINED = 1, ATOMD_NODE_DOWN = 2 } atomd_node_state;
const char *atomd_node_state_name(atomd_node_state s);

/* Per inventory node: what the planner's up flag is derived from. */
typedef struct atomd_node_info {
    atomd_node_state state;
    char reason[160];
    int failures;  /* attempts failed on this node since it was last resumed */
} atomd_node_info;

/* Fair share: a project's GPU-seconds, decayed with the half-life up to `updated`. */
typedef struct atomd_usage {
    char project[ATOM_NAME_MAX];
    double gpu_seconds;
    double updated;
} atomd_usage;

typedef struct atomd_client atomd_client;

/* The server's clients and the governor's accounts (server.c). */
typedef struct atomd_uid_count {
    uid_t uid;
    int n;
} atomd_uid_count;

typedef struct atomd_server {
    atomd_client *clients;     /* every connection, a list (clients stay where they are) */
    int n_clients, n_tcp;
    atomd_uid_count *per_uid;  /* Unix socket connections by uid (uids with none are dropped) */
    int n_uids;
    atomd_client **pending;    /* clients to serve or flush before the next wait */
    int n_pending, cap_pending;
    long iteration;            /* loop iterations so far: the read budget's clock */
    size_t preauth_bytes;      /* held for TCP peers that sent no valid credential yet */
    int reserve_fd;            /* /dev/null, given up to accept and refuse at EMFILE (-1: none) */
    bool accept_paused;        /* out of descriptors without a reserve: listening stopped */
    /* monotonic: the governor's warnings are spaced (a flood must not flood the log too) */
    double last_refusal_log[ATOMD_REJECT_N], last_close_log[ATOMD_CLOSE_N];
} atomd_server;

typedef struct atomd {
    atomd_config cfg;
    char hostname[256];    /* this machine, as workers name it in heartbeats */
    const atomd_launcher *launcher;
    atom_inventory inv;
    atom_planner planner;
    atomd_node_info *nodes;  /* inv.n_nodes entries */
    atomd_store store;

    atomd_job **jobs;  /* every job, by increasing id */
    int n_jobs, cap_jobs;

    atomd_usage *usage;
    int n_usage;

    int listen_fd, hb_fd, signal_fd;
    int tcp_fd;                /* -1: no TCP port (not configured, or munged did not answer) */
    char heartbeat_tcp[300];   /* where workers on other nodes reach tcp_fd ("" : nowhere) */
    atomd_loop loop;           /* every descriptor above, the clients' and metrics' (loop.h) */
    atomd_server server;

    bool changed;          /* something happened that may let a job start */
    bool stopping;
    double last_busy;      /* monotonic: last time a job was live or a client connected */
    double last_usage_save;

    /* > 0: the clock is virtual (simulate.h) and both atomd_now and atomd_mono read this. */
    double virtual_now;
    double last_pass_seconds;  /* wall time of the last scheduling pass (metrics) */
    atomd_metrics metrics;
    atomd_health health;
    atomd_cgroups cgroups;  /* one cgroup per attempt on this node, where usable (cgroup.h) */
} atomd;

/* atomd's clocks: the real ones, or the virtual time of a simulation. Scheduling code reads time
 * only through these, so that the simulation runs the same code. */
double atomd_now(const atomd *d);
double atomd_mono(const atomd *d);

/* Node failures after which a node is drained automatically. */
#define ATOMD_DRAIN_AFTER_FAILURES 3

int atomd_node_index(const atomd *d, const char *name);
/* Sets a node's state (planner included) and stores it. */
int atomd_node_set(atomd *d, int node, atomd_node_state state, const char *reason, atom_err *err);

/* Fair share. */
atomd_usage *atomd_usage_get(atomd *d, const char *project);
double atomd_usage_now(atomd *d, const char *project, double now);
void atomd_usage_add(atomd *d, const char *project, double gpu_seconds, double now);

/* The server (server.c): binds the client socket, the heartbeat socket and, when tcp_listen is
 * set and munged answers, the TCP port (a warning and local sockets only when munged does not
 * answer, as the issue asks: without munged atomd listens only locally); then runs the event
 * loop until SIGTERM or SIGINT (or idle_exit). atomd_server_run returns 0 on a clean stop, -1
 * when the store fails (atomd must not answer what it could not make durable). */
int atomd_server_open(atomd *d, atom_err *err);
int atomd_server_run(atomd *d);
void atomd_server_close(atomd *d);

/* The clients and the governor (server_clients.c), as the server's loop drives them. _open takes
 * the reserve descriptor and settles the caps against the descriptor limit; _accept is the
 * handler of both listening sockets; _waiting says whether requests are left over from a read
 * budget, which _serve_waiting serves (before the COMMIT); _flush writes answers and closes
 * what is done (after it); _tick expires unfinished TCP lines and clients that do not read. */
int atomd_clients_open(atomd *d, atom_err *err);
void atomd_clients_accept(atomd *d, int fd, unsigned ready, void *arg);
bool atomd_clients_waiting(const atomd *d);
void atomd_clients_serve_waiting(atomd *d);
void atomd_clients_flush(atomd *d);
void atomd_clients_tick(atomd *d, double now);
void atomd_clients_close(atomd *d);

/* Fills the plan's ways to reach atomd: the heartbeat socket, and for ranks on other nodes the
 * TCP port with the munged socket to sign with. */
void atomd_server_plan_addrs(const atomd *d, atom_plan *plan);

/* Whether uid may act as an administrator (root, or in cfg.admin_group via getgrouplist). */
bool atomd_is_admin(const atomd *d, uid_t uid);

#endif
