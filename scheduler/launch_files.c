/* scheduler/launch_files.c: what both launchers (launch_mpirun.c, launch_slurm.c) do the same way:
 * the attempt's file paths and plan file, and finding the worker installed next to atomd.
 *
 * The plan file sits in the attempt's folder (atomd's: the owner's workers read it and cannot
 * change it); the run_dir inside it is the output folder, where the workers write. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/launch_files.h"

int atom_launch_write_plan(const atom_plan *plan, const char *run_dir, const char *app_name,
                           atom_launch *launch, atom_err *err)
{
    memset(launch, 0, sizeof *launch);
    const char *out = plan->run_dir[0] ? plan->run_dir : run_dir;
    size_t len = sizeof launch->run_dir; /* every path of launch has this size */
    if ((size_t)snprintf(launch->run_dir, len, "%s", run_dir) >= len ||
        (size_t)snprintf(launch->out_dir, len, "%s", out) >= len ||
        (size_t)snprintf(launch->plan_path, len, "%s/plan.json", run_dir) >= len ||
        (size_t)snprintf(launch->app_path, len, "%s/%s", run_dir, app_name) >= len)
        return atom_errf(err, "run folder path too long: %s", run_dir);
    atom_plan copy = *plan; /* shallow: only run_dir differs */
    snprintf(copy.run_dir, sizeof copy.run_dir, "%s", out); /* where the workers write */
    return atom_plan_write(&copy, launch->plan_path, err);
}

int atom_find_worker(char *path, size_t len, atom_err *err)
{
    if (atom_program_path("ATOM_WORKER", "atom-worker", path, len, err))
        return -1;
    if (access(path, X_OK) != 0)
        return atom_errf(err, "the worker %s cannot be run: %s", path, strerror(errno));
    return 0;
}
