/* tests/worker_run/make_plan.c: writes the plan file a launcher would for a job on this machine
 * (rank = dp * tensor + tp, all on one node), so tests can run `atom-worker --plan` as atomd
 * does. Usage: make_plan JOB.yaml RUN_DIR HEARTBEAT_SOCKET OUT.json */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: make_plan JOB.yaml RUN_DIR HEARTBEAT_SOCKET OUT.json\n");
        return 2;
    }
    atom_plan plan;
    memset(&plan, 0, sizeof plan);
    atom_diags diags = {0};
    if (atom_spec_load(argv[1], &plan.spec, &diags) != 0) {
        atom_diags_print(&diags, stderr);
        return 1;
    }
    atom_diags_free(&diags);
    int tensor = plan.spec.parallelism.tensor;
    snprintf(plan.job_id, sizeof plan.job_id, "test-plan");
    plan.attempt = 1;
    plan.world = tensor * plan.spec.parallelism.data;
    plan.ranks = calloc((size_t)plan.world, sizeof *plan.ranks);
    plan.nodes = calloc(1, sizeof *plan.nodes);
    plan.n_nodes = 1;
    plan.n_switches_used = 1;
    snprintf(plan.nodes[0].name, sizeof plan.nodes[0].name, "localhost");
    plan.nodes[0].gpus = plan.world;
    for (int r = 0; r < plan.world; r++)
        plan.ranks[r] = (atom_rank_place){r, r / tensor, r % tensor, 0, r};
    snprintf(plan.run_dir, sizeof plan.run_dir, "%s", argv[2]);
    snprintf(plan.heartbeat_addr, sizeof plan.heartbeat_addr, "%s", argv[3]);
    atom_err err;
    if (atom_plan_write(&plan, argv[4], &err) != 0) {
        fprintf(stderr, "make_plan: %s\n", err.msg);
        return 1;
    }
    atom_plan_free(&plan);
    return 0;
}
