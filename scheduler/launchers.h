/* scheduler/launchers.h: atomd's launchers behind one table of operations (private to atomd).
 *
 * Two real launchers exist (launch.h): mpirun on a standalone cluster, sbatch on a Slurm cluster.
 * atomd picks one at start (config `launcher`) and calls it only through this table. They differ
 * in one way that atomd must know: an mpirun is atomd's own child (its end arrives as SIGCHLD, its
 * processes can be looked at and signalled through /proc), while a Slurm job lives under
 * slurmctld and is polled with wait().
 */
#ifndef ATOM_SCHEDULER_LAUNCHERS_H
#define ATOM_SCHEDULER_LAUNCHERS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/common.h"
#include "scheduler/launch.h"

typedef struct atomd_launcher {
    const char *name;
    bool child;  /* the attempt is a child process of atomd (pid, SIGCHLD, /proc) */
    bool simulated;  /* virtual (simulate.h): no attempt folder, output log or processes */
    int (*prepare)(const atom_plan *plan, const char *run_dir, const char *worker, atom_launch *launch,
                   atom_err *err);
    int (*start)(const atom_plan *plan, atom_launch *launch, int out_fd, int err_fd, atom_err *err);
    int (*signal)(const atom_launch *launch, int sig);
    /* 1 and the exit code once ended, 0 while it runs, -1 on error. */
    int (*wait)(atom_launch *launch, bool block, int *exit_code, atom_err *err);
    /* Where rank R's log is, relative to the attempt's output folder (NULL: no files). */
    int (*rank_log)(int world, int rank, char *path, size_t len);
    /* Who writes the launcher's own messages: atomd, into the attempt's folder (mpirun's output,
     * through atomd), or Slurm as the job's owner, into the output folder (the batch script's). */
    bool owner_writes_launcher_log;
} atomd_launcher;

/* "mpirun" or "slurm"; NULL for any other name. */
const atomd_launcher *atomd_launcher_named(const char *name);

#endif
