/* common/plan_slurm.c: a job's plan built from the Slurm allocation a task runs in.
 *
 * Under Slurm, Slurm owns placement: srun has already started one task per rank on the nodes it
 * chose. Every task reads the same allocation (node list, tasks per node) from its environment and
 * so builds the same plan, with no file to share. Its own ids (SLURM_PROCID, SLURM_NODEID,
 * SLURM_LOCALID) are then checked against that plan, so a task never trains under a layout that is
 * not the one it actually runs in.
 *
 * Ranks follow Slurm's block distribution: node i holds tasks first_i .. first_i + count_i - 1. With
 * every node's count a multiple of the tensor-parallel size, a tensor-parallel group (tensor
 * consecutive ranks) never crosses a node.
 */
#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* More hosts than any allocation has; keeps "n[0-999999999]" from eating the memory. */
#define SLURM_MAX_HOSTS (1 << 16)
/* Longest host list or tasks-per-node text taken (Slurm compresses lists, so they stay short). */
#define SLURM_MAX_LIST 65536

/* ---- host lists ---------------------------------------------------------------------------- */

typedef struct host_list {
    char (*names)[ATOM_NAME_MAX];
    int count, cap;
} host_list;

static int host_list_add(host_list *hl, const char *name, size_t len, atom_err *err)
{
    if (len == 0)
        return atom_errf(err, "Slurm host list: an empty host name");
    if (len >= ATOM_NAME_MAX)
        return atom_errf(err, "Slurm host list: host name \"%.*s...\" is longer than %d characters",
                         40, name, ATOM_NAME_MAX - 1);
    if (hl->count == SLURM_MAX_HOSTS)
        return atom_errf(err, "Slurm host list: more than %d hosts", SLURM_MAX_HOSTS);
    if (hl->count == hl->cap) {
        int cap = hl->cap ? hl->cap * 2 : 16;
        void *grown = realloc(hl->names, (size_t)cap * sizeof *hl->names);
        if (!grown)
            return atom_errf(err, "Slurm host list: out of memory");
        hl->names = grown;
        hl->cap = cap;
    }
    memcpy(hl->names[hl->count], name, len);
    hl->names[hl->count][len] = '\0';
    hl->count++;
    return 0;
}

/* Characters a host name may hold outside brackets. */
static bool host_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* Parses a run of digits (at most 9, so no overflow); returns its length, 0 when none. */
static size_t parse_digits(const char *s, const char *end, long *value)
{
    size_t n = 0;
    long v = 0;
    while (s + n < end && isdigit((unsigned char)s[n]) && n < 10) {
        v = v * 10 + (s[n] - '0');
        n++;
    }
    if (n == 10)
        return 0;
    *value = v;
    return n;
}

/* Expands entry[0..len) after prefix[0..plen): the first bracket group is the outer loop, as in
 * Slurm ("a[1-2]b[1-2]" -> a1b1 a1b2 a2b1 a2b2). */
static int expand_entry(const char *s, const char *end, char *prefix, size_t plen, host_list *hl,
                        atom_err *err)
{
    const char *lb = s;
    while (lb < end && *lb != '[') {
        if (!host_char(*lb))
            return atom_errf(err, "Slurm host list: unexpected character '%c'", *lb);
        lb++;
    }
    size_t lit = (size_t)(lb - s);
    if (plen + lit >= ATOM_NAME_MAX)
        return atom_errf(err, "Slurm host list: a host name is longer than %d characters",
                         ATOM_NAME_MAX - 1);
    memcpy(prefix + plen, s, lit);
    if (lb == end)
        return host_list_add(hl, prefix, plen + lit, err);
    const char *rb = memchr(lb, ']', (size_t)(end - lb));
    if (!rb)
        return atom_errf(err, "Slurm host list: '[' without ']'");
    /* The group: comma-separated numbers or ranges lo-hi; zero padding follows lo's width. */
    const char *p = lb + 1;
    if (p == rb)
        return atom_errf(err, "Slurm host list: empty brackets []");
    while (p < rb) {
        long lo = 0, hi = 0;
        size_t wlo = parse_digits(p, rb, &lo);
        if (wlo == 0)
            return atom_errf(err, "Slurm host list: expected a number inside [...]");
        p += wlo;
        hi = lo;
        if (p < rb && *p == '-') {
            p++;
            size_t whi = parse_digits(p, rb, &hi);
            if (whi == 0)
                return atom_errf(err, "Slurm host list: expected a number after '-' inside [...]");
            p += whi;
        }
        if (hi < lo)
            return atom_errf(err, "Slurm host list: range %ld-%ld runs backwards", lo, hi);
        if (hi - lo >= SLURM_MAX_HOSTS)
            return atom_errf(err, "Slurm host list: range %ld-%ld has more than %d hosts", lo, hi,
                             SLURM_MAX_HOSTS);
        if (p < rb && *p != ',')
            return atom_errf(err, "Slurm host list: unexpected character '%c' inside [...]", *p);
        if (p < rb)
            p++;
        for (long v = lo; v <= hi; v++) {
            char num[24];
            int w = snprintf(num, sizeof num, "%0*ld", (int)wlo, v);
            if (plen + lit + (size_t)w >= ATOM_NAME_MAX)
                return atom_errf(err, "Slurm host list: a host name is longer than %d characters",
                                 ATOM_NAME_MAX - 1);
            memcpy(prefix + plen + lit, num, (size_t)w);
            if (expand_entry(rb + 1, end, prefix, plen + lit + (size_t)w, hl, err))
                return -1;
            /* A wildly multiplied list stops at the host limit inside host_list_add. */
        }
    }
    return 0;
}

int atom_slurm_hostnames(const char *list, char (**names)[ATOM_NAME_MAX], int *n, atom_err *err)
{
    *names = NULL;
    *n = 0;
    if (!list || !list[0])
        return atom_errf(err, "Slurm host list is empty");
    size_t len = strnlen(list, SLURM_MAX_LIST + 1);
    if (len > SLURM_MAX_LIST)
        return atom_errf(err, "Slurm host list is longer than %d characters", SLURM_MAX_LIST);
    host_list hl = {0};
    char prefix[ATOM_NAME_MAX];
    const char *s = list, *end = list + len;
    while (s <= end) {
        /* The entry ends at the next comma outside brackets. */
        const char *e = s;
        int depth = 0;
        while (e < end && (depth > 0 || *e != ',')) {
            if (*e == '[' && ++depth > 1)
                break;
            if (*e == ']' && --depth < 0)
                break;
            e++;
        }
        if (depth != 0 || (e < end && *e != ',')) {
            free(hl.names);
            return atom_errf(err, "Slurm host list \"%.200s\": unbalanced brackets", list);
        }
        if (e == s || expand_entry(s, e, prefix, 0, &hl, err)) {
            if (e == s)
                atom_errf(err, "Slurm host list \"%.200s\": an empty entry", list);
            free(hl.names);
            return -1;
        }
        s = e + 1;
    }
    *names = hl.names;
    *n = hl.count;
    return 0;
}

/* ---- tasks per node -------------------------------------------------------------------------- */

/* A whole number in 1..limit filling s exactly. */
static int parse_count(const char *s, size_t len, long limit, long *out)
{
    long v = 0;
    size_t w = parse_digits(s, s + len, &v);
    if (w == 0 || w != len || v < 1 || v > limit)
        return -1;
    *out = v;
    return 0;
}

int atom_slurm_tasks_per_node(const char *list, int **counts, int *n, atom_err *err)
{
    *counts = NULL;
    *n = 0;
    if (!list || !list[0])
        return atom_errf(err, "Slurm tasks per node is empty");
    size_t len = strnlen(list, SLURM_MAX_LIST + 1);
    if (len > SLURM_MAX_LIST)
        return atom_errf(err, "Slurm tasks per node is longer than %d characters", SLURM_MAX_LIST);
    int *out = NULL, count = 0, cap = 0;
    const char *s = list, *end = list + len;
    while (s <= end) {
        const char *e = memchr(s, ',', (size_t)(end - s));
        if (!e)
            e = end;
        /* "N" or "N(xM)": N tasks on each of M nodes. */
        const char *paren = memchr(s, '(', (size_t)(e - s));
        long tasks = 0, repeat = 1;
        bool ok = parse_count(s, (size_t)((paren ? paren : e) - s), 1 << 20, &tasks) == 0;
        if (ok && paren)
            ok = e - paren >= 4 && paren[1] == 'x' && e[-1] == ')' &&
                 parse_count(paren + 2, (size_t)(e - 1 - (paren + 2)), SLURM_MAX_HOSTS, &repeat) == 0;
        if (!ok) {
            free(out);
            return atom_errf(err, "Slurm tasks per node \"%.200s\": \"%.*s\" is not N or N(xM)", list,
                             (int)(e - s), s);
        }
        if (count + repeat > SLURM_MAX_HOSTS) {
            free(out);
            return atom_errf(err, "Slurm tasks per node \"%.200s\": more than %d nodes", list,
                             SLURM_MAX_HOSTS);
        }
        if (count + repeat > cap) {
            cap = (int)(count + repeat) * 2;
            int *grown = realloc(out, (size_t)cap * sizeof *out);
            if (!grown) {
                free(out);
                return atom_errf(err, "Slurm tasks per node: out of memory");
            }
            out = grown;
        }
        for (long i = 0; i < repeat; i++)
            out[count++] = (int)tasks;
        s = e + 1;
    }
    *counts = out;
    *n = count;
    return 0;
}

/* ---- the plan -------------------------------------------------------------------------------- */

void atom_slurm_env_get(atom_slurm_env *env)
{
    memset(env, 0, sizeof *env);
    /* Inside a job step the STEP_ variables describe the step srun started, which may use fewer
     * nodes than the whole allocation; the job-level ones serve a batch shell. */
    env->job_id = getenv("SLURM_JOB_ID");
    env->nodelist = getenv("SLURM_STEP_NODELIST");
    if (!env->nodelist)
        env->nodelist = getenv("SLURM_JOB_NODELIST");
    env->tasks_per_node = getenv("SLURM_STEP_TASKS_PER_NODE");
    if (!env->tasks_per_node)
        env->tasks_per_node = getenv("SLURM_TASKS_PER_NODE");
    env->ntasks = getenv("SLURM_STEP_NUM_TASKS");
    if (!env->ntasks)
        env->ntasks = getenv("SLURM_NTASKS");
    env->procid = getenv("SLURM_PROCID");
    env->localid = getenv("SLURM_LOCALID");
    env->nodeid = getenv("SLURM_NODEID");
    env->gpus = getenv("CUDA_VISIBLE_DEVICES");
    if (!env->gpus || !env->gpus[0])
        env->gpus = getenv("SLURM_STEP_GPUS");
    env->restart_count = getenv("SLURM_RESTART_COUNT");
    env->atom_job_id = getenv("ATOM_JOB_ID");
    env->atom_attempt = getenv("ATOM_ATTEMPT");
}

/* A required id: a whole number in 0..limit-1. */
static int env_id(const char *name, const char *value, long limit, int *out, atom_err *err)
{
    if (!value)
        return atom_errf(err, "%s is not set: not inside a Slurm job step (start the workers "
                         "with srun, e.g. through deploy/slurm/atom-srun)", name);
    long v = 0;
    size_t len = strlen(value);
    if (parse_digits(value, value + len, &v) != len || len == 0 || v >= limit)
        return atom_errf(err, "%s is \"%.40s\", not a number in 0..%ld", name, value, limit - 1);
    *out = (int)v;
    return 0;
}

/* How many GPUs a list such as "0", "2,3" or "" names. */
static int gpu_count(const char *gpus)
{
    if (!gpus || !gpus[0] || !strcmp(gpus, "NoDevFiles"))
        return 0;
    int n = 1;
    for (const char *p = gpus; *p; p++)
        n += *p == ',';
    return n;
}

typedef struct slurm_layout {
    char (*names)[ATOM_NAME_MAX];
    int n_nodes;
    int *counts;  /* tasks on each node */
    int *first;   /* the first rank on each node */
} slurm_layout;

static void layout_free(slurm_layout *l)
{
    free(l->names);
    free(l->counts);
    free(l->first);
}

/* The nodes and their task counts, checked against the spec's tensor x data. */
static int read_layout(const atom_spec *spec, const atom_slurm_env *env, slurm_layout *l,
                       atom_err *err)
{
    if (!env->nodelist)
        return atom_errf(err, "SLURM_JOB_NODELIST is not set: not inside a Slurm allocation "
                         "(start the workers with srun, e.g. through deploy/slurm/atom-srun)");
    if (!env->tasks_per_node)
        return atom_errf(err, "SLURM_TASKS_PER_NODE is not set: not inside a Slurm job step");
    int n_counts = 0;
    if (atom_slurm_hostnames(env->nodelist, &l->names, &l->n_nodes, err) ||
        atom_slurm_tasks_per_node(env->tasks_per_node, &l->counts, &n_counts, err))
        return -1;
    if (n_counts != l->n_nodes)
        return atom_errf(err, "Slurm's node list \"%.200s\" has %d nodes but its tasks per node "
                         "\"%.200s\" describe %d", env->nodelist, l->n_nodes, env->tasks_per_node,
                         n_counts);
    l->first = malloc((size_t)l->n_nodes * sizeof *l->first);
    if (!l->first)
        return atom_errf(err, "out of memory");
    int tensor = spec->parallelism.tensor, data = spec->parallelism.data;
    long total = 0;
    for (int i = 0; i < l->n_nodes; i++) {
        l->first[i] = (int)total;
        total += l->counts[i];
        if (l->counts[i] % tensor != 0)
            return atom_errf(err, "Slurm gave node %s %d tasks, which is not a multiple of the "
                             "tensor-parallel size %d: a tensor-parallel group would cross nodes "
                             "(ask for --ntasks-per-node a multiple of %d, as atom-srun does)",
                             l->names[i], l->counts[i], tensor, tensor);
    }
    if (total != (long)tensor * data)
        return atom_errf(err, "Slurm started %ld tasks but the job needs tensor x data = %d x %d = "
                         "%d ranks", total, tensor, data, tensor * data);
    if (env->ntasks) {
        int ntasks = 0;
        if (env_id("SLURM_NTASKS", env->ntasks, 1L << 24, &ntasks, err))
            return -1;
        if (ntasks != total)
            return atom_errf(err, "SLURM_NTASKS is %d but the tasks per node \"%.200s\" add up to "
                             "%ld", ntasks, env->tasks_per_node, total);
    }
    return 0;
}

/* This task's ids must be where block distribution puts its rank. */
static int check_self(const atom_slurm_env *env, const slurm_layout *l, int world, atom_err *err)
{
    int procid = 0, nodeid = 0, localid = 0;
    if (env_id("SLURM_PROCID", env->procid, world, &procid, err) ||
        env_id("SLURM_NODEID", env->nodeid, l->n_nodes, &nodeid, err) ||
        env_id("SLURM_LOCALID", env->localid, 1L << 24, &localid, err))
        return -1;
    int node = 0;
    while (node + 1 < l->n_nodes && l->first[node + 1] <= procid)
        node++;
    if (node != nodeid || localid != procid - l->first[node])
        return atom_errf(err, "task %d runs on node %d (%s) as local task %d, but Slurm's block "
                         "distribution puts it on node %d (%s) as local task %d: atom needs "
                         "--distribution=block so that rank order follows the nodes", procid,
                         nodeid, l->names[nodeid], localid, node, l->names[node],
                         procid - l->first[node]);
    int gpus = gpu_count(env->gpus);
    if (gpus > 1)
        return atom_errf(err, "task %d sees %d GPUs (%.100s); atom runs one rank per GPU: ask "
                         "Slurm for one GPU per task (--gpus-per-task=1, as atom-srun does)",
                         procid, gpus, env->gpus);
    return 0;
}

int atom_plan_from_slurm(const atom_spec *spec, const atom_slurm_env *env, atom_plan *plan,
                         atom_err *err)
{
    memset(plan, 0, sizeof *plan);
    plan->spec = *spec;
    int tensor = spec->parallelism.tensor, data = spec->parallelism.data;
    if (tensor < 1 || data < 1)
        return atom_errf(err, "the spec's tensor x data (%d x %d) is not a layout", tensor, data);
    slurm_layout l = {0};
    int world = tensor * data;
    if (read_layout(spec, env, &l, err) || check_self(env, &l, world, err)) {
        layout_free(&l);
        return -1;
    }
    int restarts = 0, attempt = 0;
    if ((env->restart_count && env->restart_count[0] &&
         env_id("SLURM_RESTART_COUNT", env->restart_count, 1L << 29, &restarts, err)) ||
        (env->atom_attempt && env->atom_attempt[0] &&
         env_id("ATOM_ATTEMPT", env->atom_attempt, 1L << 29, &attempt, err))) {
        layout_free(&l);
        return -1;
    }
    if (env->atom_job_id && strlen(env->atom_job_id) >= ATOM_NAME_MAX) {
        layout_free(&l);
        return atom_errf(err, "ATOM_JOB_ID is longer than %d characters", ATOM_NAME_MAX - 1);
    }
    plan->ranks = calloc((size_t)world, sizeof *plan->ranks);
    plan->nodes = calloc((size_t)l.n_nodes, sizeof *plan->nodes);
    if (!plan->ranks || !plan->nodes) {
        layout_free(&l);
        atom_plan_free(plan);
        return atom_errf(err, "out of memory for a plan of %d ranks", world);
    }
    if (env->atom_job_id && env->atom_job_id[0])
        snprintf(plan->job_id, sizeof plan->job_id, "%s", env->atom_job_id);
    else
        snprintf(plan->job_id, sizeof plan->job_id, "slurm-%.50s", env->job_id ? env->job_id : "?");
    plan->attempt = attempt + restarts;
    plan->world = world;
    plan->n_nodes = l.n_nodes;
    plan->n_switches_used = 1; /* Slurm knows the topology; atom does not see it here */
    /* Every task gets the same srun options, so this task's GPUs speak for every node's. */
    bool has_gpus = gpu_count(env->gpus) > 0;
    for (int i = 0; i < l.n_nodes; i++) {
        atom_node *node = &plan->nodes[i];
        memcpy(node->name, l.names[i], sizeof node->name);
        node->gpus = l.counts[i];
        node->has_gpus = has_gpus;
        for (int k = 0; k < l.counts[i]; k++) {
            int r = l.first[i] + k;
            /* gpu is the task's slot on its node; Slurm itself narrows CUDA_VISIBLE_DEVICES. */
            plan->ranks[r] = (atom_rank_place){r, r / tensor, r % tensor, i, k};
        }
    }
    layout_free(&l);
    return 0;
}
