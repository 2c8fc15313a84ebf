/* bench/worker/bench_worker.c: atom-bench-worker, the training loop's speed on the CPU beside
 * the limit set by its own matrix multiplications, measured in the same run.
 *
 * Under mpirun -np R it trains gpt-tiny (B=8 per rank, T=128, C=256, L=4, NH=4, V=256) data-
 * parallel over R ranks through the real loop (atom_train_run), in fp32 or (--bf16) under
 * training.precision: bf16, and reports tokens/s and ms/step over the measured steps, and the
 * share of that time spent in matrix multiplications: this executable defines cblas_sgemm and
 * dnnl_primitive_execute (the bf16 matmuls' oneDNN primitives) itself, timing each call and
 * passing it to the library's own (dlsym RTLD_NEXT), so the model's code is measured unchanged.
 * It then replays exactly the matmul calls of one step (sgemm: shapes, leading dimensions, beta;
 * oneDNN: the same primitives on buffers of their own) alone, on every rank at once: the step
 * time if nothing but the matmuls ran, i.e. the ceiling in tokens/s.
 *
 * The backend table it trains with is the CPU one with every op wrapped in a timer (the same
 * functions, called through one more pointer): rank 0 also prints, per op, its milliseconds per
 * step, the matmul time inside it, and those matmuls replayed alone, so the time outside them and
 * the cost of calling them from the loop (cold caches, another op's data) show per op.
 *
 * Output: one "key value" line per figure (rank 0), so run.sh and people can read it.
 */
#include <dlfcn.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <mpi.h>
#include <oneapi/dnnl/dnnl.h>

#include "common/common.h"
#include "worker/backend.h"
#include "worker/train.h"

/* ---- the cblas_sgemm interposer ---------------------------------------------------------- */

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint, const blasint,
                         const float, const float *, const blasint, const float *, const blasint,
                         const float, float *, const blasint);

typedef struct sgemm_shape {
    int order, ta, tb, M, N, K, lda, ldb, ldc;
    int beta_zero;
    int op;     /* the backend op that called it (op_names), or -1 */
    long calls; /* during the measured steps */
} sgemm_shape;

#define MAX_SHAPES 256

typedef struct sgemm_meter {
    sgemm_fn real;
    double seconds;        /* inside sgemm and oneDNN matmuls since the last reset */
    bool recording;        /* shapes are counted during the measured steps only */
    int current_op;        /* the wrapped backend op running now, or -1 */
    sgemm_shape shapes[MAX_SHAPES];
    int n_shapes;
} sgemm_meter;

static sgemm_meter g_meter;

/* The oneDNN primitives the bf16 matmuls run (the backend keeps each for the process). */
typedef dnnl_status_t (*dnnl_exec_fn)(const_dnnl_primitive_t, dnnl_stream_t, int,
                                      const dnnl_exec_arg_t *);
typedef struct dnnl_call {
    const_dnnl_primitive_t prim;
    int op;
    long calls; /* during the measured steps */
} dnnl_call;

static struct {
    dnnl_exec_fn real;
    dnnl_call calls[MAX_SHAPES];
    int n;
} g_dnnl;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* CPU time of the calling thread: on a shared machine it leaves out the time the thread waited
 * for a core, so two builds compare by it when wall times swing with the load. */
static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void record_shape(const sgemm_shape *s)
{
    for (int i = 0; i < g_meter.n_shapes; i++) {
        sgemm_shape *h = &g_meter.shapes[i];
        if (h->order == s->order && h->ta == s->ta && h->tb == s->tb && h->M == s->M &&
            h->N == s->N && h->K == s->K && h->lda == s->lda && h->ldb == s->ldb &&
            h->ldc == s->ldc && h->beta_zero == s->beta_zero && h->op == s->op) {
            h->calls++;
            return;
        }
    }
    if (g_meter.n_shapes < MAX_SHAPES) {
        g_meter.shapes[g_meter.n_shapes] = *s;
        g_meter.shapes[g_meter.n_shapes++].calls = 1;
    }
}

void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER Order, OPENBLAS_CONST enum CBLAS_TRANSPOSE TransA,
                 OPENBLAS_CONST enum CBLAS_TRANSPOSE TransB, OPENBLAS_CONST blasint M,
                 OPENBLAS_CONST blasint N, OPENBLAS_CONST blasint K, OPENBLAS_CONST float alpha,
                 OPENBLAS_CONST float *A, OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *B,
                 OPENBLAS_CONST blasint ldb, OPENBLAS_CONST float beta, float *C,
                 OPENBLAS_CONST blasint ldc)
{
    if (!g_meter.real) {
        /* OpenBLAS's own symbol, the next definition after this executable's. */
        void *sym = dlsym(RTLD_NEXT, "cblas_sgemm");
        if (!sym) {
            fprintf(stderr, "atom-bench-worker: cannot find OpenBLAS's cblas_sgemm\n");
            abort();
        }
        memcpy(&g_meter.real, &sym, sizeof sym);
    }
    double t0 = now_s();
    g_meter.real(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    g_meter.seconds += now_s() - t0;
    if (g_meter.recording) {
        sgemm_shape s = {(int)Order, (int)TransA, (int)TransB, M, N, K, lda, ldb, ldc,
                         beta == 0.0f, g_meter.current_op, 0};
        record_shape(&s);
    }
}

dnnl_status_t dnnl_primitive_execute(const_dnnl_primitive_t primitive, dnnl_stream_t stream,
                                     int nargs, const dnnl_exec_arg_t *args)
{
    if (!g_dnnl.real) {
        void *sym = dlsym(RTLD_NEXT, "dnnl_primitive_execute");
        if (!sym) {
            fprintf(stderr, "atom-bench-worker: cannot find oneDNN's dnnl_primitive_execute\n");
            abort();
        }
        memcpy(&g_dnnl.real, &sym, sizeof sym);
    }
    double t0 = now_s();
    dnnl_status_t st = g_dnnl.real(primitive, stream, nargs, args);
    g_meter.seconds += now_s() - t0; /* matmul time, as sgemm's */
    if (g_meter.recording) {
        int i = 0;
        while (i < g_dnnl.n && !(g_dnnl.calls[i].prim == primitive &&
                                 g_dnnl.calls[i].op == g_meter.current_op))
            i++;
        if (i == g_dnnl.n && g_dnnl.n < MAX_SHAPES)
            g_dnnl.calls[g_dnnl.n++] = (dnnl_call){primitive, g_meter.current_op, 0};
        if (i < g_dnnl.n)
            g_dnnl.calls[i].calls++;
    }
    return st;
}

/* ---- the CPU backend with every op timed ------------------------------------------------ */

static const atom_backend *cpu_ops;

#define OPS(X)                                                                                     \
    X(encoder_forward) X(encoder_backward) X(layernorm_forward) X(layernorm_backward)             \
    X(matmul_forward) X(matmul_backward) X(attention_forward) X(attention_backward)                \
    X(gelu_forward) X(gelu_backward) X(residual_forward) X(accumulate) X(zero) X(column_max)       \
    X(ce_rowmax) X(ce_sums) X(ce_loss) X(ce_backward) X(sum_squares) X(adamw)
#define OP_ENUM(name) OP_##name,
enum { OPS(OP_ENUM) N_OPS };
#define OP_NAME(name) #name,
static const char *const op_names[N_OPS] = {OPS(OP_NAME)};

typedef struct op_meter {
    double seconds, sgemm_seconds; /* during the measured steps */
    long calls;
} op_meter;
static op_meter g_ops[N_OPS];

/* Runs `call` as op `id`: its time, and the matmul time inside it, go to g_ops[id]. */
#define TIMED(id, call)                                                                            \
    do {                                                                                           \
        double t0_ = now_s(), s0_ = g_meter.seconds;                                               \
        g_meter.current_op = (id);                                                                 \
        call;                                                                                      \
        g_meter.current_op = -1;                                                                   \
        if (g_meter.recording) {                                                                   \
            g_ops[id].seconds += now_s() - t0_;                                                    \
            g_ops[id].sgemm_seconds += g_meter.seconds - s0_;                                      \
            g_ops[id].calls++;                                                                     \
        }                                                                                          \
    } while (0)

static void t_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                              int vs, int vrows, int B, int T, int C)
{
    TIMED(OP_encoder_forward, cpu_ops->encoder_forward(out, tokens, wte, wpe, vs, vrows, B, T, C));
}
static void t_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                               int vs, int vrows, int B, int T, int C)
{
    TIMED(OP_encoder_backward,
          cpu_ops->encoder_backward(dwte, dwpe, dout, tokens, vs, vrows, B, T, C));
}
static void t_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, int N, int C)
{
    TIMED(OP_layernorm_forward, cpu_ops->layernorm_forward(out, mean, rstd, inp, w, b, N, C));
}
static void t_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                                 const float *inp, const float *w, const float *mean,
                                 const float *rstd, int N, int C)
{
    TIMED(OP_layernorm_backward,
          cpu_ops->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C));
}
static void t_matmul_forward(float *out, const float *inp, const float *w, const float *b, int N,
                             int IN, int OUT, bool bf16)
{
    TIMED(OP_matmul_forward, cpu_ops->matmul_forward(out, inp, w, b, N, IN, OUT, bf16));
}
static void t_matmul_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int N, int IN, int OUT, bool bf16)
{
    TIMED(OP_matmul_backward,
          cpu_ops->matmul_backward(dinp, dw, db, dout, inp, w, N, IN, OUT, bf16));
}
static void t_attention_forward(float *out, float *att, const float *qkv, int B, int T, int NH,
                                int hs)
{
    TIMED(OP_attention_forward, cpu_ops->attention_forward(out, att, qkv, B, T, NH, hs));
}
static void t_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                                 const float *att, int B, int T, int NH, int hs)
{
    TIMED(OP_attention_backward,
          cpu_ops->attention_backward(dqkv, datt, dout, qkv, att, B, T, NH, hs));
}
static void t_gelu_forward(float *out, const float *inp, int64_t n)
{
    TIMED(OP_gelu_forward, cpu_ops->gelu_forward(out, inp, n));
}
static void t_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
    TIMED(OP_gelu_backward, cpu_ops->gelu_backward(dinp, inp, dout, n));
}
static void t_residual_forward(float *out, const float *x, const float *y, const float *bias,
                               int N, int C)
{
    TIMED(OP_residual_forward, cpu_ops->residual_forward(out, x, y, bias, N, C));
}
static void t_accumulate(float *out, const float *x, int64_t n)
{
    TIMED(OP_accumulate, cpu_ops->accumulate(out, x, n));
}
static void t_zero(float *x, int64_t n) { TIMED(OP_zero, cpu_ops->zero(x, n)); }
static void t_column_max(float *out, const float *in, int rows, int cols)
{
    TIMED(OP_column_max, cpu_ops->column_max(out, in, rows, cols));
}
static void t_ce_rowmax(float *rowmax, const float *logits, int N, int vcols, int valid)
{
    TIMED(OP_ce_rowmax, cpu_ops->ce_rowmax(rowmax, logits, N, vcols, valid));
}
static void t_ce_sums(float *sums, const float *logits, const float *rowmax, const int *targets,
                      int vs, int N, int vcols, int valid)
{
    TIMED(OP_ce_sums, cpu_ops->ce_sums(sums, logits, rowmax, targets, vs, N, vcols, valid));
}
static void t_ce_loss(float *losses, const float *rowmax, const float *sums, int N)
{
    TIMED(OP_ce_loss, cpu_ops->ce_loss(losses, rowmax, sums, N));
}
static void t_ce_backward(float *dlogits, const float *logits, const float *rowmax,
                          const float *sums, const int *targets, int vs, float dloss, int N,
                          int vcols, int valid)
{
    TIMED(OP_ce_backward, cpu_ops->ce_backward(dlogits, logits, rowmax, sums, targets, vs, dloss,
                                               N, vcols, valid));
}
static void t_sum_squares(double *host_result, const float *x, int64_t n)
{
    TIMED(OP_sum_squares, cpu_ops->sum_squares(host_result, x, n));
}
static void t_adamw(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                    float b1, float b2, float eps, float wd, float b1c, float b2c, float mult)
{
    TIMED(OP_adamw, cpu_ops->adamw(param, grad, m, v, n, lr, b1, b2, eps, wd, b1c, b2c, mult));
}

static atom_backend timed_cpu_backend(void)
{
    cpu_ops = atom_backend_cpu();
    atom_backend t = *cpu_ops;
#define OP_WRAP(name) t.name = t_##name;
    OPS(OP_WRAP)
    return t;
}

/* ---- marks taken by the training loop after each step ------------------------------------ */

#define MAX_STEPS 1000

typedef struct bench_marks {
    int64_t warmup, steps;  /* steps not measured, steps measured */
    double t_start, t_end, sgemm_start, sgemm_end;
    double cpu_start, cpu_end; /* the training thread's CPU time */
    double t_last, step_s[MAX_STEPS]; /* each measured step's time, for the median */
} bench_marks;

static void on_step(void *arg, int64_t done)
{
    bench_marks *m = arg;
    double t = now_s();
    if (done > m->warmup && done <= m->warmup + m->steps)
        m->step_s[done - m->warmup - 1] = t - m->t_last;
    m->t_last = t;
    if (done == m->warmup) {
        m->cpu_start = thread_cpu_s();
        m->t_start = now_s();
        m->sgemm_start = g_meter.seconds;
        g_meter.recording = true;
    } else if (done == m->warmup + m->steps) {
        m->cpu_end = thread_cpu_s();
        m->t_end = now_s();
        m->sgemm_end = g_meter.seconds;
        g_meter.recording = false;
    }
}

/* ---- the matmul ceiling: one step's calls, matmuls alone ---------------------------------- */

static size_t matrix_floats(int order, int trans, int rows, int cols, int ld)
{
    /* Stored rows in row-major (or columns in column-major) of the operand as passed. */
    int stored_major = (order == CblasRowMajor) == (trans == CblasNoTrans) ? rows : cols;
    return (size_t)stored_major * (size_t)ld;
}

/* A recorded oneDNN primitive's operands (source, weights, destination, and its bias if it has
 * one), made anew: memory of the primitive's own descriptors, filled with small values (0x3C3C:
 * 0.0115 in bf16 and in fp32). Returns how many. */
static int dnnl_replay_args(const_dnnl_primitive_t prim, dnnl_engine_t engine,
                            dnnl_exec_arg_t args[4])
{
    const_dnnl_primitive_desc_t pd;
    dnnl_primitive_get_primitive_desc(prim, &pd);
    const dnnl_query_t what[4] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md,
                                  dnnl_query_weights_md};
    const int arg[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
    int n = 0;
    for (int j = 0; j < 4; j++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what[j], j == 3);
        if (!md || md->ndims == 0)
            continue; /* no bias */
        dnnl_memory_t mem;
        if (dnnl_memory_create(&mem, md, engine, DNNL_MEMORY_ALLOCATE) != dnnl_success) {
            fprintf(stderr, "atom-bench-worker: cannot make a oneDNN replay buffer\n");
            abort();
        }
        void *data;
        dnnl_memory_get_data_handle(mem, &data);
        memset(data, 0x3C, dnnl_memory_desc_get_size(md));
        args[n++] = (dnnl_exec_arg_t){arg[j], mem};
    }
    return n;
}

/* Seconds that one step's matmul calls (sgemm and oneDNN) take when replayed alone (best of
 * `repeats`); per_op (N_OPS) gets the same for the calls of each backend op, from the best
 * repeat. */
static double replay_step(int64_t measured_steps, int repeats, double *per_op)
{
    double best = INFINITY, op_s[N_OPS];
    float *bufs[MAX_SHAPES][3];
    dnnl_engine_t engine = NULL; /* the primitives' own: a stream runs its engine's only */
    dnnl_stream_t stream = NULL;
    static dnnl_exec_arg_t dnnl_args[MAX_SHAPES][4];
    static int dnnl_nargs[MAX_SHAPES];
    if (g_dnnl.n > 0) {
        const_dnnl_primitive_desc_t pd;
        dnnl_primitive_get_primitive_desc(g_dnnl.calls[0].prim, &pd);
        dnnl_primitive_desc_query(pd, dnnl_query_engine, 0, &engine);
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
        for (int i = 0; i < g_dnnl.n; i++)
            dnnl_nargs[i] = dnnl_replay_args(g_dnnl.calls[i].prim, engine, dnnl_args[i]);
    }
    for (int i = 0; i < g_meter.n_shapes; i++) {
        sgemm_shape *s = &g_meter.shapes[i];
        size_t na = matrix_floats(s->order, s->ta, s->M, s->K, s->lda);
        size_t nb = matrix_floats(s->order, s->tb, s->K, s->N, s->ldb);
        size_t nc = matrix_floats(s->order, CblasNoTrans, s->M, s->N, s->ldc);
        size_t n[3] = {na, nb, nc};
        for (int j = 0; j < 3; j++) {
            bufs[i][j] = malloc(n[j] * sizeof(float));
            for (size_t e = 0; e < n[j]; e++)
                bufs[i][j][e] = (float)((e * 2654435761u) % 1000) * 1e-3f - 0.5f;
        }
    }
    for (int r = 0; r < repeats; r++) {
        MPI_Barrier(MPI_COMM_WORLD); /* every rank replays at once, as they trained */
        double t0 = now_s();
        for (int o = 0; o < N_OPS; o++)
            op_s[o] = 0;
        for (int i = 0; i < g_meter.n_shapes; i++) {
            sgemm_shape *s = &g_meter.shapes[i];
            long per_step = (long)llround((double)s->calls / (double)measured_steps);
            double ts = now_s();
            for (long c = 0; c < per_step; c++)
                g_meter.real(s->order, s->ta, s->tb, s->M, s->N, s->K, 1.0f, bufs[i][0], s->lda,
                             bufs[i][1], s->ldb, s->beta_zero ? 0.0f : 1.0f, bufs[i][2], s->ldc);
            if (s->op >= 0)
                op_s[s->op] += now_s() - ts;
        }
        for (int i = 0; i < g_dnnl.n; i++) {
            dnnl_call *d = &g_dnnl.calls[i];
            long per_step = (long)llround((double)d->calls / (double)measured_steps);
            double ts = now_s();
            for (long c = 0; c < per_step; c++) {
                if (g_dnnl.real(d->prim, stream, dnnl_nargs[i], dnnl_args[i]) != dnnl_success) {
                    fprintf(stderr, "atom-bench-worker: a oneDNN replay failed\n");
                    abort();
                }
                dnnl_stream_wait(stream);
            }
            if (d->op >= 0)
                op_s[d->op] += now_s() - ts;
        }
        double t = now_s() - t0;
        if (t < best) {
            best = t;
            memcpy(per_op, op_s, sizeof op_s);
        }
    }
    for (int i = 0; i < g_meter.n_shapes; i++)
        for (int j = 0; j < 3; j++)
            free(bufs[i][j]);
    for (int i = 0; i < g_dnnl.n; i++)
        for (int j = 0; j < dnnl_nargs[i]; j++)
            dnnl_memory_destroy(dnnl_args[i][j].memory);
    if (stream)
        dnnl_stream_destroy(stream);
    return best;
}

static double median(double *x, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int main(int argc, char **argv)
{
    if (!getenv("OPENBLAS_NUM_THREADS")) {
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        openblas_set_num_threads(1);
    }
    const char *data_path = "/usr/share/common-licenses/GPL-3";
    int warmup = 3, steps = 10;
    bool bf16 = false;
    static const struct option long_opts[] = {{"data", required_argument, NULL, 'd'},
                                              {"warmup", required_argument, NULL, 'w'},
                                              {"steps", required_argument, NULL, 's'},
                                              {"bf16", no_argument, NULL, 'b'},
                                              {"help", no_argument, NULL, 'h'},
                                              {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'd': data_path = optarg; break;
        case 'w': warmup = atoi(optarg); break;
        case 's': steps = atoi(optarg); break;
        case 'b': bf16 = true; break;
        case 'h':
            printf("usage: mpirun -np R atom-bench-worker [--steps N] [--warmup W] "
                   "[--data FILE] [--bf16]\n");
            return 0;
        default: return 2;
        }
    }
    if (warmup < 1 || steps < 1 || steps > MAX_STEPS) {
        fprintf(stderr, "atom-bench-worker: --warmup must be positive, --steps 1..%d\n",
                MAX_STEPS);
        return 2;
    }
    int provided, rank, world;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    atom_log_init("atom-bench-worker", ATOM_LOG_WARN);

    atom_plan plan;
    memset(&plan, 0, sizeof plan);
    atom_spec *spec = &plan.spec;
    atom_spec_defaults(spec);
    atom_model_preset("gpt-tiny", &spec->model);
    snprintf(spec->data.path, sizeof spec->data.path, "%s", data_path);
    spec->resources.gpus = world;
    spec->resources.device = ATOM_DEVICE_CPU;
    spec->parallelism.tensor = 1;
    spec->parallelism.data = world;
    spec->training.micro_batch = 8;
    spec->training.global_batch = 8 * world;
    spec->training.steps = warmup + steps;
    spec->training.precision = bf16 ? ATOM_PRECISION_BF16 : ATOM_PRECISION_FP32;
    spec->checkpoint.dir[0] = '\0';
    plan.world = world;
    plan.ranks = calloc((size_t)world, sizeof *plan.ranks);
    plan.nodes = calloc(1, sizeof *plan.nodes);
    plan.n_nodes = 1;
    for (int r = 0; r < world; r++)
        plan.ranks[r] = (atom_rank_place){r, r, 0, 0, r};

    static bench_marks marks;
    marks.warmup = warmup;
    marks.steps = steps;
    g_meter.current_op = -1;
    static atom_backend timed;
    timed = timed_cpu_backend();
    atom_train_opts opts = {.plan = &plan, .backend = &timed, .progress = NULL,
                            .on_step = on_step, .on_step_arg = &marks};
    atom_train_result result;
    atom_err err;
    if (atom_train_run(&opts, &result, &err) != 0) {
        fprintf(stderr, "atom-bench-worker: rank %d: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double elapsed = marks.t_end - marks.t_start;
    double share = (marks.sgemm_end - marks.sgemm_start) / elapsed, share_sum = 0;
    MPI_Reduce(&share, &share_sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    double replay[3], replay_ops[3][N_OPS];
    for (int i = 0; i < 3; i++) {
        double t = replay_step(steps, 3, replay_ops[i]);
        MPI_Allreduce(&t, &replay[i], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    double matmul_step = median(replay, 3);
    if (rank == 0) {
        double tokens_per_step = (double)spec->training.global_batch * spec->model.context;
        double ms = 1000 * elapsed / steps;
        double tps = tokens_per_step * steps / elapsed;
        double ceiling = tokens_per_step / matmul_step;
        long calls = 0;
        for (int i = 0; i < g_meter.n_shapes; i++)
            calls += g_meter.shapes[i].calls;
        printf("config gpt-tiny B=8/rank T=128 C=256 L=4 NH=4 V=256 ranks=%d threads=%s "
               "precision=%s\n", world, getenv("OPENBLAS_NUM_THREADS"), bf16 ? "bf16" : "fp32");
        printf("steps %d (after %d warm-up)\n", steps, warmup);
        printf("loss %.4f -> %.4f\n", result.first_loss, result.last_loss);
        double median_s = median(marks.step_s, steps);
        printf("tokens_per_s %.0f\n", tps);
        printf("ms_per_step %.1f\n", ms);
        printf("cpu_ms_per_step %.1f (rank 0's training thread)\n",
               1000 * (marks.cpu_end - marks.cpu_start) / steps);
        printf("tokens_per_s_median_step %.0f\n", tokens_per_step / median_s);
        long dnnl_calls = 0;
        for (int i = 0; i < g_dnnl.n; i++)
            dnnl_calls += g_dnnl.calls[i].calls;
        printf("matmul_share %.1f%%\n", 100 * share_sum / world);
        printf("sgemm_calls_per_step %ld (%d shapes)\n", calls / steps, g_meter.n_shapes);
        printf("onednn_bf16_calls_per_step %ld (%d primitives)\n", dnnl_calls / steps, g_dnnl.n);
        printf("matmul_alone_ms_per_step %.1f\n", 1000 * matmul_step);
        printf("matmul_ceiling_tokens_per_s %.0f\n", ceiling);
        printf("of_ceiling %.0f%%\n", 100 * tps / ceiling);
        /* rank 0's ops, by time; "alone": its matmul calls replayed by themselves (the replay
         * whose total was the median) */
        int mid = 0;
        for (int i = 0; i < 3; i++)
            if (replay[i] == matmul_step)
                mid = i;
        double ops_total = 0;
        printf("ops per step on rank 0 (ms): total, matmuls inside, those matmuls alone, calls\n");
        for (int done = 0; done < N_OPS; done++) {
            int top = -1;
            for (int o = 0; o < N_OPS; o++)
                if (g_ops[o].calls >= 0 && (top < 0 || g_ops[o].seconds > g_ops[top].seconds))
                    top = o;
            if (g_ops[top].calls == 0)
                break;
            printf("   op %-20s %7.1f %7.1f %7.1f %6ld\n", op_names[top],
                   1000 * g_ops[top].seconds / steps, 1000 * g_ops[top].sgemm_seconds / steps,
                   1000 * replay_ops[mid][top], g_ops[top].calls / steps);
            ops_total += g_ops[top].seconds;
            g_ops[top].calls = -1; /* printed */
        }
        printf("   outside the ops       %7.1f  (collectives, data, the loop)\n",
               1000 * (elapsed - ops_total) / steps);
    }
    free(plan.ranks);
    free(plan.nodes);
    MPI_Finalize();
    /* A fast loop that does not learn measures nothing: the loss must have fallen. */
    if (!(result.last_loss < result.first_loss)) {
        if (rank == 0)
            fprintf(stderr, "atom-bench-worker: the loss did not fall (%.4f -> %.4f)\n",
                    result.first_loss, result.last_loss);
        return 1;
    }
    return 0;
}
