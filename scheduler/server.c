/* scheduler/server.c: atomd's event loop and its sockets.
 *
 * One epoll loop (loop.h) serves: the client socket (newline-delimited JSON requests, answers in
 * order), the heartbeat socket (one JSON heartbeat per datagram, as worker/train.c sends them),
 * the TCP port when configured, a signalfd (SIGCHLD for ended attempts; SIGTERM/SIGINT to stop),
 * the metrics endpoint, and a tick (time limits, hang checks, usage). Each iteration: handle what
 * is ready, run the scheduling pass if anything changed, COMMIT once, and only then write
 * answers. That is what makes an answer mean "durable", and what lets all the submissions of one
 * iteration share one sync.
 *
 * The clients themselves, and the governor that bounds what they may hold (caps on connections,
 * a read budget per iteration, output and pre-authentication limits), are server_clients.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#include "scheduler/accounts.h"
#include "scheduler/atomd.h"
#include "scheduler/protocol.h"
#include "scheduler/sched.h"

#define TICK_SECONDS 0.5
#define USAGE_SAVE_SECONDS 30.0

bool atomd_is_admin(const atomd *d, uid_t uid)
{
    return uid == 0 || (d->cfg.admin_group[0] && atomd_account_in_group(uid, d->cfg.admin_group));
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

static void on_heartbeats(atomd *d, int fd, unsigned ready, void *arg)
{
    (void)fd, (void)ready, (void)arg;
    read_heartbeats(d);
}

static void on_signals(atomd *d, int fd, unsigned ready, void *arg)
{
    (void)ready, (void)arg;
    /* Heartbeats before SIGCHLD: a worker's last heartbeat is queued before its mpirun ends,
     * and it must count while the attempt still runs, whatever order epoll reports them in. */
    read_heartbeats(d);
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD)
            atomd_jobs_reap(d);
        else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            atom_log(ATOM_LOG_INFO, "signal %u: stopping (running jobs keep running and are re-adopted)",
                     si.ssi_signo);
            d->stopping = true;
        }
    }
}

int atomd_server_open(atomd *d, atom_err *err)
{
    if (atomd_loop_open(&d->loop, err))
        return -1;
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
    if (atomd_clients_open(d, err))
        return -1;
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
    if (atomd_loop_add(&d->loop, d->signal_fd, ATOMD_READABLE, on_signals, NULL, err) ||
        atomd_loop_add(&d->loop, d->hb_fd, ATOMD_READABLE, on_heartbeats, NULL, err) ||
        atomd_loop_add(&d->loop, d->listen_fd, ATOMD_READABLE, atomd_clients_accept, NULL, err))
        return -1;
    if (d->tcp_fd >= 0 &&
        atomd_loop_add(&d->loop, d->tcp_fd, ATOMD_READABLE, atomd_clients_accept, NULL, err))
        return -1;
    return 0;
}

static void close_socket(atomd *d, int *fd, const char *path)
{
    if (*fd < 0)
        return;
    atomd_loop_del(&d->loop, *fd);
    close(*fd);
    if (path)
        unlink(path);
    *fd = -1;
}

void atomd_server_close(atomd *d)
{
    atomd_clients_close(d);
    close_socket(d, &d->listen_fd, d->cfg.socket_path);
    close_socket(d, &d->hb_fd, d->cfg.hb_path);
    close_socket(d, &d->signal_fd, NULL);
    close_socket(d, &d->tcp_fd, NULL);
    atomd_loop_close(&d->loop);
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
    int rc = 0;
    while (!d->stopping) {
        double now = atom_monotonic();
        /* Clients with requests left over from their read budget are served without waiting. */
        double timeout = atomd_clients_waiting(d) ? 0 : last_tick + TICK_SECONDS - now;
        atom_err err = {{0}};
        d->server.iteration++;
        if (atomd_loop_wait(&d->loop, d, timeout, &err) < 0) {
            atom_log(ATOM_LOG_ERROR, "%s", err.msg);
            rc = -1;
            break;
        }
        atomd_clients_serve_waiting(d);

        now = atom_monotonic();
        if (now - last_tick >= TICK_SECONDS) {
            atomd_sched_account(d, now - last_tick);
            last_tick = now;
            atomd_jobs_tick(d);
            atomd_clients_tick(d, now);
            atomd_metrics_expire(d);
            atomd_cgroups_sweep(&d->cgroups);
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
        if (atomd_store_commit(&d->store, &err)) {
            /* Nothing of this iteration may be acknowledged: stop without answering. */
            atom_log(ATOM_LOG_ERROR, "the state store failed: %s; stopping", err.msg);
            rc = -1;
            break;
        }
        /* Answers go out only now, after the COMMIT. */
        atomd_clients_flush(d);
        if (d->server.n_clients > 0 || has_live_jobs(d))
            d->last_busy = now;
        if (d->cfg.idle_exit > 0 && now - d->last_busy > d->cfg.idle_exit) {
            atom_log(ATOM_LOG_INFO, "idle for %.0f s: stopping", d->cfg.idle_exit);
            break;
        }
    }
    atomd_sched_save_usage(d);
    atom_err err = {{0}};
    if (atomd_store_commit(&d->store, &err))
        atom_log(ATOM_LOG_ERROR, "%s", err.msg);
    return rc;
}
