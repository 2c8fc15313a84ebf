/* bench/plan/bench_plan.c: atom-bench-plan, the planner's speed at the scale atom is built for.
 *
 * On the 10,000-GPU inventory (1,250 nodes x 8 under 40 leaf switches) with half of its nodes
 * busy (whole nodes, as gang-scheduled jobs leave them, chosen at random with a fixed seed):
 *   1. place a 4,096-GPU job, tensor 8 x data 512        (target: 10 ms)
 *   2. refuse a job that cannot fit                      (target: microseconds; 10 us here)
 *   3. one scheduling pass trying 10,000 pending jobs    (target: 100 ms)
 *      of mixed sizes, placing those that fit
 * Each figure is the median (and p90) of many repetitions, printed beside its target. Every
 * placement is checked (distinct free GPUs, tensor groups inside a node); a wrong one makes the
 * exit status non-zero, as nccl-tests does for wrong data. Missing a target does not: the table
 * says so.
 *
 *   atom-bench-plan [--cluster FILE] [--seed N] [--reps N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/planner.h"

#ifndef ATOM_BENCH_CLUSTER
#define ATOM_BENCH_CLUSTER "configs/clusters/cluster-10k.yaml"
#endif

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rng_int(int lo, int hi)
{
    return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double median, p90, max;
} stats;

static stats summarise(double *samples, int n)
{
    qsort(samples, (size_t)n, sizeof *samples, cmp_double);
    stats s = {samples[n / 2], samples[(n * 9) / 10], samples[n - 1]};
    return s;
}

static atom_spec job(int tensor, int data)
{
    atom_spec s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "bench");
    s.parallelism.tensor = tensor;
    s.parallelism.data = data;
    s.resources.gpus = tensor * data;
    return s;
}

static int wrong_placements;

/* The promises a worker relies on, checked on every placement the benchmark makes. */
static void check_placement(const atom_planner *pl, const atom_placement *p, unsigned char *seen)
{
    for (int r = 0; r < p->world; r++) {
        int idx = pl->gpu_base[p->node[r]] + p->gpu[r];
        if (seen[idx] || !pl->busy[idx] || (r % p->tensor && p->node[r] != p->node[r - 1])) {
            wrong_placements++;
            return;
        }
        seen[idx] = 1;
    }
    for (int r = 0; r < p->world; r++)
        seen[pl->gpu_base[p->node[r]] + p->gpu[r]] = 0;
}

static void row(const char *what, stats s, const char *unit, double scale, double target,
                const char *note)
{
    printf("  %-44s %10.3f %10.3f %10.3f %8.0f %-3s  %-4s %s\n", what, s.median * scale,
           s.p90 * scale, s.max * scale, target, unit, s.median * scale <= target ? "ok" : "MISS",
           note);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"cluster", required_argument, NULL, 'c'},
        {"seed", required_argument, NULL, 's'},
        {"reps", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cluster = ATOM_BENCH_CLUSTER;
    uint64_t seed = 1;
    int reps = 101;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:s:r:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cluster = optarg;
            break;
        case 's':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        case 'h':
            printf("usage: atom-bench-plan [--cluster FILE] [--seed N] [--reps N]\n");
            return 0;
        default:
            fprintf(stderr, "usage: atom-bench-plan [--cluster FILE] [--seed N] [--reps N]\n");
            return 2;
        }
    }
    if (reps < 5)
        reps = 5;

    atom_inventory inv;
    atom_diags diags = {0};
    double t0 = atom_monotonic();
    if (atom_inventory_load(cluster, &inv, &diags)) {
        atom_diags_print(&diags, stderr);
        return 1;
    }
    double load_s = atom_monotonic() - t0;
    atom_planner pl;
    atom_err err;
    t0 = atom_monotonic();
    if (atom_planner_init(&pl, &inv, &err)) {
        fprintf(stderr, "atom-bench-plan: %s\n", err.msg);
        return 1;
    }
    double init_s = atom_monotonic() - t0;
    long total_gpus = pl.free_total;

    /* Half the nodes busy, whole nodes, chosen by a seeded shuffle. */
    int *order = malloc((size_t)inv.n_nodes * sizeof *order);
    for (int i = 0; i < inv.n_nodes; i++)
        order[i] = i;
    rng_state = seed;
    for (int i = inv.n_nodes - 1; i > 0; i--) {
        int j = rng_int(0, i), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < inv.n_nodes / 2; i++)
        for (int g = 0; g < inv.nodes[order[i]].gpus; g++)
            atom_planner_set_busy(&pl, order[i], g, true, &err);
    free(order);
    long free_start = pl.free_total;
    unsigned char *seen = calloc((size_t)total_gpus, 1);
    double *samples = malloc((size_t)(reps > 64 ? reps : 64) * sizeof *samples);

    printf("# atom-bench-plan: %s: %d nodes, %ld GPUs, %d leaf switches; %d whole nodes busy "
           "(seed %llu), %ld GPUs free\n",
           inv.name, inv.n_nodes, total_gpus, inv.n_switches, inv.n_nodes / 2,
           (unsigned long long)seed, free_start);
    printf("# inventory load %.2f ms, planner init %.3f ms; %d repetitions per figure\n#\n",
           load_s * 1e3, init_s * 1e3, reps);
    printf("# %-44s %10s %10s %10s %12s  %s\n", "what", "median", "p90", "max", "target",
           "verdict");

    /* 1. the 4,096-GPU job: place (timed), check, release (not timed) */
    atom_spec big = job(8, 512);
    int switches = 0, nodes = 0;
    for (int i = 0; i < reps; i++) {
        atom_placement p;
        double s = atom_monotonic();
        atom_place_result r = atom_planner_place(&pl, &big, NULL, &p, NULL, 0, &err);
        samples[i] = atom_monotonic() - s;
        if (r != ATOM_PLACE_OK) {
            fprintf(stderr, "atom-bench-plan: the 4,096-GPU job was refused with %ld GPUs free\n",
                    pl.free_total);
            return 1;
        }
        check_placement(&pl, &p, seen);
        if (i == 0) {
            atom_plan plan;
            if (atom_plan_from_placement(&inv, &big, &p, &plan, &err) == 0) {
                switches = plan.n_switches_used;
                nodes = plan.n_nodes;
                atom_plan_free(&plan);
            }
        }
        atom_planner_release(&pl, &p);
        atom_placement_free(&p);
    }
    char note[128];
    snprintf(note, sizeof note, "(%d nodes, %d switches)", nodes, switches);
    row("place 4096 GPUs, tensor 8 x data 512", summarise(samples, reps), "ms", 1e3, 10, note);

    /* 2. refusals: more GPUs than are free, in batches of 100 so the clock's cost vanishes */
    atom_spec too_big = job(8, (int)(free_start / 8) + 1);
    char why[512];
    const int batch = 100;
    atom_placement scratch; /* never filled: these jobs must be refused (counted wrong if not) */
    for (int i = 0; i < reps; i++) {
        double s = atom_monotonic();
        for (int k = 0; k < batch; k++)
            if (atom_planner_place(&pl, &too_big, NULL, &scratch, NULL, 0, &err) !=
                ATOM_PLACE_NO_FIT)
                wrong_placements++;
        samples[i] = (atom_monotonic() - s) / batch;
    }
    snprintf(note, sizeof note, "(%d GPUs, %ld free)", too_big.resources.gpus, free_start);
    row("refuse a job larger than the free GPUs", summarise(samples, reps), "us", 1e6, 10, note);

    /* The harder refusal: enough GPUs free in all, but no node holds a group of 8. Every node
     * gets 4 of its GPUs busy, then a tensor-8 job is asked for, with its sentence built. */
    for (int n = 0; n < inv.n_nodes; n++)
        for (int g = 0; g < 4; g++)
            atom_planner_set_busy(&pl, n, g, true, &err);
    atom_spec frag = job(8, 2);
    for (int i = 0; i < reps; i++) {
        double s = atom_monotonic();
        for (int k = 0; k < batch; k++)
            if (atom_planner_place(&pl, &frag, NULL, &scratch, why, sizeof why, &err) !=
                ATOM_PLACE_NO_FIT)
                wrong_placements++;
        samples[i] = (atom_monotonic() - s) / batch;
    }
    row("refuse tensor 8 on fragmented nodes, with why", summarise(samples, reps), "us", 1e6, 10,
        "");
    printf("#   why: %s\n", why);
    /* back to half the nodes busy */
    for (int n = 0; n < inv.n_nodes; n++)
        if (pl.free_gpus[n] == 4)
            for (int g = 0; g < 4; g++)
                atom_planner_set_busy(&pl, n, g, false, &err);
    if (pl.free_total != free_start) {
        fprintf(stderr, "atom-bench-plan: state not restored (%ld free, expected %ld)\n",
                pl.free_total, free_start);
        return 1;
    }

    /* 3. a scheduling pass: 10,000 pending jobs of mixed sizes, in queue order; each one that fits
     * is placed. The jobs are drawn once; each repetition starts from the same state. */
    enum { PENDING = 10000 };
    atom_spec *queue = malloc(PENDING * sizeof *queue);
    rng_state = seed * 7919 + 17;
    for (int i = 0; i < PENDING; i++) {
        int kind = rng_int(0, 99);
        if (kind < 40)
            queue[i] = job(1, 1 << rng_int(0, 3));              /* 1-8 GPUs, data parallel */
        else if (kind < 70)
            queue[i] = job(1 << rng_int(1, 3), 1 << rng_int(1, 4)); /* 4-128 GPUs */
        else if (kind < 90)
            queue[i] = job(8, 1 << rng_int(4, 7));              /* 128-1,024 GPUs */
        else
            queue[i] = job(8, 1 << rng_int(8, 10));             /* 2,048-8,192 GPUs */
    }
    atom_placement *placed = malloc(PENDING * sizeof *placed);
    int n_placed = 0, passes = reps < 31 ? reps : 31;
    for (int i = 0; i < passes; i++) {
        n_placed = 0;
        double s = atom_monotonic();
        for (int j = 0; j < PENDING; j++) {
            atom_place_result r = atom_planner_place(&pl, &queue[j], NULL, &placed[n_placed],
                                                     why, sizeof why, &err);
            if (r == ATOM_PLACE_OK)
                n_placed++;
            else if (r == ATOM_PLACE_ERROR)
                wrong_placements++;
        }
        samples[i] = atom_monotonic() - s;
        for (int j = 0; j < n_placed; j++) {
            check_placement(&pl, &placed[j], seen);
            atom_planner_release(&pl, &placed[j]);
            atom_placement_free(&placed[j]);
        }
        if (pl.free_total != free_start)
            wrong_placements++;
    }
    snprintf(note, sizeof note, "(%d placed, %d refused, each with why)", n_placed,
             PENDING - n_placed);
    row("pass over 10000 pending jobs", summarise(samples, passes), "ms", 1e3, 100, note);

    free(queue);
    free(placed);
    free(seen);
    free(samples);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
    if (wrong_placements) {
        printf("# %d WRONG placements or refusals\n", wrong_placements);
        return 1;
    }
    printf("# every placement checked: distinct free GPUs, tensor groups inside one node\n");
    return 0;
}
