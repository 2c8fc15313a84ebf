/* scheduler/server.c: atomd's event loop, its sockets and its clients.
 *
 * One poll loop serves: the client socket (newline-delimited JSON requests, answers in order),
 * the heartbeat socket (one JSON heartbeat per datagram, as worker/train.c sends them), the TCP
 * port when configured, a signalfd (SIGCHLD for ended attempts; SIGTERM/SIGINT to stop) and a
 * timer (time limits, hang checks, usage). Each iteration: read everything that is ready, run the
 * scheduling pass if anything changed, COMMIT once, and only then write answers. That is what
 * makes an answer mean "durable", and what lets all the submissions of one iteration share one
 * sync.
 *
 * The transports differ only in how the caller is known. On the Unix socket it is the peer's
 * SO_PEERCRED, once per connection. On the TCP port every line is a MUNGE credential whose
 * payload is the request (common/munge_tcp.c), and the caller is the uid munged decoded from it,
 * line by line; the request then goes through the same protocol table. A line that is not a
 * valid, fresh credential (missing, garbage, expired, replayed) gets an error answer naming why
 * and the connection stays open; a line over the size bound is refused before it is decoded and
 * the connection is closed, as on the Unix socket, and so is a line left unfinished for
 * tcp_request_timeout; TCP keepalive closes connections of peers that vanished. A credential
 * whose payload is a heartbeat (worker ranks on other nodes) is taken as one, and answered only
 * when it is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "scheduler/atomd.h"
#include "scheduler/protocol.h"
#include "scheduler/sched.h"

#define TICK_SECONDS 0.5
#define USAGE_SAVE_SECONDS 30.0
/* Connections on the TCP port are open to anyone who can reach it, before any credential:
 * bounded in number (each holds at most one bounded request). Every rank on another node than
 * atomd's keeps one open for its heartbeats (10,000 at 10,000 GPUs), well within the unit's
 * LimitNOFILE=65536. */
#define MAX_TCP_CLIENTS 16384
/* The fixed entries of the poll array; clients follow. */
enum { POLL_SIGNALS, POLL_LISTEN, POLL_HEARTBEATS, POLL_TCP, POLL_FIXED };

struct atomd_client {
    int fd;
    bool tcp;          /* the TCP port: who is decoded from each line's credential */
    bool who_known;    /* tcp: who holds the last decoded caller (admin looked up once per uid) */
    double partial_since; /* tcp: monotonic time the incomplete line in `in` began (0: none) */
    atomd_caller who;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_cap, out_sent;
    bool close_after;  /* after the pending answer: an oversized request, or the peer hung up */
    bool dead;
};

bool atomd_is_admin(const atomd *d, uid_t uid)
{
    if (uid == 0)
        return true;
    if (!d->cfg.admin_group[0])
        return false;
    struct passwd pw, *pres = NULL;
    struct group gr, *gres = NULL;
    char pbuf[2048], gbuf[8192];
    if (getpwuid_r(uid, &pw, pbuf, sizeof pbuf, &pres) != 0 || !pres)
        return false;
    if (getgrnam_r(d->cfg.admin_group, &gr, gbuf, sizeof gbuf, &gres) != 0 || !gres)
        return false;
    /* SO_PEERCRED carries the primary group only: the supplementary ones come from here. */
    gid_t groups[256];
    int n = (int)(sizeof groups / sizeof *groups);
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
        n = (int)(sizeof groups / sizeof *groups);
    for (int i = 0; i < n; i++)
        if (groups[i] == gr.gr_gid)
            return true;
    return false;
}

static int bind_unix(const char *path, int type, atom_err *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return atom_errf(err, "socket path too long: %s", path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return atom_errf(err, "socket: %s", strerror(errno));
    if (type == SOCK_STREAM) {
        /* Another atomd answering on this path owns it; a dead one left a stale file. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof addr) == 0) {
            close(probe);
            close(fd);
            return atom_errf(err, "another atomd is already listening on %s", path);
        }
        if (probe >= 0)
            close(probe);
    }
    unlink(path);
    /* Any local user may connect: who they are comes from SO_PEERCRED, not from the file mode. */
    mode_t old = umask(0);
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc != 0 || (type == SOCK_STREAM && listen(fd, 128) != 0)) {
        atom_errf(err, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Where workers on other nodes reach the TCP port: the listen address, or atomd's host name
 * when it listens on every address. */
static void set_heartbeat_tcp(atomd *d, const char *host, int port)
{
    bool wildcard = !strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !strcmp(host, "*");
    const char *name = wildcard ? d->hostname : host;
    snprintf(d->heartbeat_tcp, sizeof d->heartbeat_tcp, strchr(name, ':') ? "[%s]:%d" : "%s:%d", name, port);
}

static int bind_tcp(atomd *d, atom_err *err)
{
    char host[256];
    int port = 0;
    if (atom_hostport_parse(d->cfg.tcp_listen, host, sizeof host, &port, err))
        return -1;
    atom_err munge_err = {{0}};
    if (atom_munge_check(d->cfg.munge_socket, &munge_err)) {
        atom_log(ATOM_LOG_WARN, "tcp_listen = %s is set, but munged does not answer (%s%s%s): "
                 "listening on the local socket only; start munged and restart atomd for TCP",
                 d->cfg.tcp_listen, munge_err.msg, d->cfg.munge_socket[0] ? "; munge_socket = " : "",
                 d->cfg.munge_socket);
        return 0;
    }
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(strcmp(host, "*") ? host : NULL, service, &hints, &res);
    if (rc != 0 || !res)
        return atom_errf(err, "tcp_listen = %s: %s", d->cfg.tcp_listen, rc ? gai_strerror(rc) : "no address");
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        atom_errf(err, "cannot listen on tcp_listen = %s: %s", d->cfg.tcp_listen, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    d->tcp_fd = fd;
    set_heartbeat_tcp(d, host, port);
    atom_log(ATOM_LOG_INFO, "listening on TCP %s (MUNGE credentials%s%s; workers on other nodes send "
             "heartbeats to %s)", d->cfg.tcp_listen, d->cfg.munge_socket[0] ? " from " : "",
             d->cfg.munge_socket, d->heartbeat_tcp);
    return 0;
}

void atomd_server_plan_addrs(const atomd *d, atom_plan *plan)
{
    snprintf(plan->heartbeat_addr, sizeof plan->heartbeat_addr, "%s", d->cfg.hb_path);
    /* Inventory node names are at most ATOM_NAME_MAX - 1 characters: a longer host name matches
     * none, and its ranks then use TCP, which works from atomd's own node too. */
    snprintf(plan->atomd_host, sizeof plan->atomd_host, "%.*s", (int)sizeof plan->atomd_host - 1, d->hostname);
    snprintf(plan->heartbeat_tcp, sizeof plan->heartbeat_tcp, "%s", d->heartbeat_tcp);
    snprintf(plan->munge_socket, sizeof plan->munge_socket, "%s", d->cfg.munge_socket);
}

int atomd_server_open(atomd *d, atom_err *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    d->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->signal_fd < 0)
        return atom_errf(err, "signalfd: %s", strerror(errno));
    d->listen_fd = bind_unix(d->cfg.socket_path, SOCK_STREAM, err);
    if (d->listen_fd < 0)
        return -1;
    d->hb_fd = bind_unix(d->cfg.hb_path, SOCK_DGRAM, err);
    if (d->hb_fd < 0)
        return -1;
    /* Heartbeats arrive in bursts from every rank: a larger buffer drops fewer. */
    int size = 1 << 20, on = 1;
    setsockopt(d->hb_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(d->hb_fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0)
        return atom_errf(err, "SO_PASSCRED on the heartbeat socket: %s", strerror(errno));
    if (d->cfg.tcp_listen[0] && bind_tcp(d, err))
        return -1;
    return 0;
}

void atomd_server_close(atomd *d)
{
    for (int i = 0; i < d->n_clients; i++) {
        close(d->clients[i].fd);
        free(d->clients[i].in);
        free(d->clients[i].out);
    }
    free(d->clients);
    d->clients = NULL;
    d->n_clients = 0;
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        unlink(d->cfg.socket_path);
    }
    if (d->hb_fd >= 0) {
        close(d->hb_fd);
        unlink(d->cfg.hb_path);
    }
    if (d->signal_fd >= 0)
        close(d->signal_fd);
    if (d->tcp_fd >= 0)
        close(d->tcp_fd);
    d->listen_fd = d->hb_fd = d->signal_fd = d->tcp_fd = -1;
}

static atomd_client *add_client(atomd *d, int fd)
{
    atomd_client *c = realloc(d->clients, (size_t)(d->n_clients + 1) * sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    d->clients = c;
    c = &d->clients[d->n_clients++];
    memset(c, 0, sizeof *c);
    c->fd = fd;
    return c;
}

static void accept_clients(atomd *d)
{
    for (;;) {
        int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            close(fd);
            continue;
        }
        atomd_client *c = add_client(d, fd);
        if (!c)
            continue;
        c->who.uid = cred.uid;
        c->who.pid = cred.pid;
        c->who.admin = atomd_is_admin(d, cred.uid);
    }
}

static void accept_tcp_clients(atomd *d)
{
    for (;;) {
        int fd = accept4(d->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int n_tcp = 0;
        for (int i = 0; i < d->n_clients; i++)
            n_tcp += d->clients[i].tcp;
        if (n_tcp >= MAX_TCP_CLIENTS) {
            atom_log(ATOM_LOG_WARN, "TCP port: %d connections open already; one refused", n_tcp);
            close(fd);
            continue;
        }
        int on = 1; /* answers are single lines: send each at once */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        /* A node that died holds its ranks' heartbeat connections open: keepalive probes close
         * them after about two minutes of silence instead of never. */
        int idle = 60, interval = 10, count = 6;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
        atomd_client *c = add_client(d, fd);
        if (c)
            c->tcp = true;
    }
}

static int out_append(atomd_client *c, const char *text, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *out = realloc(c->out, cap);
        if (!out)
            return -1;
        c->out = out;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, text, len);
    c->out_len += len;
    return 0;
}

static void answer(atomd_client *c, json_t *ans)
{
    char *text = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    if (!text || out_append(c, text, strlen(text)) || out_append(c, "\n", 1))
        c->dead = true;
    free(text);
}

static bool is_heartbeat(const char *payload, size_t len)
{
    json_t *root = json_loadb(payload, len, 0, NULL);
    const char *type = json_string_value(json_object_get(root, "type"));
    bool yes = type && strcmp(type, "heartbeat") == 0;
    json_decref(root);
    return yes;
}

/* One line from the TCP port (line[len] may be overwritten): the caller from its credential,
 * then the protocol table or the heartbeat. NULL: nothing to answer (an accepted heartbeat). */
static json_t *serve_tcp_line(atomd *d, atomd_client *c, char *line, size_t len)
{
    if (len > ATOMD_MAX_MESSAGE) {
        d->metrics.tcp_refused++;
        c->close_after = true;
        return atomd_protocol_error("request larger than %u bytes", ATOMD_MAX_MESSAGE);
    }
    if (len < 6 || memcmp(line, "MUNGE:", 6) != 0) {
        d->metrics.tcp_refused++;
        return atomd_protocol_error("no MUNGE credential: every line on atomd's TCP port is a MUNGE "
                                    "credential (\"MUNGE:...\") whose payload is the request");
    }
    line[len] = '\0';
    char *payload = NULL;
    size_t plen = 0;
    uid_t uid;
    gid_t gid;
    atom_err err = {{0}};
    /* A round trip to the local munged inside the loop (about 0.1 ms: bench/sched's
     * atom-bench-munge), cheaper than the COMMIT each submission waits for anyway. */
    if (atom_munge_decode(d->cfg.munge_socket, line, &payload, &plen, &uid, &gid, &err)) {
        atom_log(ATOM_LOG_DEBUG, "TCP request refused: MUNGE credential: %s", err.msg);
        d->metrics.tcp_refused++;
        return atomd_protocol_error("MUNGE credential refused: %s", err.msg);
    }
    if (!c->who_known || c->who.uid != uid) {
        c->who = (atomd_caller){.uid = uid, .pid = 0, .admin = atomd_is_admin(d, uid)};
        c->who_known = true;
    }
    json_t *ans = NULL;
    if (is_heartbeat(payload, plen)) {
        d->metrics.tcp_heartbeats++;
        atom_heartbeat hb;
        if (atom_heartbeat_from_json(payload, &hb, &err) == 0)
            atomd_job_heartbeat(d, &hb, uid);
        else
            ans = atomd_protocol_error("%s", err.msg);
    } else {
        d->metrics.tcp_requests++;
        ans = atomd_protocol_handle(d, &c->who, payload, plen);
    }
    free(payload);
    return ans;
}

/* Handles every complete line in the client's buffer. */
static void serve_lines(atomd *d, atomd_client *c)
{
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (c->in + start));
        if (len > 0) {
            json_t *ans = c->tcp ? serve_tcp_line(d, c, c->in + start, len)
                                 : atomd_protocol_handle(d, &c->who, c->in + start, len);
            if (ans)
                answer(c, ans);
        }
        start += len + 1;
        if (c->close_after)
            break;
    }
    if (c->close_after) {
        c->in_len = 0;
        return;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len == 0)
        c->partial_since = 0;
    else if (start > 0 || c->partial_since == 0)
        c->partial_since = atom_monotonic();
    if (c->in_len > ATOMD_MAX_MESSAGE) {
        d->metrics.tcp_refused += c->tcp;
        answer(c, atomd_protocol_error("request larger than %u bytes", ATOMD_MAX_MESSAGE));
        c->in_len = 0;
        c->close_after = true;
    }
}

static void read_client(atomd *d, atomd_client *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
            if (cap > ATOMD_MAX_MESSAGE + 131072)
                cap = ATOMD_MAX_MESSAGE + 131072;
            if (cap - c->in_len == 0) {
                serve_lines(d, c);
                if (c->close_after)
                    return;
                continue;
            }
            char *in = realloc(c->in, cap);
            if (!in) {
                c->dead = true;
                return;
            }
            c->in = in;
            c->in_cap = cap;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            serve_lines(d, c);
            if (c->close_after)
                return;
            continue;
        }
        if (n == 0) {
            c->close_after = true; /* answer what was asked, then close */
            return;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            c->dead = true;
        return;
    }
}

static void write_client(atomd_client *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_sent += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        c->dead = true;
        return;
    }
    c->out_len = c->out_sent = 0;
}

/* Heartbeats come from the workers atomd launched, which run as their job's owner: the sender's
 * uid (SCM_CREDENTIALS) goes with every heartbeat, and one from anyone else is dropped, so nobody
 * can keep another user's hung job alive through the socket, which is open to all. */
static void read_heartbeats(atomd *d)
{
    char buf[8192];
    union {
        struct cmsghdr align;
        char bytes[CMSG_SPACE(sizeof(struct ucred))];
    } control;
    for (;;) {
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes,
                             .msg_controllen = sizeof control.bytes};
        ssize_t n = recvmsg(d->hb_fd, &msg, 0);
        if (n < 0)
            return;
        buf[n] = 0;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        struct ucred cred = {.uid = (uid_t)-1};
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS)
            memcpy(&cred, CMSG_DATA(cm), sizeof cred);
        if (cred.uid == (uid_t)-1)
            continue;
        atom_heartbeat hb;
        atom_err err = {{0}};
        if (atom_heartbeat_from_json(buf, &hb, &err) == 0)
            atomd_job_heartbeat(d, &hb, cred.uid);
        else
            atom_log(ATOM_LOG_DEBUG, "heartbeat ignored: %s", err.msg);
    }
}

static void read_signals(atomd *d)
{
    struct signalfd_siginfo si;
    while (read(d->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD)
            atomd_jobs_reap(d);
        else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            atom_log(ATOM_LOG_INFO, "signal %u: stopping (running jobs keep running and are re-adopted)",
                     si.ssi_signo);
            d->stopping = true;
        }
    }
}

/* A TCP peer that starts a request and does not finish it within tcp_request_timeout (a client
 * gone mid-line, or one holding a connection slot on purpose) gets an error and is closed. */
static void expire_partial_requests(atomd *d, double now)
{
    for (int i = 0; i < d->n_clients; i++) {
        atomd_client *c = &d->clients[i];
        if (!c->tcp || c->close_after || c->partial_since == 0 || d->cfg.tcp_request_timeout <= 0 ||
            now - c->partial_since < d->cfg.tcp_request_timeout)
            continue;
        d->metrics.tcp_refused++;
        answer(c, atomd_protocol_error("incomplete request: no end of line within %.0f s "
                                       "(tcp_request_timeout)", d->cfg.tcp_request_timeout));
        c->in_len = 0;
        c->partial_since = 0;
        c->close_after = true;
    }
}

static bool has_live_jobs(const atomd *d)
{
    for (int i = 0; i < d->n_jobs; i++)
        if (!atomd_job_final(d->jobs[i]->state))
            return true;
    return false;
}

int atomd_server_run(atomd *d)
{
    double last_tick = atom_monotonic();
    d->last_busy = last_tick;
    d->last_usage_save = last_tick;
    d->changed = true;
    struct pollfd *pfd = NULL;
    int rc = 0;
    while (!d->stopping) {
        pfd = realloc(pfd, (size_t)(d->n_clients + POLL_FIXED + atomd_metrics_max_pollfds(d)) * sizeof *pfd);
        if (!pfd) {
            atom_log(ATOM_LOG_ERROR, "out of memory");
            return -1;
        }
        pfd[POLL_SIGNALS] = (struct pollfd){.fd = d->signal_fd, .events = POLLIN};
        pfd[POLL_LISTEN] = (struct pollfd){.fd = d->listen_fd, .events = POLLIN};
        pfd[POLL_HEARTBEATS] = (struct pollfd){.fd = d->hb_fd, .events = POLLIN};
        pfd[POLL_TCP] = (struct pollfd){.fd = d->tcp_fd, .events = POLLIN}; /* -1: ignored */
        for (int i = 0; i < d->n_clients; i++) {
            atomd_client *c = &d->clients[i];
            short ev = c->close_after ? 0 : POLLIN;
            if (c->out_len > c->out_sent)
                ev |= POLLOUT;
            pfd[POLL_FIXED + i] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        double now = atom_monotonic();
        int timeout_ms = (int)((last_tick + TICK_SECONDS - now) * 1000.0);
        if (timeout_ms < 0)
            timeout_ms = 0;
        int n_clients_polled = d->n_clients;
        struct pollfd *metrics_pfd = pfd + POLL_FIXED + n_clients_polled;
        int n_metrics = atomd_metrics_pollfds(d, metrics_pfd);
        if (poll(pfd, (nfds_t)(n_clients_polled + POLL_FIXED + n_metrics), timeout_ms) < 0 && errno != EINTR) {
            atom_log(ATOM_LOG_ERROR, "poll: %s", strerror(errno));
            rc = -1;
            break;
        }
        /* Heartbeats before SIGCHLD: a worker's last heartbeat is queued before its mpirun ends,
         * and it must count while the attempt still runs. */
        if (pfd[POLL_HEARTBEATS].revents)
            read_heartbeats(d);
        if (pfd[POLL_SIGNALS].revents)
            read_signals(d);
        for (int i = 0; i < n_clients_polled; i++)
            if (pfd[POLL_FIXED + i].revents & (POLLIN | POLLHUP | POLLERR))
                read_client(d, &d->clients[i]);
        if (pfd[POLL_LISTEN].revents)
            accept_clients(d);
        if (pfd[POLL_TCP].revents)
            accept_tcp_clients(d);
        atomd_metrics_serve(d, metrics_pfd, n_metrics);

        now = atom_monotonic();
        if (now - last_tick >= TICK_SECONDS) {
            atomd_sched_account(d, now - last_tick);
            last_tick = now;
            atomd_jobs_tick(d);
            atomd_cgroups_sweep(&d->cgroups);
            expire_partial_requests(d, now);
            atomd_health_tick(d);
            d->changed = true; /* time passing may open a backfill window */
            atomd_jobs_evict(d);
            if (now - d->last_usage_save >= USAGE_SAVE_SECONDS) {
                atomd_sched_save_usage(d);
                d->last_usage_save = now;
            }
        }
        if (d->changed) {
            d->changed = false;
            atomd_sched_pass(d);
            d->metrics.passes++;
        }
        atom_err err = {{0}};
        if (atomd_store_commit(&d->store, &err)) {
            /* Nothing of this iteration may be acknowledged: stop without answering. */
            atom_log(ATOM_LOG_ERROR, "the state store failed: %s; stopping", err.msg);
            rc = -1;
            break;
        }
        /* Answers go out only now, after the COMMIT. */
        int kept = 0;
        for (int i = 0; i < d->n_clients; i++) {
            atomd_client *c = &d->clients[i];
            if (!c->dead)
                write_client(c);
            bool done = c->dead || (c->close_after && c->out_len == c->out_sent);
            if (done) {
                close(c->fd);
                free(c->in);
                free(c->out);
                continue;
            }
            d->clients[kept++] = *c;
        }
        d->n_clients = kept;
        if (d->n_clients > 0 || has_live_jobs(d))
            d->last_busy = now;
        if (d->cfg.idle_exit > 0 && now - d->last_busy > d->cfg.idle_exit) {
            atom_log(ATOM_LOG_INFO, "idle for %.0f s: stopping", d->cfg.idle_exit);
            break;
        }
    }
    free(pfd);
    atomd_sched_save_usage(d);
    atom_err err = {{0}};
    if (atomd_store_commit(&d->store, &err))
        atom_log(ATOM_LOG_ERROR, "%s", err.msg);
    return rc;
}
