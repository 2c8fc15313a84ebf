/* tests/slurm/launch_slurm_driver.c: drives atomd's Slurm launcher (scheduler/launch_slurm.c) the
 * way atomd does, for slurm_e2e.py's "launcher" case, on the local Slurm cluster:
 *
 *   launch_slurm_driver run  RUN_DIR SPEC   prepare, sbatch, follow to the end; prints "exit N"
 *   launch_slurm_driver stop RUN_DIR SPEC   the same, but once step 2 is done sends SIGUSR1
 *                                           through the launcher (the workers checkpoint, exit 75)
 *   launch_slurm_driver cancel RUN_DIR SPEC the same, but sends SIGTERM (scancel)
 *   launch_slurm_driver nodes               the nodes and GPUs sinfo --json reports
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler/launch.h"

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "nodes")) {
        /* atomd's view of the cluster: "name gpus free has_gpus", one node a line. */
        atom_inventory inv;
        int *free_gpus = NULL;
        atom_err err = {{0}};
        if (atom_launch_slurm_nodes(&inv, &free_gpus, &err)) {
            fprintf(stderr, "launch_slurm_driver: %s\n", err.msg);
            return 1;
        }
        for (int i = 0; i < inv.n_nodes; i++)
            printf("%s %d %d %d\n", inv.nodes[i].name, inv.nodes[i].gpus, free_gpus[i],
                   inv.nodes[i].has_gpus);
        free(free_gpus);
        atom_inventory_free(&inv);
        return 0;
    }
    if (argc != 4 || (strcmp(argv[1], "run") && strcmp(argv[1], "stop") && strcmp(argv[1], "cancel"))) {
        fprintf(stderr, "usage: launch_slurm_driver run|stop|cancel RUN_DIR SPEC\n");
        return 2;
    }
    const char *mode = argv[1], *run_dir = argv[2];
    atom_plan plan;
    memset(&plan, 0, sizeof plan);
    atom_diags diags = {0};
    if (atom_spec_load(argv[3], &plan.spec, &diags)) {
        atom_diags_print(&diags, stderr);
        return 1;
    }
    atom_diags_free(&diags);
    /* atomd's own plan is a record only: under Slurm the workers build theirs. */
    int world = plan.spec.parallelism.tensor * plan.spec.parallelism.data;
    plan.world = world;
    plan.n_nodes = 1;
    plan.n_switches_used = 1;
    plan.nodes = calloc(1, sizeof *plan.nodes);
    plan.ranks = calloc((size_t)world, sizeof *plan.ranks);
    if (!plan.nodes || !plan.ranks)
        return 1;
    snprintf(plan.nodes[0].name, sizeof plan.nodes[0].name, "slurm");
    plan.nodes[0].gpus = world;
    for (int r = 0; r < world; r++)
        plan.ranks[r] = (atom_rank_place){r, r / plan.spec.parallelism.tensor,
                                          r % plan.spec.parallelism.tensor, 0, r};
    snprintf(plan.job_id, sizeof plan.job_id, "j-driver");

    atom_err err = {{0}};
    char worker[4096];
    atom_launch launch;
    if (atom_find_worker(worker, sizeof worker, &err) ||
        atom_launch_slurm_prepare(&plan, run_dir, worker, &launch, &err) ||
        atom_launch_slurm_start(&plan, &launch, -1, -1, &err)) {
        fprintf(stderr, "launch_slurm_driver: %s\n", err.msg);
        return 1;
    }
    int exit_code = -1;
    if (strcmp(mode, "run")) {
        /* Wait for step 2 in rank 0's output, then signal it through the launcher. */
        char out_path[4200];
        snprintf(out_path, sizeof out_path, "%s/rank-0.log", run_dir);
        for (int i = 0; i < 1200; i++) {
            size_t len = 0;
            char *text = atom_read_file(out_path, 64 << 20, &len, NULL);
            bool seen = text && strstr(text, "step 2/");
            free(text);
            if (seen)
                break;
            int rc = atom_launch_slurm_wait(&launch, false, &exit_code, &err);
            if (rc != 0) {
                fprintf(stderr, "launch_slurm_driver: the job ended before step 2 (%d): %s\n",
                        exit_code, err.msg);
                return 1;
            }
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
        if (atom_launch_slurm_signal(&launch, strcmp(mode, "stop") ? SIGTERM : SIGUSR1)) {
            fprintf(stderr, "launch_slurm_driver: signal failed\n");
            return 1;
        }
    }
    if (atom_launch_slurm_wait(&launch, true, &exit_code, &err) != 1) {
        fprintf(stderr, "launch_slurm_driver: %s\n", err.msg);
        return 1;
    }
    printf("exit %d\nslurm job %s\n", exit_code, launch.slurm_job);
    atom_plan_free(&plan);
    return 0;
}
