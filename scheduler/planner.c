/* scheduler/planner.c: gang placement of a job's ranks on free GPUs (see planner.h for the rules).
 *
 * The job is cut into "units" that must each sit on one node:
 *   - without gpus_per_node, a unit is one tensor-parallel group (tensor GPUs), and a node with
 *     f free GPUs holds f / tensor of them;
 *   - with gpus_per_node = g, a unit is a whole node's share (g GPUs, g / tensor groups), and a
 *     node holds one if it has at least g free GPUs.
 * A switch's capacity is the sum of its nodes' capacities, read from its histogram of free GPU
 * counts. Since capacities add up, the fewest switches that can hold the job are the k largest
 * for the smallest such k, which the planner finds exactly; it then picks nodes inside them.
 */
#include "scheduler/planner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The job's shape in units (see the file comment). */
typedef struct job_shape {
    int tensor, data, world;
    int per_node;     /* gpus_per_node, 0 when the job takes what nodes have */
    int unit_gpus;    /* GPUs of one unit: tensor, or per_node */
    long need;        /* units to place */
    bool cuda;        /* device: cuda asks for real GPUs */
} job_shape;

void atom_placement_free(atom_placement *pl)
{
    if (!pl)
        return;
    free(pl->node);
    free(pl->gpu);
    memset(pl, 0, sizeof *pl);
}

/* Units a node with `free_gpus` free GPUs can hold. */
static inline long node_units(const job_shape *js, int free_gpus)
{
    if (js->per_node)
        return free_gpus >= js->per_node ? 1 : 0;
    return free_gpus / js->tensor;
}

/* ---- histogram upkeep: every change of a node's free count or up state goes through these ---- */

static void hist_remove(atom_planner *pl, int n)
{
    if (!pl->up[n])
        return;
    const atom_node *node = &pl->inv->nodes[n];
    atom_planner_switch *sw = &pl->switches[node->switch_id];
    sw->free_hist[pl->free_gpus[n]]--;
    if (pl->free_gpus[n] == node->gpus)
        sw->whole_hist[node->gpus]--;
    pl->free_total -= pl->free_gpus[n];
}

static void hist_add(atom_planner *pl, int n)
{
    if (!pl->up[n])
        return;
    const atom_node *node = &pl->inv->nodes[n];
    atom_planner_switch *sw = &pl->switches[node->switch_id];
    sw->free_hist[pl->free_gpus[n]]++;
    if (pl->free_gpus[n] == node->gpus)
        sw->whole_hist[node->gpus]++;
    pl->free_total += pl->free_gpus[n];
}

void atom_planner_free(atom_planner *pl)
{
    if (!pl)
        return;
    if (pl->switches && pl->inv) {
        for (int s = 0; s < pl->inv->n_switches; s++) {
            free(pl->switches[s].free_hist);
            free(pl->switches[s].whole_hist);
            free(pl->switches[s].nodes);
        }
    }
    free(pl->switches);
    free(pl->gpu_base);
    free(pl->busy);
    free(pl->free_gpus);
    free(pl->up);
    free(pl->size_hist);
    free(pl->scratch.cap);
    free(pl->scratch.whole_cap);
    free(pl->scratch.order);
    free(pl->scratch.take);
    free(pl->scratch.node_order);
    free(pl->scratch.node_take);
    free(pl->scratch.bucket);
    memset(pl, 0, sizeof *pl);
}

int atom_planner_init(atom_planner *pl, const atom_inventory *inv, atom_err *err)
{
    memset(pl, 0, sizeof *pl);
    if (inv->n_nodes <= 0 || inv->n_switches <= 0)
        return atom_errf(err, "planner: the inventory has no nodes or no switches");
    pl->inv = inv;
    long total = 0;
    for (int n = 0; n < inv->n_nodes; n++) {
        const atom_node *node = &inv->nodes[n];
        if (node->gpus <= 0)
            return atom_errf(err, "planner: node %s has %d GPUs", node->name, node->gpus);
        if (node->switch_id < 0 || node->switch_id >= inv->n_switches)
            return atom_errf(err, "planner: node %s has switch index %d of %d", node->name,
                             node->switch_id, inv->n_switches);
        if (node->has_gpus != inv->nodes[0].has_gpus)
            /* One job's ranks all run one backend; a job spread over GPU nodes and CPU-only
             * nodes would not, so the planner keeps to inventories of one kind. */
            return atom_errf(err, "planner: inventory %s mixes nodes with GPUs (%s) and CPU-only "
                             "nodes (%s); list them in separate inventories", inv->name,
                             node->has_gpus ? node->name : inv->nodes[0].name,
                             node->has_gpus ? inv->nodes[0].name : node->name);
        if (node->gpus > pl->max_gpus)
            pl->max_gpus = node->gpus;
        total += node->gpus;
    }
    size_t nn = (size_t)inv->n_nodes, ns = (size_t)inv->n_switches, hist = (size_t)pl->max_gpus + 1;
    pl->gpu_base = malloc(nn * sizeof *pl->gpu_base);
    pl->busy = calloc((size_t)total, 1);
    pl->free_gpus = malloc(nn * sizeof *pl->free_gpus);
    pl->up = malloc(nn * sizeof *pl->up);
    pl->size_hist = calloc(hist, sizeof *pl->size_hist);
    pl->switches = calloc(ns, sizeof *pl->switches);
    pl->scratch.cap = malloc(ns * sizeof *pl->scratch.cap);
    pl->scratch.whole_cap = malloc(ns * sizeof *pl->scratch.whole_cap);
    pl->scratch.order = malloc(ns * sizeof *pl->scratch.order);
    pl->scratch.take = malloc(ns * sizeof *pl->scratch.take);
    pl->scratch.node_order = malloc(nn * sizeof *pl->scratch.node_order);
    pl->scratch.node_take = calloc(nn, sizeof *pl->scratch.node_take);
    pl->scratch.bucket = malloc((2 * hist + 2) * sizeof *pl->scratch.bucket);
    if (!pl->gpu_base || !pl->busy || !pl->free_gpus || !pl->up || !pl->size_hist || !pl->switches ||
        !pl->scratch.cap || !pl->scratch.whole_cap || !pl->scratch.order || !pl->scratch.take ||
        !pl->scratch.node_order || !pl->scratch.node_take || !pl->scratch.bucket)
        goto oom;
    int *per_switch = pl->scratch.order; /* node counts, before order is needed */
    memset(per_switch, 0, ns * sizeof *per_switch);
    for (int n = 0; n < inv->n_nodes; n++)
        per_switch[inv->nodes[n].switch_id]++;
    for (size_t s = 0; s < ns; s++) {
        atom_planner_switch *sw = &pl->switches[s];
        sw->free_hist = calloc(hist, sizeof *sw->free_hist);
        sw->whole_hist = calloc(hist, sizeof *sw->whole_hist);
        sw->nodes = malloc((size_t)(per_switch[s] ? per_switch[s] : 1) * sizeof *sw->nodes);
        if (!sw->free_hist || !sw->whole_hist || !sw->nodes)
            goto oom;
    }
    long base = 0;
    for (int n = 0; n < inv->n_nodes; n++) {
        const atom_node *node = &inv->nodes[n];
        pl->gpu_base[n] = (int)base;
        base += node->gpus;
        pl->free_gpus[n] = node->gpus;
        pl->up[n] = true;
        pl->size_hist[node->gpus]++;
        atom_planner_switch *sw = &pl->switches[node->switch_id];
        sw->nodes[sw->n_nodes++] = n;
        hist_add(pl, n);
    }
    return 0;
oom:
    atom_planner_free(pl);
    return atom_errf(err, "planner: out of memory for %d nodes", inv->n_nodes);
}

int atom_planner_set_busy(atom_planner *pl, int node, int gpu, bool busy, atom_err *err)
{
    if (node < 0 || node >= pl->inv->n_nodes || gpu < 0 || gpu >= pl->inv->nodes[node].gpus)
        return atom_errf(err, "planner: no GPU %d on node %d", gpu, node);
    unsigned char *b = &pl->busy[pl->gpu_base[node] + gpu];
    if (*b == (unsigned char)busy)
        return 0;
    hist_remove(pl, node);
    *b = busy;
    pl->free_gpus[node] += busy ? -1 : 1;
    hist_add(pl, node);
    return 0;
}

int atom_planner_set_node_up(atom_planner *pl, int node, bool up, atom_err *err)
{
    if (node < 0 || node >= pl->inv->n_nodes)
        return atom_errf(err, "planner: no node %d", node);
    hist_remove(pl, node);
    pl->up[node] = up;
    hist_add(pl, node);
    return 0;
}

/* ---- deciding whether a job fits ---- */

static int job_shape_of(const atom_planner *pl, const atom_spec *spec, job_shape *js,
                        atom_err *err)
{
    memset(js, 0, sizeof *js);
    js->tensor = spec->parallelism.tensor;
    js->data = spec->parallelism.data;
    if (js->tensor < 1 || js->data < 1)
        return atom_errf(err, "planner: parallelism.tensor and parallelism.data must be at least 1 "
                         "(got %d and %d)", js->tensor, js->data);
    if ((long)js->tensor * js->data > 1L << 24)
        return atom_errf(err, "planner: %d x %d ranks is more than any cluster", js->tensor,
                         js->data);
    js->world = js->tensor * js->data;
    js->cuda = spec->resources.device == ATOM_DEVICE_CUDA;
    if (spec->resources.gpus != 0 && spec->resources.gpus != js->world)
        return atom_errf(err, "planner: resources.gpus is %d but tensor x data is %d",
                         spec->resources.gpus, js->world);
    js->per_node = spec->resources.gpus_per_node;
    if (js->per_node < 0)
        return atom_errf(err, "planner: resources.gpus_per_node is %d", js->per_node);
    if (js->per_node) {
        if (js->per_node % js->tensor)
            return atom_errf(err, "planner: gpus_per_node %d is not a multiple of tensor %d (a "
                             "tensor-parallel group never crosses a node)", js->per_node,
                             js->tensor);
        if (js->world % js->per_node)
            return atom_errf(err, "planner: %d GPUs do not split into nodes of %d", js->world,
                             js->per_node);
        js->unit_gpus = js->per_node;
        js->need = js->world / js->per_node;
    } else {
        js->unit_gpus = js->tensor;
        js->need = js->data;
    }
    (void)pl;
    return 0;
}

/* Units the switch's up nodes hold, from a histogram. */
static long hist_units(const job_shape *js, const int *h, int max_gpus)
{
    long units = 0;
    for (int f = js->unit_gpus; f <= max_gpus; f++)
        if (h[f])
            units += (long)h[f] * node_units(js, f);
    return units;
}

/* Fills scratch.cap / whole_cap for every switch, less the excluded nodes; returns the total. */
static long switch_capacities(atom_planner *pl, const job_shape *js, const bool *exclude)
{
    const atom_inventory *inv = pl->inv;
    long total = 0;
    for (int s = 0; s < inv->n_switches; s++) {
        pl->scratch.cap[s] = hist_units(js, pl->switches[s].free_hist, pl->max_gpus);
        pl->scratch.whole_cap[s] = hist_units(js, pl->switches[s].whole_hist, pl->max_gpus);
    }
    if (exclude) {
        for (int n = 0; n < inv->n_nodes; n++) {
            if (!exclude[n] || !pl->up[n])
                continue;
            long u = node_units(js, pl->free_gpus[n]);
            int s = inv->nodes[n].switch_id;
            pl->scratch.cap[s] -= u;
            if (pl->free_gpus[n] == inv->nodes[n].gpus)
                pl->scratch.whole_cap[s] -= u;
        }
    }
    for (int s = 0; s < inv->n_switches; s++)
        total += pl->scratch.cap[s];
    return total;
}

/* Units the cluster would hold with every node idle and up: tells "not now" from "never". */
static long idle_capacity(const atom_planner *pl, const job_shape *js, const bool *exclude)
{
    long units = 0;
    for (int f = js->unit_gpus; f <= pl->max_gpus; f++)
        units += (long)pl->size_hist[f] * node_units(js, f);
    if (exclude)
        for (int n = 0; n < pl->inv->n_nodes; n++)
            if (exclude[n])
                units -= node_units(js, pl->inv->nodes[n].gpus);
    return units;
}

/* The largest free block on an up, non-excluded node, and where. */
static int largest_block(const atom_planner *pl, const bool *exclude, int *where)
{
    int best = -1, best_free = 0;
    for (int s = 0; s < pl->inv->n_switches; s++) {
        const atom_planner_switch *sw = &pl->switches[s];
        int top = pl->max_gpus;
        while (top > 0 && !sw->free_hist[top])
            top--;
        if (top <= best_free && !exclude)
            continue;
        for (int i = 0; i < sw->n_nodes; i++) {
            int n = sw->nodes[i];
            if (pl->up[n] && !(exclude && exclude[n]) && pl->free_gpus[n] > best_free) {
                best_free = pl->free_gpus[n];
                best = n;
            }
        }
    }
    *where = best;
    return best_free;
}

static void explain_refusal(const atom_planner *pl, const job_shape *js, const bool *exclude,
                            long have, bool never, char *why, size_t why_len)
{
    if (!why || !why_len)
        return;
    char ask[192];
    if (js->per_node)
        snprintf(ask, sizeof ask, "needs %d GPUs as %ld nodes with %d free GPUs each", js->world,
                 js->need, js->per_node);
    else if (js->tensor > 1)
        snprintf(ask, sizeof ask, "needs %d GPUs in %ld groups of %d within a node", js->world,
                 js->need, js->tensor);
    else
        snprintf(ask, sizeof ask, "needs %d GPUs", js->world);
    char room[192];
    if (js->per_node)
        snprintf(room, sizeof room, "%ld node%s %s %d free", have, have == 1 ? "" : "s",
                 have == 1 ? "has" : "have", js->per_node);
    else if (js->tensor > 1)
        snprintf(room, sizeof room, "there is room for %ld group%s of %d", have,
                 have == 1 ? "" : "s", js->tensor);
    else
        snprintf(room, sizeof room, "%ld %s free", have, have == 1 ? "is" : "are");
    char largest[160] = "";
    if (js->unit_gpus > 1) {
        int where = -1;
        int block = largest_block(pl, exclude, &where);
        if (where >= 0)
            snprintf(largest, sizeof largest, ", largest free block is %d on %s", block,
                     pl->inv->nodes[where].name);
        else
            snprintf(largest, sizeof largest, ", no node has a free GPU");
    }
    if (never) {
        char idle[160];
        if (js->per_node)
            snprintf(idle, sizeof idle, "it has %ld node%s with %d or more GPUs", have,
                     have == 1 ? "" : "s", js->per_node);
        else if (js->tensor > 1)
            snprintf(idle, sizeof idle, "it has room for %ld group%s of %d (the largest node has "
                     "%d GPUs)", have, have == 1 ? "" : "s", js->tensor, pl->max_gpus);
        else
            snprintf(idle, sizeof idle, "it has %ld GPU%s", have, have == 1 ? "" : "s");
        snprintf(why, why_len, "%s; this cluster cannot hold it even when idle: %s%s", ask, idle,
                 exclude ? " outside the excluded nodes" : "");
    }
    else
        snprintf(why, why_len, "%s; %s%s", ask, room, largest);
}

/* Decides whether the job fits, filling scratch.cap on the way. */
static atom_place_result assess(atom_planner *pl, const job_shape *js, const bool *exclude,
                                char *why, size_t why_len)
{
    if (js->cuda && !pl->inv->nodes[0].has_gpus) {
        if (why && why_len)
            snprintf(why, why_len, "needs %d CUDA GPUs; this cluster cannot hold it even when "
                     "idle: its nodes have CPU slots only", js->world);
        return ATOM_PLACE_NO_FIT;
    }
    if (js->unit_gpus > pl->max_gpus || (long)js->world > pl->free_total) {
        /* Neither check looks at a switch: the common refusals cost nothing. */
        long idle = idle_capacity(pl, js, exclude);
        bool never = idle < js->need;
        long have = never ? idle : switch_capacities(pl, js, exclude);
        explain_refusal(pl, js, exclude, have, never, why, why_len);
        return ATOM_PLACE_NO_FIT;
    }
    long total = switch_capacities(pl, js, exclude);
    if (total < js->need) {
        long idle = idle_capacity(pl, js, exclude);
        bool never = idle < js->need;
        explain_refusal(pl, js, exclude, never ? idle : total, never, why, why_len);
        return ATOM_PLACE_NO_FIT;
    }
    return ATOM_PLACE_OK;
}

atom_place_result atom_planner_fits(atom_planner *pl, const atom_spec *spec, const bool *exclude,
                                    char *why, size_t why_len, atom_err *err)
{
    job_shape js;
    if (job_shape_of(pl, spec, &js, err))
        return ATOM_PLACE_ERROR;
    return assess(pl, &js, exclude, why, why_len);
}

/* ---- choosing switches and nodes ---- */

static int cmp_cap_desc(const void *a, const void *b, void *ctx)
{
    const long *cap = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    if (cap[x] != cap[y])
        return cap[x] > cap[y] ? -1 : 1;
    return x - y;
}

/* Picks the fewest switches that hold js->need units; fills scratch.take and returns how many
 * switches, in scratch.order, in placement order. */
static int choose_switches(atom_planner *pl, const job_shape *js)
{
    int ns = pl->inv->n_switches;
    long *cap = pl->scratch.cap, *whole = pl->scratch.whole_cap;
    int *order = pl->scratch.order, *take = pl->scratch.take;
    int m = 0;
    for (int s = 0; s < ns; s++) {
        take[s] = 0;
        if (cap[s] > 0)
            order[m++] = s;
    }
    /* One switch if any can: prefer one whose whole free nodes suffice, then the tightest fit
     * (big switches stay free for big jobs), then the lowest index. */
    int best = -1;
    for (int i = 0; i < m; i++) {
        int s = order[i];
        if (cap[s] < js->need)
            continue;
        if (best < 0) {
            best = s;
            continue;
        }
        bool s_whole = whole[s] >= js->need, b_whole = whole[best] >= js->need;
        if (s_whole != b_whole ? s_whole : cap[s] < cap[best])
            best = s;
    }
    if (best >= 0) {
        order[0] = best;
        take[best] = (int)js->need;
        return 1;
    }
    qsort_r(order, (size_t)m, sizeof *order, cmp_cap_desc, cap);
    long sum = 0;
    int k = 0;
    while (k < m && sum + cap[order[k]] < js->need)
        sum += cap[order[k++]];
    /* order[0..k-1] are the largest switches and fall short; one more closes the gap: the
     * tightest of the rest that does. */
    long gap = js->need - sum;
    int last = k;
    for (int i = k + 1; i < m; i++)
        if (cap[order[i]] >= gap && cap[order[i]] < cap[order[last]])
            last = i;
    int chosen = order[last];
    memmove(&order[k + 1], &order[k], (size_t)(last - k) * sizeof *order);
    order[k] = chosen;
    for (int i = 0; i < k; i++)
        take[order[i]] = (int)cap[order[i]];
    take[chosen] = (int)gap;
    return k + 1;
}

/* choose_nodes' sort key of node n (whole free nodes above partial ones, then by free GPUs), or
 * -1 when n cannot take a unit of the job. inline: without it gcc -O2 calls it, and placing a
 * 4,096-GPU job in atom-bench-plan took 19 us instead of 15. */
static inline int node_sort_key(const atom_planner *pl, const job_shape *js, const bool *exclude, int n)
{
    if (!pl->up[n] || (exclude && exclude[n]) || node_units(js, pl->free_gpus[n]) == 0)
        return -1;
    bool whole = pl->free_gpus[n] == pl->inv->nodes[n].gpus;
    return (whole ? pl->max_gpus + 1 : 0) + pl->free_gpus[n];
}

/* Picks nodes of switch s for `want` units: whole free nodes first, most units first; the last
 * piece on the tightest node that holds it. Appends to used[] and fills node_take; returns the
 * new count of used nodes. */
static int choose_nodes(atom_planner *pl, const job_shape *js, const bool *exclude, int s,
                        long want, int *used, int n_used)
{
    const atom_planner_switch *sw = &pl->switches[s];
    int maxg = pl->max_gpus;
    int nkeys = 2 * (maxg + 1);
    int *bucket = pl->scratch.bucket; /* nkeys + 1 */
    int *sorted = pl->scratch.node_order;
    memset(bucket, 0, (size_t)(nkeys + 1) * sizeof *bucket);
    /* Key: whole nodes above partial ones, then by free GPUs; counting sort, descending. */
    int m = 0;
    for (int i = 0; i < sw->n_nodes; i++) {
        int key = node_sort_key(pl, js, exclude, sw->nodes[i]);
        if (key < 0)
            continue;
        bucket[nkeys - 1 - key + 1]++;
        m++;
    }
    for (int k = 1; k <= nkeys; k++)
        bucket[k] += bucket[k - 1];
    for (int i = 0; i < sw->n_nodes; i++) {
        int key = node_sort_key(pl, js, exclude, sw->nodes[i]);
        if (key >= 0)
            sorted[bucket[nkeys - 1 - key]++] = sw->nodes[i];
    }
    long left = want;
    int spare = -1; /* the tightest node skipped for holding more than what was left */
    long spare_units = 0;
    for (int i = 0; i < m && left > 0; i++) {
        int n = sorted[i];
        long u = node_units(js, pl->free_gpus[n]);
        if (u <= left) {
            pl->scratch.node_take[n] = (int)u;
            used[n_used++] = n;
            left -= u;
        } else if (spare < 0 || u < spare_units ||
                   (u == spare_units && pl->free_gpus[spare] == pl->inv->nodes[spare].gpus)) {
            /* Equal room: break a partly used node rather than a whole one. */
            spare = n;
            spare_units = u;
        }
    }
    if (left > 0 && spare >= 0) {
        pl->scratch.node_take[spare] = (int)left;
        used[n_used++] = spare;
        left = 0;
    }
    return n_used;
}

atom_place_result atom_planner_place(atom_planner *pl, const atom_spec *spec, const bool *exclude,
                                     atom_placement *out, char *why, size_t why_len,
                                     atom_err *err)
{
    job_shape js;
    if (job_shape_of(pl, spec, &js, err))
        return ATOM_PLACE_ERROR;
    atom_place_result fit = assess(pl, &js, exclude, why, why_len);
    if (fit != ATOM_PLACE_OK)
        return fit;

    memset(out, 0, sizeof *out);
    out->world = js.world;
    out->tensor = js.tensor;
    out->data = js.data;
    out->node = malloc((size_t)js.world * sizeof *out->node);
    out->gpu = malloc((size_t)js.world * sizeof *out->gpu);
    int *used = malloc((size_t)pl->inv->n_nodes * sizeof *used);
    if (!out->node || !out->gpu || !used) {
        free(used);
        atom_placement_free(out);
        atom_errf(err, "planner: out of memory for %d ranks", js.world);
        return ATOM_PLACE_ERROR;
    }
    int n_sw = choose_switches(pl, &js);
    int n_used = 0;
    for (int i = 0; i < n_sw; i++) {
        int s = pl->scratch.order[i];
        n_used = choose_nodes(pl, &js, exclude, s, pl->scratch.take[s], used, n_used);
    }
    /* Ranks in node order: each node's ranks are whole tensor-parallel groups on its lowest free
     * GPUs, so rank = dp * tensor + tp falls out of counting. */
    int rank = 0;
    int groups_per_unit = js.unit_gpus / js.tensor;
    for (int i = 0; i < n_used; i++) {
        int n = used[i];
        int gpus = pl->scratch.node_take[n] * groups_per_unit * js.tensor;
        pl->scratch.node_take[n] = 0;
        unsigned char *busy = &pl->busy[pl->gpu_base[n]];
        hist_remove(pl, n);
        for (int g = 0; g < pl->inv->nodes[n].gpus && gpus > 0; g++) {
            if (busy[g])
                continue;
            busy[g] = 1;
            out->node[rank] = n;
            out->gpu[rank] = g;
            rank++;
            gpus--;
            pl->free_gpus[n]--;
        }
        hist_add(pl, n);
    }
    free(used);
    if (rank != js.world) {
        /* The capacities promised more than the nodes gave: a bug, never a refusal. Undo. */
        out->world = rank;
        atom_planner_release(pl, out);
        atom_placement_free(out);
        atom_errf(err, "planner: internal error: placed %d of %d ranks", rank, js.world);
        return ATOM_PLACE_ERROR;
    }
    return ATOM_PLACE_OK;
}

void atom_planner_release(atom_planner *pl, const atom_placement *placement)
{
    for (int r = 0; r < placement->world; r++) {
        int n = placement->node[r], g = placement->gpu[r];
        if (n < 0 || n >= pl->inv->n_nodes || g < 0 || g >= pl->inv->nodes[n].gpus)
            continue;
        unsigned char *b = &pl->busy[pl->gpu_base[n] + g];
        if (!*b)
            continue;
        hist_remove(pl, n);
        *b = 0;
        pl->free_gpus[n]++;
        hist_add(pl, n);
    }
}

/* ---- the plan of a placement ---- */

int atom_plan_from_placement(const atom_inventory *inv, const atom_spec *spec,
                             const atom_placement *placement, atom_plan *plan, atom_err *err)
{
    memset(plan, 0, sizeof *plan);
    plan->spec = *spec;
    plan->world = placement->world;
    int *index = malloc((size_t)inv->n_nodes * sizeof *index);
    bool *switch_used = calloc((size_t)inv->n_switches, sizeof *switch_used);
    plan->ranks = calloc((size_t)placement->world, sizeof *plan->ranks);
    plan->nodes = calloc((size_t)placement->world, sizeof *plan->nodes);
    if (!index || !switch_used || !plan->ranks || !plan->nodes) {
        free(index);
        free(switch_used);
        atom_plan_free(plan);
        return atom_errf(err, "plan: out of memory for %d ranks", placement->world);
    }
    for (int n = 0; n < inv->n_nodes; n++)
        index[n] = -1;
    for (int r = 0; r < placement->world; r++) {
        int n = placement->node[r];
        if (index[n] < 0) {
            index[n] = plan->n_nodes;
            plan->nodes[plan->n_nodes++] = inv->nodes[n];
            if (!switch_used[inv->nodes[n].switch_id]) {
                switch_used[inv->nodes[n].switch_id] = true;
                plan->n_switches_used++;
            }
        }
        atom_rank_place *rp = &plan->ranks[r];
        rp->rank = r;
        rp->dp = r / placement->tensor;
        rp->tp = r % placement->tensor;
        rp->node = index[n];
        rp->gpu = placement->gpu[r];
    }
    free(index);
    free(switch_used);
    return 0;
}
