/* scheduler/atomctl_plan.c: `atomctl plan JOB.yaml [--cluster INVENTORY.yaml] [--json]`: places a
 * job on an idle cluster with the same planner atomd uses and shows the layout, or why it does
 * not fit. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/atomctl.h"
#include "scheduler/planner.h"

/* "0-7" for a contiguous run of ranks, else "0,8,16" (long lists cut short). */
static void print_rank_list(FILE *out, const int *ranks, int n)
{
    bool contiguous = true;
    for (int i = 1; i < n; i++)
        if (ranks[i] != ranks[i - 1] + 1)
            contiguous = false;
    if (n > 1 && contiguous) {
        fprintf(out, "%d-%d", ranks[0], ranks[n - 1]);
        return;
    }
    int shown = n <= 12 ? n : 8;
    for (int i = 0; i < shown; i++)
        fprintf(out, "%s%d", i ? "," : "", ranks[i]);
    if (shown < n)
        fprintf(out, ",... (%d ranks, every %d)", n, n > 1 ? ranks[1] - ranks[0] : 0);
}

static void print_table(const atom_plan *plan, const atom_inventory *inv, const char *spec_path,
                        FILE *out)
{
    int tensor = plan->spec.parallelism.tensor, data = plan->spec.parallelism.data;
    bool gpus = plan->n_nodes > 0 && plan->nodes[0].has_gpus;
    fprintf(out, "%s: job %s on cluster %s: %d rank%s = tensor %d x data %d on %d node%s, %d "
            "switch%s\n\n",
            spec_path, plan->spec.name, inv->name, plan->world, plan->world == 1 ? "" : "s",
            tensor, data, plan->n_nodes, plan->n_nodes == 1 ? "" : "s", plan->n_switches_used,
            plan->n_switches_used == 1 ? "" : "es");
    int width = 4;
    for (int i = 0; i < plan->n_nodes; i++)
        if ((int)strlen(plan->nodes[i].name) > width)
            width = (int)strlen(plan->nodes[i].name);
    fprintf(out, "%6s  %-*s  %4s  %5s  %4s\n", "rank", width, "node", gpus ? "gpu" : "slot", "dp",
            "tp");
    for (int r = 0; r < plan->world; r++) {
        const atom_rank_place *p = &plan->ranks[r];
        fprintf(out, "%6d  %-*s  %4d  %5d  %4d\n", p->rank, width, plan->nodes[p->node].name,
                p->gpu, p->dp, p->tp);
    }

    int *ranks = malloc((size_t)(tensor > data ? tensor : data) * sizeof *ranks);
    if (!ranks)
        return;
    if (tensor == 1)
        fprintf(out, "\ntensor-parallel groups: none (tensor 1)\n");
    else
        fprintf(out, "\ntensor-parallel groups (%d, each inside one node):\n", data);
    for (int dp = 0; dp < data && tensor > 1; dp++) {
        if (data > 16 && dp == 8) {
            fprintf(out, "  ... %d more\n", data - 9);
            dp = data - 1;
        }
        for (int tp = 0; tp < tensor; tp++)
            ranks[tp] = dp * tensor + tp;
        fprintf(out, "  dp %d: ranks ", dp);
        print_rank_list(out, ranks, tensor);
        fprintf(out, " on %s\n", plan->nodes[plan->ranks[dp * tensor].node].name);
    }
    if (data == 1)
        fprintf(out, "data-parallel groups: none (data 1)\n");
    else
        fprintf(out, "data-parallel groups (%d, one rank per replica):\n", tensor);
    for (int tp = 0; tp < tensor && data > 1; tp++) {
        for (int dp = 0; dp < data; dp++)
            ranks[dp] = dp * tensor + tp;
        fprintf(out, "  tp %d: ranks ", tp);
        print_rank_list(out, ranks, data);
        fprintf(out, "\n");
    }
    free(ranks);

    fprintf(out, "switches used (%d):", plan->n_switches_used);
    bool *seen = calloc((size_t)inv->n_switches, sizeof *seen);
    int *per_switch = calloc((size_t)inv->n_switches, sizeof *per_switch);
    if (seen && per_switch) {
        for (int i = 0; i < plan->n_nodes; i++)
            per_switch[plan->nodes[i].switch_id]++;
        for (int i = 0; i < plan->n_nodes; i++) {
            int s = plan->nodes[i].switch_id;
            if (seen[s])
                continue;
            seen[s] = true;
            fprintf(out, " %s (%d node%s)", inv->switches[s], per_switch[s],
                    per_switch[s] == 1 ? "" : "s");
        }
    }
    fprintf(out, "\n");
    free(seen);
    free(per_switch);
}

int atomctl_cmd_plan(int argc, char **argv)
{
    static const struct option options[] = {
        {"cluster", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cluster = NULL;
    bool json = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:jh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cluster = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            atomctl_print_usage("plan", stdout);
            return ATOMCTL_OK;
        default:
            if (optopt == 'c')
                return atomctl_usage_error("plan", "--cluster needs an inventory file");
            return atomctl_usage_error("plan", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return atomctl_usage_error("plan", "no job spec given");
    if (optind + 1 < argc)
        return atomctl_usage_error("plan", "one job spec at a time (got '%s' too)",
                                   argv[optind + 1]);
    const char *spec_path = argv[optind];

    atom_spec spec;
    atom_diags diags = {0};
    if (atom_spec_load(spec_path, &spec, &diags) != 0 || diags.count) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        return ATOMCTL_FAILED;
    }
    atom_inventory inv;
    if (cluster) {
        if (atom_inventory_load(cluster, &inv, &diags) != 0) {
            atom_diags_print(&diags, stderr);
            atom_diags_free(&diags);
            return ATOMCTL_FAILED;
        }
    } else {
        atom_inventory_local(&inv, 0);
        if (!inv.nodes) {
            fprintf(stderr, "atomctl plan: out of memory\n");
            return ATOMCTL_FAILED;
        }
    }
    atom_diags_free(&diags);

    int rc = ATOMCTL_FAILED;
    atom_err err = {{0}};
    atom_planner planner;
    atom_placement placement = {0};
    atom_plan plan = {0};
    char why[512] = "";
    if (atom_planner_init(&planner, &inv, &err) != 0) {
        fprintf(stderr, "atomctl plan: %s\n", err.msg);
        atom_inventory_free(&inv);
        return ATOMCTL_FAILED;
    }
    atom_place_result res = atom_planner_place(&planner, &spec, NULL, &placement, why, sizeof why,
                                               &err);
    if (res == ATOM_PLACE_ERROR) {
        fprintf(stderr, "%s: %s\n", spec_path, err.msg);
    } else if (res == ATOM_PLACE_NO_FIT) {
        fprintf(stderr, "%s: does not fit on cluster %s: %s\n", spec_path, inv.name, why);
    } else if (atom_plan_from_placement(&inv, &spec, &placement, &plan, &err) != 0) {
        fprintf(stderr, "%s: %s\n", spec_path, err.msg);
    } else if (json) {
        char *text = atom_plan_to_json(&plan);
        if (text) {
            printf("%s\n", text);
            free(text);
            rc = ATOMCTL_OK;
        } else {
            fprintf(stderr, "%s: cannot encode the plan as JSON\n", spec_path);
        }
    } else {
        print_table(&plan, &inv, spec_path, stdout);
        rc = ATOMCTL_OK;
    }
    atom_plan_free(&plan);
    atom_placement_free(&placement);
    atom_planner_free(&planner);
    atom_inventory_free(&inv);
    return rc;
}
