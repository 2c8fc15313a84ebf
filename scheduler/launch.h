/* scheduler/launch.h: starting a job's workers on an existing engine (private to scheduler/).
 *
 * The mpirun launcher (launch_mpirun.c) starts one attempt of a planned job on a standalone
 * cluster: it writes the plan file and an Open MPI application file into the attempt's folder, then
 * runs mpirun from an argv array (never a shell). Each rank is its own application context in that
 * file, so that rank r starts on its plan node with CUDA_VISIBLE_DEVICES narrowed to its plan GPU:
 * the worker never guesses its GPU from a local rank.
 */
#ifndef ATOM_SCHEDULER_LAUNCH_H
#define ATOM_SCHEDULER_LAUNCH_H

#include <stddef.h>
#include <sys/types.h>

#include "common/common.h"

typedef struct atom_launch {
    pid_t pid;                      /* mpirun's pid, 0 when not running */
    char run_dir[ATOM_PATH_MAX];    /* the attempt's folder: atomd's records (plan, launcher.log) */
    char out_dir[ATOM_PATH_MAX];    /* the job's output folder, its owner's: rank logs, heartbeats
                                     * (the plan's run_dir; run_dir itself when none is given) */
    char plan_path[ATOM_PATH_MAX];  /* run_dir/plan.json */
    char app_path[ATOM_PATH_MAX];   /* run_dir/ranks.app (mpirun), run_dir/spec.yaml (Slurm) */
    char output_opt[ATOM_PATH_MAX + 32]; /* mpirun --output-filename's value: out_dir/ranks:... */
    char slurm_job[32];             /* the Slurm job id sbatch printed ("" : none); atomd keeps it
                                     * in its store, never in a file the owner can write */
    /* Slurm: submit as this user (sbatch --uid/--gid, which root may use), so the job runs as its
     * owner; the mpirun launcher takes the owner's identity in a child instead (atomd's jobs.c). */
    bool as_owner;
    unsigned owner_uid, owner_gid;
    /* How the mpirun launcher's process starts (jobs.c fills them): with as_owner it takes the
     * owner's uid, gid and these supplementary groups; it gets envp as its environment (NULL:
     * atomd's own, for tools and tests that start a launch themselves), joins the cgroup folder
     * (cgroup.h; "" : none) before exec, and runs with umask 027. */
    gid_t groups[64];
    int n_groups;
    char **envp;
    char cgroup[ATOM_PATH_MAX];
} atom_launch;

/* Writes run_dir/plan.json and run_dir/ranks.app for plan (run_dir must exist) and, in the output
 * folder (plan->run_dir when set, else run_dir; it must exist), the links rank-R.log to the file
 * mpirun will write rank R's output to. worker is the atom-worker executable. */
int atom_launch_prepare(const atom_plan *plan, const char *run_dir, const char *worker,
                        atom_launch *launch, atom_err *err);

/* The mpirun argv for a prepared launch (NULL-terminated, static strings and launch's paths;
 * free the array only). */
char **atom_launch_argv(const atom_plan *plan, const atom_launch *launch);

/* Starts mpirun (its stdout and stderr go to out_fd and err_fd; -1 keeps the caller's) in its own
 * process group, so that a signal reaches mpirun and everything it started, in the attempt's
 * folder, as launch's identity, environment and cgroup say. A failure before mpirun runs (fork,
 * the cgroup, the identity, exec) is reported here with its reason, not as an exit code. */
int atom_launch_start(const atom_plan *plan, atom_launch *launch, int out_fd, int err_fd,
                      atom_err *err);

/* Sends sig to mpirun (which forwards SIGUSR1 and SIGTERM to every rank). */
int atom_launch_signal(const atom_launch *launch, int sig);

/* Waits for mpirun (blocking when block is true). Returns 1 and the exit code in *exit_code (128 +
 * signal when killed) once it has ended, 0 while it runs, -1 on error. */
int atom_launch_wait(atom_launch *launch, bool block, int *exit_code, atom_err *err);

/* The atom-worker next to the running program (same folder), or ATOM_WORKER from the
 * environment. Returns -1 when it does not exist. */
int atom_find_worker(char *path, size_t len, atom_err *err);

/* Where mpirun writes rank's output, relative to the output folder (Open MPI 4.1's layout). */
int atom_launch_rank_log(int world, int rank, char *path, size_t len);

/* The Slurm launcher (launch_slurm.c): the same shapes, so that one ops table can hold both. An
 * attempt is one sbatch allocation running deploy/slurm/atom.sbatch (the workers start through
 * atom-srun and build their plan from the allocation); launch->slurm_job holds the Slurm job id,
 * launch->pid stays 0. wait follows the job with squeue --json and scontrol show job. */
int atom_launch_slurm_prepare(const atom_plan *plan, const char *run_dir, const char *worker,
                              atom_launch *launch, atom_err *err);
int atom_launch_slurm_start(const atom_plan *plan, atom_launch *launch, int out_fd, int err_fd,
                            atom_err *err);
int atom_launch_slurm_signal(const atom_launch *launch, int sig);
int atom_launch_slurm_wait(atom_launch *launch, bool block, int *exit_code, atom_err *err);
/* The live Slurm job of atomd's job job_id run by uid (the name sbatch gave it, atom-JOBID), for
 * an attempt whose id atomd did not get to store: it died between sbatch and its commit. Fills
 * launch->slurm_job; returns 1 when found, 0 when none, -1 on error. The job name is the user's to
 * choose too: the job found is always one of that user's own. */
int atom_launch_slurm_find(atom_launch *launch, const char *job_id, unsigned uid, atom_err *err);
/* rank-R.log: srun --output writes it into the output folder. */
int atom_launch_slurm_rank_log(int world, int rank, char *path, size_t len);
/* The cluster as Slurm reports it (sinfo --json), for atomd instead of its own inventory: usable
 * nodes only (idle, mixed or allocated, not drained or unresponsive), with their GPUs (CPU slots
 * on a node without GPUs) and, in *free_gpus (malloc'd, one per node), how many are not in use. */
int atom_launch_slurm_nodes(atom_inventory *inv, int **free_gpus, atom_err *err);
int atom_slurm_nodes_from_json(const char *json, atom_inventory *inv, int **free_gpus,
                               atom_err *err);

#endif
