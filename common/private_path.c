/* common/private_path.c: folders and files that must be the caller's alone (declared in
 * common.h): the socket folder, the user's state folder, atomctl run's atomd log.
 *
 * A folder another user created first (a predictable name under /tmp, a shared scratch space)
 * lets that user swap what is inside: a symlink where a log is appended, a socket of their own
 * where requests are sent. So a folder is created with mkdir and, when it exists already, taken
 * only if lstat says it is a real folder (not a symlink) owned by the caller's effective uid and
 * writable by nobody else; files inside are opened with O_NOFOLLOW and checked with fstat.
 */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "alice (uid 1000)", or "uid 1000" when the account is unknown. */
static void describe_uid(uid_t uid, char *buf, size_t len)
{
    struct passwd pw, *found = NULL;
    char strings[1024];
    if (getpwuid_r(uid, &pw, strings, sizeof strings, &found) == 0 && found)
        snprintf(buf, len, "%s (uid %u)", found->pw_name, (unsigned)uid);
    else
        snprintf(buf, len, "uid %u", (unsigned)uid);
}

/* mkdir -p of path's parents, each created with mode (at least 0700) so that what the folder
 * lets others reach stays reachable; existing ones are left as they are. */
static int make_parents(const char *path, mode_t mode, atom_err *err)
{
    char buf[ATOM_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return atom_errf(err, "%s: the path is longer than %d bytes", path, ATOM_PATH_MAX - 1);
    char *last = strrchr(buf, '/');
    if (!last || last == buf)
        return 0;
    *last = '\0';
    int rc = atom_make_dirs(buf, mode | 0700);
    return rc ? atom_errf(err, "cannot create the folders of %s: %s", buf, strerror(rc)) : 0;
}

int atom_private_dir_check(const char *path, mode_t mode, atom_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return atom_errf(err, "%s: %s", path, strerror(errno));
    char owner[300];
    describe_uid(st.st_uid, owner, sizeof owner);
    if (S_ISLNK(st.st_mode)) {
        return atom_errf(err, "%s is a symbolic link (owned by %s), not a folder: atom keeps its "
                         "files only in a real folder of yours; remove the link, or choose "
                         "another path", path, owner);
    }
    if (!S_ISDIR(st.st_mode))
        return atom_errf(err, "%s exists and is not a folder: remove it, or choose another path",
                         path);
    if (st.st_uid != geteuid()) {
        char me[300];
        describe_uid(geteuid(), me, sizeof me);
        return atom_errf(err, "%s belongs to %s, not to you (%s): another user created it, "
                         "perhaps to read or replace what atom keeps there; atom will not use "
                         "it: have it removed (its owner or an administrator), or choose "
                         "another path", path, owner, me);
    }
    /* A folder created 0700 must stay 0700; any other may be readable, never writable. */
    mode_t refused = (mode & 077) ? 022 : 077;
    if (st.st_mode & refused) {
        return atom_errf(err, "%s is open to other users (mode %04o; it must not %s): "
                         "`chmod go-%s %s`, or choose another path", path,
                         (unsigned)(st.st_mode & 07777),
                         refused == 022 ? "be writable by its group or others"
                                        : "give its group or others any access",
                         refused == 022 ? "w" : "rwx", path);
    }
    return 0;
}

int atom_private_dir(const char *path, mode_t mode, atom_err *err)
{
    if (!path || !path[0])
        return atom_errf(err, "an empty folder name");
    if (make_parents(path, mode, err) != 0)
        return -1;
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return atom_errf(err, "cannot create %s: %s", path, strerror(errno));
    /* Checked even when just created: mkdir does not say who made a folder that raced it. */
    return atom_private_dir_check(path, mode, err);
}

int atom_private_open(const char *path, int flags, mode_t mode, atom_err *err)
{
    int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);
    if (fd < 0) {
        if (errno == ELOOP)
            return atom_errf(err, "%s is a symbolic link: atom opens only a regular file of yours "
                             "there; remove the link", path);
        if (errno == ENXIO) /* a FIFO nobody reads, opened O_NONBLOCK for writing */
            return atom_errf(err, "%s is not a regular file (a FIFO): remove it", path);
        return atom_errf(err, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        char owner[300];
        describe_uid(st.st_uid, owner, sizeof owner);
        close(fd);
        return atom_errf(err, "%s is not a regular file of yours (owner %s): remove it", path,
                         owner);
    }
    /* The blocking mode the caller asked for (O_NONBLOCK was only there for a FIFO's open). */
    if (!(flags & O_NONBLOCK))
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

int atom_user_home(char *out, size_t len, atom_err *err)
{
    const char *home = getenv("HOME");
    if (home && home[0] == '/') {
        if (snprintf(out, len, "%s", home) >= (int)len)
            return atom_errf(err, "$HOME is longer than %zu bytes", len - 1);
        return 0;
    }
    struct passwd pw, *found = NULL;
    char strings[4096];
    if (getpwuid_r(geteuid(), &pw, strings, sizeof strings, &found) != 0 || !found ||
        !found->pw_dir || found->pw_dir[0] != '/') {
        return atom_errf(err, "HOME is not set and the account database has no home folder for "
                         "uid %u: set HOME (atom keeps its own files there, never under /tmp)",
                         (unsigned)geteuid());
    }
    if (snprintf(out, len, "%s", found->pw_dir) >= (int)len)
        return atom_errf(err, "the home folder %s is longer than %zu bytes", found->pw_dir,
                         len - 1);
    return 0;
}

int atom_user_state_dir(char *out, size_t len, atom_err *err)
{
    const char *xdg = getenv("XDG_STATE_HOME");
    int n;
    if (xdg && xdg[0] == '/') {
        n = snprintf(out, len, "%s/atom", xdg);
    } else {
        char home[ATOM_PATH_MAX];
        if (atom_user_home(home, sizeof home, err) != 0)
            return -1;
        n = snprintf(out, len, "%s/.local/state/atom", home);
    }
    if (n < 0 || (size_t)n >= len)
        return atom_errf(err, "the state folder's path is longer than %zu bytes", len - 1);
    return 0;
}
