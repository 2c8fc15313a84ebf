/* scheduler/proc.h: local processes as atomd sees them through /proc (private to atomd).
 *
 * atomd tells a live attempt from a reused pid by the process start time, names a rank stopped
 * with SIGSTOP by its state letter, finds an mpirun it never recorded by its command line, and
 * stops an attempt by signalling mpirun and every process below it.
 */
#ifndef ATOM_SCHEDULER_PROC_H
#define ATOM_SCHEDULER_PROC_H

#include <stdint.h>
#include <sys/types.h>

/* The start time of a process (field 22 of /proc/<pid>/stat); 0 when it does not exist. */
uint64_t atomd_proc_start_time(pid_t pid);
/* The state letter of a process (R, S, D, T stopped, Z ...), or 0 when it does not exist. */
char atomd_proc_state(pid_t pid);
/* Sends sig to root, to its process group and to every descendant of root. */
void atomd_kill_tree(pid_t root, int sig);
/* A running process with needle as one of its arguments (an attempt's ranks.app), or 0. */
pid_t atomd_find_process_with_arg(const char *needle);

#endif
