/* scheduler/client.c: connect to atomd, send a request, read the answer (see client.h). */
#include "scheduler/client.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* An answer may carry a chunk of a log: well above the request bound, still bounded. */
#define CLIENT_MAX_ANSWER (64u << 20)
/* Seconds to make a TCP connection: a host that drops packets is reported, not waited for. */
#define CLIENT_CONNECT_TIMEOUT 10.0

void atom_client_default_socket(char *path, size_t len)
{
    const char *env = getenv("ATOM_SOCKET");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char state[ATOM_PATH_MAX];
    if (env && env[0])
        snprintf(path, len, "%s", env);
    else if (geteuid() == 0)
        snprintf(path, len, "/run/atom/atomd.sock");
    else if (xdg && xdg[0] == '/')
        snprintf(path, len, "%s/atom/atomd.sock", xdg);
    else if (atom_user_state_dir(state, sizeof state, NULL) == 0)
        snprintf(path, len, "%s/socket/atomd.sock", state);
    else
        path[0] = '\0'; /* atom_client_connect says why; never a shared folder such as /tmp */
}

bool atom_client_default_server(char *addr, size_t len)
{
    const char *env = getenv("ATOM_SERVER");
    if (!env || !env[0])
        return false;
    snprintf(addr, len, "%s", env);
    return true;
}

bool atom_client_is_tcp(const char *addr)
{
    char host[256];
    int port;
    return !strchr(addr, '/') && atom_hostport_parse(addr, host, sizeof host, &port, NULL) == 0;
}

/* not_running stays 0: only `atomctl run` asks, and it starts atomd locally, never over TCP. */
static int connect_tcp(atom_client *c, const char *addr, atom_err *err)
{
    char host[256];
    int port;
    atom_err e = {{0}};
    if (atom_hostport_parse(addr, host, sizeof host, &port, &e))
        return atom_errf(err, "atomd's address: %s", e.msg);
    const char *munge_socket = getenv("ATOM_MUNGE_SOCKET");
    snprintf(c->munge_socket, sizeof c->munge_socket, "%s", munge_socket ? munge_socket : "");
    c->tcp = true;
    c->fd = atom_tcp_connect(host, port, CLIENT_CONNECT_TIMEOUT, &e);
    if (c->fd < 0) {
        return atom_errf(err, "cannot reach atomd over TCP: %s (is atomd's tcp_listen set, and "
                         "munged running there?)", e.msg);
    }
    return 0;
}

/* A socket in a folder another user owns (or reached through a symlink) may be theirs: an atomd
 * of their own that reads every request. root's and the caller's own folders are trusted. */
static int check_socket_folder(const char *path, atom_err *err)
{
    char dir[ATOM_PATH_MAX];
    atom_path_dir(path, dir, sizeof dir);
    struct stat st;
    if (lstat(dir, &st) != 0)
        return 0; /* nothing there: connect says atomd is not running */
    if (S_ISLNK(st.st_mode)) {
        return atom_errf(err, "%s: the socket's folder %s is a symbolic link: atomctl talks only "
                         "to an atomd in a real folder; give --socket with the real path", path,
                         dir);
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        return atom_errf(err, "%s: the socket's folder %s belongs to uid %u, neither you nor "
                         "root: atomctl does not talk to an atomd another user may have put "
                         "there; have it removed, or give --socket PATH", path, dir,
                         (unsigned)st.st_uid);
    }
    return 0;
}

int atom_client_connect(atom_client *c, const char *path, int *not_running, atom_err *err)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->timeout = 60;
    if (not_running)
        *not_running = 0;
    if (atom_client_is_tcp(path))
        return connect_tcp(c, path, err);
    if (!path[0]) {
        return atom_errf(err, "no socket for atomd: XDG_RUNTIME_DIR, HOME and the account's home "
                         "folder are all unknown; set one, or give --socket PATH");
    }
    if (check_socket_folder(path, err) != 0)
        return -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return atom_errf(err, "socket path too long: %s", path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return atom_errf(err, "socket: %s", strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        if (not_running && (e == ENOENT || e == ECONNREFUSED))
            *not_running = 1;
        if (e == ENOENT || e == ECONNREFUSED)
            return atom_errf(err, "atomd is not running (nothing listens on %s); start it with "
                             "`systemctl start atomd`, or use `atomctl run`, which starts a private one", path);
        return atom_errf(err, "cannot reach atomd at %s: %s", path, strerror(e));
    }
    return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

json_t *atom_client_call(atom_client *c, json_t *req, atom_err *err)
{
    if (c->fd < 0) {
        atom_errf(err, "not connected to atomd");
        return NULL;
    }
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text) {
        atom_errf(err, "out of memory");
        return NULL;
    }
    if (c->tcp) {
        /* A fresh credential per request: munged refuses one seen before. */
        char *cred = NULL;
        int rc = atom_munge_encode(c->munge_socket, text, strlen(text), &cred, err);
        free(text);
        if (rc)
            return NULL;
        text = cred;
    }
    int rc = send_all(c->fd, text, strlen(text)) || send_all(c->fd, "\n", 1);
    /* A connection atomd refused (a cap on connections, no descriptor left) was closed after one
     * error line: the write fails, and that line, already here, says why. */
    int send_errno = rc ? errno : 0;
    free(text);
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (nl) {
            json_error_t jerr;
            json_t *ans = json_loadb(c->buf, (size_t)(nl - c->buf), 0, &jerr);
            size_t used = (size_t)(nl - c->buf) + 1;
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            if (!ans)
                atom_errf(err, "atomd sent an unreadable answer: %s", jerr.text);
            return ans;
        }
        if (c->len >= CLIENT_MAX_ANSWER) {
            atom_errf(err, "atomd's answer is larger than %u bytes", CLIENT_MAX_ANSWER);
            return NULL;
        }
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? 2 * c->cap : 65536;
            char *buf = realloc(c->buf, cap);
            if (!buf) {
                atom_errf(err, "out of memory");
                return NULL;
            }
            c->buf = buf;
            c->cap = cap;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(c->timeout * 1000));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            atom_errf(err, "atomd did not answer within %.0f s", c->timeout);
            return NULL;
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (send_errno)
                atom_errf(err, "atomd closed the connection: %s", strerror(send_errno));
            else
                atom_errf(err, "atomd closed the connection before answering");
            return NULL;
        }
        c->len += (size_t)n;
    }
}

void atom_client_close(atom_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}
