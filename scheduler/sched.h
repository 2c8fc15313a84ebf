/* scheduler/sched.h: atomd's scheduling pass, fair share and node states (private to atomd).
 *
 * The pass orders pending jobs by priority (higher first), then by their project's decayed usage
 * (lower first: fair share), then by submission. It starts jobs in that order while they fit
 * (gang placement through the planner). The first job that does not fit gets a reservation: the
 * time at which enough GPUs free up, computed from the running jobs' time limits. Jobs behind it
 * start only if they fit now and their own time limit ends before that reservation (EASY
 * backfill), so they never delay it. When the head's start depends on a job without a time limit,
 * the reservation has no known time and any job that fits may start.
 */
#ifndef ATOM_SCHEDULER_SCHED_H
#define ATOM_SCHEDULER_SCHED_H

struct atomd;

/* Starts what may start now; returns the number of jobs launched. */
int atomd_sched_pass(struct atomd *d);
/* Adds dt seconds of every running job's GPUs to its project's usage. */
void atomd_sched_account(struct atomd *d, double dt);
/* Saves every project's usage (it changes continuously; saved on a timer). */
void atomd_sched_save_usage(struct atomd *d);

#endif
