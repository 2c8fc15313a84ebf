/* worker/main.c: atom-worker, one training process (one rank per GPU, or per CPU slot).
 *
 *   atom-worker --plan PLAN.json     the plan file atomd's launcher wrote
 *   atom-worker --spec job.yaml      a quick run without atomd: this machine, one rank per slot
 *   atom-worker --slurm --spec job.yaml   inside a Slurm job step (srun): the plan comes from the
 *                                    allocation (common/plan_slurm.c; deploy/slurm/atom-srun)
 *
 * Exit status: 0 the job's last step is done; 75 (ATOM_EXIT_RESUMABLE) stopped on SIGUSR1 or
 * SIGTERM after a step, with a checkpoint when the spec has a checkpoint folder; 2 usage error;
 * any other failure aborts the whole job (MPI_Abort) after printing file, line, rank and host.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <link.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <mpi.h>

#include "common/common.h"
#include "worker/backend.h"
#include "worker/train.h"

static int g_rank = -1;
static char g_host[ATOM_NAME_MAX] = "?";

/* Fatal errors in the program (never in the library): where, on which rank and host, then the
 * whole job goes down, since the other ranks may be waiting for this one in a collective. */
#define WORKER_CHECK(cond, ...)                                                                   \
    do {                                                                                          \
        if (!(cond))                                                                              \
            worker_fatal(__FILE__, __LINE__, __VA_ARGS__);                                        \
    } while (0)

static void worker_fatal(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

static void worker_fatal(const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "atom-worker: rank %d on %s: %s:%d: %s\n", g_rank, g_host, file, line, msg);
    fflush(stderr);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

static volatile sig_atomic_t g_stop_request = 0;

static void on_stop_signal(int sig)
{
    (void)sig;
    g_stop_request = 1;
}

/* Fault injection for the tests (tests/worker_run/test_early_signal.py):
 * ATOM_WORKER_FAULT=usr1-before-mpi-init[:RANK] makes the rank (every one, or the one Open MPI
 * or Slurm numbers RANK) send itself SIGUSR1 just before MPI_Init, as a launcher's early
 * signal would arrive. */
static void raise_test_signal(void)
{
    const char *fault = getenv("ATOM_WORKER_FAULT");
    const char *want = "usr1-before-mpi-init";
    if (!fault || strncmp(fault, want, strlen(want)) != 0)
        return;
    const char *only = fault[strlen(want)] == ':' ? fault + strlen(want) + 1 : NULL;
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!rank)
        rank = getenv("SLURM_PROCID");
    if (!only || (rank && strcmp(only, rank) == 0))
        raise(SIGUSR1);
}

#ifdef __SANITIZE_ADDRESS__
/* Sanitizer builds only. LeakSanitizer checks at exit, after MPI_Finalize has dlclosed Open
 * MPI's components (Open MPI 4.1 has no parameter that keeps them). Their own leaks, which
 * tests/lsan.supp suppresses, then have stack frames in code no longer mapped, and for every
 * such frame LeakSanitizer re-reads the whole module list while matching suppressions
 * (Symbolizer::RefreshModules): measured 27-44 s at exit per rank on 2 loaded cores, more than
 * the 30 s a stopped job has before its launcher kills it. Marking every loaded library
 * RTLD_NODELETE just before MPI_Finalize keeps them mapped to the end: the frames resolve at
 * once and the check takes about a second. */
static char *g_libs[1024];
static int g_nlibs;

static int note_library(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (info->dlpi_name && info->dlpi_name[0] && g_nlibs < (int)(sizeof g_libs / sizeof *g_libs))
        g_libs[g_nlibs++] = strdup(info->dlpi_name);
    return 0;
}

static void keep_libraries_mapped(void)
{
    dl_iterate_phdr(note_library, NULL); /* names first: no dlopen inside the iteration */
    for (int i = 0; i < g_nlibs; i++) {
        if (g_libs[i])
            dlopen(g_libs[i], RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
        free(g_libs[i]);
    }
    g_nlibs = 0;
}
#else
static void keep_libraries_mapped(void) {}
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: atom-worker --plan PLAN.json [--stop-after N]\n"
            "       atom-worker --spec job.yaml [--run-dir DIR] [--heartbeat SOCK]\n"
            "                   [--stop-after N]\n"
            "       atom-worker --slurm --spec job.yaml [--run-dir DIR] [--heartbeat SOCK] ...\n"
            "\n"
            "  --plan PATH       the resolved plan every rank of a job reads (written by atomd)\n"
            "  --spec PATH       a job spec: run it on this machine without atomd (one process,\n"
            "                    or under mpirun with tensor x data ranks)\n"
            "  --slurm           with --spec: build the plan from the Slurm job step this task\n"
            "                    runs in (srun), as deploy/slurm/atom-srun starts it\n"
            "  --run-dir DIR     with --spec: where train.jsonl and heartbeats go (default: none)\n"
            "  --heartbeat SOCK  with --spec: also send heartbeats to this Unix socket\n"
            "                    (with --slurm, ranks on other nodes than ATOM_ATOMD_HOST send them\n"
            "                    to ATOM_HEARTBEAT_TCP, HOST:PORT, signed by munged: ATOM_MUNGE_SOCKET)\n"
            "  --stop-after N    stop as on SIGUSR1 once N steps are done (checkpoint, exit 75)\n"
            "  --help            this text\n"
            "\n"
            "exit status: 0 done; 75 stopped on request (resumable); 2 usage; 1 error\n");
}

/* A plan for this machine alone: rank = dp * tensor + tp, every rank on node 0. */
static int plan_from_spec(const char *spec_path, const char *run_dir, const char *heartbeat,
                          atom_plan *plan, atom_err *err)
{
    memset(plan, 0, sizeof *plan);
    atom_diags diags = {0};
    if (atom_spec_load(spec_path, &plan->spec, &diags) != 0) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        return atom_errf(err, "%s: invalid job spec", spec_path);
    }
    atom_diags_free(&diags);
    int tensor = plan->spec.parallelism.tensor, data = plan->spec.parallelism.data;
    plan->world = tensor * data;
    plan->ranks = calloc((size_t)plan->world, sizeof *plan->ranks);
    plan->nodes = calloc(1, sizeof *plan->nodes);
    if (!plan->ranks || !plan->nodes)
        return atom_errf(err, "out of memory");
    plan->n_nodes = 1;
    plan->n_switches_used = 1;
    snprintf(plan->nodes[0].name, sizeof plan->nodes[0].name, "%s", g_host);
    plan->nodes[0].gpus = plan->world;
    for (int r = 0; r < plan->world; r++)
        plan->ranks[r] = (atom_rank_place){r, r / tensor, r % tensor, 0, r};
    if (run_dir)
        snprintf(plan->run_dir, sizeof plan->run_dir, "%s", run_dir);
    if (heartbeat)
        snprintf(plan->heartbeat_addr, sizeof plan->heartbeat_addr, "%s", heartbeat);
    return 0;
}

/* Under Slurm (--slurm): Slurm placed the tasks; the plan comes from the allocation, and this
 * task's MPI rank must be the rank Slurm gave it (SLURM_PROCID). */
static int plan_from_slurm(const char *spec_path, const char *run_dir, const char *heartbeat,
                           atom_plan *plan, atom_err *err)
{
    memset(plan, 0, sizeof *plan);
    atom_spec spec;
    atom_diags diags = {0};
    if (atom_spec_load(spec_path, &spec, &diags) != 0) {
        atom_diags_print(&diags, stderr);
        atom_diags_free(&diags);
        return atom_errf(err, "%s: invalid job spec", spec_path);
    }
    atom_diags_free(&diags);
    atom_slurm_env env;
    atom_slurm_env_get(&env);
    if (atom_plan_from_slurm(&spec, &env, plan, err))
        return -1;
    if (plan->ranks && env.procid && atoi(env.procid) != g_rank)
        return atom_errf(err, "MPI rank %d is Slurm task %s: start the workers with srun "
                         "--mpi=pmix (not mpirun inside the allocation)", g_rank, env.procid);
    if (run_dir)
        snprintf(plan->run_dir, sizeof plan->run_dir, "%s", run_dir);
    if (heartbeat)
        snprintf(plan->heartbeat_addr, sizeof plan->heartbeat_addr, "%s", heartbeat);
    /* atomd's Slurm launcher exports its TCP port (sbatch --export): ranks on other nodes than
     * atomd's send their heartbeats there, as with a plan file. */
    const char *tcp = getenv("ATOM_HEARTBEAT_TCP"), *host = getenv("ATOM_ATOMD_HOST");
    const char *munge_socket = getenv("ATOM_MUNGE_SOCKET");
    if (tcp && (size_t)snprintf(plan->heartbeat_tcp, sizeof plan->heartbeat_tcp, "%s", tcp) >= sizeof plan->heartbeat_tcp)
        return atom_errf(err, "ATOM_HEARTBEAT_TCP is too long");
    if (host)
        snprintf(plan->atomd_host, sizeof plan->atomd_host, "%.*s", (int)sizeof plan->atomd_host - 1, host);
    if (munge_socket && (size_t)snprintf(plan->munge_socket, sizeof plan->munge_socket, "%s", munge_socket) >=
                            sizeof plan->munge_socket)
        return atom_errf(err, "ATOM_MUNGE_SOCKET is too long");
    return 0;
}

static const atom_backend *choose_backend(const atom_plan *plan, int rank)
{
    atom_device device = plan->spec.resources.device;
    bool want_cuda = device == ATOM_DEVICE_CUDA ||
                     (device == ATOM_DEVICE_AUTO && plan->nodes[plan->ranks[rank].node].has_gpus);
#ifdef ATOM_HAVE_CUDA
    if (want_cuda)
        return atom_backend_cuda();
#else
    if (want_cuda && rank == 0)
        atom_log(ATOM_LOG_WARN, "the plan asks for CUDA but this atom-worker was built without "
                                "it: training on the CPU");
#endif
    return atom_backend_cpu();
}

int main(int argc, char **argv)
{
    gethostname(g_host, sizeof g_host);
    g_host[sizeof g_host - 1] = '\0';
    /* One OpenBLAS thread per rank unless told otherwise: ranks already fill the cores, and
     * OpenBLAS threads busy-waiting against other ranks cost more than they give. */
    if (!getenv("OPENBLAS_NUM_THREADS")) {
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        openblas_set_num_threads(1);
    }

    const char *plan_path = NULL, *spec_path = NULL, *run_dir = NULL, *heartbeat = NULL;
    long long stop_after = 0;
    bool under_slurm = false;
    static const struct option long_opts[] = {
        {"plan", required_argument, NULL, 'p'},     {"spec", required_argument, NULL, 's'},
        {"run-dir", required_argument, NULL, 'r'},  {"stop-after", required_argument, NULL, 'n'},
        {"heartbeat", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'},
        {"slurm", no_argument, NULL, 'S'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'p': plan_path = optarg; break;
        case 's': spec_path = optarg; break;
        case 'r': run_dir = optarg; break;
        case 'b': heartbeat = optarg; break;
        case 'S': under_slurm = true; break;
        case 'n': {
            char *end;
            errno = 0;
            stop_after = strtoll(optarg, &end, 10);
            if (errno || *end || stop_after < 1) {
                fprintf(stderr, "atom-worker: --stop-after wants a positive step count\n");
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !plan_path == !spec_path || ((run_dir || heartbeat) && plan_path) ||
        (under_slurm && !spec_path)) {
        usage(stderr);
        return 2;
    }

    /* The stop handlers go in before MPI_Init: a launcher's SIGUSR1 (Slurm's warning may come
     * early, see README) or SIGTERM while MPI starts up would otherwise kill the rank by the
     * default action. The flag is all the handler touches (async-signal-safe); the training
     * loop acts on it, before its first step too. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    WORKER_CHECK(sigaction(SIGUSR1, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0,
                 "sigaction: %s", strerror(errno));
    raise_test_signal();

    int provided = 0;
    WORKER_CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) == MPI_SUCCESS,
                 "MPI_Init_thread failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    /* Async checkpoints write from a thread while the main thread all-reduces. */
    WORKER_CHECK(provided >= MPI_THREAD_MULTIPLE,
                 "MPI provides thread level %d, atom-worker needs MPI_THREAD_MULTIPLE", provided);
    char program[64];
    snprintf(program, sizeof program, "atom-worker[rank %d]", g_rank);
    atom_log_init(program, ATOM_LOG_INFO);

    atom_plan plan;
    atom_err err = {{0}};
    if (plan_path)
        WORKER_CHECK(atom_plan_read(plan_path, &plan, &err) == 0, "%s", err.msg);
    else if (under_slurm)
        WORKER_CHECK(plan_from_slurm(spec_path, run_dir, heartbeat, &plan, &err) == 0, "%s",
                     err.msg);
    else
        WORKER_CHECK(plan_from_spec(spec_path, run_dir, heartbeat, &plan, &err) == 0, "%s",
                     err.msg);

    atom_train_opts opts = {
        .plan = &plan,
        .backend = choose_backend(&plan, g_rank),
        .stop_request = &g_stop_request,
        .stop_after = stop_after,
        .progress = g_rank == 0 ? stdout : NULL,
    };
    atom_train_result result;
    WORKER_CHECK(atom_train_run(&opts, &result, &err) == 0, "%s", err.msg);
    if (g_rank == 0 && result.stopped && result.steps_done == result.start_step)
        atom_log(ATOM_LOG_INFO, "stopped on request before its first step (at step %lld of %lld)",
                 (long long)result.steps_done, (long long)plan.spec.training.steps);
    else if (g_rank == 0)
        atom_log(ATOM_LOG_INFO, "%s after step %lld of %lld (loss %.4f -> %.4f)",
                 result.stopped ? "stopped on request" : "finished", (long long)result.steps_done,
                 (long long)plan.spec.training.steps, result.first_loss, result.last_loss);
    atom_plan_free(&plan);
    keep_libraries_mapped();
    MPI_Finalize();
    return result.stopped ? ATOM_EXIT_RESUMABLE : 0;
}
