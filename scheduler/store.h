/* scheduler/store.h: atomd's durable state in SQLite (private to atomd).
 *
 * WAL journal with synchronous=FULL: a transaction is on disk once COMMIT returns. atomd opens a
 * transaction lazily at the first write of a loop iteration (atomd_store_begin) and commits it
 * once at the end of the iteration, before any answer of that iteration is sent: so a submission
 * is acknowledged only after its COMMIT, and all the submissions that arrived together share
 * one sync. Tables: jobs, attempts, nodes, usage.
 */
#ifndef ATOM_SCHEDULER_STORE_H
#define ATOM_SCHEDULER_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "common/common.h"

struct atomd_job;
struct atomd;
typedef struct sqlite3 sqlite3;

typedef struct atomd_store {
    sqlite3 *db;
    bool in_tx;
    long commits;  /* transactions committed since open (for logs and benchmarks) */
} atomd_store;

int atomd_store_open(atomd_store *s, const char *path, atom_err *err);
void atomd_store_close(atomd_store *s);

/* Opens the iteration's transaction unless one is open. */
int atomd_store_begin(atomd_store *s, atom_err *err);
/* Commits the open transaction, if any. */
int atomd_store_commit(atomd_store *s, atom_err *err);

/* Inserts a new job (its id is assigned here) or updates an existing one; inv names the nodes
 * the job excludes. Opens a transaction when none is open. */
int atomd_store_save_job(atomd_store *s, struct atomd_job *job, const atom_inventory *inv,
                        atom_err *err);
/* Saves the job's current attempt (insert or replace). */
int atomd_store_save_attempt(atomd_store *s, const struct atomd_job *job, const atom_inventory *inv,
                             const char *state, int exit_code, atom_err *err);
int atomd_store_save_node(atomd_store *s, const char *name, const char *state, const char *reason,
                          int failures, atom_err *err);
int atomd_store_save_usage(atomd_store *s, const char *project, double gpu_seconds, double updated,
                           atom_err *err);

/* The attempts of a job, oldest first, as a JSON array (NULL on error); inv names their nodes. */
struct json_t *atomd_store_attempts(atomd_store *s, int64_t job, const atom_inventory *inv, atom_err *err);

/* Accounting (atomctl history, atomctl usage): the newest `limit` ended jobs, newest first, as a
 * JSON array; and GPU-hours per owner and project as a JSON array of {uid, project, jobs,
 * gpu_hours}, summed over every attempt in the store (an attempt still running counts up to now).
 * Undecayed: the decayed figure fair share orders by is the usage table. NULL on error. */
struct json_t *atomd_store_history(atomd_store *s, int limit, atom_err *err);
struct json_t *atomd_store_accounting(atomd_store *s, double now, atom_err *err);

/* Loads node states, usage and jobs into d: every pending or running job (with its last attempt)
 * and the newest cfg.keep_finished ended ones. */
int atomd_store_load(atomd_store *s, struct atomd *d, atom_err *err);
/* One job by id, for a job no longer kept in memory (the caller frees it); NULL when none. */
struct atomd_job *atomd_store_load_job(atomd_store *s, struct atomd *d, int64_t id);

#endif
