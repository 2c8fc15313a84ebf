/* scheduler/simulate.h: atomd's real scheduler in virtual time over a job trace.
 *
 * `atomd --simulate --cluster inventory.yaml --trace trace.csv [--policy fifo|priority|backfill|all]`
 * builds an atomd exactly as the daemon does (inventory, planner, node states, an in-memory SQLite
 * store) and drives it with an event loop instead of the poll loop: the scheduling pass
 * (sched.c: ordering, fair share, EASY backfill, the planner), the launch and the end of attempts
 * (jobs.c: restart rules, excluded nodes) are the daemon's own code. Only two things are
 * replaced: the clock (atomd.virtual_now, read through atomd_now/atomd_mono) and the launcher (a
 * simulated one whose attempts end at start + duration, or fail partway when the trace says so).
 *
 * The trace is CSV with a header; lines starting with '#' are comments. Columns:
 *   submit_s      seconds from the start of the trace
 *   gpus          GPUs (ranks) the job asks for
 *   duration_s    seconds of work the job needs
 *   tensor        tensor-parallel size (groups never cross a node: the planner's rule)
 *   project       fair-share account
 *   fails_at      0: never fails; 0 < f < 1: its first attempt fails after f x duration (exit 1),
 *                 and the next attempt resumes from that point (as from a checkpoint there)
 *   time_limit_s  0: none; otherwise what backfill reasons with, and where an attempt that would
 *                 run longer is stopped (state timeout, as atomd's timer ends it)
 *   priority      optional, default 100
 *
 * There are no heartbeats in virtual time, so the hang check has nothing to do.
 */
#ifndef ATOM_SCHEDULER_SIMULATE_H
#define ATOM_SCHEDULER_SIMULATE_H

#include <stdint.h>

#include "common/common.h"

typedef struct atomd_sim_job {
    double submit, duration, fails_at;
    int gpus, tensor, priority;
    int64_t time_limit;
    char project[ATOM_NAME_MAX];
} atomd_sim_job;

typedef struct atomd_sim_trace {
    atomd_sim_job *jobs;  /* in file order; the simulation submits them by submit time */
    int n;
} atomd_sim_trace;

int atomd_sim_trace_load(const char *path, atomd_sim_trace *trace, atom_err *err);
void atomd_sim_trace_free(atomd_sim_trace *trace);

/* What happened to one trace job (times in seconds from the start of the trace; -1: never). */
typedef struct atomd_sim_outcome {
    double start, end;  /* first attempt's start; end of the last attempt */
    int attempts;
    int state;          /* atomd_job_state */
} atomd_sim_outcome;

typedef struct atomd_sim_result {
    atomd_sim_outcome *jobs;   /* one per trace job, in trace order */
    int n_jobs, done, failed, timeouts, unfinished, restarts;
    double makespan;           /* first submission to last end */
    double utilisation;        /* busy GPU-seconds / (GPUs up x makespan) */
    double idle_queued;        /* share of GPU-seconds idle while some job was pending */
    double idle_fragmented;    /* share idle while enough GPUs were free in total for the
                                * smallest pending job, yet the planner could not place it */
    double wait_mean, wait_p95;  /* queueing delay: submit to first start */
    double jct_mean, jct_p95;    /* completion time: submit to end */
    long passes;
    double pass_mean_ms, pass_max_ms;  /* wall time of the real scheduling passes */
    double pass_first_ms;              /* the first: every job submitted at once is pending */
    int pass_max_pending;              /* pending jobs at the start of the slowest pass */
    double wall_seconds;               /* wall time of the whole simulation */
} atomd_sim_result;

/* Runs trace on inv under policy (atomd_policy) with fair-share usage halving every half_life
 * seconds (0: no decay). Fills r (free it with atomd_sim_result_free). */
int atomd_simulate(const atom_inventory *inv, const atomd_sim_trace *trace, int policy, double half_life,
                   atomd_sim_result *r, atom_err *err);
void atomd_sim_result_free(atomd_sim_result *r);

/* `atomd --simulate ...`: exit 0 when every policy ran, 1 on error, 2 on usage. */
int atomd_simulate_main(int argc, char **argv);

#endif
