/* worker/cpu_backend.c: the CPU implementation of the backend ops (worker/backend.h). Matmuls,
 * including attention's per-head products, go to OpenBLAS's cblas_sgemm (one thread per rank:
 * OPENBLAS_NUM_THREADS=1), the Linear products under bf16 to oneDNN (as many OpenMP threads as
 * OpenBLAS's); everything else is a loop over the worker/kernels.h functions.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <oneapi/dnnl/dnnl.h>

#include "worker/backend.h"
#include "worker/bf16_gemm.h"
#include "worker/kernels.h"

/* The elementwise and per-row loops are built three times, for AVX-512 (16 floats a vector),
 * AVX2 (8) and the x86-64 baseline (SSE2, 4), and the loader picks one per machine (gcc's
 * target_clones, an ifunc): the build stays portable and a recent CPU runs wider (GELU over 1M
 * floats: 1.4 ms of CPU time with AVX2, 0.9 with AVX-512). ISO C mode keeps gcc from
 * contracting a * b + c into an FMA, so every clone rounds every operation alike: the results
 * are the same bits on any of them (5 steps of TP=2 gave the same losses and norms with the
 * AVX-512 and the AVX2 build). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CPU_WIDE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_WIDE
#endif

/* ---- memory ---- */

/* Buffers of 2 MiB or more are aligned to 2 MiB and offered to transparent huge pages: with
 * 4 KiB pages sgemm's strided reads through the activations miss the TLB. (Linux's default THP
 * mode, madvise, backs only what is asked for.) */
#define HUGE_PAGE ((size_t)2 << 20)

static void *cpu_alloc(size_t bytes)
{
    void *p = NULL;
    size_t rounded = (bytes + 63) / 64 * 64; /* cache-line aligned, never zero bytes */
    if (rounded == 0)
        rounded = 64;
    size_t align = rounded >= HUGE_PAGE ? HUGE_PAGE : 64;
    if (align == HUGE_PAGE)
        rounded = (rounded + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (posix_memalign(&p, align, rounded) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE)
        (void)madvise(p, rounded, MADV_HUGEPAGE); /* a hint: refused, the pages stay small */
#endif
    memset(p, 0, rounded);
    return p;
}

static void cpu_release(void *p) { free(p); }

static void cpu_zero(float *x, int64_t n) { memset(x, 0, (size_t)n * sizeof(float)); }

static int cpu_copy_out(void *host, const void *src, size_t bytes)
{
    memcpy(host, src, bytes);
    return 0;
}

static int cpu_copy_in(void *dst, const void *host, size_t bytes)
{
    memcpy(dst, host, bytes);
    return 0;
}

static int cpu_synchronize(void) { return 0; }

/* ---- embedding ---- */

CPU_WIDE static void cpu_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                                int vocab_start, int vrows, int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            int row = tokens[b * T + t] - vocab_start;
            const float *w = (row >= 0 && row < vrows) ? wte + (size_t)row * C : NULL;
            const float *p = wpe ? wpe + (size_t)t * C : NULL;
            for (int i = 0; i < C; i++)
                o[i] = (w ? w[i] : 0.0f) + (p ? p[i] : 0.0f);
        }
}

CPU_WIDE static void cpu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                                 int vocab_start, int vrows, int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            int row = tokens[b * T + t] - vocab_start;
            if (row >= 0 && row < vrows) {
                float *w = dwte + (size_t)row * C;
                for (int i = 0; i < C; i++)
                    w[i] += d[i];
            }
            float *p = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++)
                p[i] += d[i];
        }
}

/* ---- LayerNorm ---- */

CPU_WIDE static void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                  const float *weight, const float *bias, int N, int C)
{
    for (int n = 0; n < N; n++)
        atom_layernorm_row(out + (size_t)n * C, &mean[n], &rstd[n], inp + (size_t)n * C, weight,
                           bias, C);
}

CPU_WIDE static void cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, const float *mean,
                                   const float *rstd, int N, int C)
{
    for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * C;
        atom_layernorm_row_backward(dinp + o, dout + o, inp + o, weight, mean[n], rstd[n], C);
        atom_layernorm_param_grads(dweight, dbias, dout + o, inp + o, mean[n], rstd[n], C);
    }
}

/* ---- Linear ---- */

/* bf16 operands (bf16_gemm.h): the blocks are rounded to bf16 (kernels.h atom_bf16_bits) into a
 * scratch of bf16 values, then multiplied by a oneDNN matmul primitive with fp32 accumulation
 * and fp32 output: AMX or AVX-512 bf16 instructions where the CPU has them (a gpt-tiny step's
 * Linear products alone: 31 ms against fp32 sgemm's ~146 on a Sapphire Rapids core), sgemm on
 * the bf16 values widened back where oneDNN has none (CPUs without AVX-512). The
 * rounding is ours, not a oneDNN reorder, so both backends round alike (the tested
 * atom_bf16_bits). The scratch is static (zero-filled memory: no page is touched before a bf16
 * run, and no allocation can fail inside an op), and the process's: the ops run on the training
 * thread only. 1 Mi elements per operand hold every product of gpt-tiny in one block. */
#define CPU_BF16_SCRATCH ((int64_t)1 << 20)
static uint16_t bf16_scratch[2][CPU_BF16_SCRATCH] __attribute__((aligned(64)));

/* The block each scratch operand holds, valid inside one Linear op only (reset at its entry:
 * between ops the sources change, the next layer's activations or updated weights): the
 * backward's two products both read dout, and the second finds it rounded already (about a
 * quarter of the elements a step rounds). */
static struct bf16_block {
    const float *src;
    int rows, cols, ld;
} bf16_held[2];

static void bf16_held_reset(void) { memset(bf16_held, 0, sizeof bf16_held); }

CPU_WIDE static void cpu_bf16_round(int operand, const float *src, int rows, int cols, int ld)
{
    struct bf16_block *held = &bf16_held[operand];
    if (held->src == src && held->rows == rows && held->cols == cols && held->ld == ld)
        return;
    *held = (struct bf16_block){src, rows, cols, ld};
    uint16_t *dst = bf16_scratch[operand];
    for (int r = 0; r < rows; r++) {
        const float *restrict s = src + (size_t)r * ld;
        uint16_t *restrict d = dst + (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            d[c] = atom_bf16_bits(s[c]);
    }
}

/* One oneDNN primitive per block shape, created at its first use and kept for the process (a
 * primitive's creation costs far more than its run at these sizes: oneDNN JIT-compiles it).
 * The operands are the two scratch blocks, dense, transposed by their strides; only the output
 * (and bias) pointer changes from call to call. beta 1 is a sum post-op (out += product); a
 * bias (fp32) is oneDNN's, added as the output is written (no pass of its own over out). */
typedef struct bf16_matmul {
    bool trans_a, trans_b, accumulate, bias;
    int m, n, k, ldc;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c, bias_mem;
} bf16_matmul;

#define BF16_MATMULS 128
static struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    bf16_matmul matmuls[BF16_MATMULS];
    int n_matmuls;
} g_dnnl;

/* A oneDNN failure inside an op has no caller to return to (the ops return nothing, as a CUDA
 * kernel launch does): it ends the process with what failed, which mpirun reports. */
static void dnnl_check(dnnl_status_t st, const char *what, const bf16_matmul *g)
{
    if (st == dnnl_success)
        return;
    fprintf(stderr,
            "atom-worker: oneDNN (bf16 matmul %d x %d x %d%s%s): %s failed with status %d\n",
            g ? g->m : 0, g ? g->n : 0, g ? g->k : 0, g && g->trans_a ? ", A transposed" : "",
            g && g->trans_b ? ", B transposed" : "", what, (int)st);
    abort();
}

/* oneDNN's threads are OpenMP's (Debian builds it so), as many as the rank's OpenBLAS threads:
 * OPENBLAS_NUM_THREADS is the rank's thread count (1 unless the job gives a rank more cores),
 * and OpenMP's default, every core the rank may run on, would oversubscribe the cores that
 * other ranks use. Set on the training thread, whose calls the setting governs. */
static void dnnl_start(void)
{
    omp_set_num_threads(openblas_get_num_threads());
    dnnl_check(dnnl_engine_create(&g_dnnl.engine, dnnl_cpu, 0), "dnnl_engine_create", NULL);
    dnnl_check(dnnl_stream_create(&g_dnnl.stream, g_dnnl.engine, dnnl_stream_default_flags),
               "dnnl_stream_create", NULL);
}

static bf16_matmul *bf16_matmul_get(bool trans_a, bool trans_b, int m, int n, int k,
                                    bool accumulate, bool bias, int ldc)
{
    for (int i = 0; i < g_dnnl.n_matmuls; i++) {
        bf16_matmul *g = &g_dnnl.matmuls[i];
        if (g->trans_a == trans_a && g->trans_b == trans_b && g->m == m && g->n == n &&
            g->k == k && g->accumulate == accumulate && g->bias == bias && g->ldc == ldc)
            return g;
    }
    if (!g_dnnl.engine)
        dnnl_start();
    static bf16_matmul overflow; /* past BF16_MATMULS shapes: made anew for each call */
    bf16_matmul *g =
        g_dnnl.n_matmuls < BF16_MATMULS ? &g_dnnl.matmuls[g_dnnl.n_matmuls] : &overflow;
    if (g == &overflow && overflow.m) {
        dnnl_primitive_destroy(overflow.prim);
        dnnl_memory_destroy(overflow.a);
        dnnl_memory_destroy(overflow.b);
        dnnl_memory_destroy(overflow.c);
        dnnl_memory_destroy(overflow.bias_mem);
    }
    *g = (bf16_matmul){trans_a, trans_b, accumulate, bias, m, n, k, ldc,
                       NULL, NULL, NULL, NULL, NULL};
    /* row-major A (m, k): dense (m, k), or (k, m) read transposed; B (k, n): (k, n) or (n, k) */
    dnnl_dims_t a_dims = {m, k}, b_dims = {k, n}, c_dims = {m, n};
    dnnl_dims_t a_strides = {trans_a ? 1 : k, trans_a ? m : 1};
    dnnl_dims_t b_strides = {trans_b ? 1 : n, trans_b ? k : 1};
    dnnl_dims_t c_strides = {ldc, 1};
    dnnl_dims_t bias_dims = {1, n}, bias_strides = {n, 1};
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
    dnnl_check(dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_strides),
               "the A descriptor", g);
    dnnl_check(dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, b_strides),
               "the B descriptor", g);
    dnnl_check(dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides),
               "the C descriptor", g);
    dnnl_check(dnnl_memory_desc_init_by_strides(&bias_md, 2, bias_dims, dnnl_f32, bias_strides),
               "the bias descriptor", g);
    dnnl_matmul_desc_t desc;
    dnnl_check(dnnl_matmul_desc_init(&desc, &a_md, &b_md, bias ? &bias_md : NULL, &c_md),
               "dnnl_matmul_desc_init", g);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    if (accumulate) {
        dnnl_check(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create", g);
        dnnl_check(dnnl_post_ops_create(&post_ops), "dnnl_post_ops_create", g);
        dnnl_check(dnnl_post_ops_append_sum(post_ops, 1.0f), "dnnl_post_ops_append_sum", g);
        dnnl_check(dnnl_primitive_attr_set_post_ops(attr, post_ops), "the sum post-op", g);
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &desc, attr, g_dnnl.engine, NULL);
    dnnl_post_ops_destroy(post_ops);
    dnnl_primitive_attr_destroy(attr);
    if (st == dnnl_unimplemented) {
        /* no bf16 matmul on this CPU (oneDNN 2.6 has none below AVX-512): the shape is kept
         * with no primitive, and cpu_bf16_block_gemm widens the blocks for sgemm */
        if (g != &overflow)
            g_dnnl.n_matmuls++;
        return g;
    }
    dnnl_check(st, "dnnl_primitive_desc_create", g);
    dnnl_check(dnnl_primitive_create(&g->prim, pd), "dnnl_primitive_create", g);
    dnnl_primitive_desc_destroy(pd);
    dnnl_check(dnnl_memory_create(&g->a, &a_md, g_dnnl.engine, bf16_scratch[0]), "A's memory", g);
    dnnl_check(dnnl_memory_create(&g->b, &b_md, g_dnnl.engine, bf16_scratch[1]), "B's memory", g);
    dnnl_check(dnnl_memory_create(&g->c, &c_md, g_dnnl.engine, DNNL_MEMORY_NONE), "C's memory",
               g);
    if (bias)
        dnnl_check(dnnl_memory_create(&g->bias_mem, &bias_md, g_dnnl.engine, DNNL_MEMORY_NONE),
                   "the bias's memory", g);
    if (g != &overflow)
        g_dnnl.n_matmuls++;
    return g;
}

/* Where oneDNN has no bf16 matmul (a CPU without AVX-512), the blocks are widened back to fp32
 * and multiplied by sgemm: the same product (two bf16 values multiply exactly in fp32), at
 * sgemm's speed. The widened blocks are static as the scratch, and touched only here. */
static float bf16_widened[2][CPU_BF16_SCRATCH];

CPU_WIDE static void bf16_widen(float *restrict dst, const uint16_t *restrict src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = atom_bf16_to_float(src[i]);
}

static void bf16_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float beta,
                       const float *bias, float *C, int ldc)
{
    bf16_widen(bf16_widened[0], bf16_scratch[0], (int64_t)m * k);
    bf16_widen(bf16_widened[1], bf16_scratch[1], (int64_t)k * n);
    if (bias) {
        for (int r = 0; r < m; r++)
            memcpy(C + (size_t)r * ldc, bias, (size_t)n * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, bf16_widened[0],
                trans_a ? m : k, bf16_widened[1], trans_b ? k : n, beta, C, ldc);
}

static void cpu_bf16_block_gemm(bool trans_a, bool trans_b, int m, int n, int k, float beta,
                                const float *bias, float *C, int ldc)
{
    bf16_matmul *g = bf16_matmul_get(trans_a, trans_b, m, n, k, beta != 0.0f, bias, ldc);
    if (!g->prim) {
        bf16_sgemm(trans_a, trans_b, m, n, k, beta, bias, C, ldc);
        return;
    }
    dnnl_check(dnnl_memory_set_data_handle(g->c, C), "C's data handle", g);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, g->a}, {DNNL_ARG_WEIGHTS, g->b},
                               {DNNL_ARG_DST, g->c}, {DNNL_ARG_BIAS, g->bias_mem}};
    if (bias)
        dnnl_check(dnnl_memory_set_data_handle(g->bias_mem, (void *)bias), "the bias's handle",
                   g);
    dnnl_check(dnnl_primitive_execute(g->prim, g_dnnl.stream, bias ? 4 : 3, args),
               "dnnl_primitive_execute", g);
    dnnl_check(dnnl_stream_wait(g_dnnl.stream), "dnnl_stream_wait", g);
}

static const atom_bf16_gemm_ops CPU_BF16_OPS = {CPU_BF16_SCRATCH, cpu_bf16_round,
                                                cpu_bf16_block_gemm};

/* Row-major C (M, N) = op(A) op(B) + beta C, in fp32 or with bf16 operands. */
static void cpu_gemm(bool bf16, bool trans_a, bool trans_b, int M, int N, int K, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (bf16) {
        atom_bf16_gemm(&CPU_BF16_OPS, trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, NULL, C,
                       ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

static void cpu_matmul_forward(float *out, const float *inp, const float *weight,
                               const float *bias, int N, int IN, int OUT, bool bf16)
{
    bf16_held_reset();
    if (bf16) { /* oneDNN adds the bias itself */
        atom_bf16_gemm(&CPU_BF16_OPS, false, true, N, OUT, IN, inp, IN, weight, IN, 0.0f, bias,
                       out, OUT);
        return;
    }
    /* The bias goes in first and sgemm adds onto it (beta = 1): no second pass over out. */
    float beta = 0.0f;
    if (bias) {
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * OUT, bias, (size_t)OUT * sizeof(float));
        beta = 1.0f;
    }
    cpu_gemm(bf16, false, true, N, OUT, IN, inp, IN, weight, IN, beta, out, OUT);
}

CPU_WIDE static void cpu_matmul_backward(float *dinp, float *dweight, float *dbias,
                                         const float *dout, const float *inp,
                                         const float *weight, int N, int IN, int OUT, bool bf16)
{
    bf16_held_reset();
    if (dinp)
        cpu_gemm(bf16, false, false, N, IN, OUT, dout, OUT, weight, IN, 0.0f, dinp, IN);
    cpu_gemm(bf16, true, false, OUT, IN, N, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias)
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OUT;
            for (int o = 0; o < OUT; o++)
                dbias[o] += d[o];
        }
}

/* ---- attention: per (batch, head), scores and outputs by sgemm, softmax rows by kernels.h ----
 *
 * The causal mask zeroes every probability of a key after its query, so the upper half of
 * q k^T, of att v and of their backward multiplies zeros. The products run on tiles of
 * ATTN_TILE queries (or keys) instead of the whole (T, T) square: a tile of queries [t0, t1)
 * needs the keys [0, t1) only, and a tile of keys [j0, j1) gets gradient from the queries
 * [j0, T) only. At T = 128 and tiles of 32 that is 5/8 of the square's multiplications. The
 * probabilities past the diagonal that no tile computes are still written (zeros, by the
 * softmax row), so att is the whole matrix the backward and the CUDA backend expect. */
#define ATTN_TILE 32

CPU_WIDE static void cpu_attention_forward(float *out, float *att, const float *qkv, int B,
                                           int T, int NH, int hs)
{
    int Cl = NH * hs, ld = 3 * Cl;
    float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * ld + (size_t)h * hs;
            const float *k = q + Cl, *v = q + 2 * Cl;
            float *a = att + ((size_t)b * NH + h) * T * T;
            float *o = out + (size_t)b * T * Cl + (size_t)h * hs;
            for (int t0 = 0; t0 < T; t0 += ATTN_TILE) {
                int t1 = t0 + ATTN_TILE < T ? t0 + ATTN_TILE : T, rows = t1 - t0;
                float *at = a + (size_t)t0 * T;
                /* raw scores of queries [t0, t1) against keys [0, t1); the softmax scales,
                 * masks (zeroing keys t+1..T-1) and normalises each row */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t1, hs, 1.0f,
                            q + (size_t)t0 * ld, ld, k, ld, 0.0f, at, T);
                for (int t = t0; t < t1; t++)
                    atom_causal_softmax_row(a + (size_t)t * T, t, T, scale);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, t1, 1.0f, at, T,
                            v, ld, 0.0f, o + (size_t)t0 * Cl, Cl);
            }
        }
}

static void cpu_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                                   const float *att, int B, int T, int NH, int hs)
{
    int Cl = NH * hs, ld = 3 * Cl;
    float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t base = (size_t)b * T * ld + (size_t)h * hs;
            const float *q = qkv + base, *k = q + Cl, *v = q + 2 * Cl;
            float *dq = dqkv + base, *dk = dq + Cl, *dv = dq + 2 * Cl;
            const float *a = att + ((size_t)b * NH + h) * T * T;
            float *da = datt + ((size_t)b * NH + h) * T * T;
            const float *dO = dout + (size_t)b * T * Cl + (size_t)h * hs;
            /* by query tiles: datt = dout v^T over keys [0, t1), then the softmax's backward
             * (which reads keys 0..t and zeroes the rest of the row) */
            for (int t0 = 0; t0 < T; t0 += ATTN_TILE) {
                int t1 = t0 + ATTN_TILE < T ? t0 + ATTN_TILE : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, 1.0f,
                            dO + (size_t)t0 * Cl, Cl, v, ld, 0.0f, da + (size_t)t0 * T, T);
                for (int t = t0; t < t1; t++)
                    atom_causal_softmax_row_backward(da + (size_t)t * T, da + (size_t)t * T,
                                                     a + (size_t)t * T, t, T);
                /* the scores were q k^T * scale: dq = scale dS k */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, scale,
                            da + (size_t)t0 * T, T, k, ld, 0.0f, dq + (size_t)t0 * ld, ld);
            }
            /* by key tiles, over the queries [j0, T) that see them: dv = att^T dout,
             * dk = scale dS^T q */
            for (int j0 = 0; j0 < T; j0 += ATTN_TILE) {
                int j1 = j0 + ATTN_TILE < T ? j0 + ATTN_TILE : T, n = T - j0;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, hs, n, 1.0f,
                            a + (size_t)j0 * T + j0, T, dO + (size_t)j0 * Cl, Cl, 0.0f,
                            dv + (size_t)j0 * ld, ld);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, hs, n, scale,
                            da + (size_t)j0 * T + j0, T, q + (size_t)j0 * ld, ld, 0.0f,
                            dk + (size_t)j0 * ld, ld);
            }
        }
}

/* ---- elementwise ---- */

/* The GELU loops run in blocks of a fixed 16 elements: gcc -O2 vectorizes only loops it needs
 * no scalar epilogue or alias check for, and a fixed-length inner loop over restrict
 * arguments is one (kernels.h's GELU is branch- and call-free for that reason). The tail goes
 * element by element. */
#define GELU_BLOCK 16

CPU_WIDE static void cpu_gelu_forward(float *restrict out, const float *restrict inp, int64_t n)
{
    int64_t i = 0;
    for (; i + GELU_BLOCK <= n; i += GELU_BLOCK) {
        float *o = out + i;
        const float *x = inp + i;
        for (int j = 0; j < GELU_BLOCK; j++)
            o[j] = atom_gelu(x[j]);
    }
    for (; i < n; i++)
        out[i] = atom_gelu(inp[i]);
}

CPU_WIDE static void cpu_gelu_backward(float *restrict dinp, const float *restrict inp,
                              const float *restrict dout, int64_t n)
{
    int64_t i = 0;
    for (; i + GELU_BLOCK <= n; i += GELU_BLOCK) {
        float *d = dinp + i;
        const float *x = inp + i, *g = dout + i;
        for (int j = 0; j < GELU_BLOCK; j++)
            d[j] = atom_gelu_grad(x[j]) * g[j];
    }
    for (; i < n; i++)
        dinp[i] = atom_gelu_grad(inp[i]) * dout[i];
}

CPU_WIDE static void cpu_residual_forward(float *out, const float *x, const float *y, const float *bias,
                                 int N, int C)
{
    for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * C;
        for (int i = 0; i < C; i++)
            out[o + i] = x[o + i] + y[o + i] + (bias ? bias[i] : 0.0f);
    }
}

CPU_WIDE static void cpu_accumulate(float *out, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] += x[i];
}

static void cpu_column_max(float *out, const float *in, int rows, int cols)
{
    for (int j = 0; j < cols; j++) {
        float m = in[j];
        for (int i = 1; i < rows; i++)
            m = fmaxf(m, in[(size_t)i * cols + j]);
        out[j] = m;
    }
}

/* ---- cross-entropy ---- */

static void cpu_ce_rowmax(float *rowmax, const float *logits, int N, int vcols, int valid)
{
    for (int n = 0; n < N; n++)
        rowmax[n] = atom_ce_row_max(logits + (size_t)n * vcols, valid);
}

static void cpu_ce_sums(float *sums, const float *logits, const float *rowmax, const int *targets,
                        int vocab_start, int N, int vcols, int valid)
{
    for (int n = 0; n < N; n++) {
        const float *row = logits + (size_t)n * vcols;
        sums[n] = atom_ce_row_sumexp(row, valid, rowmax[n]);
        int col = targets[n] - vocab_start;
        sums[N + n] = (col >= 0 && col < valid) ? row[col] : 0.0f;
    }
}

static void cpu_ce_loss(float *losses, const float *rowmax, const float *sums, int N)
{
    for (int n = 0; n < N; n++)
        losses[n] = logf(sums[n]) + rowmax[n] - sums[N + n];
}

static void cpu_ce_backward(float *dlogits, const float *logits, const float *rowmax,
                            const float *sums, const int *targets, int vocab_start, float dloss,
                            int N, int vcols, int valid)
{
    for (int n = 0; n < N; n++) {
        const float *row = logits + (size_t)n * vcols;
        float *drow = dlogits + (size_t)n * vcols;
        int target = targets[n] - vocab_start;
        for (int j = 0; j < valid; j++)
            drow[j] = atom_ce_dlogit(row[j], rowmax[n], sums[n], j == target, dloss);
        for (int j = valid; j < vcols; j++)
            drow[j] = 0.0f;
    }
}

/* ---- optimizer ---- */

/* Eight running sums, one per vector lane, added together at the end: one running sum is a
 * chain gcc must keep in order (it vectorizes no reduction without -ffast-math). The order
 * differs from a left-to-right sum only by double rounding, ~1e-16 of the result. */
#define SQUARES_LANES 8

CPU_WIDE static void cpu_sum_squares(double *host_result, const float *restrict x, int64_t n)
{
    double lane[SQUARES_LANES] = {0.0};
    int64_t i = 0;
    for (; i + SQUARES_LANES <= n; i += SQUARES_LANES)
        for (int j = 0; j < SQUARES_LANES; j++)
            lane[j] += (double)x[i + j] * x[i + j];
    double s = 0.0;
    for (int j = 0; j < SQUARES_LANES; j++)
        s += lane[j];
    for (; i < n; i++)
        s += (double)x[i] * x[i];
    *host_result = s;
}

CPU_WIDE static void cpu_adamw(float *restrict param, const float *restrict grad,
                               float *restrict m, float *restrict v, int64_t n, float lr,
                               float beta1, float beta2, float eps, float weight_decay,
                               float beta1_correction, float beta2_correction,
                               float grad_multiplier)
{
    for (int64_t i = 0; i < n; i++)
        atom_adamw_element(&param[i], &m[i], &v[i], grad[i] * grad_multiplier, lr, beta1, beta2,
                           eps, weight_decay, beta1_correction, beta2_correction);
}

static const atom_backend CPU_BACKEND = {
    .name = "cpu",
    .device_memory = false,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .zero = cpu_zero,
    .to_host = cpu_copy_out,
    .from_host = cpu_copy_in,
    .synchronize = cpu_synchronize,
    .encoder_forward = cpu_encoder_forward,
    .encoder_backward = cpu_encoder_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .residual_forward = cpu_residual_forward,
    .accumulate = cpu_accumulate,
    .column_max = cpu_column_max,
    .ce_rowmax = cpu_ce_rowmax,
    .ce_sums = cpu_ce_sums,
    .ce_loss = cpu_ce_loss,
    .ce_backward = cpu_ce_backward,
    .sum_squares = cpu_sum_squares,
    .adamw = cpu_adamw,
};

const atom_backend *atom_backend_cpu(void) { return &CPU_BACKEND; }
