/* scheduler/protocol.h: atomd's messages, one table (private to atomd and its client).
 *
 * A request is one line of JSON: {"op": NAME, ...arguments}. The answer is one line of JSON:
 * {"ok": true, ...results} or {"ok": false, "error": SENTENCE}. Every request is checked in one
 * place, atomd_protocol_handle, against the table: the op exists, the required arguments are
 * there with the right JSON type, no unknown argument is given, and an admin-only op comes from
 * an administrator. Handlers see only checked requests.
 *
 * The ops (arguments in brackets are optional):
 *   ping                            version, caller's uid and admin flag, commits, jobs
 *   submit  spec                    spec: the normalised spec as JSON text -> job id
 *   status                          nodes up/drained/down, GPUs busy/free, live jobs, node list
 *   queue   [all]                   live jobs (all: every job)
 *   show    job                     the job, its spec, its attempts (state, nodes, exit, folder)
 *   cancel  job                     the owner's or an administrator's
 *   logs    job [rank attempt offset]  output from offset (whole lines): data, offset, ended;
 *                                   the owner's or an administrator's
 *   nodes                           every node: state, GPUs, free, failures, reason
 *   drain   node [reason]           administrators only
 *   resume  node                    administrators only
 */
#ifndef ATOM_SCHEDULER_PROTOCOL_H
#define ATOM_SCHEDULER_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct atomd;
typedef struct json_t json_t;

/* Who sent a request: SO_PEERCRED on the Unix socket, the MUNGE credential on the TCP port
 * (pid 0 there). */
typedef struct atomd_caller {
    uid_t uid;
    pid_t pid;
    bool admin;
} atomd_caller;

/* Answers one request line (len bytes, no newline). Never NULL: a bad request gets an error
 * answer. The caller owns the answer. */
json_t *atomd_protocol_handle(struct atomd *d, const atomd_caller *who, const char *line, size_t len);

/* An error answer. */
json_t *atomd_protocol_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
