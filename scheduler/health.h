/* scheduler/health.h: node health checks, as Slurm's HealthCheckProgram (private to atomd).
 *
 * Configured by `health_check = PROGRAM` (off when unset). atomd runs PROGRAM NODE on a node:
 * directly when the node is this machine (address localhost, 127.0.0.1 or atomd's host name),
 * else through `mpirun -np 1 --host ADDR`, the way atomd reaches nodes for jobs. The environment
 * carries ATOM_HEALTH_NODE=NODE. Exit 0 is healthy; anything else, or running past
 * `health_timeout` (SIGKILL), drains the node with the program's first output line as the
 * reason, shown by `atomctl nodes`; an administrator's `atomctl resume` puts it back.
 *
 * Down nodes, as Slurm's DOWN: when mpirun could not even start its daemon on the node (its own
 * message says so, whatever the exit status), the program never ran there: the node is marked
 * down ("not reachable: ssh: ..."), not drained. Only atomd's own checks decide that, from their
 * output in atomd's folder: when an attempt's mpirun (which runs as the job's owner, who can make
 * it print anything) says it could not reach a node, jobs.c has atomd probe the node now, and the
 * probe's result stands. A down node gets no jobs and is probed every `health_interval` (60 s
 * when that is 0) with the health program, or with `true` when none is set; once a probe reaches
 * it and passes it is up again by itself. A node an administrator drained is never probed back.
 *
 * When it runs:
 *   - before a job starts on a node: the scheduling pass holds a placement whose nodes have not
 *     passed a check in the last `health_fresh` seconds, starts their checks and places the job
 *     again once they pass (a failed node is drained, so the planner picks others);
 *   - every `health_interval` seconds on every node that is up (0: only before jobs).
 * Checks run as atomd's children, a few at a time, and end through the SIGCHLD that also ends
 * attempts (jobs.c hands over pids it does not own): the poll loop never waits for one.
 * Output goes to <state>/health/<node>.log (the last check's; the folder is atomd's, 0700).
 */
#ifndef ATOM_SCHEDULER_HEALTH_H
#define ATOM_SCHEDULER_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/common.h"
#include "scheduler/planner.h"

struct atomd;

/* One node's checks. */
typedef struct atomd_health_node {
    pid_t pid;         /* the running check; 0 when none */
    double started;    /* monotonic: when the running check started */
    double last_run;   /* monotonic: when the last check started (0: never) */
    double last_ok;    /* monotonic: when a check last passed (0: never) */
} atomd_health_node;

typedef struct atomd_health {
    atomd_health_node *nodes;  /* inv.n_nodes entries; NULL when health checks are off */
    int running;
} atomd_health;

int atomd_health_init(struct atomd *d, atom_err *err);
void atomd_health_free(struct atomd *d);
/* true when the placement must wait for checks (started here); why says which node. */
bool atomd_health_hold(struct atomd *d, const atom_placement *pl, char *why, size_t why_len);
/* Timer: periodic checks and timeouts. */
void atomd_health_tick(struct atomd *d);
/* Starts a probe of node now (the health check, or `true` through mpirun without one), as atomd,
 * with its output in atomd's own file; its end calls atomd_jobs_probed (jobs.h). false when it
 * could not start. */
bool atomd_health_probe(struct atomd *d, int node);
/* A child ended: true when it was a health check (handled here). */
bool atomd_health_reaped(struct atomd *d, pid_t pid, int exit_code);

/* Whether a node is this machine (address localhost, 127.0.0.1 or atomd's host name): checked
 * directly, never through mpirun, and so never found unreachable. */
bool atomd_node_is_local(const struct atomd *d, const atom_node *node);
/* Whether mpirun's own output says it could not start (or lost) its daemon on a node, as opposed
 * to a program that ran there and failed; why gets the line that says what went wrong (ssh's). */
bool atomd_mpirun_unreachable(const char *text);
void atomd_mpirun_unreachable_why(const char *text, char *why, size_t len);
/* Whether text names node's address (as given, or without its domain as Open MPI hands it to
 * ssh), as a whole word. */
bool atomd_node_named_in(const atom_node *node, const char *text);

#endif
