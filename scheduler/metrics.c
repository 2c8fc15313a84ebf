/* scheduler/metrics.c: the Prometheus endpoint of atomd (see metrics.h). */
#include "scheduler/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scheduler/atomd.h"

#define MAX_CONNS 16
#define CONN_TIMEOUT 5.0  /* seconds a scraper may take to send its request and read the answer */

static void accept_conns(atomd *d, int fd, unsigned ready, void *arg);

int atomd_metrics_open(atomd *d, atom_err *err)
{
    atomd_metrics *m = &d->metrics;
    m->listen_fd = -1;
    if (d->cfg.metrics_port <= 0)
        return 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->cfg.metrics_port)};
    if (inet_pton(AF_INET, d->cfg.metrics_address, &addr.sin_addr) != 1)
        return atom_errf(err, "metrics_address: \"%s\" is not an IPv4 address", d->cfg.metrics_address);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, MAX_CONNS) != 0) {
        atom_errf(err, "metrics on %s:%d: %s", d->cfg.metrics_address, d->cfg.metrics_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (atomd_loop_add(&d->loop, fd, ATOMD_READABLE, accept_conns, NULL, err)) {
        close(fd);
        return -1;
    }
    m->listen_fd = fd;
    atom_log(ATOM_LOG_INFO, "metrics on http://%s:%d/metrics", d->cfg.metrics_address, d->cfg.metrics_port);
    return 0;
}

static void conn_close(atomd_metrics_conn *c)
{
    close(c->fd);
    free(c->out);
    c->fd = -1;
    c->out = NULL;
}

void atomd_metrics_close(atomd *d)
{
    atomd_metrics *m = &d->metrics;
    for (int i = 0; i < m->n_conns; i++) {
        atomd_loop_del(&d->loop, m->conns[i]->fd);
        conn_close(m->conns[i]);
        free(m->conns[i]);
    }
    free(m->conns);
    m->conns = NULL;
    m->n_conns = 0;
    if (m->listen_fd >= 0) {
        atomd_loop_del(&d->loop, m->listen_fd);
        close(m->listen_fd);
    }
    m->listen_fd = -1;
}

/* ---- the exposition ---------------------------------------------------------------------------- */

/* A label value with \, " and newlines escaped, as the text format asks. */
static void put_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f);
        if (*v == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*v, f);
    }
}

static void job_metric(FILE *f, const atomd_job *job, const char *name, double value)
{
    fprintf(f, "%s{job=\"%s\",name=\"", name, job->id_text);
    put_label(f, job->spec.name);
    fputs("\",project=\"", f);
    put_label(f, job->spec.project);
    fprintf(f, "\"} %.17g\n", value);
}

static void help(FILE *f, const char *name, const char *type, const char *text)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

char *atomd_metrics_text(atomd *d)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    long busy = 0, free_gpus = 0, offline = 0;
    int nodes[3] = {0};
    for (int n = 0; n < d->inv.n_nodes; n++) {
        int gpus = d->inv.nodes[n].gpus;
        nodes[d->nodes[n].state]++;
        if (d->nodes[n].state != ATOMD_NODE_UP) {
            offline += gpus;
            continue;
        }
        free_gpus += d->planner.free_gpus[n];
        busy += gpus - d->planner.free_gpus[n];
    }
    help(f, "atom_gpus", "gauge", "GPUs by state (offline: on drained or down nodes)");
    fprintf(f, "atom_gpus{state=\"busy\"} %ld\natom_gpus{state=\"free\"} %ld\natom_gpus{state=\"offline\"} %ld\n",
            busy, free_gpus, offline);
    help(f, "atom_nodes", "gauge", "Nodes by state");
    for (int s = 0; s < 3; s++)
        fprintf(f, "atom_nodes{state=\"%s\"} %d\n", atomd_node_state_name((atomd_node_state)s), nodes[s]);
    /* Which nodes are out of service and why (drained by whom or what, down: not reachable), so a
     * dashboard can list them as `atomctl nodes` does. */
    help(f, "atom_node_unavailable", "gauge", "1 for each node that is drained or down, with its reason");
    for (int n = 0; n < d->inv.n_nodes; n++) {
        if (d->nodes[n].state == ATOMD_NODE_UP)
            continue;
        fputs("atom_node_unavailable{node=\"", f);
        put_label(f, d->inv.nodes[n].name);
        fprintf(f, "\",state=\"%s\",reason=\"", atomd_node_state_name(d->nodes[n].state));
        put_label(f, d->nodes[n].reason);
        fputs("\"} 1\n", f);
    }

    int jobs[ATOMD_JOB_TIMEOUT + 1] = {0};
    for (int i = 0; i < d->n_jobs; i++)
        jobs[d->jobs[i]->state]++;
    help(f, "atom_jobs", "gauge", "Jobs atomd keeps in memory, by state");
    for (int s = 0; s <= ATOMD_JOB_TIMEOUT; s++)
        fprintf(f, "atom_jobs{state=\"%s\"} %d\n", atomd_job_state_name((atomd_job_state)s), jobs[s]);

    static const char *const per_job[][2] = {
        {"atom_job_step", "Last step rank 0 reported"},
        {"atom_job_tokens_per_second", "Training throughput rank 0 last reported"},
        {"atom_job_restarts", "Attempts started after the first"},
        {"atom_job_steps_since_checkpoint", "Steps done since the last committed checkpoint (the step when none)"},
        {"atom_job_checkpoint_age_seconds",
         "Seconds since atomd heard of the last committed checkpoint (since the attempt started when none)"},
        {"atom_job_checkpoints_skipped",
         "Newer checkpoints the attempt's restore skipped as unloadable (atomctl show says why)"},
    };
    double now = atomd_now(d);
    for (int k = 0; k < 6; k++) {
        help(f, per_job[k][0], "gauge", per_job[k][1]);
        for (int i = 0; i < d->n_jobs; i++) {
            const atomd_job *job = d->jobs[i];
            if (job->state != ATOMD_JOB_RUNNING)
                continue;
            const atomd_progress *p = &job->progress;
            if (k != 2 && k != 4 && k != 5 && !p->has)
                continue;
            double since = p->last_checkpoint >= 0 ? p->checkpoint_seen : job->cur.start_time;
            if (k == 4 && since <= 0)
                continue; /* a checkpoint from before atomd restarted: its time is not known */
            double v = k == 0   ? (double)p->step
                       : k == 1 ? p->tokens_per_s
                       : k == 2 ? (double)(job->attempts > 1 ? job->attempts - 1 : 0)
                       : k == 3 ? (double)(p->step - (p->last_checkpoint >= 0 ? p->last_checkpoint : 0))
                       : k == 4 ? now - since
                       : p->ckpt_skipped_attempt == job->cur.n ? (double)p->ckpt_skipped
                                                               : 0.0;
            job_metric(f, job, per_job[k][0], v);
        }
    }
    help(f, "atom_project_usage_gpu_seconds", "gauge", "Decayed GPU-seconds per project (what fair share orders by)");
    for (int i = 0; i < d->n_usage; i++) {
        fputs("atom_project_usage_gpu_seconds{project=\"", f);
        put_label(f, d->usage[i].project);
        fprintf(f, "\"} %.17g\n", atomd_usage_now(d, d->usage[i].project, now));
    }
    help(f, "atom_sched_pass_seconds", "gauge", "Wall time of the last scheduling pass");
    fprintf(f, "atom_sched_pass_seconds %.9f\n", d->last_pass_seconds);
    help(f, "atom_sched_passes_total", "counter", "Scheduling passes since atomd started");
    fprintf(f, "atom_sched_passes_total %ld\n", d->metrics.passes);
    help(f, "atom_store_commits_total", "counter", "State store transactions committed since atomd started");
    fprintf(f, "atom_store_commits_total %ld\n", d->store.commits);
    help(f, "atom_tcp_messages_total", "counter", "Lines on the TCP port since atomd started: requests, "
         "heartbeats, and lines refused for their MUNGE credential (none, bad, expired, replayed)");
    fprintf(f, "atom_tcp_messages_total{kind=\"request\"} %ld\n", d->metrics.tcp_requests);
    fprintf(f, "atom_tcp_messages_total{kind=\"heartbeat\"} %ld\n", d->metrics.tcp_heartbeats);
    fprintf(f, "atom_tcp_messages_total{kind=\"refused\"} %ld\n", d->metrics.tcp_refused);
    help(f, "atom_clients", "gauge", "Client connections open, by transport");
    fprintf(f, "atom_clients{transport=\"unix\"} %d\natom_clients{transport=\"tcp\"} %d\n",
            d->server.n_clients - d->server.n_tcp, d->server.n_tcp);
    static const char *const rejected[ATOMD_REJECT_N] = {"max_clients", "max_clients_per_user",
                                                         "max_tcp_clients", "descriptors"};
    help(f, "atom_clients_rejected_total", "counter", "Connections refused at accept with an error "
         "line: over a cap, or atomd out of descriptors");
    for (int i = 0; i < ATOMD_REJECT_N; i++)
        fprintf(f, "atom_clients_rejected_total{reason=\"%s\"} %ld\n", rejected[i],
                d->metrics.clients_rejected[i]);
    static const char *const closed[ATOMD_CLOSE_N] = {"output_hard", "output_soft", "preauth_line",
                                                      "preauth_budget"};
    help(f, "atom_clients_closed_total", "counter", "Connections closed by atomd's governor: answers "
         "left unread (hard, or soft for a while), a TCP line too long or too much held before a "
         "valid credential");
    for (int i = 0; i < ATOMD_CLOSE_N; i++)
        fprintf(f, "atom_clients_closed_total{reason=\"%s\"} %ld\n", closed[i],
                d->metrics.clients_closed[i]);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* ---- HTTP ---------------------------------------------------------------------------------------- */

static void respond(atomd *d, atomd_metrics_conn *c)
{
    bool metrics = strncmp(c->in, "GET /metrics ", 13) == 0 || strncmp(c->in, "GET / ", 6) == 0;
    char *body = metrics ? atomd_metrics_text(d) : NULL;
    const char *status = metrics ? (body ? "200 OK" : "500 Internal Server Error") : "404 Not Found";
    const char *text = body ? body : metrics ? "out of memory\n" : "not found: try GET /metrics\n";
    size_t body_len = strlen(text);
    char head[256];
    int head_len = snprintf(head, sizeof head,
                            "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                            status, body_len);
    c->out = malloc((size_t)head_len + body_len);
    if (c->out) {
        memcpy(c->out, head, (size_t)head_len);
        memcpy(c->out + head_len, text, body_len);
        c->out_len = (size_t)head_len + body_len;
    }
    free(body);
}

/* Reads or writes one connection; returns false once it is to be closed. */
static bool conn_step(atomd *d, atomd_metrics_conn *c, unsigned ready)
{
    if (!c->out && (ready & ATOMD_READABLE)) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len);
        if (n <= 0)
            return n < 0 && (errno == EAGAIN || errno == EINTR);
        c->in_len += (size_t)n;
        c->in[c->in_len] = 0;
        if (!strstr(c->in, "\r\n\r\n") && !strstr(c->in, "\n\n"))
            return c->in_len < sizeof c->in - 1; /* an oversized request is dropped */
        respond(d, c);
        if (!c->out)
            return false;
        atom_err err = {{0}};
        if (atomd_loop_mod(&d->loop, c->fd, ATOMD_WRITABLE, &err))
            return false;
    }
    if (c->out) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        c->out_sent += (size_t)n;
        return c->out_sent < c->out_len;
    }
    return true;
}

/* Drops connection i (the last one takes its place); listening resumes below the cap. */
static void conn_drop(atomd *d, int i)
{
    atomd_metrics *m = &d->metrics;
    atomd_loop_del(&d->loop, m->conns[i]->fd);
    conn_close(m->conns[i]);
    free(m->conns[i]);
    m->conns[i] = m->conns[--m->n_conns];
    atom_err err = {{0}};
    if (m->listen_fd >= 0 && atomd_loop_mask(&d->loop, m->listen_fd) == 0 &&
        atomd_loop_mod(&d->loop, m->listen_fd, ATOMD_READABLE, &err))
        atom_log(ATOM_LOG_ERROR, "metrics: %s", err.msg);
}

static void conn_event(atomd *d, int fd, unsigned ready, void *arg)
{
    (void)fd;
    atomd_metrics_conn *c = arg;
    if (conn_step(d, c, ready))
        return;
    for (int i = 0; i < d->metrics.n_conns; i++)
        if (d->metrics.conns[i] == c) {
            conn_drop(d, i);
            return;
        }
}

void atomd_metrics_expire(atomd *d)
{
    atomd_metrics *m = &d->metrics;
    double now = atom_monotonic();
    for (int i = m->n_conns - 1; i >= 0; i--)
        if (now - m->conns[i]->opened >= CONN_TIMEOUT)
            conn_drop(d, i);
    /* Listening stopped at EMFILE (below): tried again once a tick, rather than spinning. */
    atom_err err = {{0}};
    if (m->listen_fd >= 0 && m->n_conns < MAX_CONNS &&
        atomd_loop_mask(&d->loop, m->listen_fd) == 0 &&
        atomd_loop_mod(&d->loop, m->listen_fd, ATOMD_READABLE, &err))
        atom_log(ATOM_LOG_ERROR, "metrics: %s", err.msg);
}

static void accept_conns(atomd *d, int fd, unsigned ready, void *arg)
{
    (void)ready, (void)arg;
    atomd_metrics *m = &d->metrics;
    atom_err err = {{0}};
    while (m->n_conns < MAX_CONNS) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0 && (errno == EMFILE || errno == ENFILE))
            break; /* out of descriptors: the socket would stay readable; stop until the tick */
        if (cfd < 0)
            return;
        atomd_metrics_conn *c = calloc(1, sizeof *c);
        size_t size = (size_t)(m->n_conns + 1) * sizeof *m->conns;
        atomd_metrics_conn **conns = c ? realloc(m->conns, size) : NULL;
        if (!conns || atomd_loop_add(&d->loop, cfd, ATOMD_READABLE, conn_event, c, &err)) {
            free(c);
            close(cfd);
            return;
        }
        m->conns = conns;
        c->fd = cfd;
        c->opened = atom_monotonic();
        m->conns[m->n_conns++] = c;
    }
    /* At the connection cap, stop accepting until one closes (the backlog keeps the rest). */
    if (atomd_loop_mod(&d->loop, fd, 0, &err))
        atom_log(ATOM_LOG_ERROR, "metrics: %s", err.msg);
}
