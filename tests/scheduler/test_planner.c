/* tests/scheduler/test_planner.c: the planner's promises, checked on thousands of random small
 * clusters and jobs against a brute-force search, plus hand-picked cases.
 *
 * The brute force knows nothing of the planner's histograms: it assigns tensor-parallel groups (or
 * per-node shares) to concrete nodes by exhaustive search, once per subset of switches, so it
 * gives both "does the job fit at all" and "the fewest switches it can fit in".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/planner.h"

/* ---- a seeded generator, so every failing case can be replayed from its number ---- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rng_int(int lo, int hi) /* inclusive */
{
    return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1));
}

static bool rng_chance(int percent)
{
    return rng_int(0, 99) < percent;
}

/* ---- small inventories built in code ---- */

static void make_inventory(atom_inventory *inv, int n_switches, int n_nodes, const int *gpus,
                           const int *switch_of)
{
    memset(inv, 0, sizeof *inv);
    snprintf(inv->name, sizeof inv->name, "test");
    inv->n_switches = n_switches;
    inv->switches = calloc((size_t)n_switches, sizeof *inv->switches);
    for (int s = 0; s < n_switches; s++)
        snprintf(inv->switches[s], ATOM_NAME_MAX, "leaf%d", s);
    inv->n_nodes = n_nodes;
    inv->nodes = calloc((size_t)n_nodes, sizeof *inv->nodes);
    for (int n = 0; n < n_nodes; n++) {
        snprintf(inv->nodes[n].name, ATOM_NAME_MAX, "node%02d", n);
        inv->nodes[n].gpus = gpus[n];
        inv->nodes[n].switch_id = switch_of[n];
        inv->nodes[n].has_gpus = true;
    }
}

static atom_spec job(int tensor, int data, int per_node)
{
    atom_spec s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "job");
    s.parallelism.tensor = tensor;
    s.parallelism.data = data;
    s.resources.gpus = tensor * data;
    s.resources.gpus_per_node = per_node;
    return s;
}

/* ---- brute force ---- */

typedef struct bf_case {
    const atom_inventory *inv;
    const int *free_gpus; /* per node, counting only up and not excluded nodes (else 0) */
    int unit;             /* GPUs one unit takes on one node */
    bool one_per_node;    /* gpus_per_node jobs: a node holds one unit or none */
} bf_case;

/* Can `need` units be put on nodes first..n_nodes-1 of the switch subset `mask`, units going to
 * nodes in nondecreasing index order (so each multiset of nodes is tried once)? left[] is each
 * node's remaining free GPUs. */
static bool bf_assign(const bf_case *c, unsigned mask, int *left, int first, int need)
{
    if (need == 0)
        return true;
    for (int n = first; n < c->inv->n_nodes; n++) {
        if (!(mask >> c->inv->nodes[n].switch_id & 1u) || left[n] < c->unit)
            continue;
        left[n] -= c->unit;
        /* A gpus_per_node job takes a node once: the next unit goes to a later node. */
        bool ok = bf_assign(c, mask, left, c->one_per_node ? n + 1 : n, need - 1);
        left[n] += c->unit;
        if (ok)
            return true;
    }
    return false;
}

/* The fewest switches the job fits in, or -1 when it does not fit. */
static int bf_min_switches(const bf_case *c, int need)
{
    int best = -1;
    int *left = malloc((size_t)c->inv->n_nodes * sizeof *left);
    for (unsigned mask = 1; mask < 1u << c->inv->n_switches; mask++) {
        int k = __builtin_popcount(mask);
        if (best >= 0 && k >= best)
            continue;
        memcpy(left, c->free_gpus, (size_t)c->inv->n_nodes * sizeof *left);
        if (bf_assign(c, mask, left, 0, need))
            best = k;
    }
    free(left);
    return best;
}

/* ---- the planner's state, snapshotted so a release can be compared with what came before ---- */

typedef struct snapshot {
    unsigned char *busy;
    int *free_gpus;
    int *hist; /* every switch's free and whole histograms, one after another */
    long free_total;
    size_t n_busy, n_hist;
} snapshot;

static void take_snapshot(const atom_planner *pl, snapshot *s)
{
    size_t total = 0;
    for (int n = 0; n < pl->inv->n_nodes; n++)
        total += (size_t)pl->inv->nodes[n].gpus;
    size_t h = (size_t)pl->max_gpus + 1;
    s->n_busy = total;
    s->n_hist = 2 * h * (size_t)pl->inv->n_switches;
    s->busy = malloc(total);
    memcpy(s->busy, pl->busy, total);
    s->free_gpus = malloc((size_t)pl->inv->n_nodes * sizeof *s->free_gpus);
    memcpy(s->free_gpus, pl->free_gpus, (size_t)pl->inv->n_nodes * sizeof *s->free_gpus);
    s->hist = malloc(s->n_hist * sizeof *s->hist);
    for (int w = 0; w < pl->inv->n_switches; w++) {
        memcpy(&s->hist[2 * h * (size_t)w], pl->switches[w].free_hist, h * sizeof(int));
        memcpy(&s->hist[2 * h * (size_t)w + h], pl->switches[w].whole_hist, h * sizeof(int));
    }
    s->free_total = pl->free_total;
}

static void assert_same_snapshot(const snapshot *a, const snapshot *b, int n_nodes)
{
    assert_memory_equal(a->busy, b->busy, a->n_busy);
    assert_memory_equal(a->free_gpus, b->free_gpus, (size_t)n_nodes * sizeof(int));
    assert_memory_equal(a->hist, b->hist, a->n_hist * sizeof(int));
    assert_int_equal(a->free_total, b->free_total);
}

static void free_snapshot(snapshot *s)
{
    free(s->busy);
    free(s->free_gpus);
    free(s->hist);
}

/* The histograms agree with the per-node counts (recomputed from scratch). */
static void assert_histograms_consistent(const atom_planner *pl)
{
    int h = pl->max_gpus + 1;
    int *fh = calloc((size_t)h * (size_t)pl->inv->n_switches, sizeof *fh);
    int *wh = calloc((size_t)h * (size_t)pl->inv->n_switches, sizeof *wh);
    long total = 0;
    for (int n = 0; n < pl->inv->n_nodes; n++) {
        int f = 0;
        for (int g = 0; g < pl->inv->nodes[n].gpus; g++)
            f += !pl->busy[pl->gpu_base[n] + g];
        assert_int_equal(f, pl->free_gpus[n]);
        if (!pl->up[n])
            continue;
        int s = pl->inv->nodes[n].switch_id;
        fh[s * h + f]++;
        if (f == pl->inv->nodes[n].gpus)
            wh[s * h + f]++;
        total += f;
    }
    for (int s = 0; s < pl->inv->n_switches; s++) {
        assert_memory_equal(&fh[s * h], pl->switches[s].free_hist, (size_t)h * sizeof(int));
        assert_memory_equal(&wh[s * h], pl->switches[s].whole_hist, (size_t)h * sizeof(int));
    }
    assert_int_equal(total, pl->free_total);
    free(fh);
    free(wh);
}

/* Every promise of a successful placement, given what was free before. */
static void assert_valid_placement(const atom_planner *pl, const atom_spec *spec,
                                   const atom_placement *p, const unsigned char *busy_before,
                                   const bool *exclude)
{
    const atom_inventory *inv = pl->inv;
    int T = spec->parallelism.tensor, D = spec->parallelism.data;
    assert_int_equal(p->world, T * D);
    assert_int_equal(p->tensor, T);
    assert_int_equal(p->data, D);
    size_t total = 0;
    for (int n = 0; n < inv->n_nodes; n++)
        total += (size_t)inv->nodes[n].gpus;
    unsigned char *seen = calloc(total, 1);
    int *per_node = calloc((size_t)inv->n_nodes, sizeof *per_node);
    for (int r = 0; r < p->world; r++) {
        int n = p->node[r], g = p->gpu[r];
        assert_in_range(n, 0, inv->n_nodes - 1);
        assert_in_range(g, 0, inv->nodes[n].gpus - 1);
        int idx = pl->gpu_base[n] + g;
        assert_false(seen[idx]);          /* no GPU twice */
        seen[idx] = 1;
        assert_false(busy_before[idx]);   /* never a busy GPU */
        assert_true(pl->busy[idx]);       /* and it is busy now */
        assert_true(pl->up[n]);           /* never a down node */
        if (exclude)
            assert_false(exclude[n]);     /* never an excluded node */
        if (r % T != 0)
            assert_int_equal(p->node[r - 1], n); /* TP group inside one node */
        per_node[n]++;
    }
    if (spec->resources.gpus_per_node)
        for (int n = 0; n < inv->n_nodes; n++)
            assert_true(per_node[n] == 0 || per_node[n] == spec->resources.gpus_per_node);
    free(seen);
    free(per_node);
}

static int switches_used(const atom_inventory *inv, const atom_placement *p)
{
    unsigned mask = 0;
    for (int r = 0; r < p->world; r++)
        mask |= 1u << inv->nodes[p->node[r]].switch_id;
    return __builtin_popcount(mask);
}

/* ---- the random test ---- */

static void random_case(int case_no, int *placed, int *refused)
{
    rng_state = 0x5eed0000ull + (uint64_t)case_no;
    int n_switches = rng_int(1, 4);
    int n_nodes = rng_int(1, 7);
    int gpus[8], switch_of[8];
    bool uniform = rng_chance(50);
    int common_gpus = (int[]){1, 2, 4, 8}[rng_int(0, 3)];
    for (int n = 0; n < n_nodes; n++) {
        gpus[n] = uniform ? common_gpus : rng_int(1, 8);
        switch_of[n] = rng_int(0, n_switches - 1);
    }
    atom_inventory inv;
    make_inventory(&inv, n_switches, n_nodes, gpus, switch_of);
    atom_planner pl;
    atom_err err = {{0}};
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);

    /* Some GPUs busy, some nodes down, sometimes some nodes excluded for this job. */
    int busy_pct = rng_int(0, 60);
    for (int n = 0; n < n_nodes; n++) {
        for (int g = 0; g < gpus[n]; g++)
            if (rng_chance(busy_pct))
                assert_int_equal(atom_planner_set_busy(&pl, n, g, true, &err), 0);
        if (rng_chance(10))
            assert_int_equal(atom_planner_set_node_up(&pl, n, false, &err), 0);
    }
    bool exclude_buf[8] = {0};
    bool *exclude = NULL;
    if (rng_chance(20)) {
        exclude = exclude_buf;
        for (int n = 0; n < n_nodes; n++)
            exclude[n] = rng_chance(25);
    }
    int T = (int[]){1, 1, 2, 2, 4, 8, 3}[rng_int(0, 6)];
    int D = rng_int(1, 6);
    int per_node = 0;
    if (rng_chance(25))
        per_node = T * rng_int(1, 2);
    if (per_node && (T * D) % per_node)
        D = per_node / T * rng_int(1, 3);
    atom_spec spec = job(T, D, per_node);
    assert_histograms_consistent(&pl);

    int free_now[8];
    for (int n = 0; n < n_nodes; n++)
        free_now[n] = (pl.up[n] && !(exclude && exclude[n])) ? pl.free_gpus[n] : 0;
    bf_case bf = {.inv = &inv, .free_gpus = free_now, .unit = per_node ? per_node : T,
                  .one_per_node = per_node != 0};
    int need = per_node ? T * D / per_node : D;
    int min_sw = bf_min_switches(&bf, need);

    snapshot before, after;
    take_snapshot(&pl, &before);
    atom_placement p;
    char why[512] = "";
    atom_place_result fits = atom_planner_fits(&pl, &spec, exclude, NULL, 0, &err);
    atom_place_result res = atom_planner_place(&pl, &spec, exclude, &p, why, sizeof why, &err);
    assert_int_equal(fits, res); /* the dry run agrees with the real one */
    if (min_sw < 0) {
        /* refused exactly when nothing fits, with a reason, and nothing changed */
        if (res != ATOM_PLACE_NO_FIT)
            fail_msg("case %d: T=%d D=%d g=%d placed where brute force finds no room", case_no, T,
                     D, per_node);
        assert_true(strstr(why, "needs ") == why);
        take_snapshot(&pl, &after);
        assert_same_snapshot(&before, &after, n_nodes);
        free_snapshot(&after);
        (*refused)++;
    } else {
        if (res != ATOM_PLACE_OK)
            fail_msg("case %d: T=%d D=%d g=%d refused (%s) but brute force fits it in %d "
                     "switch(es)", case_no, T, D, per_node, why, min_sw);
        assert_valid_placement(&pl, &spec, &p, before.busy, exclude);
        if (switches_used(&inv, &p) != min_sw)
            fail_msg("case %d: T=%d D=%d g=%d used %d switches, brute force needs %d", case_no, T,
                     D, per_node, switches_used(&inv, &p), min_sw);
        assert_int_equal(pl.free_total, before.free_total - p.world);
        assert_histograms_consistent(&pl);
        /* rank = dp * T + tp in the plan built from it */
        atom_plan plan;
        assert_int_equal(atom_plan_from_placement(&inv, &spec, &p, &plan, &err), 0);
        for (int r = 0; r < plan.world; r++) {
            assert_int_equal(plan.ranks[r].rank, r);
            assert_int_equal(plan.ranks[r].dp * T + plan.ranks[r].tp, r);
            assert_in_range(plan.ranks[r].tp, 0, T - 1);
            assert_string_equal(plan.nodes[plan.ranks[r].node].name, inv.nodes[p.node[r]].name);
        }
        assert_int_equal(plan.n_switches_used, min_sw);
        atom_plan_free(&plan);
        /* release restores every count */
        atom_planner_release(&pl, &p);
        take_snapshot(&pl, &after);
        assert_same_snapshot(&before, &after, n_nodes);
        free_snapshot(&after);
        atom_placement_free(&p);
        (*placed)++;
    }
    free_snapshot(&before);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void test_random_against_brute_force(void **state)
{
    (void)state;
    int placed = 0, refused = 0;
    for (int i = 0; i < 5000; i++)
        random_case(i, &placed, &refused);
    /* The generator must exercise both outcomes, or the test proves little. */
    printf("random planner cases: %d placed, %d refused\n", placed, refused);
    assert_true(placed > 1000);
    assert_true(refused > 500);
}

/* Fill a cluster with random jobs until one is refused, release them in a random order: the state
 * ends exactly as it began, and the histograms stay right all along. */
static void test_fill_and_drain(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        rng_state = 0xf111ull + (uint64_t)round;
        int n_nodes = rng_int(2, 12), n_switches = rng_int(1, 4);
        int gpus[12], switch_of[12];
        for (int n = 0; n < n_nodes; n++) {
            gpus[n] = rng_int(1, 8);
            switch_of[n] = rng_int(0, n_switches - 1);
        }
        atom_inventory inv;
        make_inventory(&inv, n_switches, n_nodes, gpus, switch_of);
        atom_planner pl;
        atom_err err;
        assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
        snapshot start, end;
        take_snapshot(&pl, &start);
        atom_placement jobs[64];
        int n_jobs = 0, refusals = 0;
        while (n_jobs < 64 && refusals < 8) {
            atom_spec spec = job(rng_int(1, 2), rng_int(1, 4), 0);
            char why[256];
            atom_place_result r = atom_planner_place(&pl, &spec, NULL, &jobs[n_jobs], why,
                                                     sizeof why, &err);
            assert_int_not_equal(r, ATOM_PLACE_ERROR);
            if (r == ATOM_PLACE_OK)
                n_jobs++;
            else
                refusals++;
            assert_histograms_consistent(&pl);
        }
        while (n_jobs > 0) {
            int k = rng_int(0, n_jobs - 1);
            atom_planner_release(&pl, &jobs[k]);
            atom_placement_free(&jobs[k]);
            jobs[k] = jobs[--n_jobs];
            assert_histograms_consistent(&pl);
        }
        take_snapshot(&pl, &end);
        assert_same_snapshot(&start, &end, n_nodes);
        free_snapshot(&start);
        free_snapshot(&end);
        atom_planner_free(&pl);
        atom_inventory_free(&inv);
    }
}

/* ---- hand-picked cases ---- */

/* 16 nodes of 8 under two switches of 8 nodes: the lab cluster's shape. */
static void lab(atom_inventory *inv)
{
    int gpus[16], sw[16];
    for (int n = 0; n < 16; n++) {
        gpus[n] = 8;
        sw[n] = n / 8;
    }
    make_inventory(inv, 2, 16, gpus, sw);
}

static void test_whole_nodes_one_switch(void **state)
{
    (void)state;
    atom_inventory inv;
    lab(&inv);
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    /* Half of node 0 busy: a 16-GPU TP=8 job takes two whole nodes, not the broken one. */
    for (int g = 0; g < 4; g++)
        atom_planner_set_busy(&pl, 0, g, true, &err);
    atom_spec spec = job(8, 2, 0);
    atom_placement p;
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    assert_int_equal(switches_used(&inv, &p), 1);
    for (int r = 0; r < 16; r++) {
        assert_int_not_equal(p.node[r], 0);
        assert_int_equal(p.gpu[r], r % 8);
    }
    assert_int_equal(p.node[0], p.node[7]);
    assert_int_not_equal(p.node[7], p.node[8]);
    atom_placement_free(&p);

    /* A 12-GPU data-parallel job: one whole node, then the 4 left fill the half-used node 0
     * (the tightest that holds them) rather than breaking another whole node. */
    spec = job(1, 12, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    int on_node0 = 0;
    for (int r = 0; r < 12; r++)
        on_node0 += p.node[r] == 0;
    assert_int_equal(on_node0, 4);
    assert_int_equal(pl.free_gpus[0], 0);
    atom_placement_free(&p);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void test_fewest_switches(void **state)
{
    (void)state;
    /* Three switches with 1, 2 and 3 nodes of 4 GPUs: a 12-GPU job fits in leaf2 alone; a
     * 16-GPU job needs two, never three: leaf2 and then the tightest that closes the gap, leaf0,
     * which leaves leaf1's 8 GPUs together. */
    int gpus[6] = {4, 4, 4, 4, 4, 4}, sw[6] = {0, 1, 1, 2, 2, 2};
    atom_inventory inv;
    make_inventory(&inv, 3, 6, gpus, sw);
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    atom_spec spec = job(4, 3, 0);
    atom_placement p;
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    assert_int_equal(switches_used(&inv, &p), 1);
    for (int r = 0; r < 12; r++)
        assert_int_equal(inv.nodes[p.node[r]].switch_id, 2);
    atom_planner_release(&pl, &p);
    atom_placement_free(&p);
    spec = job(2, 8, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    assert_int_equal(switches_used(&inv, &p), 2);
    for (int r = 0; r < 16; r++)
        assert_int_not_equal(inv.nodes[p.node[r]].switch_id, 1);
    atom_placement_free(&p);
    /* An 8-GPU job of tensor 4 now fits in leaf1, the one switch with room. */
    spec = job(4, 2, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    for (int r = 0; r < 8; r++)
        assert_int_equal(inv.nodes[p.node[r]].switch_id, 1);
    atom_placement_free(&p);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

/* When one switch can hold the job, one whose whole free nodes hold it wins over one where the
 * job would be spread over partly used nodes, even if the latter is the tighter fit. */
static void test_whole_nodes_beat_tight_switch(void **state)
{
    (void)state;
    int gpus[4] = {8, 8, 8, 8}, sw[4] = {0, 0, 1, 1};
    atom_inventory inv;
    make_inventory(&inv, 2, 4, gpus, sw);
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    /* leaf0: two nodes with 4 free each (room for 2 groups of 4, none whole);
     * leaf1: two whole nodes (room for 4 groups of 4) */
    for (int g = 0; g < 4; g++) {
        atom_planner_set_busy(&pl, 0, g, true, &err);
        atom_planner_set_busy(&pl, 1, g, true, &err);
    }
    atom_spec spec = job(4, 2, 0);
    atom_placement p;
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    for (int r = 0; r < 8; r++)
        assert_int_equal(p.node[r], 2); /* one whole node of leaf1, not two halves in leaf0 */
    atom_placement_free(&p);
    /* now each switch has room for 2 groups of 4: a job of 3 groups needs both */
    spec = job(4, 3, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    assert_int_equal(switches_used(&inv, &p), 2);
    atom_placement_free(&p);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void test_refusals_say_why(void **state)
{
    (void)state;
    atom_inventory inv;
    lab(&inv);
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    /* Every node but node 2 has 4 busy GPUs; node 2 is fully free: one group of 8 fits, not 2. */
    for (int n = 0; n < 16; n++)
        for (int g = 0; g < 4 && n != 2; g++)
            atom_planner_set_busy(&pl, n, g, true, &err);
    atom_spec spec = job(8, 2, 0);
    atom_placement p;
    char why[512];
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_NO_FIT);
    assert_non_null(strstr(why, "needs 16 GPUs in 2 groups of 8 within a node"));
    assert_non_null(strstr(why, "room for 1 group of 8"));
    /* with node 2 excluded, the largest free block left is 4 */
    bool exclude[16] = {0};
    exclude[2] = true;
    spec = job(8, 1, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, exclude, &p, why, sizeof why, &err),
                     ATOM_PLACE_NO_FIT);
    assert_non_null(strstr(why, "largest free block is 4 on node"));
    /* node 2 down instead: the same */
    atom_planner_set_node_up(&pl, 2, false, &err);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_NO_FIT);
    atom_planner_set_node_up(&pl, 2, true, &err);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_OK);
    for (int r = 0; r < 8; r++)
        assert_int_equal(p.node[r], 2);
    atom_placement_free(&p);
    /* bigger than the idle cluster: "never", not "not now" */
    spec = job(8, 17, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_NO_FIT);
    assert_non_null(strstr(why, "cannot hold it even when idle"));
    spec = job(16, 1, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_NO_FIT);
    assert_non_null(strstr(why, "cannot hold it even when idle"));
    /* a request no cluster can satisfy is an error, not a refusal */
    spec = job(4, 2, 6);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_ERROR);
    assert_non_null(strstr(err.msg, "not a multiple of tensor"));
    spec = job(0, 2, 0);
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_ERROR);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void test_gpus_per_node(void **state)
{
    (void)state;
    atom_inventory inv;
    lab(&inv);
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    /* 8 ranks, 2 per node: four nodes, two ranks (one TP group of 2) each */
    atom_spec spec = job(2, 4, 2);
    atom_placement p;
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    for (int r = 0; r < 8; r += 2) {
        assert_int_equal(p.node[r], p.node[r + 1]);
        if (r)
            assert_int_not_equal(p.node[r], p.node[r - 1]);
    }
    atom_placement_free(&p);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void test_set_busy_bounds(void **state)
{
    (void)state;
    atom_inventory inv;
    lab(&inv);
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    assert_int_equal(atom_planner_set_busy(&pl, 16, 0, true, &err), -1);
    assert_int_equal(atom_planner_set_busy(&pl, 0, 8, true, &err), -1);
    assert_int_equal(atom_planner_set_node_up(&pl, -1, false, &err), -1);
    /* setting a GPU busy twice counts once */
    atom_planner_set_busy(&pl, 0, 0, true, &err);
    atom_planner_set_busy(&pl, 0, 0, true, &err);
    assert_int_equal(pl.free_gpus[0], 7);
    assert_histograms_consistent(&pl);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void test_device_kinds(void **state)
{
    (void)state;
    atom_inventory inv;
    lab(&inv);
    atom_planner pl;
    atom_err err = {{0}};
    /* a CPU-only node among GPU nodes: refused at init, naming both kinds */
    inv.nodes[5].has_gpus = false;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), -1);
    assert_non_null(strstr(err.msg, "node05"));
    /* all CPU-only: a cuda job never fits, a cpu job does */
    for (int n = 0; n < inv.n_nodes; n++)
        inv.nodes[n].has_gpus = false;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    atom_spec spec = job(2, 2, 0);
    spec.resources.device = ATOM_DEVICE_CUDA;
    atom_placement p;
    char why[256];
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_NO_FIT);
    assert_non_null(strstr(why, "CPU slots only"));
    spec.resources.device = ATOM_DEVICE_CPU;
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, why, sizeof why, &err),
                     ATOM_PLACE_OK);
    atom_placement_free(&p);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_brute_force),
        cmocka_unit_test(test_fill_and_drain),
        cmocka_unit_test(test_whole_nodes_one_switch),
        cmocka_unit_test(test_fewest_switches),
        cmocka_unit_test(test_whole_nodes_beat_tight_switch),
        cmocka_unit_test(test_refusals_say_why),
        cmocka_unit_test(test_gpus_per_node),
        cmocka_unit_test(test_set_busy_bounds),
        cmocka_unit_test(test_device_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
