/* bench/coll/coll_bench.c: atom-coll-bench, the shared driver. For each operation and each size
 * of a sweep it checks the result of atom's collective against the expected data (wrong data
 * makes the exit status 1), times it, and prints time per operation, algbw (size / time) and
 * busbw (algbw x the operation's factor); beside it, in the same run, Open MPI's own blocking
 * call on the same sizes, checked and timed the same way. Times are the slowest rank's mean.
 *
 * Exit status: 0 all data right, 1 wrong data somewhere, 2 usage error, 3 a collective failed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/coll/coll_bench.h"

#ifdef ATOM_HAVE_NCCL
#include <cuda_runtime_api.h>
#endif

static const coll_bench_op *const all_ops[] = {&coll_bench_all_reduce, &coll_bench_reduce_scatter,
                                               &coll_bench_all_gather, &coll_bench_broadcast};
#define NOPS (sizeof all_ops / sizeof all_ops[0])

typedef struct bench_opts {
    size_t min_bytes, max_bytes;
    int step_factor, iters, warmup;
    const char *op;           /* NULL: all */
    coll_backend_kind backend;
    coll_group_id group;
    int tensor_size;
    coll_progress_mode progress;
    int with_mpi;
} bench_opts;

void coll_bench_fill_send(float *send, size_t sc, float *recv, size_t rc, int rank, int nranks)
{
    (void)nranks;
    for (size_t i = 0; i < sc; i++)
        send[i] = coll_bench_value(rank, i);
    for (size_t i = 0; i < rc; i++)
        recv[i] = -1.0f;
}

double coll_bench_factor_all_but_one(int nranks) { return (double)(nranks - 1) / nranks; }

static void usage(FILE *out, const char *argv0)
{
    fprintf(out,
            "usage: mpirun -n N %s [options]\n"
            "  -b, --min-bytes N     smallest size (default 4096)\n"
            "  -e, --max-bytes N     largest size (default 16777216)\n"
            "  -f, --step-factor N   size multiplier between steps (default 4)\n"
            "  -n, --iters N         timed iterations per size (default 20; fewer above 4 MiB)\n"
            "  -w, --warmup N        untimed iterations per size (default 2)\n"
            "  -o, --op NAME         all_reduce, reduce_scatter, all_gather, broadcast (default all)\n"
            "      --backend B       mpi (default) or nccl\n"
            "  -g, --group G         world (default), tensor or data\n"
            "  -t, --tensor-size T   tensor-parallel size of the layout (default 1)\n"
            "      --progress P      poll (default) or thread\n"
            "      --no-mpi          do not run Open MPI's own collectives beside atom's\n"
            "  -h, --help            this text\n"
            "exit status: 0 data right, 1 wrong data, 2 usage error, 3 a collective failed\n",
            argv0);
}

static int parse(int argc, char **argv, bench_opts *o)
{
    static const struct option longs[] = {
        {"min-bytes", required_argument, 0, 'b'}, {"max-bytes", required_argument, 0, 'e'},
        {"step-factor", required_argument, 0, 'f'}, {"iters", required_argument, 0, 'n'},
        {"warmup", required_argument, 0, 'w'}, {"op", required_argument, 0, 'o'},
        {"backend", required_argument, 0, 'B'}, {"group", required_argument, 0, 'g'},
        {"tensor-size", required_argument, 0, 't'}, {"progress", required_argument, 0, 'P'},
        {"no-mpi", no_argument, 0, 'M'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    *o = (bench_opts){4096, 16u << 20, 4, 20, 2, NULL, COLL_BACKEND_MPI, COLL_WORLD, 1,
                      COLL_PROGRESS_POLL, 1};
    int c;
    while ((c = getopt_long(argc, argv, "b:e:f:n:w:o:g:t:h", longs, NULL)) != -1) {
        switch (c) {
        case 'b': o->min_bytes = strtoull(optarg, NULL, 10); break;
        case 'e': o->max_bytes = strtoull(optarg, NULL, 10); break;
        case 'f': o->step_factor = atoi(optarg); break;
        case 'n': o->iters = atoi(optarg); break;
        case 'w': o->warmup = atoi(optarg); break;
        case 'o': o->op = optarg; break;
        case 'B':
            if (strcmp(optarg, "mpi") == 0) o->backend = COLL_BACKEND_MPI;
            else if (strcmp(optarg, "nccl") == 0) o->backend = COLL_BACKEND_NCCL;
            else return 2;
            break;
        case 'g':
            if (strcmp(optarg, "world") == 0) o->group = COLL_WORLD;
            else if (strcmp(optarg, "tensor") == 0) o->group = COLL_TENSOR;
            else if (strcmp(optarg, "data") == 0) o->group = COLL_DATA;
            else return 2;
            break;
        case 't': o->tensor_size = atoi(optarg); break;
        case 'P':
            if (strcmp(optarg, "poll") == 0) o->progress = COLL_PROGRESS_POLL;
            else if (strcmp(optarg, "thread") == 0) o->progress = COLL_PROGRESS_THREAD;
            else return 2;
            break;
        case 'M': o->with_mpi = 0; break;
        case 'h': return 1;
        default: return 2;
        }
    }
    if (optind != argc || o->min_bytes == 0 || o->max_bytes < o->min_bytes || o->step_factor < 2 ||
        o->iters < 1 || o->warmup < 0 || o->tensor_size < 1)
        return 2;
    if (o->op) {
        int known = 0;
        for (size_t i = 0; i < NOPS; i++)
            known |= strcmp(all_ops[i]->name, o->op) == 0;
        if (!known)
            return 2;
    }
    return 0;
}

/* Buffers the backend works on: host memory for MPI, device memory for NCCL (filled and read
 * through host copies). */
typedef struct bench_buf {
    float *host, *dev;
    size_t count;
    int on_device;
} bench_buf;

static int buf_alloc(bench_buf *b, size_t count, int on_device)
{
    b->count = count;
    b->on_device = on_device;
    b->host = malloc((count + 1) * sizeof(float));
    if (!b->host)
        return -1;
    b->dev = b->host;
#ifdef ATOM_HAVE_NCCL
    if (on_device && cudaMalloc((void **)&b->dev, (count + 1) * sizeof(float)) != cudaSuccess)
        return -1;
#endif
    return 0;
}

static void buf_upload(bench_buf *b)
{
#ifdef ATOM_HAVE_NCCL
    if (b->on_device)
        cudaMemcpy(b->dev, b->host, b->count * sizeof(float), cudaMemcpyHostToDevice);
#else
    (void)b;
#endif
}

static void buf_download(bench_buf *b)
{
#ifdef ATOM_HAVE_NCCL
    if (b->on_device)
        cudaMemcpy(b->host, b->dev, b->count * sizeof(float), cudaMemcpyDeviceToHost);
#else
    (void)b;
#endif
}

static void buf_free(bench_buf *b)
{
#ifdef ATOM_HAVE_NCCL
    if (b->on_device)
        cudaFree(b->dev);
#endif
    free(b->host);
}

typedef struct bench_result {
    double seconds; /* per operation, slowest rank */
    long long wrong;
} bench_result;

/* One size of one operation, by atom's collectives (comm == MPI_COMM_NULL) or MPI's own. */
static int measure(const coll_bench_op *op, coll_group *g, MPI_Comm comm, int nranks, int rank,
                   bench_buf *send, bench_buf *recv, size_t sc, size_t rc, int iters, int warmup,
                   bench_result *res, coll_err *err)
{
    op->fill(send->host, sc, recv->host, rc, rank, nranks);
    buf_upload(send);
    buf_upload(recv);
    int rc_run = g ? op->run(g, send->dev, recv->dev, sc, rc, err)
                   : op->run_mpi(comm, send->host, recv->host, sc, rc);
    if (rc_run != 0)
        return -1;
    buf_download(recv);
    long long wrong = (long long)op->check(recv->host, rc, rank, nranks);
    MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    for (int i = 0; i < warmup; i++)
        if ((g ? op->run(g, send->dev, recv->dev, sc, rc, err)
               : op->run_mpi(comm, send->host, recv->host, sc, rc)) != 0)
            return -1;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; i++)
        if ((g ? op->run(g, send->dev, recv->dev, sc, rc, err)
               : op->run_mpi(comm, send->host, recv->host, sc, rc)) != 0)
            return -1;
#ifdef ATOM_HAVE_NCCL
    if (g && recv->on_device)
        cudaDeviceSynchronize();
#endif
    double t = (MPI_Wtime() - t0) / iters;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    res->seconds = t;
    res->wrong = wrong;
    return 0;
}

int main(int argc, char **argv)
{
    int provided, wr, ws;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    bench_opts o;
    int prc = parse(argc, argv, &o);
    if (prc != 0) {
        if (wr == 0)
            usage(prc == 1 ? stdout : stderr, argv[0]);
        MPI_Finalize();
        return prc == 1 ? 0 : 2;
    }
    coll_err err = {""};
    coll_config cfg = {.backend = o.backend, .tensor_size = o.tensor_size, .hang_timeout_s = 120,
                       .progress = o.progress};
    coll_ctx *ctx;
    if (coll_open(&cfg, &ctx, &err) != 0) {
        fprintf(stderr, "atom-coll-bench: rank %d: %s\n", wr, err.msg);
        MPI_Finalize();
        return 3;
    }
    coll_group *g = coll_group_of(ctx, o.group);
    int n = coll_group_size(g), me = coll_group_rank(g);
    /* Open MPI's side runs on a communicator of the same members. */
    int dp = wr / o.tensor_size, tp = wr % o.tensor_size;
    MPI_Comm comm;
    if (o.group == COLL_WORLD)
        MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    else
        MPI_Comm_split(MPI_COMM_WORLD, o.group == COLL_TENSOR ? dp : tp, o.group == COLL_TENSOR ? tp : dp, &comm);

    int on_device = o.backend == COLL_BACKEND_NCCL;
    bench_buf send, recv, hsend, hrecv;
    size_t maxc = o.max_bytes / sizeof(float) + (size_t)n;
    if (buf_alloc(&send, maxc, on_device) || buf_alloc(&recv, maxc, on_device) ||
        buf_alloc(&hsend, maxc, 0) || buf_alloc(&hrecv, maxc, 0)) {
        fprintf(stderr, "atom-coll-bench: rank %d: cannot allocate 4 x %zu bytes\n", wr, maxc * 4);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    if (wr == 0) {
        printf("# atom-coll-bench: %d ranks, backend %s, group %s (size %d), tensor size %d, progress %s\n",
               ws, o.backend == COLL_BACKEND_NCCL ? "NCCL" : "MPI", coll_group_name(g), n,
               o.tensor_size, o.progress == COLL_PROGRESS_THREAD ? "thread" : "poll");
        printf("# time: per operation, slowest rank's mean; GB/s = 1e9 bytes/s; wrong: elements "
               "differing from the expected result, all ranks\n");
        printf("# %-14s %10s %10s | %10s %9s %9s %6s | %10s %9s %9s %6s\n", "", "", "",
               "atom", "", "", "", o.with_mpi ? "Open MPI" : "", "", "", "");
        printf("# %-14s %10s %10s | %10s %9s %9s %6s | %10s %9s %9s %6s\n", "op", "size(B)",
               "count", "time(us)", "algbw", "busbw", "wrong", "time(us)", "algbw", "busbw",
               "wrong");
    }
    long long total_wrong = 0;
    int status = 0;
    for (size_t k = 0; k < NOPS && status == 0; k++) {
        const coll_bench_op *op = all_ops[k];
        if (o.op && strcmp(o.op, op->name) != 0)
            continue;
        for (size_t size = o.min_bytes; size <= o.max_bytes && status == 0; size *= (size_t)o.step_factor) {
            size_t sc, rc;
            op->counts(size, n, &sc, &rc);
            size_t bytes = (sc > rc ? sc : rc) * sizeof(float);
            int iters = o.iters;
            if (bytes > (4u << 20)) {
                iters = (int)((double)o.iters * (double)(4u << 20) / (double)bytes);
                if (iters < 3)
                    iters = 3;
            }
            bench_result a = {0, 0}, m = {0, 0};
            if (measure(op, g, MPI_COMM_NULL, n, me, &send, &recv, sc, rc, iters, o.warmup, &a, &err) != 0) {
                fprintf(stderr, "atom-coll-bench: rank %d: %s\n", wr, err.msg);
                status = 3;
                break;
            }
            if (o.with_mpi)
                measure(op, NULL, comm, n, me, &hsend, &hrecv, sc, rc, iters, o.warmup, &m, &err);
            total_wrong += a.wrong + m.wrong;
            if (wr == 0) {
                double algbw = (double)bytes / a.seconds / 1e9;
                printf("  %-14s %10zu %10zu | %10.1f %9.3f %9.3f %6lld", op->name, bytes, rc,
                       a.seconds * 1e6, algbw, algbw * op->busbw_factor(n), a.wrong);
                if (o.with_mpi) {
                    double malg = (double)bytes / m.seconds / 1e9;
                    printf(" | %10.1f %9.3f %9.3f %6lld", m.seconds * 1e6, malg,
                           malg * op->busbw_factor(n), m.wrong);
                }
                printf("\n");
                fflush(stdout);
            }
        }
    }
    if (status == 0 && total_wrong > 0) {
        status = 1;
        if (wr == 0)
            fprintf(stderr, "atom-coll-bench: %lld wrong elements\n", total_wrong);
    }
    buf_free(&send);
    buf_free(&recv);
    buf_free(&hsend);
    buf_free(&hrecv);
    MPI_Comm_free(&comm);
    coll_close(ctx);
    MPI_Finalize();
    return status;
}
