/* deploy/slurm/atom_srun.c: atom-srun, the srun wrapper: turns a job spec into the srun call that
 * starts its workers under Slurm, then becomes that srun (execvp, no shell).
 *
 *   atom-srun [--dry-run] [--worker PATH] [--run-dir DIR] [--heartbeat SOCK] [--stop-after N]
 *             job.yaml [-- SRUN-OPTION...]
 *   atom-srun --sbatch-options job.yaml    the allocation for the job, one sbatch option a line
 *
 * What it asks Slurm for, and why:
 *   --nodes=N --ntasks-per-node=K   K = resources.gpus_per_node (inside an allocation without it:
 *                                   world / SLURM_JOB_NUM_NODES), N = world / K; K must be a multiple
 *                                   of the tensor-parallel size so no tensor group crosses a node;
 *   --distribution=block            rank order follows the nodes (the plan assumes it);
 *   --gpus-per-task=1               one GPU per rank (not for device: cpu);
 *   --mpi=pmix                      Debian's Open MPI initialises under srun only through PMIx;
 *   --kill-on-bad-exit=1            a rank that fails takes the step down instead of leaving the
 *                                   others waiting in a collective;
 *   --output=RUN/rank-%t.log        with --run-dir: each rank's stdout and stderr in its own file.
 * Each task runs `atom-worker --slurm --spec job.yaml`, which builds the plan from the allocation.
 * Spec strings never meet a shell: every value is a separate argv entry.
 *
 * Exit status: srun's (so 75 when the workers stopped on request, resumable); 2 usage or a spec
 * that cannot run under Slurm; 127 srun not found.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"

#define MAX_ARGS 256

static void usage(FILE *out)
{
    fprintf(out,
            "usage: atom-srun [--dry-run] [--worker PATH] [--run-dir DIR] [--stop-after N] job.yaml\n"
            "                 [-- SRUN-OPTION...]\n"
            "\n"
            "Starts the job's workers with srun, one task per GPU: --nodes, --ntasks-per-node (a\n"
            "multiple of the tensor-parallel size), --distribution=block, --gpus-per-task=1 (not for\n"
            "device: cpu), --mpi=pmix, --kill-on-bad-exit=1. Options after -- go to srun.\n"
            "\n"
            "  --dry-run       print the srun command, one argument per line, and exit\n"
            "  --sbatch-options  print the sbatch options of the job's allocation (--job-name,\n"
            "                  --nodes, --ntasks-per-node, --gpus-per-task, --time, and\n"
            "                  ATOM_MAX_REQUEUES from restart.max_restarts), one a line\n"
            "  --worker PATH   the atom-worker to run (default: ATOM_WORKER, else next to atom-srun)\n"
            "  --run-dir DIR   passed to the workers (train.jsonl, heartbeats); each rank's stdout and\n"
            "                  stderr go to DIR/rank-R.log (srun --output=DIR/rank-%%t.log)\n"
            "  --heartbeat SOCK  passed to the workers (atomd's heartbeat socket)\n"
            "  --stop-after N  passed to the workers\n"
            "\n"
            "exit status: srun's (75: the workers stopped on request and can resume); 2 usage or a\n"
            "spec that cannot run this way; 127 srun not found\n");
}

/* The atom-worker next to this program, unless ATOM_WORKER or --worker says otherwise. */
static int find_worker(char *path, size_t len)
{
    atom_err err;
    return atom_program_path("ATOM_WORKER", "atom-worker", path, len, &err);
}

/* Tasks per node for spec: its gpus_per_node, else the allocation's even share, else one node. */
static int tasks_per_node(const atom_spec *spec, int *per_node, int *nodes, atom_err *err)
{
    int tensor = spec->parallelism.tensor;
    int world = tensor * spec->parallelism.data;
    int k = spec->resources.gpus_per_node;
    const char *alloc_nodes = getenv("SLURM_JOB_NUM_NODES");
    if (k == 0 && alloc_nodes) {
        char *end;
        long n = strtol(alloc_nodes, &end, 10);
        if (*end || n < 1)
            return atom_errf(err, "SLURM_JOB_NUM_NODES is \"%s\", not a node count", alloc_nodes);
        if (world % n)
            return atom_errf(err, "the job's %d ranks do not split evenly over the allocation's "
                             "%ld nodes: set resources.gpus_per_node", world, n);
        k = world / (int)n;
    }
    if (k == 0)
        k = world;
    if (k % tensor)
        return atom_errf(err, "%d tasks per node is not a multiple of the tensor-parallel size %d: "
                         "a tensor-parallel group would cross nodes", k, tensor);
    if (world % k)
        return atom_errf(err, "the job's %d ranks do not fill nodes of %d tasks", world, k);
    *per_node = k;
    *nodes = world / k;
    return 0;
}

int main(int argc, char **argv)
{
    const char *worker_opt = NULL, *run_dir = NULL, *stop_after = NULL, *heartbeat = NULL;
    int dry_run = 0, sbatch_options = 0;
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'd'},         {"worker", required_argument, NULL, 'w'},
        {"run-dir", required_argument, NULL, 'r'},   {"stop-after", required_argument, NULL, 'n'},
        {"sbatch-options", no_argument, NULL, 'a'},  {"heartbeat", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    /* "+": stop at the spec, so srun options after it are not taken for ours. */
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dry_run = 1; break;
        case 'a': sbatch_options = 1; break;
        case 'w': worker_opt = optarg; break;
        case 'r': run_dir = optarg; break;
        case 'b': heartbeat = optarg; break;
        case 'n': stop_after = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *spec_path = argv[optind++];
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    else if (optind < argc) {
        fprintf(stderr, "atom-srun: srun options go after --\n");
        return 2;
    }
    if (stop_after) {
        char *end;
        long long v = strtoll(stop_after, &end, 10);
        if (*end || v < 1) {
            fprintf(stderr, "atom-srun: --stop-after wants a positive step count\n");
            return 2;
        }
    }

    atom_spec spec;
    atom_diags diags = {0};
    if (atom_spec_load(spec_path, &spec, &diags) != 0) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        fprintf(stderr, "atom-srun: %s: invalid job spec\n", spec_path);
        return 2;
    }
    atom_diags_free(&diags);
    atom_err err = {{0}};
    int per_node = 0, nodes = 0;
    if (tasks_per_node(&spec, &per_node, &nodes, &err)) {
        fprintf(stderr, "atom-srun: %s: %s\n", spec_path, err.msg);
        return 2;
    }
    if (sbatch_options) {
        printf("--job-name=%s\n--nodes=%d\n--ntasks-per-node=%d\n", spec.name, nodes, per_node);
        if (spec.resources.device != ATOM_DEVICE_CPU)
            printf("--gpus-per-task=1\n");
        if (spec.resources.time_limit > 0) /* Slurm counts whole minutes */
            printf("--time=%lld\n", (long long)(spec.resources.time_limit + 59) / 60);
        /* atom.sbatch requeues itself at the time limit at most restart.max_restarts times. */
        printf("--export=ALL,ATOM_MAX_REQUEUES=%d\n", spec.restart.max_restarts);
        return 0;
    }
    char worker[PATH_MAX];
    if (worker_opt)
        snprintf(worker, sizeof worker, "%s", worker_opt);
    else if (find_worker(worker, sizeof worker)) {
        fprintf(stderr, "atom-srun: cannot tell where atom-worker is: use --worker\n");
        return 2;
    }
    if (access(worker, X_OK) != 0) {
        fprintf(stderr, "atom-srun: %s: %s\n", worker, strerror(errno));
        return 2;
    }
    /* The workers read the spec on other nodes: give them an absolute path. */
    char spec_abs[PATH_MAX];
    if (!realpath(spec_path, spec_abs)) {
        fprintf(stderr, "atom-srun: %s: %s\n", spec_path, strerror(errno));
        return 2;
    }

    char nodes_arg[32], per_node_arg[48];
    snprintf(nodes_arg, sizeof nodes_arg, "--nodes=%d", nodes);
    snprintf(per_node_arg, sizeof per_node_arg, "--ntasks-per-node=%d", per_node);
    char *args[MAX_ARGS];
    int n = 0;
    args[n++] = "srun";
    args[n++] = nodes_arg;
    args[n++] = per_node_arg;
    args[n++] = "--distribution=block";
    if (spec.resources.device != ATOM_DEVICE_CPU)
        args[n++] = "--gpus-per-task=1";
    args[n++] = "--mpi=pmix";
    args[n++] = "--kill-on-bad-exit=1";
    /* One log per rank, as the mpirun launcher writes them: slurmstepd holds the task's stdout and
     * stderr from exec on (both go to --output without --error), so the file keeps what a rank
     * prints before MPI_Init and a sanitizer's or a segfault's report; srun's own messages ("task
     * 1: Segmentation fault") stay in the batch script's output (launcher.log under atomd). */
    char output_arg[PATH_MAX + 32];
    if (run_dir) {
        if (strchr(run_dir, '%') || strchr(run_dir, '\\')) {
            fprintf(stderr, "atom-srun: the run folder %s holds '%%' or '\\', which srun's --output "
                    "takes for a pattern\n", run_dir);
            return 2;
        }
        snprintf(output_arg, sizeof output_arg, "--output=%s/rank-%%t.log", run_dir);
        args[n++] = output_arg;
    }
    for (; optind < argc; optind++) {
        if (n >= MAX_ARGS - 12) {
            fprintf(stderr, "atom-srun: too many srun options\n");
            return 2;
        }
        args[n++] = argv[optind];
    }
    args[n++] = worker;
    args[n++] = "--slurm";
    args[n++] = "--spec";
    args[n++] = spec_abs;
    if (run_dir) {
        args[n++] = "--run-dir";
        args[n++] = (char *)run_dir;
    }
    if (heartbeat) {
        args[n++] = "--heartbeat";
        args[n++] = (char *)heartbeat;
    }
    if (stop_after) {
        args[n++] = "--stop-after";
        args[n++] = (char *)stop_after;
    }
    args[n] = NULL;
    if (dry_run) {
        for (int i = 0; i < n; i++)
            printf("%s\n", args[i]);
        return 0;
    }
    fflush(NULL);
    execvp("srun", args);
    fprintf(stderr, "atom-srun: cannot run srun: %s\n", strerror(errno));
    return 127;
}
