/* scheduler/server_clients.c: atomd's client connections, and the governor that bounds them.
 *
 * A client sends newline-delimited JSON requests and gets one answer line each, in order. The
 * transports differ only in how the caller is known. On the Unix socket it is the peer's
 * SO_PEERCRED, once per connection. On the TCP port every line is a MUNGE credential whose
 * payload is the request (common/munge_tcp.c), and the caller is the uid munged decoded from it,
 * line by line; the request then goes through the same protocol table. A line that is not a
 * valid, fresh credential (missing, garbage, expired, replayed) gets an error answer naming why
 * and the connection stays open; a line over the size bound is refused before it is decoded and
 * the connection is closed, as on the Unix socket, and so is a line left unfinished for
 * tcp_request_timeout; TCP keepalive closes connections of peers that vanished. A credential
 * whose payload is a heartbeat (worker ranks on other nodes) is taken as one, and answered only
 * when it is refused.
 *
 * atomd is shared by every user of the cluster, so no client may take it from the others (the
 * governor, as Redis has one; every limit is a setting of atomd.conf):
 *   - connections: at most max_clients in all, max_clients_per_user from one uid on the Unix
 *     socket, max_tcp_clients on the TCP port. One over a cap is accepted, gets one error line
 *     and is closed. When atomd is out of descriptors anyway (EMFILE), it gives up a reserve
 *     descriptor held for that, accepts, answers, closes and takes the reserve back, so the
 *     listening socket never stays readable with nobody taking its connections (the loop would
 *     spin);
 *   - time: at most client_requests_per_iteration lines of one client are served per loop
 *     iteration; the rest wait for the next one, after the other clients had their turn;
 *   - memory: a client whose unsent answers exceed client_output_soft is not read (nor served)
 *     until it reads them; one above that for client_output_soft_seconds, or whose unsent answers
 *     reach client_output_hard, is closed. On the TCP port, before a line carried a valid
 *     credential, a line may be at most tcp_preauth_line bytes, and all such peers together hold
 *     at most tcp_preauth_budget bytes: beyond it the one holding most is closed.
 * Every refusal and closing is counted in the metrics (atom_clients_rejected_total,
 * atom_clients_closed_total).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scheduler/atomd.h"
#include "scheduler/protocol.h"

#define ACCEPTS_PER_EVENT 64     /* then the other descriptors get their turn */
#define READ_CHUNK 4096          /* the smallest room a read is given */
#define KEEP_BUFFER 65536        /* larger buffers are freed once empty */
#define WARN_EVERY 10.0          /* seconds between two warnings of one kind of refusal */

struct atomd_client {
    atomd_client *prev, *next;
    int fd;
    bool tcp;          /* the TCP port: who is decoded from each line's credential */
    bool authed;       /* tcp: a line with a valid credential came (the pre-auth limits are off) */
    bool who_known;    /* tcp: who holds the last decoded caller (admin looked up once per uid) */
    double partial_since; /* tcp: monotonic time the incomplete line in `in` began (0: none) */
    atomd_caller who;
    /* in[start, len): bytes not served yet; in[start, scanned) holds no newline. */
    char *in;
    size_t in_start, in_scanned, in_len, in_cap;
    size_t preauth_held; /* bytes counted in the server's preauth_bytes */
    char *out;
    size_t out_len, out_cap, out_sent;
    double over_soft_since; /* monotonic: unsent answers above client_output_soft since (0: not) */
    long budget_iteration;  /* the iteration budget_used counts for */
    int budget_used;
    bool queued;       /* in the server's pending list */
    bool close_after;  /* after the pending answer: an oversized request, or the peer hung up */
    bool dead;         /* close now, unsent answers or not */
};

static size_t unsent(const atomd_client *c)
{
    return c->out_len - c->out_sent;
}

static bool lines_waiting(const atomd_client *c)
{
    return c->in_scanned < c->in_len;
}

/* Whether the client may be read and served now (the soft limit stops both). */
static bool may_serve(const atomd *d, const atomd_client *c)
{
    return !c->close_after && !c->dead && unsent(c) <= d->cfg.client_output_soft;
}

/* The longest request line the client may send: small from a TCP peer not known yet. */
static size_t line_limit(const atomd *d, const atomd_client *c)
{
    return c->tcp && !c->authed ? d->cfg.tcp_preauth_line : ATOMD_MAX_MESSAGE;
}

static void queue(atomd *d, atomd_client *c)
{
    atomd_server *s = &d->server;
    if (c->queued)
        return;
    if (s->n_pending == s->cap_pending) {
        int cap = s->cap_pending ? 2 * s->cap_pending : 64;
        atomd_client **p = realloc(s->pending, (size_t)cap * sizeof *p);
        if (!p) {
            c->dead = true; /* nowhere to remember it: closed at the next flush that sees it */
            return;
        }
        s->pending = p;
        s->cap_pending = cap;
    }
    s->pending[s->n_pending++] = c;
    c->queued = true;
}

/* Keeps the server's total of bytes held for unauthenticated TCP peers up to date. */
static void preauth_account(atomd *d, atomd_client *c)
{
    size_t held = c->tcp && !c->authed && !c->dead ? c->in_len - c->in_start : 0;
    d->server.preauth_bytes = d->server.preauth_bytes - c->preauth_held + held;
    c->preauth_held = held;
}

static void drop_input(atomd *d, atomd_client *c)
{
    free(c->in);
    c->in = NULL;
    c->in_start = c->in_scanned = c->in_len = c->in_cap = 0;
    c->partial_since = 0;
    preauth_account(d, c);
}

/* The events the client's descriptor waits for, from its state. */
static void update_events(atomd *d, atomd_client *c)
{
    unsigned want = (may_serve(d, c) ? ATOMD_READABLE : 0u) | (unsent(c) ? ATOMD_WRITABLE : 0u);
    atom_err err = {{0}};
    if (want != atomd_loop_mask(&d->loop, c->fd) && atomd_loop_mod(&d->loop, c->fd, want, &err)) {
        atom_log(ATOM_LOG_ERROR, "client: %s", err.msg);
        c->dead = true;
        queue(d, c);
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

static const char *client_name(const atomd_client *c, char *buf, size_t len)
{
    if (c->tcp && !c->who_known)
        snprintf(buf, len, "an unauthenticated TCP peer");
    else
        snprintf(buf, len, "a %s client of uid %u", c->tcp ? "TCP" : "local", (unsigned)c->who.uid);
    return buf;
}

static void answer(atomd *d, atomd_client *c, json_t *ans)
{
    /* A client that asks and asks without reading holds its answers in atomd: past the hard
     * limit it is closed (a single large answer, to a client that reads, always goes out). */
    if (unsent(c) > d->cfg.client_output_hard && !c->dead) {
        char who[64];
        atom_log(ATOM_LOG_WARN, "closing %s: %zu bytes of answers unread (client_output_hard = %zu)",
                 client_name(c, who, sizeof who), unsent(c), d->cfg.client_output_hard);
        d->metrics.clients_closed[ATOMD_CLOSE_OUTPUT_HARD]++;
        c->dead = true;
    }
    if (c->dead) {
        json_decref(ans);
        return;
    }
    char *text = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    if (!text || out_append(c, text, strlen(text)) || out_append(c, "\n", 1))
        c->dead = true;
    free(text);
}

/* An error answer, then the connection is closed: what it sent so far is dropped. */
static void refuse_and_close(atomd *d, atomd_client *c, json_t *ans)
{
    answer(d, c, ans);
    drop_input(d, c);
    c->close_after = true;
    queue(d, c);
}

static bool is_heartbeat(const char *payload, size_t len)
{
    json_t *root = json_loadb(payload, len, 0, NULL);
    const char *type = json_string_value(json_object_get(root, "type"));
    bool yes = type && strcmp(type, "heartbeat") == 0;
    json_decref(root);
    return yes;
}

/* One line from the TCP port (line[len] may be overwritten; len is within the line limit): the
 * caller from its credential, then the protocol table or the heartbeat. NULL: nothing to answer
 * (an accepted heartbeat). */
static json_t *serve_tcp_line(atomd *d, atomd_client *c, char *line, size_t len)
{
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
    c->authed = true;
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

/* A line (complete or not) over the client's limit: refused, and the connection closed. */
static void refuse_oversized(atomd *d, atomd_client *c)
{
    if (c->tcp && !c->authed) {
        d->metrics.tcp_refused++;
        d->metrics.clients_closed[ATOMD_CLOSE_PREAUTH_LINE]++;
        refuse_and_close(d, c, atomd_protocol_error("request larger than %zu bytes before a valid MUNGE "
                                                    "credential (tcp_preauth_line)", line_limit(d, c)));
        return;
    }
    d->metrics.tcp_refused += c->tcp;
    refuse_and_close(d, c, atomd_protocol_error("request larger than %u bytes", ATOMD_MAX_MESSAGE));
}

/* Serves the complete lines in the client's buffer, within its budget for this iteration. */
static void serve_lines(atomd *d, atomd_client *c)
{
    if (c->budget_iteration != d->server.iteration) {
        c->budget_iteration = d->server.iteration;
        c->budget_used = 0;
    }
    bool served = false;
    while (may_serve(d, c) && c->budget_used < d->cfg.client_requests_per_iteration && lines_waiting(c)) {
        char *nl = memchr(c->in + c->in_scanned, '\n', c->in_len - c->in_scanned);
        if (!nl) {
            c->in_scanned = c->in_len;
            break;
        }
        char *line = c->in + c->in_start;
        size_t len = (size_t)(nl - line);
        c->in_start += len + 1;
        c->in_scanned = c->in_start;
        served = true;
        if (len == 0)
            continue;
        if (len > line_limit(d, c)) {
            refuse_oversized(d, c);
            return;
        }
        c->budget_used++;
        json_t *ans = c->tcp ? serve_tcp_line(d, c, line, len) : atomd_protocol_handle(d, &c->who, line, len);
        if (ans)
            answer(d, c, ans);
    }
    if (c->close_after || c->dead)
        return;
    if (c->in_start == c->in_len) {
        c->in_start = c->in_scanned = c->in_len = 0;
        c->partial_since = 0;
        if (c->in_cap > KEEP_BUFFER)
            drop_input(d, c);
    } else if (!lines_waiting(c)) {
        /* What is left is the start of a line. */
        if (served || c->partial_since == 0)
            c->partial_since = atom_monotonic();
        if (c->in_len - c->in_start > line_limit(d, c)) {
            refuse_oversized(d, c);
            return;
        }
    }
    preauth_account(d, c);
}

/* Beyond tcp_preauth_budget, the unauthenticated peers holding most are closed. */
static void enforce_preauth_budget(atomd *d)
{
    atomd_server *s = &d->server;
    while (s->preauth_bytes > d->cfg.tcp_preauth_budget) {
        atomd_client *big = NULL;
        for (atomd_client *c = s->clients; c; c = c->next)
            if (c->preauth_held && (!big || c->preauth_held > big->preauth_held))
                big = c;
        if (!big)
            return;
        atom_log(ATOM_LOG_WARN, "TCP port: unauthenticated peers hold more than %zu bytes (tcp_preauth_budget): "
                 "closing the one holding %zu", d->cfg.tcp_preauth_budget, big->preauth_held);
        d->metrics.tcp_refused++;
        d->metrics.clients_closed[ATOMD_CLOSE_PREAUTH_BUDGET]++;
        refuse_and_close(d, big, atomd_protocol_error("atomd holds too many unfinished requests from peers "
                                                      "without a valid MUNGE credential; try again"));
    }
}

/* Makes room for the next read, within the client's line limit; false when there is none. */
static bool make_room(atomd_client *c, size_t max_cap)
{
    if (c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_len - c->in_start);
        c->in_len -= c->in_start;
        c->in_scanned -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_len >= max_cap)
        return false;
    if (c->in_cap - c->in_len < READ_CHUNK && c->in_cap < max_cap) {
        size_t cap = c->in_cap ? 2 * c->in_cap : READ_CHUNK;
        while (cap - c->in_len < READ_CHUNK)
            cap *= 2;
        if (cap > max_cap)
            cap = max_cap;
        char *in = realloc(c->in, cap);
        if (!in)
            return false;
        c->in = in;
        c->in_cap = cap;
    }
    return c->in_cap > c->in_len;
}

static void read_client(atomd *d, atomd_client *c)
{
    serve_lines(d, c);
    /* A peer not known yet may hold one line over its limit (to be refused), others a limit's
     * worth and the next reads. */
    size_t max_cap = line_limit(d, c) + (c->tcp && !c->authed ? 1 : 65536);
    while (may_serve(d, c) && !lines_waiting(c) && c->budget_used < d->cfg.client_requests_per_iteration) {
        if (!make_room(c, max_cap)) {
            c->dead = true; /* out of memory: within the limit, there is always room */
            break;
        }
        size_t room = (c->in_cap < max_cap ? c->in_cap : max_cap) - c->in_len;
        ssize_t n = read(c->fd, c->in + c->in_len, room);
        if (n > 0) {
            c->in_len += (size_t)n;
            serve_lines(d, c);
            if (c->preauth_held)
                enforce_preauth_budget(d);
            max_cap = line_limit(d, c) + (c->tcp && !c->authed ? 1 : 65536);
            continue;
        }
        if (n == 0)
            c->close_after = true; /* answer what was asked, then close */
        else if (errno == EINTR)
            continue;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            c->dead = true;
        break;
    }
    if (unsent(c) || c->close_after || c->dead || lines_waiting(c))
        queue(d, c);
    update_events(d, c);
}

static void on_client(atomd *d, int fd, unsigned ready, void *arg)
{
    (void)fd;
    atomd_client *c = arg;
    if (ready & ATOMD_WRITABLE)
        queue(d, c); /* answers go out in the flush, after the COMMIT */
    if (ready & ATOMD_READABLE)
        read_client(d, c);
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
    if (c->out_cap > KEEP_BUFFER) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

/* ---- connections and their caps ---------------------------------------------------------------- */

static atomd_uid_count *uid_count(atomd_server *s, uid_t uid)
{
    for (int i = 0; i < s->n_uids; i++)
        if (s->per_uid[i].uid == uid)
            return &s->per_uid[i];
    return NULL;
}

static int uid_add(atomd_server *s, uid_t uid)
{
    atomd_uid_count *u = uid_count(s, uid);
    if (!u) {
        atomd_uid_count *p = realloc(s->per_uid, (size_t)(s->n_uids + 1) * sizeof *p);
        if (!p)
            return -1;
        s->per_uid = p;
        u = &s->per_uid[s->n_uids++];
        *u = (atomd_uid_count){.uid = uid};
    }
    u->n++;
    return 0;
}

static void uid_remove(atomd_server *s, uid_t uid)
{
    atomd_uid_count *u = uid_count(s, uid);
    if (u && --u->n == 0)
        *u = s->per_uid[--s->n_uids];
}

static void set_listening(atomd *d, unsigned mask)
{
    atom_err err = {{0}};
    if ((d->listen_fd >= 0 && atomd_loop_mod(&d->loop, d->listen_fd, mask, &err)) ||
        (d->tcp_fd >= 0 && atomd_loop_mod(&d->loop, d->tcp_fd, mask, &err)))
        atom_log(ATOM_LOG_ERROR, "%s", err.msg);
}

static void take_reserve(atomd *d)
{
    atomd_server *s = &d->server;
    if (s->reserve_fd < 0)
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->reserve_fd >= 0 && s->accept_paused) {
        s->accept_paused = false;
        set_listening(d, ATOMD_READABLE);
        atom_log(ATOM_LOG_INFO, "descriptors are free again: accepting connections");
    }
}

static void free_client(atomd *d, atomd_client *c)
{
    atomd_server *s = &d->server;
    atomd_loop_del(&d->loop, c->fd);
    close(c->fd);
    c->dead = true;
    preauth_account(d, c);
    if (c->tcp)
        s->n_tcp--;
    else
        uid_remove(s, c->who.uid);
    s->n_clients--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->in);
    free(c->out);
    free(c);
    if (s->accept_paused)
        take_reserve(d);
}

/* One error line on a connection being refused, then it is closed. */
static void refuse_fd(atomd *d, int fd, atomd_reject_reason why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse_fd(atomd *d, int fd, atomd_reject_reason why, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *ans = atomd_protocol_error("%s", msg);
    char *text = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    if (text) {
        size_t len = strlen(text);
        text[len] = '\n'; /* the terminating NUL becomes the line's end */
        ssize_t n = send(fd, text, len + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n; /* a peer that cannot take one line misses it: it is closed all the same */
        free(text);
    }
    close(fd);
    d->metrics.clients_rejected[why]++;
    double now = atom_monotonic();
    if (now - d->server.last_refusal_log[why] >= WARN_EVERY) {
        d->server.last_refusal_log[why] = now;
        atom_log(ATOM_LOG_WARN, "connection refused: %s (%ld refused so far for this reason)", msg,
                 d->metrics.clients_rejected[why]);
    }
}

/* Out of descriptors: the reserve one is given up to take the connection and refuse it. Returns
 * whether to go on accepting. */
static bool refuse_without_descriptor(atomd *d, int listen_fd)
{
    atomd_server *s = &d->server;
    if (s->reserve_fd < 0) {
        /* Nothing to accept with: stop listening until a client closes, rather than spin. */
        s->accept_paused = true;
        set_listening(d, 0);
        atom_log(ATOM_LOG_WARN, "out of file descriptors: not accepting until a connection closes");
        return false;
    }
    close(s->reserve_fd);
    s->reserve_fd = -1;
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        refuse_fd(d, fd, ATOMD_REJECT_DESCRIPTORS, "atomd is out of file descriptors (%s); try again later",
                  strerror(EMFILE));
    take_reserve(d);
    if (s->reserve_fd < 0) {
        s->accept_paused = true;
        set_listening(d, 0);
    }
    return fd >= 0 && s->reserve_fd >= 0;
}

static void tcp_options(int fd)
{
    int on = 1; /* answers are single lines: send each at once */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    /* A node that died holds its ranks' heartbeat connections open: keepalive probes close
     * them after about two minutes of silence instead of never. */
    int idle = 60, interval = 10, count = 6;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

/* Takes a new connection through the caps; false when it was refused (and closed). */
static bool admit(atomd *d, int fd, bool tcp, const struct ucred *cred)
{
    atomd_server *s = &d->server;
    const atomd_config *cfg = &d->cfg;
    if (s->n_clients >= cfg->max_clients) {
        refuse_fd(d, fd, ATOMD_REJECT_MAX_CLIENTS, "atomd serves %d connections already (max_clients); "
                  "try again later", s->n_clients);
        return false;
    }
    if (tcp && s->n_tcp >= cfg->max_tcp_clients) {
        refuse_fd(d, fd, ATOMD_REJECT_MAX_TCP, "atomd's TCP port has %d connections open already "
                  "(max_tcp_clients); try again later", s->n_tcp);
        return false;
    }
    if (!tcp) {
        atomd_uid_count *u = uid_count(s, cred->uid);
        if (u && u->n >= cfg->max_clients_per_user) {
            refuse_fd(d, fd, ATOMD_REJECT_PER_USER, "uid %u has %d connections to atomd open already "
                      "(max_clients_per_user); close some and try again", (unsigned)cred->uid, u->n);
            return false;
        }
    }
    atomd_client *c = calloc(1, sizeof *c);
    atom_err err = {{0}};
    if (!c || (!tcp && uid_add(s, cred->uid))) {
        free(c);
        close(fd);
        return false;
    }
    c->fd = fd;
    c->tcp = tcp;
    if (!tcp)
        c->who = (atomd_caller){.uid = cred->uid, .pid = cred->pid, .admin = atomd_is_admin(d, cred->uid)};
    if (atomd_loop_add(&d->loop, fd, ATOMD_READABLE, on_client, c, &err)) {
        atom_log(ATOM_LOG_ERROR, "client: %s", err.msg);
        if (!tcp)
            uid_remove(s, cred->uid);
        free(c);
        close(fd);
        return false;
    }
    c->next = s->clients;
    if (s->clients)
        s->clients->prev = c;
    s->clients = c;
    s->n_clients++;
    s->n_tcp += tcp;
    return true;
}

void atomd_clients_accept(atomd *d, int listen_fd, unsigned ready, void *arg)
{
    (void)ready, (void)arg;
    bool tcp = listen_fd == d->tcp_fd;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                if (refuse_without_descriptor(d, listen_fd))
                    continue;
                return;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        struct ucred cred = {0};
        socklen_t len = sizeof cred;
        if (!tcp && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            close(fd);
            continue;
        }
        if (tcp)
            tcp_options(fd);
        admit(d, fd, tcp, &cred);
    }
}

/* ---- the loop's phases ------------------------------------------------------------------------- */

/* Settles the caps against the descriptor limit (raised to its hard limit first, as Redis does)
 * and takes the reserve descriptor. */
int atomd_clients_open(atomd *d, atom_err *err)
{
    atomd_server *s = &d->server;
    atomd_config *cfg = &d->cfg;
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->reserve_fd < 0)
        return atom_errf(err, "/dev/null (the reserve descriptor): %s", strerror(errno));
    struct rlimit rl;
    long limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            struct rlimit raised = {.rlim_cur = rl.rlim_max > (1u << 20) ? (1u << 20) : rl.rlim_max,
                                    .rlim_max = rl.rlim_max};
            if (raised.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &raised) == 0)
                rl.rlim_cur = raised.rlim_cur;
        }
        limit = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1L << 20) : (long)rl.rlim_cur;
    }
    int room = limit > ATOMD_RESERVED_FDS + 1 ? (int)(limit - ATOMD_RESERVED_FDS) : 1;
    if (cfg->max_clients == 0)
        cfg->max_clients = room;
    else if (cfg->max_clients > room)
        atom_log(ATOM_LOG_WARN, "max_clients = %d, but the descriptor limit (%ld) leaves room for %d: "
                 "connections beyond that are refused as they come", cfg->max_clients, limit, room);
    if (cfg->max_clients_per_user == 0)
        cfg->max_clients_per_user = cfg->max_clients / 4 > 256 ? 256 : cfg->max_clients / 4 > 0 ? cfg->max_clients / 4 : 1;
    if (cfg->max_tcp_clients > cfg->max_clients)
        cfg->max_tcp_clients = cfg->max_clients;
    atom_log(ATOM_LOG_INFO, "clients: at most %d connections, %d per user on the local socket, %d on TCP",
             cfg->max_clients, cfg->max_clients_per_user, cfg->max_tcp_clients);
    return 0;
}

bool atomd_clients_waiting(const atomd *d)
{
    return d->server.n_pending > 0;
}

void atomd_clients_serve_waiting(atomd *d)
{
    atomd_server *s = &d->server;
    /* Serving can queue nothing new here but answers of clients already in the list. */
    for (int i = 0; i < s->n_pending; i++) {
        atomd_client *c = s->pending[i];
        if (lines_waiting(c) && may_serve(d, c)) {
            serve_lines(d, c);
            if (c->preauth_held)
                enforce_preauth_budget(d);
        }
    }
}

void atomd_clients_flush(atomd *d)
{
    atomd_server *s = &d->server;
    double now = atom_monotonic();
    int kept = 0;
    for (int i = 0; i < s->n_pending; i++) {
        atomd_client *c = s->pending[i];
        c->queued = false;
        if (!c->dead)
            write_client(c);
        if (c->dead || (c->close_after && !unsent(c))) {
            free_client(d, c);
            continue;
        }
        if (unsent(c) <= d->cfg.client_output_soft)
            c->over_soft_since = 0;
        else if (c->over_soft_since == 0)
            c->over_soft_since = now;
        update_events(d, c);
        /* Requests left over from the budget (or from reading paused until now) go on at once. */
        if (lines_waiting(c) && may_serve(d, c) && !c->queued) {
            c->queued = true;
            s->pending[kept++] = c;
        }
    }
    s->n_pending = kept;
}

void atomd_clients_tick(atomd *d, double now)
{
    const atomd_config *cfg = &d->cfg;
    for (atomd_client *c = d->server.clients; c; c = c->next) {
        if (c->dead)
            continue;
        /* A TCP peer that starts a request and does not finish it within tcp_request_timeout (a
         * client gone mid-line, or one holding a connection slot on purpose) is refused. */
        if (c->tcp && !c->close_after && c->partial_since > 0 && cfg->tcp_request_timeout > 0 &&
            now - c->partial_since >= cfg->tcp_request_timeout) {
            d->metrics.tcp_refused++;
            refuse_and_close(d, c, atomd_protocol_error("incomplete request: no end of line within %.0f s "
                                                        "(tcp_request_timeout)", cfg->tcp_request_timeout));
        }
        if (c->over_soft_since > 0 && now - c->over_soft_since >= cfg->client_output_soft_seconds) {
            char who[64];
            atom_log(ATOM_LOG_WARN, "closing %s: more than %zu bytes of answers unread for %.0f s "
                     "(client_output_soft)", client_name(c, who, sizeof who), cfg->client_output_soft,
                     cfg->client_output_soft_seconds);
            d->metrics.clients_closed[ATOMD_CLOSE_OUTPUT_SOFT]++;
            c->dead = true;
            queue(d, c);
        }
    }
}

void atomd_clients_close(atomd *d)
{
    atomd_server *s = &d->server;
    while (s->clients)
        free_client(d, s->clients);
    free(s->pending);
    free(s->per_uid);
    s->pending = NULL;
    s->per_uid = NULL;
    s->n_pending = s->cap_pending = s->n_uids = 0;
    if (s->reserve_fd >= 0)
        close(s->reserve_fd);
    s->reserve_fd = -1;
}
