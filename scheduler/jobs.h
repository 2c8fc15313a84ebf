/* scheduler/jobs.h: a job and its attempts in atomd (private to atomd).
 *
 * A job is pending until the scheduling pass places and launches it; each launch is an attempt
 * with its own folder <state>/jobs/<id>/attempt-<n>/ (atomd's, 0711): plan.json and ranks.app
 * (read by the job), launcher.log (mpirun's messages, 0600) and exit_status; and in it output/,
 * the owner's (0700): rank-R.log per rank, heartbeat files, Slurm's launcher.log. atomd reads
 * what is in output/ only through owner_io.h, and decides nothing for others from it.
 * An attempt ends when mpirun exits (or, for an attempt re-adopted after a restart of atomd, when
 * its process disappears):
 *   exit 0                      -> done
 *   exit 75 after a time limit  -> timeout (it checkpointed and stopped)
 *   exit 75 otherwise           -> requeued, not counted as a failure (stopped, resumable)
 *   cancelled                   -> cancelled, whatever the exit status
 *   mpirun says it could not reach a node -> atomd probes the node itself (health.h); when
 *                                  its probe cannot reach it either, the node is down and the
 *                                  job requeued, not counted as a failure; else a failure
 *   the launch failed before the job's code ran (atomd's own: no descriptor, fork, a launcher
 *                                  that cannot start) -> pending, retried after a backoff
 *                                  (1 s doubling to 5 min), not counted as a failure
 *   anything else, or hung      -> a failure: requeued away from the attempt's nodes until
 *                                  restart.max_restarts failures, then failed
 */
#ifndef ATOM_SCHEDULER_JOBS_H
#define ATOM_SCHEDULER_JOBS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/common.h"
#include "scheduler/launch.h"
#include "scheduler/planner.h"

typedef enum {
    ATOMD_JOB_PENDING = 0,
    ATOMD_JOB_RUNNING,
    ATOMD_JOB_DONE,
    ATOMD_JOB_FAILED,
    ATOMD_JOB_CANCELLED,
    ATOMD_JOB_TIMEOUT,
} atomd_job_state;

const char *atomd_job_state_name(atomd_job_state s);
int atomd_job_state_parse(const char *name);  /* -1 when unknown */
static inline bool atomd_job_final(atomd_job_state s) { return s >= ATOMD_JOB_DONE; }

/* Why atomd is stopping an attempt (it decides what the exit means). */
typedef enum {
    ATOMD_STOP_NONE = 0,
    ATOMD_STOP_CANCEL,   /* SIGTERM to mpirun, SIGKILL after the grace */
    ATOMD_STOP_HUNG,     /* SIGKILL at once */
    ATOMD_STOP_TIMEOUT,  /* SIGUSR1 ahead of the limit, SIGKILL at the limit */
} atomd_stop_kind;

/* What rank 0 last said about the run. */
typedef struct atomd_progress {
    bool has;
    int64_t step;
    double loss, tokens_per_s;
    int64_t last_checkpoint;  /* -1: none */
    double checkpoint_seen;   /* epoch: when atomd first heard of last_checkpoint (0: not since it
                               * started); for the checkpoint age in the metrics */
    /* Rank 0's restore in attempt ckpt_skipped_attempt fell back past ckpt_skipped newer
     * checkpoints that failed to load, the newest of step ckpt_skipped_step (0: none). */
    int ckpt_skipped, ckpt_skipped_attempt;
    int64_t ckpt_skipped_step;
    char ckpt_skipped_why[ATOM_HB_WHY_MAX];
} atomd_progress;

/* One rank's heartbeats in the current attempt. */
typedef struct atomd_rank_hb {
    bool seen;
    int64_t step;
    double last_seen;     /* monotonic */
    double last_advance;  /* monotonic: when its step last grew (or the attempt started) */
    int pid;
    bool local;           /* the rank runs on this machine: its process can be looked at */
    bool behind;          /* named by the hang check (its node is avoided next time) */
} atomd_rank_hb;

typedef struct atomd_attempt {
    int n;                     /* 1-based */
    bool live;                 /* mpirun started and not reaped */
    bool adopted;              /* started by an earlier atomd: not our child, watched by pid */
    pid_t pid;
    uint64_t pid_start;        /* /proc/<pid>/stat start time, so a reused pid is not mistaken */
    double start_time;         /* epoch */
    double started_mono;
    atom_launch launch;
    atom_placement placement;  /* node/gpu per rank; node == NULL when none */
    atomd_rank_hb *ranks;      /* placement.world entries */
    atomd_stop_kind stop;
    double stop_deadline;      /* monotonic: when SIGKILL goes out */
    bool usr1_sent;
    char stop_reason[256];
    /* mpirun said it could not reach some of the attempt's nodes. That text is not atomd's to
     * trust (mpirun runs as the job's owner, who chooses its launch agent and can write what it
     * prints): atomd probes those nodes itself (health.h) and only then decides. */
    bool probing;
    int probe_exit;            /* mpirun's exit status, for the outcome once the probes end */
    bool *probe_nodes;         /* inventory nodes still being probed for this attempt */
    bool probe_unreached;      /* a probe of atomd's could not reach one of them */
    /* mpirun's stdout and stderr: a pipe atomd holds (pipe_fd, its read end, in the loop),
     * copied into launcher.log (log_fd, atomd's file) up to a bound. */
    bool piping;
    int pipe_fd, log_fd;
    size_t log_bytes;          /* copied so far; past the bound the rest is read and dropped */
} atomd_attempt;

typedef struct atomd_job {
    int64_t id;
    char id_text[24];
    uid_t owner;
    atom_spec spec;
    char *spec_json;           /* the normalised spec as stored */
    atomd_job_state state;
    double submit_time, start_time, end_time;  /* epoch; 0 when not yet */
    int attempts;              /* attempts started */
    int failures;              /* attempts that counted against restart.max_restarts */
    int exit_code;             /* of the last attempt; -1 none */
    char reason[256];          /* why it is pending, or how it ended */
    bool *exclude;             /* inventory nodes this job must avoid (failed it before) */
    int n_exclude_nodes;
    atomd_progress progress;
    atomd_attempt cur;         /* the current (or last) attempt */
    bool cancel_requested;
    int launch_errors;         /* atomd's own launch failures in a row (not charged to the job) */
    double launch_retry_at;    /* monotonic: no launch before then (backoff after launch_errors) */
} atomd_job;

struct atomd;

atomd_job *atomd_job_new(const atom_spec *spec, const char *spec_json, uid_t owner, int n_nodes);
void atomd_job_free(atomd_job *job);
void atomd_job_set_id(atomd_job *job, int64_t id);
atomd_job *atomd_job_find(struct atomd *d, int64_t id);
int atomd_job_add(struct atomd *d, atomd_job *job, atom_err *err);

/* Starts an attempt on placement (taken over by the job): folder, plan, store, mpirun. On
 * failure the placement is released and the job is left pending (or failed) with the reason. */
int atomd_job_launch(struct atomd *d, atomd_job *job, atom_placement *placement, atom_err *err);
/* mpirun of the job's attempt has ended with exit_code (128+signal when killed). */
void atomd_job_attempt_ended(struct atomd *d, atomd_job *job, int exit_code);
/* Cancels: a pending job at once, a running one by stopping its attempt. */
int atomd_job_cancel(struct atomd *d, atomd_job *job, atom_err *err);
/* A heartbeat from a worker; sender is the uid of the process that sent it (accepted from root,
 * atomd's own user and the job's owner). */
void atomd_job_heartbeat(struct atomd *d, const atom_heartbeat *hb, uid_t sender);
/* Timers: time limits, hung attempts, kill deadlines, adopted processes. */
void atomd_jobs_tick(struct atomd *d);
/* After a restart of atomd: re-adopt the live attempts of running jobs, requeue the rest. */
void atomd_jobs_recover(struct atomd *d);
/* Frees the oldest ended jobs beyond cfg.keep_finished (they stay in the store). */
void atomd_jobs_evict(struct atomd *d);
/* SIGCHLD: reaps every ended child and finishes its attempt. */
void atomd_jobs_reap(struct atomd *d);
/* atomd's probe of node has ended (health.c): reached or not. Finishes the attempts that were
 * waiting for it (mpirun had said it could not reach the node). */
void atomd_jobs_probed(struct atomd *d, int node, bool reached);
/* Whether the job is pending but may not be launched yet (probes of its last attempt's nodes,
 * or the backoff after atomd's own launch failure); why says which. */
bool atomd_job_held(const struct atomd *d, const atomd_job *job, char *why, size_t why_len);

#endif
