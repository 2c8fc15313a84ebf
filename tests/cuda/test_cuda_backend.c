/* tests/cuda/test_cuda_backend.c: runs every op of the CUDA backend (worker/cuda_backend.cu)
 * and of the CPU backend (worker/cpu_backend.c) on the same random inputs and compares the
 * outputs within tolerances (GPU tanhf, expf, sqrtf and cuBLAS's summation order are not
 * bit-identical to the CPU's). Exits 1 on any mismatch, naming the op and the output.
 *
 * Every output buffer starts with the same random garbage on both sides, so an op that
 * overwrites ("=") where the other accumulates ("+="), or that misses an element, shows up.
 *
 *   test_cuda_backend               CPU against CUDA (needs a GPU; ctest runs it only where
 *                                   `nvidia-smi -L` worked at configure time)
 *   test_cuda_backend --self-check  CPU against CPU (must agree) and against copies of the CPU
 *                                   table with one op broken on purpose (each must be caught):
 *                                   proves the comparison can fail, on a machine without a GPU
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "worker/backend.h"
#include "worker/kernels.h"
#include "worker/model.h"

/* ---- the comparison context --------------------------------------------------------- */

#define MAX_BUFFERS 64 /* alive at once: a check's buffers are released after it */

/* One tensor allocated in both backends with the same contents. */
typedef struct buffer_pair {
    void *ref, *dev;
    size_t bytes;
} buffer_pair;

typedef struct compare_ctx {
    const atom_backend *ref; /* the CPU backend: the reference */
    const atom_backend *dev; /* the backend under test */
    buffer_pair buffers[MAX_BUFFERS];
    int nbuffers;
    int failures;
    char first_failure[128]; /* "op/output" of the first mismatch */
    int io_failed;           /* an alloc or copy failed: the run proves nothing */
    uint64_t rng;
    bool verbose;
} compare_ctx;

static float uniform(compare_ctx *cx, float lo, float hi)
{
    cx->rng = cx->rng * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((cx->rng >> 40) * (1.0 / 16777216.0));
}

static void fill_uniform(compare_ctx *cx, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = uniform(cx, lo, hi);
}

/* A tensor with host's contents in both backends. */
static buffer_pair *pair_new(compare_ctx *cx, const void *host, size_t bytes)
{
    if (cx->nbuffers == MAX_BUFFERS) {
        fprintf(stderr, "test_cuda_backend: more than %d buffers\n", MAX_BUFFERS);
        exit(2);
    }
    buffer_pair *p = &cx->buffers[cx->nbuffers++];
    p->bytes = bytes;
    p->ref = cx->ref->alloc(bytes);
    p->dev = cx->dev->alloc(bytes);
    if (!p->ref || !p->dev || cx->ref->from_host(p->ref, host, bytes) != 0 ||
        cx->dev->from_host(p->dev, host, bytes) != 0) {
        fprintf(stderr, "test_cuda_backend: cannot allocate or upload %zu bytes\n", bytes);
        cx->io_failed = 1;
    }
    return p;
}

/* A float tensor of n random values in [lo, hi) in both backends. */
static buffer_pair *pair_random(compare_ctx *cx, size_t n, float lo, float hi)
{
    float *host = malloc(n * sizeof(float));
    fill_uniform(cx, host, n, lo, hi);
    buffer_pair *p = pair_new(cx, host, n * sizeof(float));
    free(host);
    return p;
}

static void pairs_release(compare_ctx *cx)
{
    for (int i = 0; i < cx->nbuffers; i++) {
        cx->ref->release(cx->buffers[i].ref);
        cx->dev->release(cx->buffers[i].dev);
    }
    cx->nbuffers = 0;
}

static void note_failure(compare_ctx *cx, const char *op, const char *output)
{
    if (cx->failures++ == 0)
        snprintf(cx->first_failure, sizeof cx->first_failure, "%s/%s", op, output);
}

/* Checks |a - b| <= atol + rtol * |a| element by element (a: the reference); equal
 * infinities match. Prints the first mismatch, or the largest error when verbose. Returns
 * whether all matched. */
static bool arrays_match(const char *op, const char *output, const float *a, const float *b,
                         size_t n, float atol, float rtol, bool verbose)
{
    double max_err = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - (double)b[i]);
        int same_inf = isinf(a[i]) && a[i] == b[i];
        if (!same_inf && (isnan(err) || err > atol + rtol * fabs((double)a[i]))) {
            if (bad++ == 0)
                first_bad = i;
        }
        if (!same_inf && err > max_err)
            max_err = err;
    }
    if (bad)
        fprintf(stderr, "FAIL %s/%s: %zu of %zu differ; first at %zu: cpu %.9g, other %.9g\n", op,
                output, bad, n, first_bad, (double)a[first_bad], (double)b[first_bad]);
    else if (verbose)
        printf("ok   %-28s %-8s max |err| %.3g over %zu\n", op, output, max_err, n);
    return bad == 0;
}

/* Downloads both sides of p (n floats) and compares them. */
static void compare_floats(compare_ctx *cx, const char *op, const char *output,
                           const buffer_pair *p, size_t n, float atol, float rtol)
{
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    if (cx->ref->synchronize() != 0 || cx->dev->synchronize() != 0 ||
        cx->ref->to_host(a, p->ref, n * sizeof(float)) != 0 ||
        cx->dev->to_host(b, p->dev, n * sizeof(float)) != 0) {
        fprintf(stderr, "FAIL %s/%s: the backend reported an error\n", op, output);
        cx->io_failed = 1;
        note_failure(cx, op, output);
    } else if (!arrays_match(op, output, a, b, n, atol, rtol, cx->verbose)) {
        note_failure(cx, op, output);
    }
    free(a);
    free(b);
}

/* Default tolerances: values are O(1), sums run over at most a few dozen terms. */
#define ATOL 5e-5f
#define RTOL 1e-4f
#define F(p) ((float *)(p))
#define I(p) ((int *)(p))

/* ---- shapes: small, with padding and out-of-slice tokens ------------------------------- */

enum { B = 2, T = 8, C = 16, NH = 2, HS = C / NH, N = B * T, VROWS = 24, VSTART = 32, VALID = 20 };

/* Tokens in [0, 80): some in this rank's slice [32, 56), some not, some repeated. */
static buffer_pair *random_tokens(compare_ctx *cx)
{
    int tokens[N];
    for (int i = 0; i < N; i++)
        tokens[i] = (int)uniform(cx, 0.0f, 80.0f);
    tokens[1] = tokens[0] = VSTART + 3; /* a repeated row: two adds into one dwte row */
    tokens[2] = VSTART + VALID + 1;     /* a padding column of the slice */
    return pair_new(cx, tokens, sizeof tokens);
}

/* ---- the checks, one function per group of ops ----------------------------------------- */

static void check_memory(compare_ctx *cx)
{
    /* alloc zero-fills; zero() clears; the round trip keeps every byte */
    buffer_pair *p = pair_random(cx, 37, -1.0f, 1.0f);
    compare_floats(cx, "from_host/to_host", "data", p, 37, 0.0f, 0.0f);
    cx->ref->zero(F(p->ref), 20);
    cx->dev->zero(F(p->dev), 20);
    compare_floats(cx, "zero", "data", p, 37, 0.0f, 0.0f);
    float *fresh = cx->dev->alloc(64 * sizeof(float));
    float back[64];
    if (!fresh || cx->dev->to_host(back, fresh, sizeof back) != 0) {
        cx->io_failed = 1;
        note_failure(cx, "alloc", "zero-filled");
    } else {
        for (int i = 0; i < 64; i++)
            if (back[i] != 0.0f) {
                fprintf(stderr, "FAIL alloc: element %d is %g, not 0\n", i, (double)back[i]);
                note_failure(cx, "alloc", "zero-filled");
                break;
            }
    }
    cx->dev->release(fresh);
}

/* The embedding at `channels` channels. */
static void check_encoder_width(compare_ctx *cx, int channels)
{
    char op[64];
    buffer_pair *tok = random_tokens(cx);
    buffer_pair *wte = pair_random(cx, VROWS * channels, -1.0f, 1.0f);
    buffer_pair *wpe = pair_random(cx, T * channels, -1.0f, 1.0f);
    buffer_pair *out = pair_random(cx, N * channels, -9.0f, 9.0f);
    for (int with_wpe = 0; with_wpe < 2; with_wpe++) {
        snprintf(op, sizeof op, "encoder_forward(C %d%s)", channels, with_wpe ? "" : ", wpe NULL");
        cx->ref->encoder_forward(F(out->ref), I(tok->ref), F(wte->ref),
                                 with_wpe ? F(wpe->ref) : NULL, VSTART, VROWS, B, T, channels);
        cx->dev->encoder_forward(F(out->dev), I(tok->dev), F(wte->dev),
                                 with_wpe ? F(wpe->dev) : NULL, VSTART, VROWS, B, T, channels);
        compare_floats(cx, op, "out", out, N * channels, ATOL, RTOL);
    }
    buffer_pair *dout = pair_random(cx, N * channels, -1.0f, 1.0f);
    buffer_pair *dwte = pair_random(cx, VROWS * channels, -1.0f, 1.0f); /* += onto these */
    buffer_pair *dwpe = pair_random(cx, T * channels, -1.0f, 1.0f);
    cx->ref->encoder_backward(F(dwte->ref), F(dwpe->ref), F(dout->ref), I(tok->ref), VSTART, VROWS,
                              B, T, channels);
    cx->dev->encoder_backward(F(dwte->dev), F(dwpe->dev), F(dout->dev), I(tok->dev), VSTART, VROWS,
                              B, T, channels);
    snprintf(op, sizeof op, "encoder_backward(C %d)", channels);
    compare_floats(cx, op, "dwte", dwte, VROWS * channels, ATOL, RTOL);
    compare_floats(cx, op, "dwpe", dwpe, T * channels, ATOL, RTOL);
}

/* Narrow, and wide enough (3000 channels) that the CUDA backend splits the 24 vocabulary rows
 * into uneven slices for the dwte threads. */
static void check_encoder(compare_ctx *cx)
{
    check_encoder_width(cx, C);
    check_encoder_width(cx, 3000);
}

static void check_layernorm(compare_ctx *cx)
{
    buffer_pair *inp = pair_random(cx, N * C, -2.0f, 2.0f);
    buffer_pair *w = pair_random(cx, C, 0.5f, 1.5f);
    buffer_pair *b = pair_random(cx, C, -0.5f, 0.5f);
    buffer_pair *out = pair_random(cx, N * C, -9.0f, 9.0f);
    buffer_pair *mean = pair_random(cx, N, -9.0f, 9.0f);
    buffer_pair *rstd = pair_random(cx, N, -9.0f, 9.0f);
    cx->ref->layernorm_forward(F(out->ref), F(mean->ref), F(rstd->ref), F(inp->ref), F(w->ref),
                               F(b->ref), N, C);
    cx->dev->layernorm_forward(F(out->dev), F(mean->dev), F(rstd->dev), F(inp->dev), F(w->dev),
                               F(b->dev), N, C);
    compare_floats(cx, "layernorm_forward", "out", out, N * C, ATOL, RTOL);
    compare_floats(cx, "layernorm_forward", "mean", mean, N, ATOL, RTOL);
    compare_floats(cx, "layernorm_forward", "rstd", rstd, N, ATOL, RTOL);

    /* The backward reads the reference's mean and rstd on both sides: one op at a time. */
    float host_stats[2 * N];
    cx->ref->to_host(host_stats, mean->ref, N * sizeof(float));
    cx->ref->to_host(host_stats + N, rstd->ref, N * sizeof(float));
    buffer_pair *stats = pair_new(cx, host_stats, sizeof host_stats);
    buffer_pair *dout = pair_random(cx, N * C, -1.0f, 1.0f);
    buffer_pair *dinp = pair_random(cx, N * C, -1.0f, 1.0f); /* += onto these three */
    buffer_pair *dw = pair_random(cx, C, -1.0f, 1.0f);
    buffer_pair *db = pair_random(cx, C, -1.0f, 1.0f);
    cx->ref->layernorm_backward(F(dinp->ref), F(dw->ref), F(db->ref), F(dout->ref), F(inp->ref),
                                F(w->ref), F(stats->ref), F(stats->ref) + N, N, C);
    cx->dev->layernorm_backward(F(dinp->dev), F(dw->dev), F(db->dev), F(dout->dev), F(inp->dev),
                                F(w->dev), F(stats->dev), F(stats->dev) + N, N, C);
    compare_floats(cx, "layernorm_backward", "dinp", dinp, N * C, ATOL, RTOL);
    compare_floats(cx, "layernorm_backward", "dweight", dw, C, ATOL, RTOL);
    compare_floats(cx, "layernorm_backward", "dbias", db, C, ATOL, RTOL);
}

static void check_matmul(compare_ctx *cx)
{
    enum { IN = C, OUT = 3 * C };
    buffer_pair *inp = pair_random(cx, N * IN, -1.0f, 1.0f);
    buffer_pair *w = pair_random(cx, OUT * IN, -1.0f, 1.0f);
    buffer_pair *bias = pair_random(cx, OUT, -1.0f, 1.0f);
    buffer_pair *out = pair_random(cx, N * OUT, -9.0f, 9.0f);
    buffer_pair *dout = pair_random(cx, N * OUT, -1.0f, 1.0f);
    buffer_pair *dinp = pair_random(cx, N * IN, -9.0f, 9.0f); /* "=": overwritten */
    buffer_pair *dw = pair_random(cx, OUT * IN, -1.0f, 1.0f); /* "+=" */
    buffer_pair *db = pair_random(cx, OUT, -1.0f, 1.0f);      /* "+=" */
    /* fp32, then bf16 operands: both sides round them alike (kernels.h), so only the order of
     * the fp32 sums differs, as in fp32 */
    for (int bf16 = 0; bf16 < 2; bf16++) {
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const char *op = with_bias ? (bf16 ? "matmul_forward(bf16)" : "matmul_forward")
                                       : (bf16 ? "matmul_forward(bf16, bias NULL)"
                                               : "matmul_forward(bias NULL)");
            cx->ref->matmul_forward(F(out->ref), F(inp->ref), F(w->ref),
                                    with_bias ? F(bias->ref) : NULL, N, IN, OUT, bf16);
            cx->dev->matmul_forward(F(out->dev), F(inp->dev), F(w->dev),
                                    with_bias ? F(bias->dev) : NULL, N, IN, OUT, bf16);
            compare_floats(cx, op, "out", out, N * OUT, ATOL, RTOL);
        }
        for (int full = 1; full >= 0; full--) {
            const char *op = full ? (bf16 ? "matmul_backward(bf16)" : "matmul_backward")
                                  : (bf16 ? "matmul_backward(bf16, dinp, dbias NULL)"
                                          : "matmul_backward(dinp, dbias NULL)");
            cx->ref->matmul_backward(full ? F(dinp->ref) : NULL, F(dw->ref),
                                     full ? F(db->ref) : NULL, F(dout->ref), F(inp->ref),
                                     F(w->ref), N, IN, OUT, bf16);
            cx->dev->matmul_backward(full ? F(dinp->dev) : NULL, F(dw->dev),
                                     full ? F(db->dev) : NULL, F(dout->dev), F(inp->dev),
                                     F(w->dev), N, IN, OUT, bf16);
            compare_floats(cx, op, "dinp", dinp, N * IN, ATOL, RTOL);
            compare_floats(cx, op, "dweight", dw, OUT * IN, ATOL, RTOL);
            compare_floats(cx, op, "dbias", db, OUT, ATOL, RTOL);
        }
    }
}

static void check_attention(compare_ctx *cx)
{
    size_t nqkv = (size_t)N * 3 * C, natt = (size_t)B * NH * T * T;
    buffer_pair *qkv = pair_random(cx, nqkv, -1.0f, 1.0f);
    buffer_pair *out = pair_random(cx, N * C, -9.0f, 9.0f);
    buffer_pair *att = pair_random(cx, natt, -9.0f, 9.0f);
    cx->ref->attention_forward(F(out->ref), F(att->ref), F(qkv->ref), B, T, NH, HS);
    cx->dev->attention_forward(F(out->dev), F(att->dev), F(qkv->dev), B, T, NH, HS);
    compare_floats(cx, "attention_forward", "out", out, N * C, ATOL, RTOL);
    compare_floats(cx, "attention_forward", "att", att, natt, ATOL, RTOL);

    float *host_att = malloc(natt * sizeof(float));
    cx->ref->to_host(host_att, att->ref, natt * sizeof(float));
    buffer_pair *att_ref = pair_new(cx, host_att, natt * sizeof(float));
    free(host_att);
    buffer_pair *dout = pair_random(cx, N * C, -1.0f, 1.0f);
    buffer_pair *dqkv = pair_random(cx, nqkv, -9.0f, 9.0f); /* "=": overwritten */
    buffer_pair *datt = pair_random(cx, natt, -9.0f, 9.0f); /* scratch */
    cx->ref->attention_backward(F(dqkv->ref), F(datt->ref), F(dout->ref), F(qkv->ref),
                                F(att_ref->ref), B, T, NH, HS);
    cx->dev->attention_backward(F(dqkv->dev), F(datt->dev), F(dout->dev), F(qkv->dev),
                                F(att_ref->dev), B, T, NH, HS);
    compare_floats(cx, "attention_backward", "dqkv", dqkv, nqkv, ATOL, RTOL);
}

static void check_elementwise(compare_ctx *cx)
{
    enum { n = N * C };
    buffer_pair *x = pair_random(cx, n, -4.0f, 4.0f);
    buffer_pair *y = pair_random(cx, n, -1.0f, 1.0f);
    buffer_pair *out = pair_random(cx, n, -9.0f, 9.0f);
    cx->ref->gelu_forward(F(out->ref), F(x->ref), n);
    cx->dev->gelu_forward(F(out->dev), F(x->dev), n);
    compare_floats(cx, "gelu_forward", "out", out, n, ATOL, RTOL);
    cx->ref->gelu_backward(F(out->ref), F(x->ref), F(y->ref), n);
    cx->dev->gelu_backward(F(out->dev), F(x->dev), F(y->dev), n);
    compare_floats(cx, "gelu_backward", "dinp", out, n, ATOL, RTOL);
    /* dinp aliasing dout, as the model calls it */
    cx->ref->gelu_backward(F(y->ref), F(x->ref), F(y->ref), n);
    cx->dev->gelu_backward(F(y->dev), F(x->dev), F(y->dev), n);
    compare_floats(cx, "gelu_backward(in place)", "dinp", y, n, ATOL, RTOL);

    buffer_pair *bias = pair_random(cx, C, -1.0f, 1.0f);
    cx->ref->residual_forward(F(out->ref), F(x->ref), F(y->ref), F(bias->ref), N, C);
    cx->dev->residual_forward(F(out->dev), F(x->dev), F(y->dev), F(bias->dev), N, C);
    compare_floats(cx, "residual_forward", "out", out, n, ATOL, RTOL);
    /* out aliasing x, no bias */
    cx->ref->residual_forward(F(x->ref), F(x->ref), F(y->ref), NULL, N, C);
    cx->dev->residual_forward(F(x->dev), F(x->dev), F(y->dev), NULL, N, C);
    compare_floats(cx, "residual_forward(in place)", "out", x, n, ATOL, RTOL);

    cx->ref->accumulate(F(out->ref), F(y->ref), n);
    cx->dev->accumulate(F(out->dev), F(y->dev), n);
    compare_floats(cx, "accumulate", "out", out, n, ATOL, RTOL);

    enum { rows = 3, cols = N };
    buffer_pair *maxima = pair_random(cx, rows * cols, -5.0f, 5.0f);
    buffer_pair *colmax = pair_random(cx, cols, -9.0f, 9.0f);
    cx->ref->column_max(F(colmax->ref), F(maxima->ref), rows, cols);
    cx->dev->column_max(F(colmax->dev), F(maxima->dev), rows, cols);
    compare_floats(cx, "column_max", "out", colmax, cols, 0.0f, 0.0f);
}

/* The four cross-entropy steps on a slice of VROWS columns of which VALID are real. Each step
 * reads the reference's output of the step before, so a mismatch is blamed on its own step. */
static void check_cross_entropy(compare_ctx *cx, int valid)
{
    char op[64];
    buffer_pair *logits = pair_random(cx, N * VROWS, -3.0f, 3.0f);
    buffer_pair *targets = random_tokens(cx);
    buffer_pair *rowmax = pair_random(cx, N, -9.0f, 9.0f);
    snprintf(op, sizeof op, "ce_rowmax(valid %d)", valid);
    cx->ref->ce_rowmax(F(rowmax->ref), F(logits->ref), N, VROWS, valid);
    cx->dev->ce_rowmax(F(rowmax->dev), F(logits->dev), N, VROWS, valid);
    compare_floats(cx, op, "rowmax", rowmax, N, 0.0f, 0.0f);
    if (valid == 0)
        return; /* the rest is log and exp of an empty slice: the caller's all-reduce fills it */

    buffer_pair *sums = pair_random(cx, 2 * N, -9.0f, 9.0f);
    snprintf(op, sizeof op, "ce_sums(valid %d)", valid);
    cx->ref->ce_sums(F(sums->ref), F(logits->ref), F(rowmax->ref), I(targets->ref), VSTART, N,
                     VROWS, valid);
    cx->dev->ce_sums(F(sums->dev), F(logits->dev), F(rowmax->dev), I(targets->dev), VSTART, N,
                     VROWS, valid);
    compare_floats(cx, op, "sums", sums, 2 * N, ATOL, RTOL);

    float host[3 * N];
    cx->ref->to_host(host, rowmax->ref, N * sizeof(float));
    cx->ref->to_host(host + N, sums->ref, 2 * N * sizeof(float));
    buffer_pair *stats = pair_new(cx, host, sizeof host); /* rowmax (N), then sums (2N) */
    buffer_pair *losses = pair_random(cx, N, -9.0f, 9.0f);
    cx->ref->ce_loss(F(losses->ref), F(stats->ref), F(stats->ref) + N, N);
    cx->dev->ce_loss(F(losses->dev), F(stats->dev), F(stats->dev) + N, N);
    compare_floats(cx, "ce_loss", "losses", losses, N, ATOL, RTOL);

    buffer_pair *dlogits = pair_random(cx, N * VROWS, -9.0f, 9.0f);
    snprintf(op, sizeof op, "ce_backward(valid %d)", valid);
    cx->ref->ce_backward(F(dlogits->ref), F(logits->ref), F(stats->ref), F(stats->ref) + N,
                         I(targets->ref), VSTART, 0.25f, N, VROWS, valid);
    cx->dev->ce_backward(F(dlogits->dev), F(logits->dev), F(stats->dev), F(stats->dev) + N,
                         I(targets->dev), VSTART, 0.25f, N, VROWS, valid);
    compare_floats(cx, op, "dlogits", dlogits, N * VROWS, ATOL, RTOL);
    /* dlogits aliasing logits, as the model calls it */
    snprintf(op, sizeof op, "ce_backward(in place, valid %d)", valid);
    cx->ref->ce_backward(F(logits->ref), F(logits->ref), F(stats->ref), F(stats->ref) + N,
                         I(targets->ref), VSTART, 0.25f, N, VROWS, valid);
    cx->dev->ce_backward(F(logits->dev), F(logits->dev), F(stats->dev), F(stats->dev) + N,
                         I(targets->dev), VSTART, 0.25f, N, VROWS, valid);
    compare_floats(cx, op, "dlogits", logits, N * VROWS, ATOL, RTOL);
}

static void check_cross_entropy_valid(compare_ctx *cx) { check_cross_entropy(cx, VALID); }
static void check_cross_entropy_empty(compare_ctx *cx) { check_cross_entropy(cx, 0); }

static void check_optimizer(compare_ctx *cx)
{
    /* More elements than one block of threads, so the GPU's two-pass reduction has work. */
    enum { n = 5000 };
    buffer_pair *x = pair_random(cx, n, -1.0f, 1.0f);
    double ss_ref = -1.0, ss_dev = -2.0;
    cx->ref->sum_squares(&ss_ref, F(x->ref), n);
    cx->dev->sum_squares(&ss_dev, F(x->dev), n);
    if (cx->dev->synchronize() != 0 || !(fabs(ss_ref - ss_dev) <= 1e-9 * fabs(ss_ref))) {
        fprintf(stderr, "FAIL sum_squares: cpu %.17g, other %.17g\n", ss_ref, ss_dev);
        note_failure(cx, "sum_squares", "result");
    } else if (cx->verbose) {
        printf("ok   %-28s %-8s |err| %.3g\n", "sum_squares", "result", fabs(ss_ref - ss_dev));
    }

    buffer_pair *param = pair_random(cx, n, -1.0f, 1.0f);
    buffer_pair *grad = x;
    buffer_pair *m = pair_random(cx, n, -0.1f, 0.1f);
    buffer_pair *v = pair_random(cx, n, 0.0f, 0.01f);
    /* step 3: beta1_correction = 1 - 0.9^3, beta2_correction = 1 - 0.95^3 */
    cx->ref->adamw(F(param->ref), F(grad->ref), F(m->ref), F(v->ref), n, 1e-3f, 0.9f, 0.95f, 1e-8f,
                   0.1f, 0.271f, 0.142625f, 0.5f);
    cx->dev->adamw(F(param->dev), F(grad->dev), F(m->dev), F(v->dev), n, 1e-3f, 0.9f, 0.95f, 1e-8f,
                   0.1f, 0.271f, 0.142625f, 0.5f);
    compare_floats(cx, "adamw", "param", param, n, ATOL, RTOL);
    compare_floats(cx, "adamw", "m", m, n, ATOL, RTOL);
    compare_floats(cx, "adamw", "v", v, n, ATOL, RTOL);
}

/* Runs every check; returns the number of mismatches (and sets *io_failed on backend errors). */
static int compare_backends(const atom_backend *ref, const atom_backend *dev, bool verbose,
                            char *first_failure, size_t first_failure_len, int *io_failed)
{
    compare_ctx cx;
    memset(&cx, 0, sizeof cx);
    cx.ref = ref;
    cx.dev = dev;
    cx.rng = 20261123;
    cx.verbose = verbose;
    void (*const checks[])(compare_ctx *) = {
        check_memory,    check_encoder,     check_layernorm,           check_matmul,
        check_attention, check_elementwise, check_cross_entropy_valid, check_cross_entropy_empty,
        check_optimizer};
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        checks[i](&cx);
        pairs_release(&cx);
        if (cx.io_failed) {
            /* a backend that cannot allocate or copy (no GPU, no driver) proves nothing more */
            fprintf(stderr, "stopping: the backend under test cannot allocate or copy\n");
            break;
        }
    }
    snprintf(first_failure, first_failure_len, "%s", cx.first_failure);
    *io_failed = cx.io_failed;
    return cx.failures;
}

/* ---- the whole model: a training step on each backend ---------------------------------- */

/* A small model (L 2, C 32, NH 4, V 200 padded to 256, T 16) on each backend, one rank (no
 * collectives): same seed, same tokens, two accumulated micro-batches, the gradient norm, one
 * AdamW step and a forward with the new weights. Catches what the op checks cannot: the model
 * calling an op with a pointer or shape the two backends read differently. Returns the number
 * of mismatches, or -1 when a model cannot be built or run. */
static int compare_models(const atom_backend *ref, const atom_backend *dev,
                          atom_precision precision, bool verbose)
{
    enum { MB = 2, MT = 16, MV = 200 };
    atom_model_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.cfg =
        (atom_model_cfg){.layers = 2, .channels = 32, .heads = 4, .vocab = MV, .context = MT};
    opts.max_batch = MB;
    opts.tp_size = 1;
    opts.precision = precision;
    atom_model *models[2] = {NULL, NULL};
    const atom_backend *backends[2] = {ref, dev};
    atom_err err;
    int tokens[2][MB * (MT + 1)];
    uint64_t rng = 99;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < MB * (MT + 1); i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            tokens[k][i] = (int)((rng >> 33) % MV);
        }
    int64_t total = 0;
    float *host[2] = {NULL, NULL};
    float loss[2][3];
    double norm[2];
    int mismatches = 0, rc = 0;
    /* bf16 (x[0]: atol, x[1]: rtol, or the fp32 value times these): two backends that sum a
     * product in another order may round an operand near a bf16 tie to its two neighbours,
     * 2^-8 apart, where fp32 differs by 2^-24 (summing in another order with bf16 operands
     * moved gradients by 0.15% and a weight by 5e-4 = lr/2 in --self-check) */
    bool bf16 = precision == ATOM_PRECISION_BF16;
    float loose = bf16 ? 10.0f : 1.0f;
    for (int s = 0; s < 2 && rc == 0; s++) {
        opts.backend = backends[s];
        if (atom_model_create(&opts, &models[s], &err) != 0 ||
            atom_model_init_weights(models[s], 1234, &err) != 0 ||
            atom_model_forward_backward(models[s], tokens[0], MB, 0.5f, false, &loss[s][0], &err) !=
                0 ||
            atom_model_forward_backward(models[s], tokens[1], MB, 0.5f, true, &loss[s][1], &err) !=
                0 ||
            atom_model_grad_norm(models[s], &norm[s], &err) != 0) {
            rc = -1;
        }
    }
    if (rc == 0) {
        total = atom_model_table(models[0])->total;
        host[0] = malloc((size_t)total * sizeof(float));
        host[1] = malloc((size_t)total * sizeof(float));
    }
    /* gradients after the two micro-batches */
    for (int s = 0; s < 2 && rc == 0; s++)
        if (atom_model_download(models[s], ATOM_BUF_GRADS, host[s], &err) != 0)
            rc = -1;
    if (rc == 0) {
        mismatches += !arrays_match("model", "loss", loss[0], loss[1], 2, 1e-5f * loose,
                                    1e-5f * loose, verbose);
        mismatches += !arrays_match("model", "grads", host[0], host[1], (size_t)total,
                                    1e-6f * loose, 1e-3f * loose, verbose);
        float norms[2] = {(float)norm[0], (float)norm[1]};
        mismatches += !arrays_match("model", "gradnorm", &norms[0], &norms[1], 1, 0.0f,
                                    1e-4f * loose, verbose);
    }
    /* one AdamW step (clipping factor 0.5), then a forward with the new weights */
    for (int s = 0; s < 2 && rc == 0; s++)
        if (atom_model_adamw_step(models[s], 1e-3f, 0.1f, 0.5f, &err) != 0 ||
            atom_model_download(models[s], ATOM_BUF_PARAMS, host[s], &err) != 0)
            rc = -1;
    if (rc == 0)
        /* atol lr/10: AdamW divides by sqrt(v), so a gradient near zero moves its weight by up to
         * lr in a direction that is rounding noise (summing the matmuls in another order moved
         * one by 1.1e-5 in --self-check); a wrong step moves most weights by about lr */
        mismatches += !arrays_match("model", "params", host[0], host[1], (size_t)total,
                                    bf16 ? 1e-3f : 1e-4f, 1e-4f * loose, verbose);
    for (int s = 0; s < 2 && rc == 0; s++)
        if (atom_model_download(models[s], ATOM_BUF_ADAM_V, host[s], &err) != 0 ||
            atom_model_forward(models[s], tokens[0], MB, &loss[s][2], &err) != 0)
            rc = -1;
    if (rc == 0) {
        /* bf16: v = 0.05 g^2 moves by 0.1 g dg, 1e-9 for a gradient of 1e-3 off by 1e-5 (the
         * gradients' atol) */
        mismatches += !arrays_match("model", "adam_v", host[0], host[1], (size_t)total,
                                    bf16 ? 1e-9f : 1e-12f, bf16 ? 2e-2f : 1e-3f, verbose);
        mismatches += !arrays_match("model", "loss2", &loss[0][2], &loss[1][2], 1,
                                    1e-5f * loose, 1e-5f * loose, verbose);
    }
    if (rc != 0)
        fprintf(stderr, "FAIL model: %s\n", err.msg);
    free(host[0]);
    free(host[1]);
    atom_model_free(models[0]);
    atom_model_free(models[1]);
    return rc != 0 ? -1 : mismatches;
}

/* ---- --self-check: the CPU table with one op broken on purpose ------------------------- */

static const atom_backend *cpu;

/* Linear instead of GELU. */
static void broken_gelu_forward(float *out, const float *inp, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = inp[i];
}

/* "=" where the contract says "+=" for the weight and bias gradients. */
static void broken_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                      const float *inp, const float *weight, const float *mean,
                                      const float *rstd, int N_, int C_)
{
    cpu->zero(dweight, C_);
    cpu->zero(dbias, C_);
    cpu->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N_, C_);
}

/* Off by one row of the causal mask: query t sees key t+1. */
static void broken_attention_forward(float *out, float *att, const float *qkv, int B_, int T_,
                                     int NH_, int hs)
{
    cpu->attention_forward(out, att, qkv, B_, T_, NH_, hs);
    att[1] = 0.5f * att[0];
    att[0] *= 0.5f;
}

/* Multiplies in fp32 when asked for bf16 operands. */
static void broken_matmul_forward(float *out, const float *inp, const float *weight,
                                  const float *bias, int N_, int IN, int OUT, bool bf16)
{
    (void)bf16;
    cpu->matmul_forward(out, inp, weight, bias, N_, IN, OUT, false);
}

/* Forgets the gradient multiplier (the clipping factor). */
static void broken_adamw(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                         float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                         float grad_multiplier)
{
    (void)grad_multiplier;
    cpu->adamw(param, grad, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, 1.0f);
}

/* Legitimately different rounding, as a GPU has: matmuls as plain loops that sum the inner
 * dimension backwards with fused multiply-adds (cuBLAS neither blocks nor orders its sums as
 * OpenBLAS does, and nvcc contracts a * b + c into one FMA). The tolerances must accept it.
 * With bf16 operands, each operand is rounded as it is read (OP). */
#define OP(x) (bf16 ? atom_bf16_round(x) : (x))

static void reordered_matmul_forward(float *out, const float *inp, const float *weight,
                                     const float *bias, int N_, int IN, int OUT, bool bf16)
{
    for (int n = 0; n < N_; n++)
        for (int o = 0; o < OUT; o++) {
            float s = 0.0f;
            for (int i = IN - 1; i >= 0; i--)
                s = fmaf(OP(inp[(size_t)n * IN + i]), OP(weight[(size_t)o * IN + i]), s);
            out[(size_t)n * OUT + o] = s + (bias ? bias[o] : 0.0f);
        }
}

static void reordered_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                      const float *inp, const float *weight, int N_, int IN,
                                      int OUT, bool bf16)
{
    for (int n = 0; dinp && n < N_; n++)
        for (int i = 0; i < IN; i++) {
            float s = 0.0f;
            for (int o = OUT - 1; o >= 0; o--)
                s = fmaf(OP(dout[(size_t)n * OUT + o]), OP(weight[(size_t)o * IN + i]), s);
            dinp[(size_t)n * IN + i] = s;
        }
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i++) {
            float s = 0.0f;
            for (int n = N_ - 1; n >= 0; n--)
                s = fmaf(OP(dout[(size_t)n * OUT + o]), OP(inp[(size_t)n * IN + i]), s);
            dweight[(size_t)o * IN + i] += s;
        }
    for (int o = 0; dbias && o < OUT; o++) {
        float s = 0.0f;
        for (int n = N_ - 1; n >= 0; n--)
            s += dout[(size_t)n * OUT + o];
        dbias[o] += s;
    }
}
#undef OP

static int self_check(void)
{
    char first[128];
    int io_failed;
    cpu = atom_backend_cpu();
    int failures = compare_backends(cpu, cpu, true, first, sizeof first, &io_failed);
    if (failures || io_failed) {
        fprintf(stderr, "self-check: the CPU backend differs from itself (%s)\n", first);
        return 1;
    }
    struct {
        const char *broken_op;
        atom_backend table;
    } cases[5];
    for (int i = 0; i < 5; i++)
        cases[i].table = *cpu;
    cases[0].broken_op = "gelu_forward";
    cases[0].table.gelu_forward = broken_gelu_forward;
    cases[1].broken_op = "layernorm_backward";
    cases[1].table.layernorm_backward = broken_layernorm_backward;
    cases[2].broken_op = "attention_forward";
    cases[2].table.attention_forward = broken_attention_forward;
    cases[3].broken_op = "adamw";
    cases[3].table.adamw = broken_adamw;
    cases[4].broken_op = "matmul_forward(bf16"; /* with or without a bias */
    cases[4].table.matmul_forward = broken_matmul_forward;
    atom_backend reordered = *cpu;
    reordered.matmul_forward = reordered_matmul_forward;
    reordered.matmul_backward = reordered_matmul_backward;
    failures = compare_backends(cpu, &reordered, true, first, sizeof first, &io_failed);
    int model_failures = compare_models(cpu, &reordered, ATOM_PRECISION_FP32, true) +
                         compare_models(cpu, &reordered, ATOM_PRECISION_BF16, true);
    printf("%s matmuls summed in another order: %d op and %d model mismatches%s%s\n",
           failures == 0 && model_failures == 0 ? "accepted" : "REJECTED", failures, model_failures,
           failures ? ", first " : "", failures ? first : "");
    if (failures != 0 || model_failures != 0)
        return 1;

    int missed = 0;
    model_failures = compare_models(cpu, cpu, ATOM_PRECISION_FP32, true);
    int bf16_failures = compare_models(cpu, cpu, ATOM_PRECISION_BF16, true);
    if (model_failures != 0 || bf16_failures != 0) {
        fprintf(stderr, "self-check: the model on the CPU backend differs from itself\n");
        return 1;
    }
    model_failures = compare_models(cpu, &cases[0].table, ATOM_PRECISION_FP32, false);
    printf("%s broken gelu_forward in the whole model: %d mismatches\n",
           model_failures > 0 ? "caught" : "MISSED", model_failures);
    missed += model_failures <= 0;
    for (int i = 0; i < 5; i++) {
        failures = compare_backends(cpu, &cases[i].table, false, first, sizeof first, &io_failed);
        bool caught =
            failures > 0 && strncmp(first, cases[i].broken_op, strlen(cases[i].broken_op)) == 0;
        printf("%s broken %s: %d mismatches, first %s\n", caught ? "caught" : "MISSED",
               cases[i].broken_op, failures, failures ? first : "-");
        missed += !caught;
    }
    return missed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--self-check") == 0)
        return self_check();
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--self-check]\n", argv[0]);
        return 2;
    }
#ifdef ATOM_HAVE_CUDA
    char first[128];
    int io_failed;
    int failures = compare_backends(atom_backend_cpu(), atom_backend_cuda(), true, first,
                                    sizeof first, &io_failed);
    if (io_failed)
        fprintf(stderr, "the CUDA backend reported errors (see its log lines above)\n");
    printf("ops: %d mismatches%s%s\n", failures, failures ? ", first: " : "",
           failures ? first : "");
    if (failures || io_failed)
        return 1;
    int model_failures =
        compare_models(atom_backend_cpu(), atom_backend_cuda(), ATOM_PRECISION_FP32, true);
    int bf16_failures =
        compare_models(atom_backend_cpu(), atom_backend_cuda(), ATOM_PRECISION_BF16, true);
    printf("model: %d mismatches in fp32, %d in bf16\n", model_failures, bf16_failures);
    model_failures += bf16_failures;
    return model_failures == 0 ? 0 : 1;
#else
    fprintf(stderr, "built without CUDA\n");
    return 2;
#endif
}
