/* scheduler/store.c: atomd's SQLite store (see store.h).
 *
 * Rows hold what a restarted atomd needs and what `atomctl show` prints; the spec is kept as the
 * normalised JSON that was validated at submission, so a reload never re-reads a YAML file.
 */
#include "scheduler/store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scheduler/atomd.h"
#include "scheduler/jobs.h"

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, owner INTEGER NOT NULL, name TEXT NOT NULL,"
    "  project TEXT NOT NULL, priority INTEGER NOT NULL, gpus INTEGER NOT NULL, spec TEXT NOT NULL,"
    "  state TEXT NOT NULL, submit_time REAL NOT NULL, start_time REAL, end_time REAL,"
    "  attempts INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT -1, reason TEXT NOT NULL DEFAULT '',"
    "  exclude TEXT NOT NULL DEFAULT '[]', progress TEXT NOT NULL DEFAULT '{}',"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS attempts ("
    "  job INTEGER NOT NULL, n INTEGER NOT NULL, state TEXT NOT NULL, pid INTEGER, pid_start INTEGER,"
    "  start_time REAL, end_time REAL, exit_code INTEGER, run_dir TEXT, placement TEXT,"
    "  reason TEXT NOT NULL DEFAULT '', app_path TEXT, slurm_job TEXT, out_dir TEXT,"
    "  PRIMARY KEY (job, n));"
    "CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '', failures INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS usage (project TEXT PRIMARY KEY, gpu_seconds REAL NOT NULL,"
    "  updated REAL NOT NULL);";

static int db_fail(atomd_store *s, atom_err *err, const char *what)
{
    return atom_errf(err, "%s: %s", what, s->db ? sqlite3_errmsg(s->db) : "no database");
}

/* Columns added since the first schema: added to a database made before them (the error of one
 * that is there already is expected). */
static const char *const added_columns[] = {
    "ALTER TABLE attempts ADD COLUMN slurm_job TEXT",
    "ALTER TABLE attempts ADD COLUMN out_dir TEXT",
};

/* Users' specs are in the database: it is atomd's alone (mode 0600) from its first byte, not
 * chmodded after SQLite made it with the umask's mode; SQLite gives its WAL and shared-memory
 * files the database's mode. An existing file must be a regular file of atomd's user. */
static int create_private(const char *path, atom_err *err)
{
    mode_t old = umask(077);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
    umask(old);
    if (fd < 0)
        return atom_errf(err, "cannot open the state database %s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid())
        rc = atom_errf(err, "the state database %s is not a regular file of atomd's user (uid %u)", path,
                       (unsigned)geteuid());
    else if ((st.st_mode & 077) && fchmod(fd, 0600) != 0)
        rc = atom_errf(err, "cannot make the state database %s private (mode 0600): %s", path, strerror(errno));
    close(fd);
    return rc;
}

int atomd_store_open(atomd_store *s, const char *path, atom_err *err)
{
    memset(s, 0, sizeof *s);
    if (strcmp(path, ":memory:") != 0 && create_private(path, err))
        return -1;
    mode_t old_mask = umask(077); /* the WAL and shared-memory files too, whatever SQLite does */
    int open_rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                  NULL);
    if (open_rc != SQLITE_OK) {
        umask(old_mask);
        atom_errf(err, "cannot open the state database %s: %s", path, sqlite3_errmsg(s->db));
        atomd_store_close(s);
        return -1;
    }
    /* A second atomd on the same state would wait rather than fail at once. */
    sqlite3_busy_timeout(s->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        umask(old_mask);
        atom_errf(err, "cannot prepare the state database %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        atomd_store_close(s);
        return -1;
    }
    umask(old_mask);
    for (size_t i = 0; i < sizeof added_columns / sizeof *added_columns; i++)
        sqlite3_exec(s->db, added_columns[i], NULL, NULL, NULL);
    return 0;
}

void atomd_store_close(atomd_store *s)
{
    if (s->db)
        sqlite3_close(s->db);
    s->db = NULL;
}

int atomd_store_begin(atomd_store *s, atom_err *err)
{
    if (s->in_tx)
        return 0;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(s, err, "BEGIN");
    s->in_tx = true;
    return 0;
}

int atomd_store_commit(atomd_store *s, atom_err *err)
{
    if (!s->in_tx)
        return 0;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(s, err, "COMMIT");
    s->in_tx = false;
    s->commits++;
    return 0;
}

static char *exclude_json(const atomd_job *job, const atom_inventory *inv)
{
    json_t *a = json_array();
    for (int i = 0; job->exclude && i < job->n_exclude_nodes && i < inv->n_nodes; i++)
        if (job->exclude[i])
            json_array_append_new(a, json_string(inv->nodes[i].name));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

static char *progress_json(const atomd_progress *p)
{
    json_t *o = p->has ? json_pack("{s:I,s:f,s:f,s:I}", "step", (json_int_t)p->step, "loss", p->loss,
                                   "tokens_per_s", p->tokens_per_s, "last_checkpoint",
                                   (json_int_t)p->last_checkpoint)
                       : json_object();
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

int atomd_store_save_job(atomd_store *s, atomd_job *job, const atom_inventory *inv, atom_err *err)
{
    if (atomd_store_begin(s, err))
        return -1;
    const char *sql_insert =
        "INSERT INTO jobs (owner, name, project, priority, gpus, spec, state, submit_time, start_time,"
        " end_time, attempts, failures, exit_code, reason, exclude, progress, cancel_requested)"
        " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?18)";
    const char *sql_update =
        "UPDATE jobs SET owner=?1, name=?2, project=?3, priority=?4, gpus=?5, spec=?6, state=?7,"
        " submit_time=?8, start_time=?9, end_time=?10, attempts=?11, failures=?12, exit_code=?13,"
        " reason=?14, exclude=?15, progress=?16, cancel_requested=?18 WHERE id=?17";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, job->id ? sql_update : sql_insert, -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "preparing a job row");
    char *excl = exclude_json(job, inv);
    char *prog = progress_json(&job->progress);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)job->owner);
    sqlite3_bind_text(st, 2, job->spec.name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, job->spec.project, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, job->spec.priority);
    sqlite3_bind_int(st, 5, job->spec.resources.gpus);
    sqlite3_bind_text(st, 6, job->spec_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, atomd_job_state_name(job->state), -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 8, job->submit_time);
    sqlite3_bind_double(st, 9, job->start_time);
    sqlite3_bind_double(st, 10, job->end_time);
    sqlite3_bind_int(st, 11, job->attempts);
    sqlite3_bind_int(st, 12, job->failures);
    sqlite3_bind_int(st, 13, job->exit_code);
    sqlite3_bind_text(st, 14, job->reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 15, excl ? excl : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, prog ? prog : "{}", -1, SQLITE_STATIC);
    if (job->id)
        sqlite3_bind_int64(st, 17, job->id);
    sqlite3_bind_int(st, 18, job->cancel_requested);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    free(excl);
    free(prog);
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "saving a job");
    if (!job->id)
        atomd_job_set_id(job, (int64_t)sqlite3_last_insert_rowid(s->db));
    return 0;
}

/* Node indices with their names: a restarted atomd with another inventory maps the names back
 * (placement_from_json) instead of trusting indices that may now mean other nodes. */
static char *placement_json(const atom_placement *pl, const atom_inventory *inv)
{
    if (!pl->node)
        return NULL;
    json_t *nodes = json_array(), *gpus = json_array(), *names = json_array();
    for (int r = 0; r < pl->world; r++) {
        json_array_append_new(nodes, json_integer(pl->node[r]));
        json_array_append_new(gpus, json_integer(pl->gpu[r]));
        json_array_append_new(names, json_string(inv->nodes[pl->node[r]].name));
    }
    json_t *o = json_pack("{s:i,s:i,s:i,s:o,s:o,s:o}", "world", pl->world, "tensor", pl->tensor, "data",
                          pl->data, "node", nodes, "gpu", gpus, "names", names);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static int placement_from_json(const char *text, const atom_inventory *inv, atom_placement *pl)
{
    memset(pl, 0, sizeof *pl);
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    json_t *nodes = json_object_get(o, "node"), *gpus = json_object_get(o, "gpu");
    int world = (int)json_integer_value(json_object_get(o, "world"));
    if (!o || world <= 0 || json_array_size(nodes) != (size_t)world || json_array_size(gpus) != (size_t)world) {
        json_decref(o);
        return -1;
    }
    pl->world = world;
    pl->tensor = (int)json_integer_value(json_object_get(o, "tensor"));
    pl->data = (int)json_integer_value(json_object_get(o, "data"));
    pl->node = calloc((size_t)world, sizeof *pl->node);
    pl->gpu = calloc((size_t)world, sizeof *pl->gpu);
    if (!pl->node || !pl->gpu) {
        atom_placement_free(pl);
        json_decref(o);
        return -1;
    }
    json_t *names = json_object_get(o, "names");
    int rc = 0;
    for (int r = 0; r < world; r++) {
        const char *name = json_string_value(json_array_get(names, (size_t)r));
        int node = -1;
        for (int n = 0; name && n < inv->n_nodes && node < 0; n++)
            if (strcmp(inv->nodes[n].name, name) == 0)
                node = n;
        pl->node[r] = node;
        pl->gpu[r] = (int)json_integer_value(json_array_get(gpus, (size_t)r));
        if (node < 0 || pl->gpu[r] < 0 || pl->gpu[r] >= inv->nodes[node].gpus)
            rc = -1; /* the node left the inventory, or shrank */
    }
    json_decref(o);
    if (rc)
        atom_placement_free(pl);
    return rc;
}

int atomd_store_save_attempt(atomd_store *s, const atomd_job *job, const atom_inventory *inv,
                             const char *state, int exit_code, atom_err *err)
{
    if (atomd_store_begin(s, err))
        return -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT OR REPLACE INTO attempts (job, n, state, pid, pid_start, start_time,"
                           " end_time, exit_code, run_dir, placement, reason, app_path, slurm_job, out_dir)"
                           " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "preparing an attempt row");
    const atomd_attempt *a = &job->cur;
    char *pl = placement_json(&a->placement, inv);
    sqlite3_bind_int64(st, 1, job->id);
    sqlite3_bind_int(st, 2, a->n);
    sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, a->pid);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)a->pid_start);
    sqlite3_bind_double(st, 6, a->start_time);
    sqlite3_bind_double(st, 7, strcmp(state, "running") == 0 ? 0.0 : atom_now());
    sqlite3_bind_int(st, 8, exit_code);
    sqlite3_bind_text(st, 9, a->launch.run_dir, -1, SQLITE_STATIC);
    if (pl)
        sqlite3_bind_text(st, 10, pl, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 10);
    sqlite3_bind_text(st, 11, a->stop_reason, -1, SQLITE_STATIC);
    /* What finds the attempt again: mpirun's application file, or the Slurm job id (kept here, out
     * of the job owner's reach: it says which Slurm job root signals). */
    sqlite3_bind_text(st, 12, a->launch.app_path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 13, a->launch.slurm_job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 14, a->launch.out_dir, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    free(pl);
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "saving an attempt");
    return 0;
}

int atomd_store_save_node(atomd_store *s, const char *name, const char *state, const char *reason,
                          int failures, atom_err *err)
{
    if (atomd_store_begin(s, err))
        return -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO nodes (name, state, reason, failures) VALUES (?1,?2,?3,?4)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "preparing a node row");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, reason ? reason : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, failures);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, err, "saving a node");
}

int atomd_store_save_usage(atomd_store *s, const char *project, double gpu_seconds, double updated,
                           atom_err *err)
{
    if (atomd_store_begin(s, err))
        return -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO usage (project, gpu_seconds, updated) VALUES (?1,?2,?3)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "preparing a usage row");
    sqlite3_bind_text(st, 1, project, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, gpu_seconds);
    sqlite3_bind_double(st, 3, updated);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, err, "saving usage");
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

static void load_exclude(atomd *d, atomd_job *job, const char *text)
{
    json_t *a = json_loads(text, 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        int n = atomd_node_index(d, json_string_value(v) ? json_string_value(v) : "");
        if (n >= 0 && job->exclude)
            job->exclude[n] = true;
    }
    json_decref(a);
}

static void load_progress(atomd_job *job, const char *text)
{
    json_t *o = json_loads(text, 0, NULL);
    if (o && json_object_get(o, "step")) {
        job->progress.has = true;
        job->progress.step = (int64_t)json_integer_value(json_object_get(o, "step"));
        job->progress.loss = json_number_value(json_object_get(o, "loss"));
        job->progress.tokens_per_s = json_number_value(json_object_get(o, "tokens_per_s"));
        job->progress.last_checkpoint = (int64_t)json_integer_value(json_object_get(o, "last_checkpoint"));
    }
    json_decref(o);
}

/* The last attempt of a job that was running: what re-adoption needs. */
static void load_attempt(atomd_store *s, const atom_inventory *inv, atomd_job *job)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT n, pid, pid_start, start_time, run_dir, placement, app_path, slurm_job, out_dir"
                           " FROM attempts"
                           " WHERE job=?1 ORDER BY n DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, job->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        atomd_attempt *a = &job->cur;
        a->n = sqlite3_column_int(st, 0);
        a->pid = (pid_t)sqlite3_column_int64(st, 1);
        a->pid_start = (uint64_t)sqlite3_column_int64(st, 2);
        a->start_time = sqlite3_column_double(st, 3);
        snprintf(a->launch.run_dir, sizeof a->launch.run_dir, "%s", col_text(st, 4));
        /* The paths were valid when the attempt was launched: they fit. */
        if (snprintf(a->launch.plan_path, sizeof a->launch.plan_path, "%s/plan.json", a->launch.run_dir) >=
            (int)sizeof a->launch.plan_path)
            a->launch.plan_path[0] = 0;
        snprintf(a->launch.app_path, sizeof a->launch.app_path, "%s", col_text(st, 6));
        snprintf(a->launch.slurm_job, sizeof a->launch.slurm_job, "%s", col_text(st, 7));
        snprintf(a->launch.out_dir, sizeof a->launch.out_dir, "%s", col_text(st, 8));
        if (sqlite3_column_type(st, 5) != SQLITE_NULL)
            placement_from_json(col_text(st, 5), inv, &a->placement);
    }
    sqlite3_finalize(st);
}

#define JOB_COLUMNS                                                                               \
    "SELECT id, owner, spec, state, submit_time, start_time, end_time, attempts, failures, exit_code," \
    " reason, exclude, progress, cancel_requested FROM jobs"

/* A job from a row of JOB_COLUMNS; NULL when its stored spec cannot be read (logged). */
static atomd_job *job_from_row(atomd_store *s, atomd *d, sqlite3_stmt *st)
{
    atom_spec spec;
    atom_err jerr = {{0}};
    const char *spec_json = col_text(st, 2);
    if (atom_spec_from_json(spec_json, &spec, &jerr)) {
        atom_log(ATOM_LOG_ERROR, "job %lld: stored spec unreadable (%s); skipped",
                 (long long)sqlite3_column_int64(st, 0), jerr.msg);
        return NULL;
    }
    atomd_job *job = atomd_job_new(&spec, spec_json, (uid_t)sqlite3_column_int64(st, 1), d->inv.n_nodes);
    if (!job)
        return NULL;
    atomd_job_set_id(job, sqlite3_column_int64(st, 0));
    int state = atomd_job_state_parse(col_text(st, 3));
    job->state = state < 0 ? ATOMD_JOB_FAILED : (atomd_job_state)state;
    job->submit_time = sqlite3_column_double(st, 4);
    job->start_time = sqlite3_column_double(st, 5);
    job->end_time = sqlite3_column_double(st, 6);
    job->attempts = sqlite3_column_int(st, 7);
    job->failures = sqlite3_column_int(st, 8);
    job->exit_code = sqlite3_column_int(st, 9);
    snprintf(job->reason, sizeof job->reason, "%s", col_text(st, 10));
    load_exclude(d, job, col_text(st, 11));
    load_progress(job, col_text(st, 12));
    job->cancel_requested = sqlite3_column_int(st, 13) != 0;
    if (job->state == ATOMD_JOB_RUNNING)
        load_attempt(s, &d->inv, job);
    return job;
}

static int64_t max_id(atomd_store *s)
{
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(id), 0) FROM jobs", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

atomd_job *atomd_store_load_job(atomd_store *s, atomd *d, int64_t id)
{
    sqlite3_stmt *st = NULL;
    atomd_job *job = NULL;
    if (sqlite3_prepare_v2(s->db, JOB_COLUMNS " WHERE id=?1", -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
        job = job_from_row(s, d, st);
    sqlite3_finalize(st);
    return job;
}

int atomd_store_load(atomd_store *s, atomd *d, atom_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT name, state, reason, failures FROM nodes", -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "reading nodes");
    while (sqlite3_step(st) == SQLITE_ROW) {
        int n = atomd_node_index(d, col_text(st, 0));
        if (n < 0)
            continue; /* a node of an older inventory */
        const char *state = col_text(st, 1);
        d->nodes[n].state = strcmp(state, "drained") == 0 ? ATOMD_NODE_DRAINED
                            : strcmp(state, "down") == 0  ? ATOMD_NODE_DOWN
                                                          : ATOMD_NODE_UP;
        snprintf(d->nodes[n].reason, sizeof d->nodes[n].reason, "%s", col_text(st, 2));
        d->nodes[n].failures = sqlite3_column_int(st, 3);
        atom_planner_set_node_up(&d->planner, n, d->nodes[n].state == ATOMD_NODE_UP, NULL);
    }
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(s->db, "SELECT project, gpu_seconds, updated FROM usage", -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "reading usage");
    while (sqlite3_step(st) == SQLITE_ROW) {
        atomd_usage *u = atomd_usage_get(d, col_text(st, 0));
        if (u) {
            u->gpu_seconds = sqlite3_column_double(st, 1);
            u->updated = sqlite3_column_double(st, 2);
        }
    }
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(s->db, JOB_COLUMNS " WHERE state IN ('pending', 'running') OR id > ?1 ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s, err, "reading jobs");
    /* Every live job; of the ended ones only the newest keep_finished (show reads older ones
     * from here when asked). */
    sqlite3_bind_int64(st, 1, max_id(s) - d->cfg.keep_finished);
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        atomd_job *job = job_from_row(s, d, st);
        if (!job)
            continue;
        if (atomd_job_add(d, job, err)) {
            atomd_job_free(job);
            rc = -1;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* The distinct node names of a stored placement, in rank order. */
static json_t *placement_nodes(const char *text, const atom_inventory *inv)
{
    json_t *names = json_array();
    atom_placement pl;
    if (!text || placement_from_json(text, inv, &pl))
        return names;
    for (int r = 0; r < pl.world; r++) {
        int n = pl.node[r];
        if (n < 0 || n >= inv->n_nodes || (r > 0 && pl.node[r - 1] == n))
            continue;
        bool seen = false;
        for (size_t i = 0; i < json_array_size(names); i++)
            seen |= strcmp(json_string_value(json_array_get(names, i)), inv->nodes[n].name) == 0;
        if (!seen)
            json_array_append_new(names, json_string(inv->nodes[n].name));
    }
    atom_placement_free(&pl);
    return names;
}

json_t *atomd_store_attempts(atomd_store *s, int64_t job, const atom_inventory *inv, atom_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT n, state, pid, start_time, end_time, exit_code, run_dir, reason, placement,"
                           " COALESCE(NULLIF(out_dir, ''), run_dir), COALESCE(slurm_job, '')"
                           " FROM attempts WHERE job=?1 ORDER BY n",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "reading attempts");
        return NULL;
    }
    sqlite3_bind_int64(st, 1, job);
    json_t *a = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *placement = sqlite3_column_type(st, 8) == SQLITE_NULL ? NULL : col_text(st, 8);
        json_t *o = json_pack("{s:i,s:s,s:I,s:f,s:f,s:i,s:s,s:s,s:s,s:o}", "attempt", sqlite3_column_int(st, 0),
                              "state", col_text(st, 1), "pid", (json_int_t)sqlite3_column_int64(st, 2),
                              "start_time", sqlite3_column_double(st, 3), "end_time", sqlite3_column_double(st, 4),
                              "exit_code", sqlite3_column_int(st, 5), "run_dir", col_text(st, 6), "output_dir",
                              col_text(st, 9), "reason", col_text(st, 7), "nodes", placement_nodes(placement, inv));
        if (o && col_text(st, 10)[0])
            json_object_set_new(o, "slurm_job", json_string(col_text(st, 10)));
        json_array_append_new(a, o);
    }
    sqlite3_finalize(st);
    return a;
}

/* ---- accounting ------------------------------------------------------------------------------ */

json_t *atomd_store_history(atomd_store *s, int limit, atom_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, owner, name, project, gpus, state, submit_time, start_time, end_time,"
                           " attempts, exit_code, reason FROM jobs"
                           " WHERE state IN ('done','failed','cancelled','timeout')"
                           " ORDER BY end_time DESC, id DESC LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "reading the job history");
        return NULL;
    }
    sqlite3_bind_int(st, 1, limit);
    json_t *a = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        double start = sqlite3_column_double(st, 7), end = sqlite3_column_double(st, 8);
        int gpus = sqlite3_column_int(st, 4);
        json_array_append_new(
            a, json_pack("{s:I,s:I,s:s,s:s,s:i,s:s,s:f,s:f,s:f,s:i,s:i,s:s}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                         "uid", (json_int_t)sqlite3_column_int64(st, 1), "name", col_text(st, 2), "project",
                         col_text(st, 3), "gpus", gpus, "state", col_text(st, 5), "submit_time",
                         sqlite3_column_double(st, 6), "start_time", start, "end_time", end, "attempts",
                         sqlite3_column_int(st, 9), "exit_code", sqlite3_column_int(st, 10), "reason",
                         col_text(st, 11)));
    }
    sqlite3_finalize(st);
    return a;
}

json_t *atomd_store_accounting(atomd_store *s, double now, atom_err *err)
{
    sqlite3_stmt *st = NULL;
    /* An attempt's end_time is 0 while it runs ("starting" rows carry a provisional one that the
     * "running" row replaces), so a live attempt counts up to now. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT j.owner, j.project, COUNT(DISTINCT j.id),"
                           " SUM(j.gpus * MAX(0, (CASE WHEN a.end_time > 0 THEN a.end_time ELSE ?1 END) - a.start_time))"
                           " FROM attempts a JOIN jobs j ON j.id = a.job WHERE a.start_time > 0"
                           " GROUP BY j.owner, j.project ORDER BY j.owner, j.project",
                           -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "reading the accounting");
        return NULL;
    }
    sqlite3_bind_double(st, 1, now);
    json_t *a = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(a, json_pack("{s:I,s:s,s:i,s:f}", "uid", (json_int_t)sqlite3_column_int64(st, 0), "project",
                                           col_text(st, 1), "jobs", sqlite3_column_int(st, 2), "gpu_hours",
                                           sqlite3_column_double(st, 3) / 3600.0));
    sqlite3_finalize(st);
    return a;
}
