/* common/inventory.c: the cluster inventory (nodes, their GPUs, their leaf switches).
 *
 * The inventory is a small YAML file read with libyaml's document API, so that every error can
 * name the file:line:column of the value at fault, and every error of the file is reported at
 * once (atom_diags), like the job spec's:
 *
 *   name: lab-cluster
 *   switches: [leaf01, leaf02]
 *   nodes:
 *     - {name: gpu001, switch: leaf01, gpus: 8, addr: 10.0.0.1}
 *     - {name: "gpu[002-016]", switch: leaf01, gpus: 8}     # Slurm-style ranges expand
 *
 * Also: atom_inventory_local, this machine as one node whose "GPUs" are CPU slots.
 */
#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* An inventory file larger than this is a mistake (the 10,000-GPU one is a few kB). */
#define INVENTORY_MAX_BYTES (4u << 20)
/* More GPUs (or CPU slots) on one node than this is a typo. */
#define INVENTORY_MAX_GPUS_PER_NODE 1024
/* A range like gpu[1-99999999] would exhaust memory before saying anything useful. */
#define INVENTORY_MAX_NODES 100000

/* What the parser carries while walking one document. */
typedef struct inv_parse {
    yaml_document_t *doc;
    const char *file;
    atom_diags *diags;
    atom_inventory *inv;
    int node_cap;
    const yaml_node_t **origin; /* [node_cap] the name each node was expanded from */
    const yaml_node_t *current; /* the name being expanded */
} inv_parse;

static void diag_at(inv_parse *p, const yaml_node_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void diag_at(inv_parse *p, const yaml_node_t *n, const char *key, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = n ? (int)n->start_mark.line + 1 : 0;
    int col = n ? (int)n->start_mark.column + 1 : 0;
    atom_diags_add(p->diags, p->file, line, col, key, "%s", msg);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A plain name: letters, digits and . _ - (what a host name or switch name may hold). */
static bool valid_name(const char *s)
{
    if (!*s || strlen(s) >= ATOM_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
            return false;
    return true;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!s)
        return false;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes")) {
        *out = true;
        return true;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no")) {
        *out = false;
        return true;
    }
    return false;
}

static int find_switch(const atom_inventory *inv, const char *name)
{
    for (int i = 0; i < inv->n_switches; i++)
        if (!strcmp(inv->switches[i], name))
            return i;
    return -1;
}

static int append_node(inv_parse *p, const atom_node *node)
{
    atom_inventory *inv = p->inv;
    if (inv->n_nodes == p->node_cap) {
        int cap = p->node_cap ? p->node_cap * 2 : 64;
        atom_node *grown = realloc(inv->nodes, (size_t)cap * sizeof *grown);
        if (!grown)
            return -1;
        inv->nodes = grown;
        const yaml_node_t **origin = realloc(p->origin, (size_t)cap * sizeof *origin);
        if (!origin)
            return -1;
        p->origin = origin;
        p->node_cap = cap;
    }
    p->origin[inv->n_nodes] = p->current;
    inv->nodes[inv->n_nodes++] = *node;
    return 0;
}

/* Expands a Slurm-style host list pattern "prefix[a-b,c,d-e]suffix" into names. Numbers keep
 * the zero padding of the lower bound of each piece ("gpu[002-016]" gives gpu002 ... gpu016).
 * Calls emit for each name; returns 0, or -1 with a reason in why. A name without brackets is
 * emitted as it is. */
typedef int (*emit_fn)(void *ctx, const char *name);

static int expand_hostlist(const char *pattern, emit_fn emit, void *ctx, char *why, size_t whylen)
{
    const char *open = strchr(pattern, '[');
    if (!open) {
        if (strchr(pattern, ']'))
            return snprintf(why, whylen, "']' without '['"), -1;
        return emit(ctx, pattern);
    }
    const char *close = strchr(open, ']');
    if (!close)
        return snprintf(why, whylen, "'[' without ']'"), -1;
    if (strchr(close + 1, '[') || strchr(close + 1, ']'))
        return snprintf(why, whylen, "only one [range] per name is supported"), -1;
    size_t prefix_len = (size_t)(open - pattern);
    const char *suffix = close + 1;

    const char *piece = open + 1;
    if (piece == close)
        return snprintf(why, whylen, "empty range []"), -1;
    while (piece < close) {
        const char *comma = memchr(piece, ',', (size_t)(close - piece));
        const char *piece_end = comma ? comma : close;
        char buf[64];
        size_t n = (size_t)(piece_end - piece);
        if (n == 0 || n >= sizeof buf)
            return snprintf(why, whylen, "empty or overlong piece in range"), -1;
        memcpy(buf, piece, n);
        buf[n] = '\0';
        char *dash = strchr(buf, '-');
        const char *lo_s = buf, *hi_s = buf;
        if (dash) {
            *dash = '\0';
            hi_s = dash + 1;
        }
        for (const char *c = lo_s; *c; c++)
            if (!isdigit((unsigned char)*c))
                return snprintf(why, whylen, "range bound '%s' is not a number", lo_s), -1;
        for (const char *c = hi_s; *c; c++)
            if (!isdigit((unsigned char)*c))
                return snprintf(why, whylen, "range bound '%s' is not a number", hi_s), -1;
        int lo, hi;
        if (!parse_int(lo_s, 0, 99999999, &lo) || !parse_int(hi_s, 0, 99999999, &hi))
            return snprintf(why, whylen, "range bound missing or too large in '%.40s'", piece), -1;
        if (hi < lo)
            return snprintf(why, whylen, "range %d-%d runs backwards", lo, hi), -1;
        if (hi - lo >= INVENTORY_MAX_NODES)
            return snprintf(why, whylen, "range %d-%d has more than %d nodes", lo, hi,
                            INVENTORY_MAX_NODES), -1;
        int width = (int)strlen(lo_s);
        for (int v = lo; v <= hi; v++) {
            char name[ATOM_NAME_MAX * 2];
            int len = snprintf(name, sizeof name, "%.*s%0*d%s", (int)prefix_len, pattern, width, v,
                               suffix);
            if (len < 0 || len >= ATOM_NAME_MAX)
                return snprintf(why, whylen, "expanded name is longer than %d characters",
                                ATOM_NAME_MAX - 1), -1;
            if (emit(ctx, name))
                return snprintf(why, whylen, "%s", "out of memory"), -1;
        }
        piece = comma ? comma + 1 : close;
    }
    return 0;
}

/* One node entry being expanded: the fields it gives every name of its range. */
typedef struct node_template {
    inv_parse *p;
    atom_node node;
} node_template;

static int emit_node(void *ctx, const char *name)
{
    node_template *t = ctx;
    atom_node node = t->node;
    snprintf(node.name, sizeof node.name, "%s", name);
    return append_node(t->p, &node);
}

static void parse_switches(inv_parse *p, const yaml_node_t *seq)
{
    if (seq->type != YAML_SEQUENCE_NODE) {
        diag_at(p, seq, "switches", "expected a list of switch names");
        return;
    }
    int n = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    p->inv->switches = calloc((size_t)(n ? n : 1), sizeof *p->inv->switches);
    if (!p->inv->switches) {
        diag_at(p, seq, "switches", "out of memory");
        return;
    }
    for (int i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(p->doc, seq->data.sequence.items.start[i]);
        char key[64];
        snprintf(key, sizeof key, "switches[%d]", i);
        const char *name = scalar(item);
        if (!name || !valid_name(name)) {
            diag_at(p, item, key, "a switch name is letters, digits, '.', '_' or '-' (at most %d)",
                    ATOM_NAME_MAX - 1);
            continue;
        }
        if (find_switch(p->inv, name) >= 0) {
            diag_at(p, item, key, "switch '%s' is listed twice", name);
            continue;
        }
        snprintf(p->inv->switches[p->inv->n_switches++], ATOM_NAME_MAX, "%s", name);
    }
}

static void parse_node_entry(inv_parse *p, int index, const yaml_node_t *map)
{
    char key[96];
    snprintf(key, sizeof key, "nodes[%d]", index);
    if (map->type != YAML_MAPPING_NODE) {
        diag_at(p, map, key, "expected a mapping {name, switch, gpus[, addr, has_gpus]}");
        return;
    }
    node_template t = {.p = p};
    t.node.has_gpus = true;
    t.node.switch_id = -1;
    const char *name = NULL;
    const yaml_node_t *name_node = map, *addr_node = NULL;
    bool have_gpus = false, have_switch = false, ok = true;

    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(p->doc, pair->value);
        const char *ks = scalar(k), *vs = scalar(v);
        char fkey[128];
        snprintf(fkey, sizeof fkey, "%s.%s", key, ks ? ks : "?");
        if (!ks) {
            diag_at(p, k, key, "keys are plain names");
            ok = false;
        } else if (!strcmp(ks, "name")) {
            if (!vs || !*vs) {
                diag_at(p, v, fkey, "expected a node name or range like gpu[001-016]");
                ok = false;
            }
            name = vs;
            name_node = v;
        } else if (!strcmp(ks, "switch")) {
            int id = vs ? find_switch(p->inv, vs) : -1;
            if (id < 0) {
                diag_at(p, v, fkey, "'%s' is not in the switches list", vs ? vs : "(not a name)");
                ok = false;
            }
            t.node.switch_id = id;
            have_switch = true;
        } else if (!strcmp(ks, "gpus")) {
            if (!parse_int(vs, 1, INVENTORY_MAX_GPUS_PER_NODE, &t.node.gpus)) {
                diag_at(p, v, fkey, "expected a whole number of GPUs from 1 to %d",
                        INVENTORY_MAX_GPUS_PER_NODE);
                ok = false;
            }
            have_gpus = true;
        } else if (!strcmp(ks, "addr")) {
            if (!vs || !*vs || strlen(vs) >= sizeof t.node.addr || strchr(vs, ' ')) {
                diag_at(p, v, fkey, "expected a host name or address (at most %d characters)",
                        ATOM_NAME_MAX - 1);
                ok = false;
            } else {
                snprintf(t.node.addr, sizeof t.node.addr, "%s", vs);
            }
            addr_node = v;
        } else if (!strcmp(ks, "has_gpus")) {
            if (!parse_bool(vs, &t.node.has_gpus)) {
                diag_at(p, v, fkey, "expected true or false");
                ok = false;
            }
        } else {
            diag_at(p, k, fkey, "unknown key '%s' (expected name, switch, gpus, addr, has_gpus)",
                    ks);
            ok = false;
        }
    }
    if (!name) {
        diag_at(p, map, key, "missing 'name'");
        ok = false;
    }
    if (!have_switch) {
        diag_at(p, map, key, "missing 'switch'");
        ok = false;
    }
    if (!have_gpus) {
        diag_at(p, map, key, "missing 'gpus'");
        ok = false;
    }
    if (name && addr_node && strchr(name, '[')) {
        /* One address for many nodes would send every rank to the same host. */
        diag_at(p, addr_node, key, "'addr' cannot be given for a range of nodes ('%s')", name);
        ok = false;
    }
    if (!ok)
        return;

    char why[160];
    int first = p->inv->n_nodes;
    char nkey[128];
    snprintf(nkey, sizeof nkey, "%s.name", key);
    p->current = name_node;
    if (expand_hostlist(name, emit_node, &t, why, sizeof why)) {
        diag_at(p, name_node, nkey, "bad node name '%s': %s", name, why);
        p->inv->n_nodes = first;
        return;
    }
    for (int i = first; i < p->inv->n_nodes; i++) {
        if (!valid_name(p->inv->nodes[i].name)) {
            diag_at(p, name_node, nkey, "node name '%s' has characters other than letters, "
                    "digits, '.', '_', '-'", p->inv->nodes[i].name);
            p->inv->n_nodes = first;
            return;
        }
    }
    if (p->inv->n_nodes > INVENTORY_MAX_NODES) {
        diag_at(p, name_node, nkey, "more than %d nodes", INVENTORY_MAX_NODES);
        p->inv->n_nodes = first;
    }
}

static int cmp_name_index(const void *a, const void *b, void *names)
{
    const atom_node *nodes = names;
    return strcmp(nodes[*(const int *)a].name, nodes[*(const int *)b].name);
}

/* Sorting an index keeps duplicate detection O(n log n) on the 1,250-node inventory. Each
 * duplicate is reported at the later of the two entries that name it. */
static void check_duplicates(inv_parse *p)
{
    int n = p->inv->n_nodes;
    if (n < 2)
        return;
    int *order = malloc((size_t)n * sizeof *order);
    if (!order)
        return;
    for (int i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, cmp_name_index, p->inv->nodes);
    for (int i = 1; i < n; i++) {
        if (!strcmp(p->inv->nodes[order[i]].name, p->inv->nodes[order[i - 1]].name)) {
            /* qsort_r is not stable: the later entry is the larger index. */
            int later = order[i] > order[i - 1] ? order[i] : order[i - 1];
            diag_at(p, p->origin[later], "nodes", "node '%s' is listed twice",
                    p->inv->nodes[order[i]].name);
            while (i + 1 < n && !strcmp(p->inv->nodes[order[i + 1]].name,
                                        p->inv->nodes[order[i]].name))
                i++;
        }
    }
    free(order);
}

static void parse_root(inv_parse *p, const yaml_node_t *root)
{
    if (!root) {
        atom_diags_add(p->diags, p->file, 0, 0, "", "empty inventory (expected name, switches, "
                       "nodes)");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        diag_at(p, root, "", "an inventory is a mapping with name, switches and nodes");
        return;
    }
    const yaml_node_t *name = NULL, *switches = NULL, *nodes = NULL;
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(p->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(p->doc, pair->value);
        const char *ks = scalar(k);
        if (ks && !strcmp(ks, "name"))
            name = v;
        else if (ks && !strcmp(ks, "switches"))
            switches = v;
        else if (ks && !strcmp(ks, "nodes"))
            nodes = v;
        else
            diag_at(p, k, ks ? ks : "", "unknown key '%s' (expected name, switches, nodes)",
                    ks ? ks : "?");
    }
    if (name) {
        const char *s = scalar(name);
        if (!s || !valid_name(s))
            diag_at(p, name, "name", "expected a cluster name (letters, digits, '.', '_', '-')");
        else
            snprintf(p->inv->name, sizeof p->inv->name, "%s", s);
    } else {
        diag_at(p, root, "name", "missing 'name'");
    }
    if (switches)
        parse_switches(p, switches);
    else
        diag_at(p, root, "switches", "missing 'switches' (the leaf switches' names)");
    if (!nodes) {
        diag_at(p, root, "nodes", "missing 'nodes'");
        return;
    }
    if (nodes->type != YAML_SEQUENCE_NODE) {
        diag_at(p, nodes, "nodes", "expected a list of nodes");
        return;
    }
    int n = (int)(nodes->data.sequence.items.top - nodes->data.sequence.items.start);
    if (n == 0)
        diag_at(p, nodes, "nodes", "an inventory needs at least one node");
    for (int i = 0; i < n; i++)
        parse_node_entry(p, i, yaml_document_get_node(p->doc, nodes->data.sequence.items.start[i]));
    check_duplicates(p);
}

int atom_inventory_parse(const char *text, size_t len, const char *name, atom_inventory *inv,
                         atom_diags *diags)
{
    memset(inv, 0, sizeof *inv);
    const char *file = name ? name : "<inventory>";
    int before = diags->count;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        atom_diags_add(diags, file, 0, 0, "", "cannot start the YAML parser (out of memory)");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        const yaml_mark_t *m = parser.problem ? &parser.problem_mark : &parser.context_mark;
        atom_diags_add(diags, file, (int)m->line + 1, (int)m->column + 1, "", "YAML: %s%s%s",
                       parser.problem ? parser.problem : "syntax error",
                       parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return -1;
    }
    inv_parse p = {.doc = &doc, .file = file, .diags = diags, .inv = inv};
    parse_root(&p, yaml_document_get_root_node(&doc));
    free(p.origin);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (diags->count > before) {
        atom_inventory_free(inv);
        return -1;
    }
    return 0;
}

int atom_inventory_load(const char *path, atom_inventory *inv, atom_diags *diags)
{
    memset(inv, 0, sizeof *inv);
    atom_err err = {{0}};
    size_t len = 0;
    char *text = atom_read_file(path, INVENTORY_MAX_BYTES, &len, &err);
    if (!text) {
        atom_diags_add(diags, path, 0, 0, "", "%s", err.msg);
        return -1;
    }
    int rc = atom_inventory_parse(text, len, path, inv, diags);
    free(text);
    return rc;
}

void atom_inventory_local(atom_inventory *inv, int slots)
{
    memset(inv, 0, sizeof *inv);
    if (slots <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        /* At least 4 so that the example jobs (up to 4 ranks) fit; the extra slots are
         * oversubscribed, which mpirun is told. */
        slots = cores > 4 ? (int)cores : 4;
    }
    snprintf(inv->name, sizeof inv->name, "local");
    inv->nodes = calloc(1, sizeof *inv->nodes);
    inv->switches = calloc(1, sizeof *inv->switches);
    if (!inv->nodes || !inv->switches) {
        atom_inventory_free(inv);
        return;
    }
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0 || !valid_name(host))
        strcpy(host, "localhost");
    /* valid_name has checked that the name fits. */
    memcpy(inv->nodes[0].name, host, strlen(host) + 1);
    /* mpirun reaches this machine as localhost whatever its name resolves to. */
    snprintf(inv->nodes[0].addr, sizeof inv->nodes[0].addr, "localhost");
    inv->nodes[0].gpus = slots;
    inv->nodes[0].switch_id = 0;
    inv->nodes[0].has_gpus = false;
    inv->n_nodes = 1;
    snprintf(inv->switches[0], ATOM_NAME_MAX, "local");
    inv->n_switches = 1;
}

void atom_inventory_free(atom_inventory *inv)
{
    if (!inv)
        return;
    free(inv->nodes);
    free(inv->switches);
    memset(inv, 0, sizeof *inv);
}
