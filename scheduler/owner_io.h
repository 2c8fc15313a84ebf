/* scheduler/owner_io.h: atomd's one way to read a file a job's owner can write (private to atomd).
 *
 * atomd runs as root; a job's output folder is its owner's, and everything in it (rank logs,
 * heartbeat files, Slurm's batch output) is the owner's to replace: with a link to /etc/shadow, a
 * FIFO that would block atomd's loop, a device. So atomd never opens such a path as itself: the
 * open happens with the owner's file-system identity (setfsuid/setfsgid, no supplementary
 * groups; put back before returning), with O_NOFOLLOW|O_NONBLOCK|O_NOCTTY|O_CLOEXEC, and the file
 * is kept only when fstat says it is a regular file of that owner. Reads are bounded. An atomd
 * that is not root runs every job as itself: it opens as itself, and the file must be its own.
 *
 * Nothing atomd decides for other users (a node down, which Slurm job to signal) is taken from
 * what this reads: it is shown to the job's owner (`atomctl logs`), or tells the owner's own job
 * apart (the last step it logged).
 */
#ifndef ATOM_SCHEDULER_OWNER_IO_H
#define ATOM_SCHEDULER_OWNER_IO_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/common.h"

/* Opens path for reading as the owner (uid, gid). Returns the descriptor, with its fstat in *st;
 * -1 with err empty when the file does not exist (or the owner cannot reach it); -1 with err
 * saying why when it is not a regular file of the owner (a link, a FIFO, someone else's). */
int atomd_owner_open(const char *path, uid_t uid, gid_t gid, struct stat *st, atom_err *err);

/* Reads up to max bytes of the file: a malloc'd NUL-terminated string, its length in *len. NULL
 * as atomd_owner_open fails (err empty: no such file). */
char *atomd_owner_read(const char *path, uid_t uid, gid_t gid, size_t max, size_t *len, atom_err *err);

/* The owner's primary group (from the account; uid's own number when it has none). */
gid_t atomd_owner_gid(uid_t uid);

#endif
