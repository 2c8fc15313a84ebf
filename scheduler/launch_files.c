/* scheduler/launch_files.c: what both launchers (launch_mpirun.c, launch_slurm.c) do the same way:
 * the attempt's file paths and plan file, and finding a program installed next to atomd. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/launch_files.h"

int atom_launch_write_plan(const atom_plan *plan, const char *run_dir, const char *app_name,
                           atom_launch *launch, atom_err *err)
{
    memset(launch, 0, sizeof *launch);
    const char *dir = plan->run_dir[0] ? plan->run_dir : run_dir;
    if ((size_t)snprintf(launch->run_dir, sizeof launch->run_dir, "%s", dir) >= sizeof launch->run_dir ||
        (size_t)snprintf(launch->plan_path, sizeof launch->plan_path, "%s/plan.json", dir) >= sizeof launch->plan_path ||
        (size_t)snprintf(launch->app_path, sizeof launch->app_path, "%s/%s", dir, app_name) >= sizeof launch->app_path)
        return atom_errf(err, "run folder path too long: %s", dir);
    atom_plan copy = *plan; /* shallow: only run_dir differs */
    snprintf(copy.run_dir, sizeof copy.run_dir, "%s", dir);
    return atom_plan_write(&copy, launch->plan_path, err);
}

int atom_program_path(const char *env_name, const char *name, char *path, size_t len, atom_err *err)
{
    const char *env = getenv(env_name);
    if (env && env[0]) {
        if ((size_t)snprintf(path, len, "%s", env) >= len)
            return atom_errf(err, "%s is too long", env_name);
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return atom_errf(err, "cannot find this program's folder: %s", strerror(errno));
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(path, len, "%s/%s", self, name) >= len)
        return atom_errf(err, "path of %s too long", name);
    return 0;
}

int atom_find_worker(char *path, size_t len, atom_err *err)
{
    if (atom_program_path("ATOM_WORKER", "atom-worker", path, len, err))
        return -1;
    if (access(path, X_OK) != 0)
        return atom_errf(err, "the worker %s cannot be run: %s", path, strerror(errno));
    return 0;
}
