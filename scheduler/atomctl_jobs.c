/* scheduler/atomctl_jobs.c: atomctl's job and node commands, each one request to atomd (see
 * atomctl_jobs.h), and `atomctl run`, which starts a private atomd when none is reachable.
 */
#include "scheduler/atomctl_jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "scheduler/client.h"

extern char **environ;

/* atomctl's exit codes (atomctl.h); `run` adds 130 (128 + SIGINT) when ^C cancelled the job. */
enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

/* The flags every command may take; each command says which of them it accepts. */
typedef struct cli_opts {
    char socket[108];
    bool json, all, follow;
    int rank, attempt;
    const char *reason, *cluster;
    char **args;
    int n_args;
} cli_opts;

static int usage_error(const char *cmd, const char *synopsis, const char *fmt, const char *arg)
{
    fprintf(stderr, "atomctl %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: atomctl %s %s\n", cmd, synopsis);
    return EXIT_USAGE;
}

/* accepted: letters of the flags this command takes (j json, a all, f follow, r rank,
 * t attempt, R reason, C cluster; s socket always). Returns -1 after printing usage or help
 * (*rc says which exit code). */
static int parse_opts(int argc, char **argv, const char *accepted, int min_args, int max_args,
                      const char *synopsis, cli_opts *o, int *rc)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
        {"all", no_argument, NULL, 'a'},          {"follow", no_argument, NULL, 'f'},
        {"rank", required_argument, NULL, 'r'},   {"attempt", required_argument, NULL, 't'},
        {"reason", required_argument, NULL, 'R'}, {"cluster", required_argument, NULL, 'C'},
        {"server", required_argument, NULL, 'S'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof *o);
    o->rank = -1;
    const char *cmd = argv[0];
    /* atomd's TCP port (--server, ATOM_SERVER) for every command but run, which starts a private
     * atomd on this machine and so stays on the local socket. */
    bool remote_ok = strcmp(cmd, "run") != 0;
    atom_client_default_socket(o->socket, sizeof o->socket);
    if (remote_ok && atom_client_default_server(o->socket, sizeof o->socket) && !atom_client_is_tcp(o->socket)) {
        *rc = usage_error(cmd, synopsis, "ATOM_SERVER=%s is not HOST:PORT", o->socket);
        return -1;
    }
    optind = 0; /* a fresh getopt for this command's argv */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "s:jafr:t:R:C:S:h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: atomctl %s %s\n", cmd, synopsis);
            *rc = EXIT_OK;
            return -1;
        }
        if (opt == 'S' && !remote_ok) {
            *rc = usage_error(cmd, synopsis, "--server %s: run starts or uses an atomd on this machine; "
                              "submit and the other commands take --server", optarg);
            return -1;
        }
        if (opt == '?' || (opt != 's' && opt != 'S' && !strchr(accepted, opt))) {
            *rc = usage_error(cmd, synopsis, "unknown or misplaced option '%s'", argv[optind - 1]);
            return -1;
        }
        char *end = NULL;
        switch (opt) {
        case 's': snprintf(o->socket, sizeof o->socket, "%s", optarg); break;
        case 'S':
            if (!atom_client_is_tcp(optarg) || strlen(optarg) >= sizeof o->socket) {
                *rc = usage_error(cmd, synopsis, "--server %s: not HOST:PORT", optarg);
                return -1;
            }
            snprintf(o->socket, sizeof o->socket, "%s", optarg);
            break;
        case 'j': o->json = true; break;
        case 'a': o->all = true; break;
        case 'f': o->follow = true; break;
        case 'R': o->reason = optarg; break;
        case 'C': o->cluster = optarg; break;
        case 'r':
        case 't': {
            long v = strtol(optarg, &end, 10);
            if (!end || *end || v < 0 || v > INT_MAX) {
                *rc = usage_error(cmd, synopsis, "'%s' is not a number", optarg);
                return -1;
            }
            if (opt == 'r')
                o->rank = (int)v;
            else
                o->attempt = (int)v;
            break;
        }
        }
    }
    /* GNU getopt has moved the operands after the flags, wherever they were given. */
    while (optind < argc) {
        if (!o->args)
            o->args = calloc(8, sizeof *o->args);
        if (o->n_args >= 8 || !o->args) {
            *rc = usage_error(cmd, synopsis, "too many arguments%s", "");
            return -1;
        }
        o->args[o->n_args++] = argv[optind++];
    }
    if (o->n_args < min_args || o->n_args > max_args) {
        *rc = usage_error(cmd, synopsis, o->n_args < min_args ? "missing argument%s" : "too many arguments%s", "");
        free(o->args);
        o->args = NULL;
        return -1;
    }
    return 0;
}

/* One request and its answer; prints the error and sets *rc when it fails. */
static json_t *call(const cli_opts *o, json_t *req, int *rc)
{
    atom_client c;
    atom_err err = {{0}};
    int not_running = 0;
    json_t *ans = NULL;
    if (atom_client_connect(&c, o->socket, &not_running, &err)) {
        fprintf(stderr, "atomctl: %s\n", err.msg);
        *rc = ATOM_EXIT_NO_DAEMON;
    } else if (!(ans = atom_client_call(&c, req, &err))) {
        fprintf(stderr, "atomctl: %s\n", err.msg);
        *rc = ATOM_EXIT_NO_DAEMON;
    } else if (!json_is_true(json_object_get(ans, "ok"))) {
        fprintf(stderr, "atomctl: atomd: %s\n", json_string_value(json_object_get(ans, "error")));
        *rc = EXIT_FAILED;
        json_decref(ans);
        ans = NULL;
    }
    atom_client_close(&c);
    json_decref(req);
    return ans;
}

static int job_id_arg(const char *cmd, const char *text, json_int_t *id)
{
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (!end || *end || v <= 0) {
        fprintf(stderr, "atomctl %s: '%s' is not a job id\n", cmd, text);
        return -1;
    }
    *id = (json_int_t)v;
    return 0;
}

static void print_json(json_t *o)
{
    char *text = json_dumps(o, JSON_INDENT(2));
    if (text)
        printf("%s\n", text);
    free(text);
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long num(json_t *o, const char *key) { return (long long)json_integer_value(json_object_get(o, key)); }

/* ---- submit ------------------------------------------------------------------------------ */

/* Validates locally (every mistake with file:line:column) and submits; *id gets the job id. */
static int submit_file(const cli_opts *o, const char *path, json_int_t *id, bool quiet)
{
    atom_spec spec;
    atom_diags diags = {0};
    if (atom_spec_load_runnable(path, &spec, &diags)) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        return EXIT_FAILED;
    }
    atom_diags_free(&diags);
    char *text = atom_spec_to_json(&spec);
    if (!text) {
        fprintf(stderr, "atomctl: out of memory\n");
        return EXIT_FAILED;
    }
    int rc = EXIT_OK;
    json_t *ans = call(o, json_pack("{s:s,s:s}", "op", "submit", "spec", text), &rc);
    free(text);
    if (!ans)
        return rc;
    *id = json_integer_value(json_object_get(ans, "job"));
    if (o->json && !quiet)
        print_json(ans);
    else if (!quiet)
        printf("submitted job %" JSON_INTEGER_FORMAT " (%s)\n", *id, str(ans, "name"));
    json_decref(ans);
    return EXIT_OK;
}

int atomctl_cmd_submit(int argc, char **argv)
{
    cli_opts o;
    int rc;
    if (parse_opts(argc, argv, "j", 1, 1, "JOB.yaml [--json] [--socket PATH]", &o, &rc))
        return rc;
    json_int_t id = 0;
    rc = submit_file(&o, o.args[0], &id, false);
    free(o.args);
    return rc;
}

/* ---- status, queue, show, nodes ---------------------------------------------------------- */

static void fmt_duration(double secs, char *out, size_t len)
{
    if (!isfinite(secs) || secs < 0)
        snprintf(out, len, "-");
    else if (secs < 120)
        snprintf(out, len, "%.0fs", secs);
    else if (secs < 7200)
        snprintf(out, len, "%.0fm", secs / 60);
    else
        snprintf(out, len, "%.1fh", secs / 3600);
}

static void print_job_header(void)
{
    printf("%-6s %-16s %-10s %-10s %-9s %5s %13s %8s %9s %6s %4s  %s\n", "JOB", "NAME", "OWNER", "PROJECT", "STATE",
           "GPUS", "STEP/STEPS", "LOSS", "TOK/S", "CKPT", "RST", "INFO");
}

static void print_job_line(json_t *j)
{
    char step[32] = "-", loss[16] = "-", tps[16] = "-", ckpt[16] = "-";
    if (json_object_get(j, "step")) {
        snprintf(step, sizeof step, "%lld/%lld", num(j, "step"), num(j, "steps"));
        json_t *l = json_object_get(j, "loss");
        if (json_is_number(l))
            snprintf(loss, sizeof loss, "%.4f", json_number_value(l));
        snprintf(tps, sizeof tps, "%.0f", json_number_value(json_object_get(j, "tokens_per_s")));
        if (num(j, "last_checkpoint") >= 0)
            snprintf(ckpt, sizeof ckpt, "%lld", num(j, "last_checkpoint"));
    } else {
        snprintf(step, sizeof step, "-/%lld", num(j, "steps"));
    }
    char info[160] = "";
    const char *state = str(j, "state");
    if (strcmp(state, "running") == 0) {
        json_t *nodes = json_object_get(j, "nodes");
        size_t len = (size_t)snprintf(info, sizeof info, "on ");
        size_t i;
        json_t *v;
        json_array_foreach(nodes, i, v) {
            if (len < sizeof info - 2)
                len += (size_t)snprintf(info + len, sizeof info - len, "%s%s", i ? "," : "", json_string_value(v));
        }
        char up[16];
        fmt_duration(atom_now() - json_number_value(json_object_get(j, "start_time")), up, sizeof up);
        if (len < sizeof info - 2)
            snprintf(info + len, sizeof info - len, " for %s", up);
    } else {
        snprintf(info, sizeof info, "%s", str(j, "reason"));
    }
    printf("%-6lld %-16.16s %-10.10s %-10.10s %-9s %5lld %13s %8s %9s %6s %4lld  %.60s\n", num(j, "id"), str(j, "name"),
           str(j, "owner"), str(j, "project"), state, num(j, "gpus"), step, loss, tps, ckpt, num(j, "restarts"), info);
}

/* Pending jobs listed by `status` before "... and N more". */
#define STATUS_MAX_PENDING 15

int atomctl_cmd_status(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "j", 0, 0, "[--json] [--socket PATH]", &o, &rc))
        return rc;
    json_t *ans = call(&o, json_pack("{s:s}", "op", "status"), &rc);
    if (!ans)
        return rc;
    if (o.json) {
        print_json(ans);
    } else {
        json_t *n = json_object_get(ans, "nodes"), *g = json_object_get(ans, "gpus");
        printf("cluster %s: nodes %lld up, %lld drained, %lld down; GPUs %lld busy, %lld free of %lld",
               str(ans, "cluster"), num(n, "up"), num(n, "drained"), num(n, "down"), num(g, "busy"), num(g, "free"),
               num(g, "total"));
        if (num(g, "offline"))
            printf(" (%lld offline)", num(g, "offline"));
        printf("\njobs: %lld running, %lld pending\n", num(ans, "running"), num(ans, "pending"));
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(ans, "node_list"), i, v) {
            if (strcmp(str(v, "state"), "up") != 0)
                printf("node %s %s: %s\n", str(v, "name"), str(v, "state"), str(v, "reason"));
        }
        /* One screen: every running job, then the first pending ones. */
        json_t *jobs = json_object_get(ans, "jobs");
        if (json_array_size(jobs)) {
            printf("\n");
            print_job_header();
            json_array_foreach(jobs, i, v) if (strcmp(str(v, "state"), "running") == 0) print_job_line(v);
            int shown = 0, more = 0;
            json_array_foreach(jobs, i, v) {
                if (strcmp(str(v, "state"), "running") == 0)
                    continue;
                if (shown < STATUS_MAX_PENDING) {
                    print_job_line(v);
                    shown++;
                } else {
                    more++;
                }
            }
            if (more)
                printf("... and %d more pending (atomctl queue)\n", more);
        }
    }
    json_decref(ans);
    return EXIT_OK;
}

int atomctl_cmd_queue(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "ja", 0, 0, "[--all] [--json] [--socket PATH]", &o, &rc))
        return rc;
    json_t *req = json_pack("{s:s}", "op", "queue");
    if (o.all)
        json_object_set_new(req, "all", json_true());
    json_t *ans = call(&o, req, &rc);
    if (!ans)
        return rc;
    if (o.json) {
        print_json(ans);
    } else {
        print_job_header();
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(ans, "jobs"), i, v) print_job_line(v);
    }
    json_decref(ans);
    return EXIT_OK;
}

int atomctl_cmd_show(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "j", 1, 1, "JOB [--json] [--socket PATH]", &o, &rc))
        return rc;
    json_int_t id;
    if (job_id_arg("show", o.args[0], &id)) {
        free(o.args);
        return EXIT_USAGE;
    }
    free(o.args);
    json_t *ans = call(&o, json_pack("{s:s,s:I}", "op", "show", "job", id), &rc);
    if (!ans)
        return rc;
    if (o.json) {
        print_json(ans);
    } else {
        json_t *j = json_object_get(ans, "job");
        printf("job %lld: %s\n  owner %s, project %s, priority %lld, %lld GPUs\n  state %s: %s\n", num(j, "id"),
               str(j, "name"), str(j, "owner"), str(j, "project"), num(j, "priority"), num(j, "gpus"), str(j, "state"),
               str(j, "reason"));
        if (json_object_get(j, "step"))
            printf("  step %lld/%lld, loss %.4f, %.0f tokens/s, last checkpoint %lld\n", num(j, "step"), num(j, "steps"),
                   json_number_value(json_object_get(j, "loss")),
                   json_number_value(json_object_get(j, "tokens_per_s")), num(j, "last_checkpoint"));
        json_t *skip = json_object_get(j, "ckpt_skipped");
        if (skip)
            printf("  attempt %lld restored past %lld checkpoint%s that failed to load, the "
                   "newest of step %lld: %s\n", num(skip, "attempt"), num(skip, "count"),
                   num(skip, "count") == 1 ? "" : "s", num(skip, "step"), str(skip, "why"));
        printf("  attempts %lld, restarts %lld, exit code %lld\n", num(j, "attempts"), num(j, "restarts"),
               num(j, "exit_code"));
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(ans, "attempts"), i, a) {
            char nodes[256] = "";
            size_t len = 0, k;
            json_t *v;
            json_array_foreach(json_object_get(a, "nodes"), k, v) {
                if (len < sizeof nodes - 2)
                    len += (size_t)snprintf(nodes + len, sizeof nodes - len, "%s%s", k ? "," : "", json_string_value(v));
            }
            /* The output folder (rank logs, heartbeats) is the user's; the attempt's folder holds
             * atomd's records (plan, launcher.log). */
            const char *out = str(a, "output_dir")[0] ? str(a, "output_dir") : str(a, "run_dir");
            printf("  attempt %lld on %s: %s, exit %lld%s%s\n    %s\n", num(a, "attempt"), nodes[0] ? nodes : "-",
                   str(a, "state"), num(a, "exit_code"), str(a, "reason")[0] ? ", " : "", str(a, "reason"), out);
        }
    }
    json_decref(ans);
    return EXIT_OK;
}

int atomctl_cmd_nodes(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "j", 0, 0, "[--json] [--socket PATH]", &o, &rc))
        return rc;
    json_t *ans = call(&o, json_pack("{s:s}", "op", "nodes"), &rc);
    if (!ans)
        return rc;
    if (o.json) {
        print_json(ans);
    } else {
        printf("%-20s %-10s %-8s %5s %5s %8s  %s\n", "NODE", "SWITCH", "STATE", "GPUS", "FREE", "FAILURES", "REASON");
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(ans, "nodes"), i, v) {
            printf("%-20s %-10s %-8s %5lld %5lld %8lld  %s\n", str(v, "name"), str(v, "switch"), str(v, "state"),
                   num(v, "gpus"), num(v, "free"), num(v, "failures"), str(v, "reason"));
        }
        json_t *iso = json_object_get(ans, "isolation");
        const char *kind = str(iso, "kind");
        if (strcmp(kind, "cgroup") == 0)
            printf("attempts on atomd's node: one cgroup each (%s)\n", str(iso, "cgroup_root"));
        else if (strcmp(kind, "process group") == 0)
            printf("attempts on atomd's node: no cgroup (%s); stopped by process group, found again "
                   "by pid\n", str(iso, "why"));
    }
    json_decref(ans);
    return EXIT_OK;
}

/* ---- cancel, drain, resume ----------------------------------------------------------------- */

int atomctl_cmd_cancel(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "", 1, 1, "JOB [--socket PATH]", &o, &rc))
        return rc;
    json_int_t id;
    int bad = job_id_arg("cancel", o.args[0], &id);
    free(o.args);
    if (bad)
        return EXIT_USAGE;
    json_t *ans = call(&o, json_pack("{s:s,s:I}", "op", "cancel", "job", id), &rc);
    if (!ans)
        return rc;
    printf("job %" JSON_INTEGER_FORMAT ": %s\n", id,
           strcmp(str(ans, "state"), "cancelled") == 0 ? "cancelled" : "cancelling (stopping its attempt)");
    json_decref(ans);
    return EXIT_OK;
}

static int node_cmd(int argc, char **argv, const char *op)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, strcmp(op, "drain") == 0 ? "R" : "", 1, 1,
                   strcmp(op, "drain") == 0 ? "NODE [--reason TEXT] [--socket PATH]" : "NODE [--socket PATH]", &o, &rc))
        return rc;
    json_t *req = json_pack("{s:s,s:s}", "op", op, "node", o.args[0]);
    if (o.reason)
        json_object_set_new(req, "reason", json_string(o.reason));
    free(o.args);
    json_t *ans = call(&o, req, &rc);
    if (!ans)
        return rc;
    printf("node %s: %s\n", str(ans, "node"), str(ans, "state"));
    json_decref(ans);
    return EXIT_OK;
}

int atomctl_cmd_drain(int argc, char **argv) { return node_cmd(argc, argv, "drain"); }
int atomctl_cmd_resume(int argc, char **argv) { return node_cmd(argc, argv, "resume"); }

/* ---- logs ----------------------------------------------------------------------------------- */

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

int atomctl_cmd_logs(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "frtj", 1, 1, "JOB [-f] [--rank N] [--attempt N] [--json] [--socket PATH]", &o, &rc))
        return rc;
    json_int_t id;
    int bad = job_id_arg("logs", o.args[0], &id);
    free(o.args);
    if (bad)
        return EXIT_USAGE;
    json_int_t offset = 0;
    int attempt = o.attempt;
    for (;;) {
        json_t *req = json_pack("{s:s,s:I,s:I}", "op", "logs", "job", id, "offset", offset);
        if (o.rank >= 0)
            json_object_set_new(req, "rank", json_integer(o.rank));
        if (attempt > 0)
            json_object_set_new(req, "attempt", json_integer(attempt));
        json_t *ans = call(&o, req, &rc);
        if (!ans)
            return rc;
        if (o.json) { /* one answer per line: data, offset, attempt, ended, state */
            char *line = json_dumps(ans, JSON_COMPACT);
            if (line)
                printf("%s\n", line);
            free(line);
        } else {
            fputs(str(ans, "data"), stdout);
        }
        fflush(stdout);
        json_int_t next = json_integer_value(json_object_get(ans, "offset"));
        bool ended = json_is_true(json_object_get(ans, "ended"));
        int got_attempt = (int)num(ans, "attempt");
        bool moved = next != offset;
        json_decref(ans);
        offset = next;
        if (!o.follow)
            return EXIT_OK;
        if (moved)
            continue; /* more may be there at once */
        if (ended) {
            /* A requeued job goes on in its next attempt; a finished one stops here. */
            json_t *show = call(&o, json_pack("{s:s,s:I}", "op", "show", "job", id), &rc);
            if (!show)
                return rc;
            json_t *j = json_object_get(show, "job");
            int attempts = (int)num(j, "attempts");
            bool final = strcmp(str(j, "state"), "pending") != 0 && strcmp(str(j, "state"), "running") != 0;
            json_decref(show);
            if (o.attempt <= 0 && attempts > got_attempt) {
                attempt = got_attempt + 1;
                offset = 0;
                printf("---- attempt %d ----\n", attempt);
                continue;
            }
            if (final)
                return EXIT_OK;
        }
        sleep_s(0.5);
    }
}

/* ---- run ------------------------------------------------------------------------------------- */

/* The atomd beside this atomctl (or ATOM_ATOMD). */
static int find_atomd(char *path, size_t len)
{
    atom_err err;
    if (atom_program_path("ATOM_ATOMD", "atomd", path, len, &err))
        return -1;
    return access(path, X_OK);
}

/* Starts a private atomd on o->socket that exits once idle; waits until it answers. */
static int start_private_atomd(const cli_opts *o)
{
    char atomd[PATH_MAX];
    if (find_atomd(atomd, sizeof atomd)) {
        fprintf(stderr, "atomctl run: no atomd is running and none was found next to atomctl (set ATOM_ATOMD)\n");
        return ATOM_EXIT_NO_DAEMON;
    }
    char state[PATH_MAX];
    atom_err err = {{0}};
    if (getenv("ATOM_STATE_DIR") && getenv("ATOM_STATE_DIR")[0])
        snprintf(state, sizeof state, "%s", getenv("ATOM_STATE_DIR"));
    else if (atom_user_state_dir(state, sizeof state, &err) != 0) {
        fprintf(stderr, "atomctl run: %s\n", err.msg);
        return ATOM_EXIT_NO_DAEMON;
    }
    /* The socket's folder holds atomd's log too: it must be this user's alone, or another user
     * who created it first could point the log at any file of ours (private_path.c). */
    char sock_dir[PATH_MAX];
    atom_path_dir(o->socket, sock_dir, sizeof sock_dir);
    if (atom_private_dir(sock_dir, geteuid() == 0 ? 0755 : 0700, &err) != 0) {
        fprintf(stderr, "atomctl run: cannot start a private atomd: %s\n", err.msg);
        return ATOM_EXIT_NO_DAEMON;
    }
    char log_path[PATH_MAX + 32];
    snprintf(log_path, sizeof log_path, "%s.atomd.log", o->socket);
    int log_fd = atom_private_open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600, &err);
    if (log_fd < 0) {
        fprintf(stderr, "atomctl run: cannot start a private atomd: its log %s\n", err.msg);
        return ATOM_EXIT_NO_DAEMON;
    }
    char *argv[16];
    int n = 0;
    argv[n++] = atomd;
    argv[n++] = "--socket";
    argv[n++] = (char *)o->socket;
    argv[n++] = "--state-dir";
    argv[n++] = state;
    argv[n++] = "--idle-exit";
    argv[n++] = "60";
    if (o->cluster) {
        argv[n++] = "--cluster";
        argv[n++] = (char *)o->cluster;
    }
    argv[n] = NULL;
    /* Its own session, so that it outlives this atomctl and ignores the terminal's ^C. */
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, log_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, log_fd, STDERR_FILENO);
    pid_t pid;
    int rc = posix_spawn(&pid, atomd, &fa, &attr, argv, environ);
    close(log_fd);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc) {
        fprintf(stderr, "atomctl run: cannot start %s: %s\n", atomd, strerror(rc));
        return ATOM_EXIT_NO_DAEMON;
    }
    fprintf(stderr, "atomctl run: started a private atomd (pid %d, state in %s, log %s)\n", (int)pid, state, log_path);
    for (int i = 0; i < 200; i++) {
        atom_client c;
        if (atom_client_connect(&c, o->socket, NULL, &err) == 0) {
            atom_client_close(&c);
            return EXIT_OK;
        }
        sleep_s(0.05);
    }
    fprintf(stderr, "atomctl run: the private atomd did not come up within 10 s (see %s)\n", log_path);
    return ATOM_EXIT_NO_DAEMON;
}

static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

int atomctl_cmd_run(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "C", 1, 1, "JOB.yaml [--cluster INVENTORY.yaml] [--socket PATH]", &o, &rc))
        return rc;
    const char *path = o.args[0];
    /* Validate before starting anything: a bad spec needs no daemon. */
    atom_spec spec;
    atom_diags diags = {0};
    if (atom_spec_load_runnable(path, &spec, &diags)) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        free(o.args);
        return EXIT_FAILED;
    }
    atom_diags_free(&diags);
    atom_client c;
    atom_err err = {{0}};
    int not_running = 0;
    if (atom_client_connect(&c, o.socket, &not_running, &err) == 0)
        atom_client_close(&c);
    else if (!not_running || (rc = start_private_atomd(&o)) != EXIT_OK) {
        if (!not_running)
            fprintf(stderr, "atomctl: %s\n", err.msg);
        free(o.args);
        return not_running ? rc : ATOM_EXIT_NO_DAEMON;
    }
    json_int_t id = 0;
    rc = submit_file(&o, path, &id, true);
    free(o.args);
    if (rc)
        return rc;
    fprintf(stderr, "job %" JSON_INTEGER_FORMAT " submitted (^C cancels it)\n", id);
    /* ^C (or SIGTERM) cancels the job, as srun does, and run still follows it to its end. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool cancel_sent = false;
    bool tty = isatty(STDERR_FILENO);
    char last[256] = "";
    for (;;) {
        if (interrupted && !cancel_sent) {
            cancel_sent = true;
            fprintf(stderr, "%sinterrupted: cancelling job %" JSON_INTEGER_FORMAT "\n", tty ? "\n" : "", id);
            json_t *ans = call(&o, json_pack("{s:s,s:I}", "op", "cancel", "job", id), &rc);
            json_decref(ans); /* an error (it had just ended) was printed; follow it anyway */
        }
        json_t *ans = call(&o, json_pack("{s:s,s:I}", "op", "show", "job", id), &rc);
        if (!ans)
            return rc;
        json_t *j = json_object_get(ans, "job"), *s = json_object_get(ans, "spec");
        const char *state = str(j, "state");
        char line[256];
        if (json_object_get(j, "step")) {
            long long step = num(j, "step"), steps = num(j, "steps");
            double tps = json_number_value(json_object_get(j, "tokens_per_s"));
            double tokens_per_step = (double)num(json_object_get(s, "training"), "global_batch") *
                                     (double)num(json_object_get(s, "model"), "context");
            char eta[16] = "-";
            if (tps > 0 && tokens_per_step > 0)
                fmt_duration((double)(steps - step) * tokens_per_step / tps, eta, sizeof eta);
            int width = 24, filled = steps > 0 ? (int)(width * step / steps) : 0;
            char bar[32];
            for (int i = 0; i < width; i++)
                bar[i] = i < filled ? '#' : '.';
            bar[width] = 0;
            json_t *l = json_object_get(j, "loss");
            snprintf(line, sizeof line, "[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s  (%s%s)", bar, step,
                     steps, json_is_number(l) ? json_number_value(l) : NAN, tps, eta, state,
                     num(j, "restarts") ? ", restarted" : "");
        } else {
            snprintf(line, sizeof line, "%s: %.200s", state, str(j, "reason"));
        }
        if (strcmp(line, last) != 0) {
            fprintf(stderr, tty ? "\r\033[K%s" : "%s\n", line);
            snprintf(last, sizeof last, "%s", line);
        }
        bool final = strcmp(state, "pending") != 0 && strcmp(state, "running") != 0;
        if (final) {
            if (tty)
                fputc('\n', stderr);
            fprintf(stderr, "job %" JSON_INTEGER_FORMAT " %s: %s\n", id, state, str(j, "reason"));
            rc = strcmp(state, "done") == 0 ? EXIT_OK : EXIT_FAILED;
            if (rc != EXIT_OK && num(j, "attempts") > 0)
                fprintf(stderr, "the workers' output: atomctl logs %" JSON_INTEGER_FORMAT " --attempt %lld\n", id,
                        num(j, "attempts"));
            json_decref(ans);
            return cancel_sent && rc != EXIT_OK ? EXIT_INTERRUPTED : rc;
        }
        json_decref(ans);
        sleep_s(0.5);
    }
}

/* ---- accounting: history, usage ------------------------------------------------------------- */

static double real(json_t *o, const char *key) { return json_number_value(json_object_get(o, key)); }

static const char *user_name(json_t *o, char *buf, size_t len)
{
    uid_t uid = (uid_t)json_integer_value(json_object_get(o, "uid"));
    struct passwd *pw = getpwuid(uid);
    if (pw)
        snprintf(buf, len, "%s", pw->pw_name);
    else
        snprintf(buf, len, "%u", (unsigned)uid);
    return buf;
}

int atomctl_cmd_history(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "ja", 0, 0, "[--all] [--json] [--socket PATH]", &o, &rc))
        return rc;
    json_t *ans = call(&o, json_pack("{s:s,s:i}", "op", "history", "limit", o.all ? 1000000000 : 100), &rc);
    if (!ans)
        return rc;
    if (o.json) {
        print_json(ans);
    } else {
        printf("%-8s %-24s %-10s %-16s %5s %-10s %9s %9s %8s  %s\n", "JOB", "NAME", "USER", "PROJECT", "GPUS", "STATE",
               "WAITED", "RAN", "ATTEMPTS", "REASON");
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(ans, "jobs"), i, v) {
            char who[64];
            double submit = real(v, "submit_time"), start = real(v, "start_time"), end = real(v, "end_time");
            printf("%-8lld %-24s %-10s %-16s %5lld %-10s %8.0fs %8.0fs %8lld  %s\n", num(v, "id"), str(v, "name"),
                   user_name(v, who, sizeof who), str(v, "project"), num(v, "gpus"), str(v, "state"),
                   start > 0 ? start - submit : end - submit, start > 0 ? end - start : 0.0, num(v, "attempts"),
                   str(v, "reason"));
        }
    }
    json_decref(ans);
    return EXIT_OK;
}

int atomctl_cmd_usage(int argc, char **argv)
{
    cli_opts o;
    int rc = EXIT_OK;
    if (parse_opts(argc, argv, "j", 0, 0, "[--json] [--socket PATH]", &o, &rc))
        return rc;
    json_t *ans = call(&o, json_pack("{s:s}", "op", "usage"), &rc);
    if (!ans)
        return rc;
    if (o.json) {
        print_json(ans);
    } else {
        printf("GPU-hours by user and project (every attempt in the store):\n");
        printf("  %-16s %-24s %6s %12s\n", "USER", "PROJECT", "JOBS", "GPU-HOURS");
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(ans, "usage"), i, v) {
            char who[64];
            printf("  %-16s %-24s %6lld %12.2f\n", user_name(v, who, sizeof who), str(v, "project"), num(v, "jobs"),
                   real(v, "gpu_hours"));
        }
        printf("Fair share (GPU-hours decayed with a half-life of %.0f s; lower starts first):\n",
               real(ans, "half_life"));
        json_array_foreach(json_object_get(ans, "fair_share"), i, v)
            printf("  %-24s %12.2f\n", str(v, "project"), real(v, "decayed_gpu_hours"));
    }
    json_decref(ans);
    return EXIT_OK;
}
