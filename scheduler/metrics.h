/* scheduler/metrics.h: atomd's metrics for ops, in the Prometheus text format over HTTP.
 *
 * Off unless `metrics_port` is set; it binds `metrics_address` (127.0.0.1 by default: the
 * figures name jobs and projects, so exposing them further is a deliberate choice). The
 * connections are served from atomd's one event loop (loop.h), with no thread: the listening
 * socket and each connection are registered there. A connection sends one request (GET /metrics)
 * and gets one answer, then is closed; requests larger than a few kB, and connections idle for
 * more than a few seconds, are dropped so that a stuck scraper cannot hold atomd.
 *
 * Metrics (all gauges unless _total):
 *   atom_gpus{state=busy|free|offline}, atom_nodes{state=up|drained|down},
 *   atom_node_unavailable{node,state,reason} (1 per drained or down node),
 *   atom_jobs{state=pending|running|done|failed|cancelled|timeout}   (jobs atomd keeps in memory)
 *   atom_job_step, atom_job_tokens_per_second, atom_job_restarts, atom_job_steps_since_checkpoint,
 *   atom_job_checkpoint_age_seconds, atom_job_checkpoints_skipped (the current attempt's restore
 *   fell back past that many corrupt checkpoints) {job,name,project}  (running jobs)
 *   atom_project_usage_gpu_seconds{project}                          (decayed: what fair share sees)
 *   atom_sched_pass_seconds (the last pass), atom_sched_passes_total, atom_store_commits_total
 *   atom_tcp_messages_total{kind=request|heartbeat|refused}          (the TCP port: refused =
 *                                                                     no, a bad or a stale credential)
 *   atom_clients{transport=unix|tcp}                                 (connections open now)
 *   atom_clients_rejected_total{reason=max_clients|max_clients_per_user|max_tcp_clients|
 *                               descriptors}                         (refused at accept: a cap, or
 *                                                                     no descriptor left)
 *   atom_clients_closed_total{reason=output_hard|output_soft|preauth_line|preauth_budget}
 *                                                                    (closed by the governor)
 */
#ifndef ATOM_SCHEDULER_METRICS_H
#define ATOM_SCHEDULER_METRICS_H

#include <stddef.h>

#include "common/common.h"

struct atomd;

typedef struct atomd_metrics_conn {
    int fd;
    char in[4096];
    size_t in_len;
    char *out;
    size_t out_len, out_sent;
    double opened;  /* monotonic */
} atomd_metrics_conn;

/* Why the governor (server.c) refused a connection at accept, or closed one. */
typedef enum {
    ATOMD_REJECT_MAX_CLIENTS,
    ATOMD_REJECT_PER_USER,
    ATOMD_REJECT_MAX_TCP,
    ATOMD_REJECT_DESCRIPTORS,
    ATOMD_REJECT_N
} atomd_reject_reason;
typedef enum {
    ATOMD_CLOSE_OUTPUT_HARD,
    ATOMD_CLOSE_OUTPUT_SOFT,
    ATOMD_CLOSE_PREAUTH_LINE,
    ATOMD_CLOSE_PREAUTH_BUDGET,
    ATOMD_CLOSE_N
} atomd_close_reason;

typedef struct atomd_metrics {
    int listen_fd;  /* -1: off */
    atomd_metrics_conn **conns;
    int n_conns;
    long passes;    /* scheduling passes so far */
    long tcp_requests, tcp_heartbeats, tcp_refused; /* lines on the TCP port (server.c) */
    long clients_rejected[ATOMD_REJECT_N];          /* the governor's (server.c) */
    long clients_closed[ATOMD_CLOSE_N];
} atomd_metrics;

/* Binds cfg.metrics_address:cfg.metrics_port when the port is set and registers it in atomd's
 * event loop (opened already); off otherwise. */
int atomd_metrics_open(struct atomd *d, atom_err *err);
void atomd_metrics_close(struct atomd *d);
/* Closes connections older than their time limit (the server calls it on its tick). */
void atomd_metrics_expire(struct atomd *d);
/* The exposition text (malloc'd; NULL when out of memory). */
char *atomd_metrics_text(struct atomd *d);

#endif
