/* common/plan.c: the plan file, a job's resolved layout that the launcher writes and every worker
 * reads (JSON, through jansson):
 *
 *   {"format": "atom-plan", "version": 1, "job_id": "...", "attempt": 0,
 *    "run_dir": "...", "heartbeat_addr": "...",
 *    "atomd_host": "...", "heartbeat_tcp": "host:port", "munge_socket": "...",
 *    "spec": { the normalised spec, atom_spec_to_json },
 *    "world": 8, "switches_used": 1,
 *    "nodes": [{"name": "gpu001", "addr": "", "gpus": 8, "switch": 0, "has_gpus": true}, ...],
 *    "ranks": [{"rank": 0, "dp": 0, "tp": 0, "node": 0, "gpu": 0}, ...]}
 *
 * A worker trusts nothing it reads: every rank must appear once, in range, on a distinct GPU, with
 * rank = dp * tensor + tp and its tensor-parallel group on one node, or the read fails with a
 * sentence naming what is wrong.
 */
#include "common/json_get.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_FORMAT "atom-plan"
#define PLAN_VERSION 1
/* A plan for 10,000 ranks is about 1 MB; anything far larger is not a plan. */
#define PLAN_MAX_BYTES (64u << 20)

void atom_plan_free(atom_plan *plan)
{
    if (!plan)
        return;
    free(plan->ranks);
    free(plan->nodes);
    plan->ranks = NULL;
    plan->nodes = NULL;
    plan->world = 0;
    plan->n_nodes = 0;
}

char *atom_plan_to_json(const atom_plan *plan)
{
    char *spec_text = atom_spec_to_json(&plan->spec);
    if (!spec_text)
        return NULL;
    json_error_t jerr;
    json_t *spec = json_loads(spec_text, 0, &jerr);
    free(spec_text);
    if (!spec)
        return NULL;
    json_t *root = json_object();
    json_t *nodes = json_array();
    json_t *ranks = json_array();
    if (!root || !nodes || !ranks) {
        json_decref(spec);
        json_decref(root);
        json_decref(nodes);
        json_decref(ranks);
        return NULL;
    }
    json_object_set_new(root, "format", json_string(PLAN_FORMAT));
    json_object_set_new(root, "version", json_integer(PLAN_VERSION));
    json_object_set_new(root, "job_id", json_string(plan->job_id));
    json_object_set_new(root, "attempt", json_integer(plan->attempt));
    json_object_set_new(root, "run_dir", json_string(plan->run_dir));
    json_object_set_new(root, "heartbeat_addr", json_string(plan->heartbeat_addr));
    json_object_set_new(root, "atomd_host", json_string(plan->atomd_host));
    json_object_set_new(root, "heartbeat_tcp", json_string(plan->heartbeat_tcp));
    json_object_set_new(root, "munge_socket", json_string(plan->munge_socket));
    json_object_set_new(root, "spec", spec);
    json_object_set_new(root, "world", json_integer(plan->world));
    json_object_set_new(root, "switches_used", json_integer(plan->n_switches_used));
    for (int i = 0; i < plan->n_nodes; i++) {
        const atom_node *n = &plan->nodes[i];
        json_array_append_new(nodes, json_pack("{s:s, s:s, s:i, s:i, s:b}", "name", n->name,
                                               "addr", n->addr, "gpus", n->gpus, "switch",
                                               n->switch_id, "has_gpus", n->has_gpus));
    }
    json_object_set_new(root, "nodes", nodes);
    for (int r = 0; r < plan->world; r++) {
        const atom_rank_place *p = &plan->ranks[r];
        json_array_append_new(ranks, json_pack("{s:i, s:i, s:i, s:i, s:i}", "rank", p->rank, "dp",
                                               p->dp, "tp", p->tp, "node", p->node, "gpu", p->gpu));
    }
    json_object_set_new(root, "ranks", ranks);
    /* One rank per line would be kinder to people, but compact keeps a 10,000-rank plan small;
     * JSON_PRESERVE_ORDER keeps the file in the order documented above. */
    char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(root);
    return text;
}

static int read_nodes(json_t *root, atom_plan *plan, atom_err *err)
{
    json_t *nodes = json_object_get(root, "nodes");
    if (!json_is_array(nodes) || json_array_size(nodes) == 0)
        return atom_errf(err, "plan: 'nodes' must be a non-empty list");
    size_t n = json_array_size(nodes);
    if (n > (size_t)plan->world)
        return atom_errf(err, "plan: %zu nodes for %d ranks (a node without a rank)", n,
                         plan->world);
    plan->nodes = calloc(n, sizeof *plan->nodes);
    if (!plan->nodes)
        return atom_errf(err, "plan: out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(nodes, i);
        char where[48];
        snprintf(where, sizeof where, "plan: nodes[%zu].", i);
        if (!json_is_object(o))
            return atom_errf(err, "plan: nodes[%zu] must be an object", i);
        atom_node *node = &plan->nodes[i];
        if (atom_json_get_str(o, "name", node->name, sizeof node->name, where, err) ||
            atom_json_get_str(o, "addr", node->addr, sizeof node->addr, where, err) ||
            atom_json_get_int(o, "gpus", 1, 1 << 20, &node->gpus, where, err) ||
            atom_json_get_int(o, "switch", 0, 1 << 20, &node->switch_id, where, err))
            return -1;
        if (node->name[0] == '\0')
            return atom_errf(err, "plan: nodes[%zu].name is empty", i);
        json_t *hg = json_object_get(o, "has_gpus");
        if (!json_is_boolean(hg))
            return atom_errf(err, "plan: nodes[%zu].has_gpus must be true or false", i);
        node->has_gpus = json_is_true(hg);
        plan->n_nodes++;
    }
    return 0;
}

/* Every rank once, in range, on a distinct GPU, in Megatron's order, tensor groups inside nodes. */
static int check_ranks(const atom_plan *plan, atom_err *err)
{
    int tensor = plan->spec.parallelism.tensor;
    int world = plan->world;
    long total_gpus = 0;
    int *gpu_base = malloc((size_t)plan->n_nodes * sizeof *gpu_base);
    if (!gpu_base)
        return atom_errf(err, "plan: out of memory");
    for (int i = 0; i < plan->n_nodes; i++) {
        gpu_base[i] = (int)total_gpus;
        total_gpus += plan->nodes[i].gpus;
    }
    unsigned char *taken = calloc((size_t)total_gpus, 1);
    unsigned char *node_used = calloc((size_t)plan->n_nodes, 1);
    if (!taken || !node_used) {
        free(gpu_base);
        free(taken);
        free(node_used);
        return atom_errf(err, "plan: out of memory");
    }
    int rc = 0;
    for (int r = 0; r < world && rc == 0; r++) {
        const atom_rank_place *p = &plan->ranks[r];
        if (p->rank != r)
            rc = atom_errf(err, "plan: ranks[%d] is rank %d (ranks must be listed 0..%d, each "
                           "once)", r, p->rank, world - 1);
        else if (p->dp != r / tensor || p->tp != r % tensor)
            rc = atom_errf(err, "plan: rank %d has dp %d, tp %d; with tensor %d it must be dp %d, "
                           "tp %d (rank = dp x tensor + tp)", r, p->dp, p->tp, tensor,
                           r / tensor, r % tensor);
        else if (p->node < 0 || p->node >= plan->n_nodes)
            rc = atom_errf(err, "plan: rank %d is on node %d of %d", r, p->node, plan->n_nodes);
        else if (p->gpu < 0 || p->gpu >= plan->nodes[p->node].gpus)
            rc = atom_errf(err, "plan: rank %d is on GPU %d of node %s, which has %d", r, p->gpu,
                           plan->nodes[p->node].name, plan->nodes[p->node].gpus);
        else if (taken[gpu_base[p->node] + p->gpu])
            rc = atom_errf(err, "plan: GPU %d of node %s is given to two ranks (rank %d and an "
                           "earlier one)", p->gpu, plan->nodes[p->node].name, r);
        else if (p->tp > 0 && plan->ranks[r - 1].node != p->node)
            rc = atom_errf(err, "plan: tensor-parallel group %d crosses nodes (rank %d on %s, "
                           "rank %d on %s)", p->dp, r - 1,
                           plan->nodes[plan->ranks[r - 1].node].name, r,
                           plan->nodes[p->node].name);
        else {
            taken[gpu_base[p->node] + p->gpu] = 1;
            node_used[p->node] = 1;
        }
    }
    for (int i = 0; i < plan->n_nodes && rc == 0; i++)
        if (!node_used[i])
            rc = atom_errf(err, "plan: node %s has no rank", plan->nodes[i].name);
    free(gpu_base);
    free(taken);
    free(node_used);
    return rc;
}

static int plan_from_root(json_t *root, atom_plan *plan, atom_err *err)
{
    if (!json_is_object(root))
        return atom_errf(err, "plan: expected a JSON object");
    json_t *format = json_object_get(root, "format");
    if (!json_is_string(format) || strcmp(json_string_value(format), PLAN_FORMAT))
        return atom_errf(err, "plan: not an atom plan (\"format\" is not \"%s\")", PLAN_FORMAT);
    int version = 0;
    if (atom_json_get_int(root, "version", 0, 1 << 20, &version, "plan: ", err))
        return -1;
    if (version != PLAN_VERSION)
        return atom_errf(err, "plan: version %d; this atom reads version %d", version,
                         PLAN_VERSION);
    if (atom_json_get_str(root, "job_id", plan->job_id, sizeof plan->job_id, "plan: ", err) ||
        atom_json_get_int(root, "attempt", 0, 1 << 30, &plan->attempt, "plan: ", err) ||
        atom_json_get_str(root, "run_dir", plan->run_dir, sizeof plan->run_dir, "plan: ", err) ||
        atom_json_get_str(root, "heartbeat_addr", plan->heartbeat_addr, sizeof plan->heartbeat_addr, "plan: ",
                   err) ||
        atom_json_get_str(root, "atomd_host", plan->atomd_host, sizeof plan->atomd_host, "plan: ", err) ||
        atom_json_get_str(root, "heartbeat_tcp", plan->heartbeat_tcp, sizeof plan->heartbeat_tcp, "plan: ",
                          err) ||
        atom_json_get_str(root, "munge_socket", plan->munge_socket, sizeof plan->munge_socket, "plan: ",
                          err) ||
        atom_json_get_int(root, "world", 1, 1 << 24, &plan->world, "plan: ", err) ||
        atom_json_get_int(root, "switches_used", 0, 1 << 20, &plan->n_switches_used, "plan: ", err))
        return -1;
    json_t *spec = json_object_get(root, "spec");
    if (!json_is_object(spec))
        return atom_errf(err, "plan: 'spec' must be an object");
    char *spec_text = json_dumps(spec, JSON_COMPACT);
    if (!spec_text)
        return atom_errf(err, "plan: out of memory");
    atom_err spec_err = {{0}};
    int rc = atom_spec_from_json(spec_text, &plan->spec, &spec_err);
    free(spec_text);
    if (rc)
        return atom_errf(err, "plan: bad spec: %s", spec_err.msg);
    int tensor = plan->spec.parallelism.tensor, data = plan->spec.parallelism.data;
    if (tensor < 1 || data < 1 || (long)tensor * data != plan->world)
        return atom_errf(err, "plan: world is %d but the spec's tensor x data is %d x %d",
                         plan->world, tensor, data);
    if (read_nodes(root, plan, err))
        return -1;
    json_t *ranks = json_object_get(root, "ranks");
    if (!json_is_array(ranks))
        return atom_errf(err, "plan: 'ranks' must be a list");
    if (json_array_size(ranks) != (size_t)plan->world)
        return atom_errf(err, "plan: %zu ranks listed for a world of %d", json_array_size(ranks),
                         plan->world);
    plan->ranks = calloc((size_t)plan->world, sizeof *plan->ranks);
    if (!plan->ranks)
        return atom_errf(err, "plan: out of memory");
    for (int r = 0; r < plan->world; r++) {
        json_t *o = json_array_get(ranks, (size_t)r);
        char where[48];
        snprintf(where, sizeof where, "plan: ranks[%d].", r);
        if (!json_is_object(o))
            return atom_errf(err, "plan: ranks[%d] must be an object", r);
        atom_rank_place *p = &plan->ranks[r];
        if (atom_json_get_int(o, "rank", 0, 1 << 24, &p->rank, where, err) ||
            atom_json_get_int(o, "dp", 0, 1 << 24, &p->dp, where, err) ||
            atom_json_get_int(o, "tp", 0, 1 << 24, &p->tp, where, err) ||
            atom_json_get_int(o, "node", 0, 1 << 24, &p->node, where, err) ||
            atom_json_get_int(o, "gpu", 0, 1 << 24, &p->gpu, where, err))
            return -1;
    }
    return check_ranks(plan, err);
}

int atom_plan_from_json(const char *json, atom_plan *plan, atom_err *err)
{
    memset(plan, 0, sizeof *plan);
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return atom_errf(err, "plan: not valid JSON at line %d, column %d: %s", jerr.line,
                         jerr.column, jerr.text);
    int rc = plan_from_root(root, plan, err);
    json_decref(root);
    if (rc)
        atom_plan_free(plan);
    return rc;
}

int atom_plan_write(const atom_plan *plan, const char *path, atom_err *err)
{
    char *text = atom_plan_to_json(plan);
    if (!text)
        return atom_errf(err, "plan: cannot encode the plan for %s (out of memory or a bad spec)",
                         path);
    size_t len = strlen(text);
    /* A trailing newline so that `cat` and line-based tools behave. */
    char *line = realloc(text, len + 2);
    if (!line) {
        free(text);
        return atom_errf(err, "plan: out of memory");
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    int rc = atom_write_file_atomic(path, line, len + 1, err);
    free(line);
    return rc;
}

int atom_plan_read(const char *path, atom_plan *plan, atom_err *err)
{
    memset(plan, 0, sizeof *plan);
    size_t len = 0;
    char *text = atom_read_file(path, PLAN_MAX_BYTES, &len, err);
    if (!text)
        return -1;
    atom_err inner = {{0}};
    int rc = atom_plan_from_json(text, plan, &inner);
    free(text);
    if (rc)
        return atom_errf(err, "%s: %s", path, inner.msg);
    return 0;
}
