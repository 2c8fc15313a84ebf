/* common/munge_tcp.c: atomd's TCP transport as both ends share it (common.h): "host:port"
 * addresses, TCP connections, MUNGE credentials (libmunge) and the heartbeat sender that workers
 * on other nodes use.
 *
 * Every message on atomd's TCP port is one line: a MUNGE credential (munge_encode's text, which
 * holds no newline) whose payload is the JSON message. munged signs it with the sender's uid and
 * gid, so atomd learns who sent it from munged, never from the client, and the payload cannot be
 * changed on the way; munged also refuses a credential that has expired or was seen before.
 */
#include <errno.h>
#include <fcntl.h>
#include <munge.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"

int atom_hostport_parse(const char *text, char *host, size_t host_len, int *port, atom_err *err)
{
    const char *colon;
    const char *h = text;
    size_t hlen;
    if (text[0] == '[') { /* [IPv6]:port */
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return atom_errf(err, "\"%s\" is not HOST:PORT ([ADDRESS]:PORT for IPv6)", text);
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon)
            return atom_errf(err, "\"%s\" is not HOST:PORT ([ADDRESS]:PORT for IPv6)", text);
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0)
        return atom_errf(err, "\"%s\" names no host (HOST:PORT; 0.0.0.0 for every address)", text);
    if (hlen >= host_len)
        return atom_errf(err, "\"%s\": the host name is longer than %zu characters", text, host_len - 1);
    for (size_t i = 0; i < hlen; i++)
        if (h[i] == '/' || h[i] == ' ' || h[i] == '\t')
            return atom_errf(err, "\"%s\": the host may not contain '%c'", text, h[i]);
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || !end || *end || errno || p < 1 || p > 65535)
        return atom_errf(err, "\"%s\": the port must be a number from 1 to 65535", text);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

/* The first address of host:port; getaddrinfo's own sentence when there is none. */
static int resolve(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len,
                   atom_err *err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0 || !res)
        return atom_errf(err, "cannot resolve %s: %s", host, rc ? gai_strerror(rc) : "no address");
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int atom_tcp_connect(const char *host, int port, double timeout, atom_err *err)
{
    struct sockaddr_storage addr;
    socklen_t len;
    if (resolve(host, port, &addr, &len, err))
        return -1;
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return atom_errf(err, "socket: %s", strerror(errno));
    /* Without a bound, a host that drops packets keeps connect() waiting for minutes. */
    int e = connect(fd, (struct sockaddr *)&addr, len) == 0 ? 0 : errno;
    if (e == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int pr;
        do
            pr = poll(&p, 1, (int)(timeout * 1000));
        while (pr < 0 && errno == EINTR);
        socklen_t l = sizeof e;
        if (pr == 0)
            e = ETIMEDOUT;
        else if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0)
            e = errno;
    }
    if (e != 0) {
        atom_errf(err, "cannot connect to %s:%d: %s", host, port, strerror(e));
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int on = 1; /* one request line, one answer line: do not wait to fill a segment */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return fd;
}

static munge_ctx_t munge_context(const char *munge_socket, atom_err *err)
{
    munge_ctx_t ctx = munge_ctx_create();
    if (!ctx) {
        atom_errf(err, "MUNGE: out of memory");
        return NULL;
    }
    if (munge_socket && munge_socket[0] &&
        munge_ctx_set(ctx, MUNGE_OPT_SOCKET, munge_socket) != EMUNGE_SUCCESS) {
        atom_errf(err, "MUNGE: socket %s: %s", munge_socket, munge_ctx_strerror(ctx));
        munge_ctx_destroy(ctx);
        return NULL;
    }
    return ctx;
}

int atom_munge_encode(const char *munge_socket, const char *payload, size_t len, char **cred,
                      atom_err *err)
{
    *cred = NULL;
    if (len > (size_t)INT32_MAX)
        return atom_errf(err, "MUNGE: message too large");
    munge_ctx_t ctx = munge_context(munge_socket, err);
    if (!ctx)
        return -1;
    munge_err_t e = munge_encode(cred, ctx, payload, (int)len);
    if (e != EMUNGE_SUCCESS) {
        const char *why = munge_ctx_strerror(ctx);
        atom_errf(err, "munged did not sign the message: %s", why ? why : munge_strerror(e));
        free(*cred);
        *cred = NULL;
    }
    munge_ctx_destroy(ctx);
    return e == EMUNGE_SUCCESS ? 0 : -1;
}

int atom_munge_decode(const char *munge_socket, const char *cred, char **payload, size_t *len,
                      uid_t *uid, gid_t *gid, atom_err *err)
{
    *payload = NULL;
    *len = 0;
    munge_ctx_t ctx = munge_context(munge_socket, err);
    if (!ctx)
        return -1;
    void *buf = NULL;
    int n = 0;
    munge_err_t e = munge_decode(cred, ctx, &buf, &n, uid, gid);
    if (e != EMUNGE_SUCCESS) {
        /* munge_strerror names the reason ("Replayed credential", "Expired credential", ...);
         * the context's message adds munged's detail when there is one. */
        const char *detail = munge_ctx_strerror(ctx);
        if (detail && strcmp(detail, munge_strerror(e)) != 0)
            atom_errf(err, "%s (%s)", munge_strerror(e), detail);
        else
            atom_errf(err, "%s", munge_strerror(e));
        free(buf); /* set for expired and replayed credentials too */
        munge_ctx_destroy(ctx);
        return -1;
    }
    munge_ctx_destroy(ctx);
    /* NUL-terminated for the JSON reader; libmunge allocates one byte more and terminates it,
     * but that is not part of its contract. */
    char *text = malloc((size_t)n + 1);
    if (!text) {
        free(buf);
        return atom_errf(err, "out of memory");
    }
    if (n > 0)
        memcpy(text, buf, (size_t)n);
    text[n] = '\0';
    free(buf);
    *payload = text;
    *len = (size_t)n;
    return 0;
}

int atom_munge_check(const char *munge_socket, atom_err *err)
{
    static const char probe[] = "atom: munged check";
    char *cred = NULL, *back = NULL;
    size_t len = 0;
    uid_t uid;
    gid_t gid;
    if (atom_munge_encode(munge_socket, probe, sizeof probe - 1, &cred, err))
        return -1;
    int rc = atom_munge_decode(munge_socket, cred, &back, &len, &uid, &gid, err);
    if (rc == 0 && (len != sizeof probe - 1 || memcmp(back, probe, len) != 0))
        rc = atom_errf(err, "munged returned another payload than it signed");
    free(cred);
    free(back);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Heartbeats over TCP: never block training. A sending thread does the slow parts (connecting,
 * the round trip to munged, which takes seconds when munged died and left its socket behind, and
 * the send); the training thread only hands it the newest heartbeat, replacing one not sent yet.
 * A heartbeat that cannot go (atomd unreachable, a send that would wait) is dropped, and the
 * connection made again with the next one. Closing sends the last heartbeat handed over unless
 * the one before failed. */

#define HB_CONNECT_TIMEOUT_MS 2000

struct atom_hb_tcp {
    char where[300];                /* host:port, for messages */
    char munge_socket[ATOM_PATH_MAX];
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int fd;                         /* -1: not connected (the thread's alone) */
    bool warned;                    /* a refusal or failure was logged once */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    char *pending;                  /* the newest heartbeat not yet taken by the thread */
    bool stop;
    bool failing;                   /* the last delivery failed: closing does not wait for one */
};

static void hb_tcp_reset(atom_hb_tcp *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static bool hb_tcp_connect(atom_hb_tcp *s)
{
    if (s->fd >= 0)
        return true;
    s->fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return false;
    if (connect(s->fd, (struct sockaddr *)&s->addr, s->addr_len) == 0)
        return true;
    if (errno != EINPROGRESS) {
        hb_tcp_reset(s);
        return false;
    }
    struct pollfd p = {.fd = s->fd, .events = POLLOUT};
    int soerr = 0;
    socklen_t l = sizeof soerr;
    if (poll(&p, 1, HB_CONNECT_TIMEOUT_MS) <= 0 ||
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &l) != 0 || soerr != 0) {
        hb_tcp_reset(s);
        return false;
    }
    return true;
}

/* atomd answers a heartbeat only to refuse it: say so once, and keep the socket drained. */
static void hb_tcp_read_refusals(atom_hb_tcp *s)
{
    char buf[1024];
    ssize_t n;
    while ((n = recv(s->fd, buf, sizeof buf - 1, MSG_DONTWAIT)) > 0) {
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (!s->warned)
            atom_log(ATOM_LOG_WARN, "atomd at %s refused a heartbeat: %s", s->where, buf);
        s->warned = true;
    }
    if (n == 0)
        hb_tcp_reset(s); /* atomd closed the connection */
}

/* Whether the heartbeat went out. */
static bool hb_tcp_deliver(atom_hb_tcp *s, const char *json)
{
    if (!hb_tcp_connect(s))
        return false;
    hb_tcp_read_refusals(s);
    if (s->fd < 0 && !hb_tcp_connect(s))
        return false;
    char *cred = NULL;
    atom_err err = {{0}};
    if (atom_munge_encode(s->munge_socket, json, strlen(json), &cred, &err)) {
        if (!s->warned)
            atom_log(ATOM_LOG_WARN, "heartbeat to %s not sent: %s", s->where, err.msg);
        s->warned = true;
        return false;
    }
    size_t len = strlen(cred);
    char *line = realloc(cred, len + 2);
    if (!line) {
        free(cred);
        return false;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    ssize_t n = send(s->fd, line, len + 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    free(line);
    if (n == (ssize_t)(len + 1))
        return true;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return true; /* atomd is slow: this one is dropped, the path works */
    /* atomd went away, or took half a line: start afresh so that every line it reads is whole. */
    hb_tcp_reset(s);
    return false;
}

static void *hb_tcp_thread(void *arg)
{
    atom_hb_tcp *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->pending && !s->stop)
            pthread_cond_wait(&s->wake, &s->lock);
        /* Stopping: the last heartbeat goes out, unless the last one failed (atomd or munged
         * unreachable), whose timeouts the exiting worker would wait through again. */
        if (!s->pending || (s->stop && s->failing))
            break;
        char *json = s->pending;
        s->pending = NULL;
        pthread_mutex_unlock(&s->lock);
        bool sent = hb_tcp_deliver(s, json);
        free(json);
        pthread_mutex_lock(&s->lock);
        s->failing = !sent;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

atom_hb_tcp *atom_hb_tcp_open(const char *hostport, const char *munge_socket)
{
    atom_err err = {{0}};
    char host[256];
    int port = 0;
    atom_hb_tcp *s = calloc(1, sizeof *s);
    if (!s) {
        atom_log(ATOM_LOG_WARN, "heartbeats over TCP to %s: out of memory (not sent)", hostport);
        return NULL;
    }
    s->fd = -1;
    if (atom_hostport_parse(hostport, host, sizeof host, &port, &err) ||
        resolve(host, port, &s->addr, &s->addr_len, &err)) {
        atom_log(ATOM_LOG_WARN, "heartbeats over TCP to %s: %s (not sent)", hostport, err.msg);
        free(s);
        return NULL;
    }
    snprintf(s->where, sizeof s->where, "%s", hostport);
    snprintf(s->munge_socket, sizeof s->munge_socket, "%s", munge_socket ? munge_socket : "");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    int rc = pthread_create(&s->thread, NULL, hb_tcp_thread, s);
    if (rc != 0) {
        atom_log(ATOM_LOG_WARN, "heartbeats over TCP to %s: no thread: %s (not sent)", hostport, strerror(rc));
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->wake);
        free(s);
        return NULL;
    }
    return s;
}

void atom_hb_tcp_send(atom_hb_tcp *s, const char *json)
{
    if (!s)
        return;
    char *copy = strdup(json);
    if (!copy)
        return;
    pthread_mutex_lock(&s->lock);
    free(s->pending); /* not sent yet: the newer one says more */
    s->pending = copy;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

void atom_hb_tcp_close(atom_hb_tcp *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    free(s->pending);
    hb_tcp_reset(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    free(s);
}
