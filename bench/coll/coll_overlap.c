/* bench/coll/coll_overlap.c: atom-coll-overlap, how much of the data-parallel gradient
 * all-reduce the bucket manager hides behind the backward pass. The gradient set is gpt2-124m's
 * (124M floats, the reference's stacked layout, one piece per layer slice), or the same number
 * of floats spread evenly over the layers (--layout layers). In the gpt2 layout the tied wte is
 * split as the worker splits it (worker/model.c, setup_embedding_exchange): its LM head part
 * opens the first bucket, and at the end the embedding's rows are all-reduced, min(D * tokens,
 * V) rows of C floats (every token distinct: an upper bound), after an int32 all-gather of the
 * tokens when the backward begins; --layout gpt2-tied all-reduces wte whole at the end, as
 * before that split. A stand-in backward pass walks the
 * stages in reverse (final LayerNorm, layers L-1..0, embeddings), computing a fixed number of
 * work units per stage and marking the stage's pieces ready after it; the work is calibrated so
 * that compute alone takes as long as the all-reduces alone. Reported per bucket size:
 *   comm    the all-reduces alone (every piece marked at once, then finish)
 *   compute the stand-in backward alone
 *   overlap the backward with the all-reduces
 *   exposed = overlap - compute (of the medians), and its share of comm (the median of each
 *   run's own share: a run measures all three back to back; the target is <= 30%);
 *   comm-cpu: CPU time of a rank during the all-reduces alone, as a share of their wall time;
 *   tail: of the overlapped run, the time spent in finish after the backward (the all-reduces
 *   that had not kept up); the rest of exposed is compute slowed by sharing the cores.
 * The stand-in compute is arithmetic on the CPU (--compute cpu, a CPU worker's backward), or the
 * host waiting while a device computes (--compute wait: the rank sleeps through each stage, as
 * the host thread of a GPU rank waits on its stream; its cores are free for the all-reduces).
 * Times are the slowest rank's, median of --reps runs. */
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "collectives/collectives.h"

enum { L = 12, C = 768, CTX = 1024, VP = 50304 };

typedef struct stage {
    int first, count; /* pieces marked ready after this stage (ids first .. first+count-1) */
} stage;

typedef struct grad_set {
    size_t count;
    int npieces;
    size_t off[16 * L + 8], len[16 * L + 8];
    int nstages;
    stage stages[L + 2];
    int *backward;    /* piece ids in the order the stages mark them */
    size_t tokens;    /* per rank, gathered when the backward begins (gpt2 layout) */
    size_t rows;      /* floats of embedding rows all-reduced after the last stage; 0: none */
} grad_set;

enum { LAYOUT_GPT2, LAYOUT_GPT2_TIED, LAYOUT_LAYERS };

/* gpt2-124m, reference order: wte, wpe, then per parameter all L layers stacked, lnfw, lnfb.
 * Registered pieces: wte, wpe, layer 0's twelve slices, ..., layer 11's, lnfw, lnfb (tied); or
 * wpe, the layers', lnfw, lnfb, wte (gpt2: wte's head part is the first complete). */
static void gpt2_set(grad_set *s, int layout, size_t tokens, int ranks)
{
    int uniform = layout == LAYOUT_LAYERS, split = layout == LAYOUT_GPT2;
    static const size_t rows[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, C * 4 * C, C};
    size_t base = 0, stacked[12];
    size_t wte = (size_t)VP * C, wpe = (size_t)CTX * C;
    size_t per_layer = 0;
    for (int q = 0; q < 12; q++)
        per_layer += rows[q];
    size_t total = wte + wpe + L * per_layer + 2 * C;
    s->npieces = 0;
    if (uniform) {
        /* the same floats, evenly over L layers of 12 equal slices: no embedding at the end */
        size_t slice = total / (L * 12);
        for (int p = 0; p < L * 12; p++) {
            s->off[p] = (size_t)p * slice;
            s->len[p] = slice;
        }
        s->npieces = L * 12;
        s->count = slice * L * 12;
        s->nstages = L;
        for (int l = 0; l < L; l++)
            s->stages[l] = (stage){(L - 1 - l) * 12, 12};
    } else {
        int w = split ? 1 + 12 * L + 2 : 0, p0 = split ? 0 : 1; /* ids of wte, wpe */
        s->off[w] = 0, s->len[w] = wte;
        s->off[p0] = wte, s->len[p0] = wpe;
        base = wte + wpe;
        for (int q = 0; q < 12; q++) {
            stacked[q] = base;
            base += L * rows[q];
        }
        s->npieces = split ? 1 : 2;
        for (int l = 0; l < L; l++)
            for (int q = 0; q < 12; q++) {
                s->off[s->npieces] = stacked[q] + (size_t)l * rows[q];
                s->len[s->npieces] = rows[q];
                s->npieces++;
            }
        s->off[s->npieces] = base, s->len[s->npieces++] = C;
        s->off[s->npieces] = base + C, s->len[s->npieces++] = C;
        s->count = base + 2 * C;
        int first_layer = split ? 1 : 2;
        s->nstages = 0;
        if (split) {
            /* backward: the head and the final LayerNorm (wte's head part, lnfb, lnfw), layers
             * L-1..0, then the embeddings (wpe; wte's rows exchanged apart) */
            s->npieces++; /* wte, registered last */
            s->stages[s->nstages++] = (stage){first_layer + 12 * L, 3};
            for (int l = L - 1; l >= 0; l--)
                s->stages[s->nstages++] = (stage){first_layer + 12 * l, 12};
            s->stages[s->nstages++] = (stage){0, 1};
            s->tokens = tokens;
            size_t touched = (size_t)ranks * tokens < VP ? (size_t)ranks * tokens : VP;
            s->rows = touched * C;
        } else {
            /* backward: final LayerNorm, then layers L-1..0, then the embeddings (wte's
             * gradient is final only there: the LM head is tied to it) */
            s->stages[s->nstages++] = (stage){first_layer + 12 * L, 2};
            for (int l = L - 1; l >= 0; l--)
                s->stages[s->nstages++] = (stage){first_layer + 12 * l, 12};
            s->stages[s->nstages++] = (stage){0, 2};
        }
    }
    s->backward = malloc((size_t)s->npieces * sizeof *s->backward);
    int n = 0;
    for (int st = 0; st < s->nstages; st++)
        for (int k = s->stages[st].count - 1; k >= 0; k--)
            s->backward[n++] = s->stages[st].first + k;
}

/* One work unit of the stand-in compute: arithmetic on a few cache lines. */
static volatile float work_sink;
static int compute_waits; /* --compute wait: a unit is a microsecond of sleep */
static void work(long units)
{
    if (compute_waits) {
        struct timespec ts = {units / 1000000, (units % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0)
            ;
        return;
    }
    float acc[16] = {0};
    for (long u = 0; u < units; u++)
        for (int i = 0; i < 256; i++)
            for (int j = 0; j < 16; j++)
                acc[j] = acc[j] * 0.999f + (float)(i + j);
    float t = 0;
    for (int j = 0; j < 16; j++)
        t += acc[j];
    work_sink = t;
}

/* CPU seconds of this process (all its threads) so far. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double slowest(double t)
{
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void die(const char *what, const coll_err *err)
{
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    fprintf(stderr, "atom-coll-overlap: rank %d: %s: %s\n", r, what, err->msg);
    MPI_Abort(MPI_COMM_WORLD, 3);
}

/* One step of the stand-in backward: each stage computes, offering `points` progress calls
 * spread through its work, then marks its pieces; units_per_stage 0 means no compute. */
static int *tokens_mine, *tokens_all;
static float *rows_buf;

static double backward(coll_ctx *ctx, coll_buckets *b, const grad_set *s, long units_per_stage,
                       int points, int with_comm, double *tail)
{
    coll_err err;
    coll_group *dg = coll_group_of(ctx, COLL_DATA);
    coll_req *rows_req = NULL;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    int marked = 0;
    if (with_comm && s->rows &&
        coll_all_gather(dg, tokens_mine, tokens_all, s->tokens, COLL_I32, &err) != 0)
        die("token all-gather", &err);
    for (int st = 0; st < s->nstages; st++) {
        for (int p = 0; p < points; p++) {
            work(units_per_stage / points);
            if (coll_progress(ctx, &err) != 0)
                die("progress", &err);
        }
        for (int k = 0; with_comm && k < s->stages[st].count; k++)
            if (coll_buckets_mark_ready(b, s->backward[marked++], &err) != 0)
                die("mark_ready", &err);
    }
    if (with_comm && s->rows &&
        coll_all_reduce_start(dg, rows_buf, s->rows, COLL_F32, COLL_AVG, &rows_req, &err) != 0)
        die("rows all-reduce", &err);
    double t1 = MPI_Wtime();
    if (with_comm && coll_buckets_finish(b, &err) != 0)
        die("finish", &err);
    if (rows_req && coll_wait(rows_req, &err) != 0)
        die("rows all-reduce", &err);
    double t2 = MPI_Wtime();
    if (tail) /* the slowest rank's wait in finish, after its backward */
        *tail = slowest(t2 - t1);
    return slowest(t2 - t0);
}

int main(int argc, char **argv)
{
    int provided, wr, ws;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    int reps = 3, points = 1, layout = LAYOUT_GPT2, verbose = 0;
    long tokens = 8192; /* micro_batch 8 x context 1024, configs/examples/gpt2-124m-64gpu.yaml */
    coll_progress_mode progress = COLL_PROGRESS_POLL;
    int sleep_us = 100;
    char buckets_mib[64] = "1,2,4";
    static const struct option longs[] = {
        {"buckets-mib", required_argument, 0, 'b'}, {"progress", required_argument, 0, 'p'},
        {"points", required_argument, 0, 'k'}, {"reps", required_argument, 0, 'r'},
        {"layout", required_argument, 0, 'l'}, {"sleep-us", required_argument, 0, 's'},
        {"compute", required_argument, 0, 'c'}, {"verbose", no_argument, 0, 'v'},
        {"tokens", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:p:k:r:l:s:c:t:vh", longs, NULL)) != -1) {
        switch (c) {
        case 'b': snprintf(buckets_mib, sizeof buckets_mib, "%s", optarg); break;
        case 'p': progress = strcmp(optarg, "thread") == 0 ? COLL_PROGRESS_THREAD : COLL_PROGRESS_POLL; break;
        case 'k': points = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'l':
            if (strcmp(optarg, "gpt2") != 0 && strcmp(optarg, "gpt2-tied") != 0 &&
                strcmp(optarg, "layers") != 0) {
                if (wr == 0)
                    fprintf(stderr, "atom-coll-overlap: --layout takes gpt2, gpt2-tied or layers, not %s\n", optarg);
                MPI_Finalize();
                return 2;
            }
            layout = strcmp(optarg, "gpt2") == 0 ? LAYOUT_GPT2 : strcmp(optarg, "layers") == 0 ? LAYOUT_LAYERS : LAYOUT_GPT2_TIED;
            break;
        case 't': tokens = atol(optarg); break;
        case 's': sleep_us = atoi(optarg); break;
        case 'c':
            if (strcmp(optarg, "cpu") != 0 && strcmp(optarg, "wait") != 0) {
                if (wr == 0)
                    fprintf(stderr, "atom-coll-overlap: --compute takes cpu or wait, not %s\n", optarg);
                MPI_Finalize();
                return 2;
            }
            compute_waits = strcmp(optarg, "wait") == 0;
            break;
        case 'v': verbose = 1; break;
        case 'h':
            if (wr == 0)
                printf("usage: mpirun -n N %s [--buckets-mib 1,2,4] [--progress poll|thread] "
                       "[--sleep-us N] [--points K per stage] [--reps R] [--layout gpt2|gpt2-tied|layers] "
                       "[--tokens N per rank] [--compute cpu|wait] [--verbose]\n",
                       argv[0]);
            MPI_Finalize();
            return 0;
        default:
            MPI_Finalize();
            return 2;
        }
    }
    if (points < 1 || reps < 1 || tokens < 1) {
        MPI_Finalize();
        return 2;
    }
    coll_err err = {""};
    coll_config cfg = {.backend = COLL_BACKEND_MPI, .tensor_size = 1, .hang_timeout_s = 600,
                       .progress = progress, .progress_sleep_us = sleep_us};
    coll_ctx *ctx;
    if (coll_open(&cfg, &ctx, &err) != 0)
        die("open", &err);
    static grad_set s;
    int dsize = coll_group_size(coll_group_of(ctx, COLL_DATA));
    gpt2_set(&s, layout, (size_t)tokens, dsize);
    tokens_mine = calloc((size_t)tokens, sizeof *tokens_mine);
    tokens_all = calloc((size_t)tokens * (size_t)dsize, sizeof *tokens_all);
    rows_buf = calloc(s.rows + 1, sizeof *rows_buf);
    if (!tokens_mine || !tokens_all || !rows_buf) {
        fprintf(stderr, "atom-coll-overlap: out of memory for the embedding rows\n");
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    float *grads = malloc(s.count * sizeof *grads);
    if (!grads) {
        fprintf(stderr, "atom-coll-overlap: cannot allocate %zu floats\n", s.count);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    for (size_t i = 0; i < s.count; i++)
        grads[i] = (float)(i % 17);
    if (wr == 0)
        printf("# atom-coll-overlap: %d ranks, %zu floats (%s), %d stages, compute %s, progress %s%s, %d "
               "progress point(s) per stage, median of %d\n",
               ws, s.count,
               layout == LAYOUT_LAYERS ? "evenly over the layers"
               : layout == LAYOUT_GPT2_TIED ? "gpt2-124m layout, wte whole at the end"
                                            : "gpt2-124m layout, wte's head part first",
               s.nstages,
               compute_waits ? "waits (host idle, as on a GPU)" : "on the CPU",
               progress == COLL_PROGRESS_THREAD ? "thread" : "poll",
               progress == COLL_PROGRESS_THREAD ? (sleep_us == 100 ? " (100 us sleeps)" : " (custom sleeps)") : "",
               points, reps);
    if (wr == 0)
        printf("# %-8s %8s %10s %10s %10s %10s %8s %9s %8s\n", "bucket", "buckets", "comm(s)", "compute(s)",
               "overlap(s)", "exposed(s)", "share", "comm-cpu", "tail(s)");
    work(2000); /* warm-up */

    char *save = NULL;
    for (char *tok = strtok_r(buckets_mib, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double mib = atof(tok);
        coll_buckets *b;
        if (coll_buckets_create(coll_group_of(ctx, COLL_DATA), grads, s.count, (size_t)(mib * 1048576.0),
                                &b, &err) != 0)
            die("buckets", &err);
        for (int p = 0; p < s.npieces; p++)
            if (coll_buckets_add(b, s.off[p], s.len[p], &err) < 0)
                die("add", &err);
        if (coll_buckets_seal(b, &err) != 0)
            die("seal", &err);
        double comm[16], comp[16], over[16], share[16], tail[16];
        int R = reps > 16 ? 16 : reps;
        backward(ctx, b, &s, 0, 1, 1, NULL); /* warm-up: first touch of the staging buffers */
        double cpu_all = 0, wall_all = 0, unit_s = 0;
        /* The machine's load drifts: each run measures comm, calibrates the work unit, then
         * measures compute alone and the overlap right after, and its own exposed share. */
        for (int r = 0; r < R; r++) {
            double cpu0 = cpu_seconds();
            comm[r] = backward(ctx, b, &s, 0, 1, 1, NULL);
            cpu_all += cpu_seconds() - cpu0;
            wall_all += comm[r];
            if (compute_waits)
                unit_s = 1e-6;
            else if (r == 0) { /* a probe, with every rank computing at once as in the backward */
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = MPI_Wtime();
                work(40000);
                unit_s = slowest(MPI_Wtime() - t0) / 40000;
            }
            long units = (long)(comm[r] / unit_s / s.nstages);
            if (units < points)
                units = points;
            comp[r] = backward(ctx, b, &s, units, points, 0, NULL);
            if (!compute_waits)
                unit_s = comp[r] / (double)(units * s.nstages); /* what a unit cost just now */
            over[r] = backward(ctx, b, &s, units, points, 1, &tail[r]);
            share[r] = (over[r] - comp[r]) / comm[r];
            if (verbose && wr == 0)
                printf("#   run %d: comm %.3f compute %.3f overlap %.3f tail %.3f share %.1f%%\n", r,
                       comm[r], comp[r], over[r], tail[r], 100.0 * share[r]);
        }
        /* How busy the all-reduces alone keep a rank's CPU: on shared memory they are copies and
         * sums done by the ranks themselves, a part no overlap can hide when compute fills the
         * cores. Mean over ranks. */
        double busy = cpu_all / wall_all;
        MPI_Allreduce(MPI_IN_PLACE, &busy, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        busy /= ws;
        double t_comm = median(comm, R), t_comp = median(comp, R), t_over = median(over, R);
        double exposed = t_over - t_comp, mid_share = median(share, R), t_tail = median(tail, R);
        if (wr == 0)
            printf("  %-6.1fMiB %8d %10.3f %10.3f %10.3f %10.3f %7.1f%% %8.0f%% %8.3f\n", mib,
                   coll_buckets_count(b), t_comm, t_comp, t_over, exposed, 100.0 * mid_share,
                   100.0 * busy, t_tail);
        fflush(stdout);
        coll_buckets_free(b);
    }
    if (wr == 0 && s.rows)
        printf("# gpt2: %ld tokens per rank gathered; %zu floats of embedding rows all-reduced at the end\n",
               tokens, s.rows);
    free(grads);
    free(s.backward);
    free(tokens_mine);
    free(tokens_all);
    free(rows_buf);
    coll_close(ctx);
    MPI_Finalize();
    return 0;
}
