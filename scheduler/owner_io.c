/* scheduler/owner_io.c: reading what a job's owner can write (see owner_io.h). */
#include "scheduler/owner_io.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <unistd.h>

#define OWNER_OPEN_FLAGS (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)

gid_t atomd_owner_gid(uid_t uid)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res)
        return pw.pw_gid;
    return (gid_t)uid;
}

/* The open itself, with the owner's file-system identity when atomd is root. Returns the
 * descriptor or -1 with errno. atomd is single-threaded: the identity is the whole process's
 * for the length of one open(), and is put back before anything else runs. */
static int open_as(const char *path, uid_t uid, gid_t gid)
{
    if (geteuid() != 0)
        return open(path, OWNER_OPEN_FLAGS);
    gid_t groups[64];
    int n_groups = getgroups((int)(sizeof groups / sizeof *groups), groups);
    if (n_groups < 0)
        return -1;
    /* root's supplementary groups (group 0) would open what the owner cannot: none while it
     * opens. Every step is checked; a switch that did not take refuses the open. */
    if (setgroups(0, NULL) != 0)
        return -1;
    setfsgid(gid);
    setfsuid(uid);
    int fd = -1, saved = EPERM;
    if ((uid_t)setfsuid((uid_t)-1) == uid && (gid_t)setfsgid((gid_t)-1) == gid) {
        fd = open(path, OWNER_OPEN_FLAGS);
        saved = errno;
    }
    setfsuid(geteuid()); /* root's own again first: that restores the right to set the rest */
    setfsgid(getegid());
    if (setgroups((size_t)n_groups, groups) != 0 || (uid_t)setfsuid((uid_t)-1) != geteuid() ||
        (gid_t)setfsgid((gid_t)-1) != getegid()) {
        /* Cannot be root's own again: nothing atomd does as root is safe from here on. */
        atom_log(ATOM_LOG_ERROR, "owner_io: cannot restore atomd's identity: %s", strerror(errno));
        abort();
    }
    if (fd < 0)
        errno = saved;
    return fd;
}

int atomd_owner_open(const char *path, uid_t uid, gid_t gid, struct stat *st, atom_err *err)
{
    if (err)
        err->msg[0] = 0;
    int fd = open_as(path, uid, gid);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == EACCES)
            return -1; /* not there, or not the owner's to read: nothing to show */
        if (errno == ELOOP)
            return atom_errf(err, "%s is not a regular file of the job's owner (uid %u, a link): not read", path,
                             (unsigned)uid);
        return atom_errf(err, "%s: %s", path, strerror(errno));
    }
    uid_t want = geteuid() == 0 ? uid : geteuid();
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || st->st_uid != want) {
        close(fd);
        return atom_errf(err, "%s is not a regular file of the job's owner (uid %u): not read", path, (unsigned)uid);
    }
    return fd;
}

char *atomd_owner_read(const char *path, uid_t uid, gid_t gid, size_t max, size_t *len, atom_err *err)
{
    struct stat st;
    *len = 0;
    int fd = atomd_owner_open(path, uid, gid, &st, err);
    if (fd < 0)
        return NULL;
    size_t want = (size_t)st.st_size < max ? (size_t)st.st_size : max;
    char *buf = malloc(want + 1);
    size_t n = 0;
    while (buf && n < want) {
        ssize_t r = read(fd, buf + n, want - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf) {
        atom_errf(err, "out of memory reading %s", path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}
