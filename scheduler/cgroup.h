/* scheduler/cgroup.h: one cgroup per attempt on atomd's own node (private to atomd).
 *
 * A job's processes are its owner's: they can fork, daemonise, change their command line and
 * exit while a pid is reused. So atomd tells an attempt's processes by the cgroup v2 folder it
 * put mpirun in before exec (root-owned: the owner cannot move a process out, which needs write
 * access to a common ancestor), kills them all through cgroup.kill (or each pid in
 * cgroup.procs on an older kernel), knows the attempt is over when cgroup.events says the folder
 * is no longer populated, and finds an attempt again after a restart by its folder's name.
 *
 * The folders live under atomd's own cgroup: <cgroup2 mount><atomd's path>/atom-<tag>/
 * job-<id>-<attempt>, tag a hash of the state folder, so that two atomds on one machine (the
 * tests run many) never share one. Under systemd the unit needs Delegate=yes (deploy/
 * atomd.service has it). Where no cgroup2 hierarchy is mounted or it is not writable (a
 * container), `usable` is false, `why` says so (atomctl nodes shows it) and atomd falls back to
 * the process group and /proc. Processes on other nodes (mpirun's daemons there) are not in it.
 */
#ifndef ATOM_SCHEDULER_CGROUP_H
#define ATOM_SCHEDULER_CGROUP_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/common.h"

typedef struct atomd_cgroups {
    bool usable;
    char root[ATOM_PATH_MAX];  /* atomd's folder of attempt cgroups */
    char why[256];             /* when not usable: why, for the log and atomctl nodes */
} atomd_cgroups;

/* Finds the cgroup2 hierarchy and creates atomd's folder in it; never fails (sets usable). */
void atomd_cgroups_init(atomd_cgroups *cg, const char *state_dir);

/* The folder of one attempt (whether or not it exists). */
int atomd_cgroup_path(const atomd_cgroups *cg, const char *job_id, int attempt, char *path,
                      size_t len);

/* Creates the attempt's folder (an existing one, left by a crash, is reused: it is emptied by
 * the kill that precedes every reuse). */
int atomd_cgroup_create(const char *path, atom_err *err);

/* In a forked child before exec: moves the calling process into the folder. Async-signal-safe
 * (open, write, close). Returns 0 or -1. */
int atomd_cgroup_join(const char *path);

/* Sends SIGKILL to every process in the folder. Returns how many were signalled (cgroup.kill
 * counts as 1 when the folder held any), -1 when the folder cannot be read. */
int atomd_cgroup_kill(const char *path);

/* 1 while some process is in the folder, 0 when none is, -1 when it does not exist. */
int atomd_cgroup_populated(const char *path);

/* The process of the folder whose parent is not in it (mpirun: the first process put there), or
 * 0 when there is none. */
pid_t atomd_cgroup_leader(const char *path);

/* Removes every attempt folder that is empty (the kernel refuses a populated one): what ended
 * attempts leave behind, once their last process has died. */
void atomd_cgroups_sweep(const atomd_cgroups *cg);

#endif
