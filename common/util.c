/* common/util.c: errors, whole-file reads, atomic writes, durations and clocks: the small helpers
 * every atom program shares (declared in common.h). */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int atom_errf(atom_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *atom_read_file(const char *path, size_t max_bytes, size_t *len, atom_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return atom_errf(err, "%s: %s", path, strerror(errno)), NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
        close(fd);
        return atom_errf(err, "%s: %s", path, strerror(e)), NULL;
    }
    /* st_size is only a hint (pipes and /proc files report 0), so the cap is enforced on what is
     * actually read: one byte past max_bytes proves the file is too large. */
    size_t cap =
        (S_ISREG(st.st_mode) && (size_t)st.st_size < max_bytes) ? (size_t)st.st_size + 1 : 4096;
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return atom_errf(err, "%s: file is %lld bytes, more than the limit of %zu", path,
                         (long long)st.st_size, max_bytes), NULL;
    }
    char *buf = malloc(cap + 1);
    size_t used = 0;
    while (buf) {
        if (used == cap) {
            if (cap > max_bytes)
                break;
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return atom_errf(err, "%s: read: %s", path, strerror(e)), NULL;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    if (!buf)
        return atom_errf(err, "%s: out of memory", path), NULL;
    if (used > max_bytes) {
        free(buf);
        return atom_errf(err, "%s: file is larger than the limit of %zu bytes", path, max_bytes),
               NULL;
    }
    buf[used] = '\0';
    if (len)
        *len = used;
    return buf;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void atom_path_dir(const char *path, char *dir, size_t len)
{
    snprintf(dir, len, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, len, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
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

int atom_write_file_atomic(const char *path, const void *data, size_t len, atom_err *err)
{
    static unsigned counter; /* distinguishes two writes of one process to the same path */
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                     __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    if (n < 0 || (size_t)n >= sizeof tmp)
        return atom_errf(err, "%s: path too long", path);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return atom_errf(err, "%s: %s", tmp, strerror(errno));
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return atom_errf(err, "%s: %s", tmp, strerror(e));
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return atom_errf(err, "%s: close: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return atom_errf(err, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    /* The rename is durable only once the folder's entry is on disk. */
    char dir[PATH_MAX];
    atom_path_dir(path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return atom_errf(err, "%s: %s", dir, strerror(errno));
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    /* Some file systems (network ones, tmpfs variants) cannot sync a folder and say so with
     * EINVAL: the rename itself has happened, and that is all they offer. */
    if (rc != 0 && e != EINVAL && e != ENOTSUP)
        return atom_errf(err, "fsync %s: %s", dir, strerror(e));
    return 0;
}

/* Adds a*b+c to *out, refusing overflow. */
static int mul_add(int64_t a, int64_t b, int64_t c, int64_t *out)
{
    int64_t p;
    if (__builtin_mul_overflow(a, b, &p) || __builtin_add_overflow(p, c, out))
        return -1;
    return 0;
}

/* The decimal number at p into *v; where it ends, or NULL when p holds no digit or it overflows. */
static const char *parse_digits(const char *p, int64_t *v)
{
    if (*p < '0' || *p > '9')
        return NULL;
    *v = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        if (mul_add(*v, 10, *p - '0', v) != 0)
            return NULL;
    return p;
}

/* "01:30:00", "30:00" (minutes:seconds) or "1:02:03:04" (days:h:m:s). */
static int parse_clock(const char *s, int64_t *seconds)
{
    int64_t parts[4];
    int n = 0;
    const char *p = s;
    for (;;) {
        if (n == 4 || !(p = parse_digits(p, &parts[n])))
            return -1;
        n++;
        if (*p == '\0')
            break;
        if (*p++ != ':')
            return -1;
    }
    if (n < 2)
        return -1;
    static const int64_t unit[4] = {86400, 3600, 60, 1};
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && parts[i] >= (i == 1 && n == 4 ? 24 : 60))
            return -1; /* "1:75:00" is a typo, not 2:15:00 */
        if (mul_add(parts[i], unit[4 - n + i], total, &total) != 0)
            return -1;
    }
    *seconds = total;
    return 0;
}

int atom_parse_duration(const char *s, int64_t *seconds)
{
    if (!s || !*s)
        return -1;
    if (strchr(s, ':'))
        return parse_clock(s, seconds);
    int64_t total = 0;
    const char *p = s;
    int last_unit = 5; /* units must come in decreasing order: "1h30m", never "30m1h" */
    while (*p) {
        int64_t v;
        if (!(p = parse_digits(p, &v)))
            return -1;
        int64_t mult;
        int rank;
        switch (*p) {
        case 'd': mult = 86400; rank = 4; break;
        case 'h': mult = 3600; rank = 3; break;
        case 'm': mult = 60; rank = 2; break;
        case 's': mult = 1; rank = 1; break;
        case '\0':
            /* A bare number is seconds, but only on its own: "1h30" is ambiguous. */
            if (p != s && last_unit != 5)
                return -1;
            mult = 1;
            rank = 0;
            break;
        default: return -1;
        }
        if (rank >= last_unit)
            return -1;
        last_unit = rank;
        if (mul_add(v, mult, total, &total) != 0)
            return -1;
        if (*p)
            p++;
    }
    *seconds = total;
    return 0;
}

double atom_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double atom_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int atom_make_dirs(const char *path, mode_t mode)
{
    char buf[ATOM_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    return mkdir(buf, mode) != 0 && errno != EEXIST ? errno : 0;
}
