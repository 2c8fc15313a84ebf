/* tests/worker/test_model.c: the single-rank model against the reference (cmocka).
 *
 *   - the parameter table: reference order, offsets, and the hyperslabs of every TP split;
 *   - initial weights identical whatever the TP split (each shard read back through its
 *     hyperslab), with the reference's distributions;
 *   - loss and logits agree with an independent naive double-precision forward (naive_gpt.h);
 *   - every parameter's gradient (sampled elements) agrees with central finite differences of
 *     the naive forward; padded vocabulary rows get no gradient;
 *   - gradient accumulation and its scale; the loss at initialisation of gpt-tiny is near ln V;
 *   - AdamW against the formula, weight decay on the 2-D weights only; the gradient norm.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hyperslab.h"
#include "naive_gpt.h"
#include "worker/kernels.h"
#include "worker/model.h"

static const atom_model_cfg SMALL = {.layers = 2, .channels = 8, .heads = 2, .vocab = 5,
                                     .context = 4};

static naive_shape shape_of(const atom_model_cfg *c)
{
    naive_shape s = {c->vocab, atom_padded_vocab(c->vocab), c->context, c->channels, c->layers,
                     c->heads};
    return s;
}

/* A fixed pseudo-random stream for the tests' own data (not the model's generator). */
static uint64_t test_rng = 88172645463325252ull;
static uint64_t next_u64(void)
{
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return test_rng;
}
static double next_uniform(void) { return (double)(next_u64() >> 11) / 9007199254740992.0; }
static double next_normal(void)
{
    double u1 = next_uniform() + 1e-12, u2 = next_uniform();
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static void random_tokens(int *tokens, int n, int V)
{
    for (int i = 0; i < n; i++)
        tokens[i] = (int)(next_u64() % (uint64_t)V);
}

static atom_model *make_model(const atom_model_cfg *cfg, int B, int tp_rank, int tp_size)
{
    /* without a tensor group a split shard can be created, initialised and stepped, but not run
     * forward (test_bad_input) */
    atom_model_opts o = {.cfg = *cfg, .max_batch = B, .backend = atom_backend_cpu(),
                         .tp_rank = tp_rank, .tp_size = tp_size};
    atom_model *m = NULL;
    atom_err err = {{0}};
    if (atom_model_create(&o, &m, &err) != 0)
        fail_msg("atom_model_create: %s", err.msg);
    return m;
}

/* ---- kernels.h's own exp and tanh (the GPU runs the same code) ---- */

static void test_kernel_tanh(void **state)
{
    (void)state;
    double worst = 0, worst_gelu = 0, worst_grad = 0;
    for (int i = -400000; i <= 400000; i++) {
        float x = (float)i * 5e-5f; /* [-20, 20] */
        worst = fmax(worst, fabs(atom_tanh(x) - tanh((double)x)));
        double u = sqrt(2 / M_PI) * (x + 0.044715 * (double)x * x * x), t = tanh(u);
        double gelu = 0.5 * x * (1 + t);
        double grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * sqrt(2 / M_PI) *
                                          (1 + 3 * 0.044715 * (double)x * x);
        worst_gelu = fmax(worst_gelu, fabs(atom_gelu(x) - gelu) / fmax(1.0, fabs(gelu)));
        worst_grad = fmax(worst_grad, fabs(atom_gelu_grad(x) - grad) / fmax(1.0, fabs(grad)));
    }
    if (worst > 2e-7 || worst_gelu > 1e-6 || worst_grad > 2e-6) /* a few float ulps */
        fail_msg("largest errors: tanh %g, gelu %g, gelu' %g", worst, worst_gelu, worst_grad);
    /* saturation, signs, and no overflow to NaN */
    assert_true(atom_tanh(100.0f) == 1.0f && atom_tanh(-100.0f) == -1.0f);
    assert_true(atom_tanh(1e30f) == 1.0f && atom_tanh(INFINITY) == 1.0f);
    assert_true(atom_tanh(0.0f) == 0.0f);
    assert_true(atom_gelu(-50.0f) == 0.0f && atom_gelu(50.0f) == 50.0f);
    assert_true(fabsf(atom_exp_neg(1.0f) - expf(-1.0f)) <= 1e-7f);
    assert_true(atom_exp_neg(1000.0f) > 0.0f && atom_exp_neg(1000.0f) < 1e-37f);
}

/* The causal softmax row (its exponentials are atom_exp_neg's) against double precision; a NaN
 * score makes the row NaN, as libm's expf would. */
static void test_kernel_softmax_row(void **state)
{
    (void)state;
    enum { T = 40 };
    float row[T];
    double worst = 0;
    uint64_t x = 12345; /* its own stream: the other tests' data stays as it was */
    for (int t = 0; t < T; t++) {
        for (int j = 0; j < T; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            /* scores in [-400, 400): differences past 87 take atom_exp_neg's clamp */
            row[j] = (float)((double)(x >> 11) / 9007199254740992.0 * 800.0 - 400.0);
        }
        double want[T], maxv = -INFINITY, sum = 0;
        for (int j = 0; j <= t; j++)
            maxv = fmax(maxv, 0.125 * row[j]);
        for (int j = 0; j <= t; j++)
            sum += want[j] = exp(0.125 * row[j] - maxv);
        atom_causal_softmax_row(row, t, T, 0.125f);
        for (int j = 0; j < T; j++)
            worst = fmax(worst, fabs(row[j] - (j <= t ? want[j] / sum : 0.0)));
    }
    if (worst > 1e-6)
        fail_msg("softmax row: largest error %g", worst);
    float with_nan[4] = {1.0f, NAN, 2.0f, 5.0f};
    atom_causal_softmax_row(with_nan, 2, 4, 1.0f);
    assert_true(isnan(with_nan[1]) && with_nan[3] == 0.0f);
}

/* Round to nearest, ties to even, on the bit patterns that decide it. */
static void test_kernel_bf16_rounding(void **state)
{
    (void)state;
    static const struct {
        uint32_t in;
        uint16_t out;
        const char *what;
    } cases[] = {
        {0x3F800000u, 0x3F80u, "1.0 exact"},
        {0x3F807FFFu, 0x3F80u, "just below a tie: down"},
        {0x3F808000u, 0x3F80u, "tie, even kept part: down"},
        {0x3F808001u, 0x3F81u, "just above a tie: up"},
        {0x3F818000u, 0x3F82u, "tie, odd kept part: up to even"},
        {0xBF818000u, 0xBF82u, "negative tie, odd: away from zero to even"},
        {0x3FFF8000u, 0x4000u, "tie carrying into the exponent"},
        {0x7F7F7FFFu, 0x7F7Fu, "largest bf16, below the tie"},
        {0x7F7F8000u, 0x7F80u, "tie above the largest bf16: infinity"},
        {0x7F7FFFFFu, 0x7F80u, "largest float: infinity"},
        {0x7F800000u, 0x7F80u, "+infinity"},
        {0xFF800000u, 0xFF80u, "-infinity"},
        {0x7FC00000u, 0x7FC0u, "quiet NaN"},
        {0x7F800001u, 0x7FC0u, "NaN whose payload is all in the dropped half: still NaN"},
        {0xFF800001u, 0xFFC0u, "negative NaN keeps its sign"},
        {0x7FBFFFFFu, 0x7FFFu, "signalling NaN with the largest payload: no carry to +0"},
        {0x00000000u, 0x0000u, "+0"},
        {0x80000000u, 0x8000u, "-0"},
        {0x00000001u, 0x0000u, "smallest subnormal: to +0"},
        {0x00008000u, 0x0000u, "subnormal tie, even: down to 0"},
        {0x00018000u, 0x0002u, "subnormal tie, odd: up"},
        {0x00010000u, 0x0001u, "smallest bf16 subnormal exact"},
        {0x007FFFFFu, 0x0080u, "largest subnormal: up to the smallest normal"},
        {0x80018000u, 0x8002u, "negative subnormal tie, odd"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float f;
        memcpy(&f, &cases[i].in, sizeof f);
        uint16_t got = atom_bf16_bits(f);
        if (got != cases[i].out)
            fail_msg("%s: 0x%08X -> 0x%04X, want 0x%04X", cases[i].what, (unsigned)cases[i].in,
                     (unsigned)got, (unsigned)cases[i].out);
    }
    assert_true(atom_bf16_round(1.0f + 0x1p-8f) == 1.0f);
    assert_true(atom_bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    assert_true(atom_bf16_to_float(0x3F82u) == 1.015625f);
    assert_true(isnan(atom_bf16_round(NAN)) && isinf(atom_bf16_round(INFINITY)));
}

/* ---- the CPU backend's Linear under bf16 (oneDNN) ---- */

/* Linear forward and both backward products with bf16 operands, against a double-precision
 * product of the same operands rounded to bf16 (kernels.h atom_bf16_round): only the fp32
 * accumulation may differ, so the tolerance is fp32-sized, relative to the sum of |terms|;
 * a wrong operand, transposition or block (a product too large for one scratch block is cut
 * along its inner dimension) misses it by orders of magnitude. The fp32 path of the same call
 * must agree within bf16's own rounding. Accumulating outputs (dweight, dbias) start non-zero. */
/* init + sum over k of a[k*sa] * b[k*sb], both rounded to bf16, in double; *mag = |init| +
 * sum of |terms| (at least 1e-30), the scale an fp32 accumulation's error is measured against */
static double bf16_dot(double init, const float *a, size_t sa, const float *b, size_t sb, int n,
                       double *mag)
{
    double sum = init, m = fabs(init) + 1e-30;
    for (int k = 0; k < n; k++) {
        double t = (double)atom_bf16_round(a[k * sa]) * (double)atom_bf16_round(b[k * sb]);
        sum += t;
        m += fabs(t);
    }
    *mag = m;
    return sum;
}

static void check_bf16_linear(int N, int IN, int OUT)
{
    const atom_backend *be = atom_backend_cpu();
    size_t ni = (size_t)N * IN, nw = (size_t)OUT * IN, no = (size_t)N * OUT;
    float *inp = malloc(ni * 4), *w = malloc(nw * 4), *bias = malloc((size_t)OUT * 4);
    float *dout = malloc(no * 4), *out = malloc(no * 4), *out32 = malloc(no * 4);
    float *dinp = malloc(ni * 4), *dinp32 = malloc(ni * 4), *dw = malloc(nw * 4);
    float *dw32 = malloc(nw * 4), *db = malloc((size_t)OUT * 4), *db32 = malloc((size_t)OUT * 4);
    float *dw0 = malloc(nw * 4);
    for (size_t i = 0; i < ni; i++)
        inp[i] = (float)next_normal();
    for (size_t i = 0; i < nw; i++) {
        w[i] = (float)(0.02 * next_normal());
        dw0[i] = dw[i] = dw32[i] = (float)next_normal();
    }
    for (size_t i = 0; i < no; i++)
        dout[i] = (float)next_normal();
    for (int o = 0; o < OUT; o++) {
        bias[o] = (float)next_normal();
        db[o] = db32[o] = 1.0f;
    }
    be->matmul_forward(out, inp, w, bias, N, IN, OUT, true);
    be->matmul_forward(out32, inp, w, bias, N, IN, OUT, false);
    be->matmul_backward(dinp, dw, db, dout, inp, w, N, IN, OUT, true);
    be->matmul_backward(dinp32, dw32, db32, dout, inp, w, N, IN, OUT, false);
    double worst = 0, worst32 = 0; /* |error| / sum |terms| */
    for (int n = 0; n < N; n += 1 + N / 61)
        for (int o = 0; o < OUT; o++) {
            double mag, want = bf16_dot(bias[o], inp + (size_t)n * IN, 1, w + (size_t)o * IN, 1,
                                        IN, &mag);
            worst = fmax(worst, fabs(out[(size_t)n * OUT + o] - want) / mag);
            worst32 = fmax(worst32, fabs(out32[(size_t)n * OUT + o] - want) / mag);
        }
    for (int n = 0; n < N; n += 1 + N / 61)
        for (int i = 0; i < IN; i++) {
            double mag, want = bf16_dot(0, dout + (size_t)n * OUT, 1, w + i, IN, OUT, &mag);
            worst = fmax(worst, fabs(dinp[(size_t)n * IN + i] - want) / mag);
            worst32 = fmax(worst32, fabs(dinp32[(size_t)n * IN + i] - want) / mag);
        }
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i += 1 + IN / 61) {
            double mag, want = bf16_dot(dw0[(size_t)o * IN + i], dout + o, OUT, inp + i, IN, N,
                                        &mag);
            worst = fmax(worst, fabs(dw[(size_t)o * IN + i] - want) / mag);
            worst32 = fmax(worst32, fabs(dw32[(size_t)o * IN + i] - want) / mag);
        }
    for (int o = 0; o < OUT; o++)
        assert_true(db[o] == db32[o]); /* the bias gradient is fp32 either way */
    printf("bf16 Linear N=%d IN=%d OUT=%d: worst error / sum|terms| %.1e (the fp32 path: %.1e)\n",
           N, IN, OUT, worst, worst32);
    /* fp32 accumulation of up to 2048 terms: well under 1e-5 of their magnitude */
    if (worst > 1e-5)
        fail_msg("bf16 Linear N=%d IN=%d OUT=%d: error %.2e of the terms' magnitude", N, IN, OUT,
                 worst);
    /* the fp32 path multiplies unrounded operands: it differs by bf16's rounding, ~2^-8 */
    assert_true(worst32 > 1e-5 && worst32 < 2e-2);
    free(inp), free(w), free(bias), free(dout), free(out), free(out32), free(dinp);
    free(dinp32), free(dw), free(dw32), free(db), free(db32), free(dw0);
}

static void test_cpu_bf16_linear(void **state)
{
    (void)state;
    check_bf16_linear(37, 50, 29);     /* odd sizes, one block */
    check_bf16_linear(1024, 256, 768); /* gpt-tiny's qkv */
    check_bf16_linear(2048, 1024, 16); /* inp (2 Mi) is cut into two blocks along IN */
}

/* ---- the parameter table ---- */

static void test_table_layout(void **state)
{
    (void)state;
    atom_model_cfg c = {.layers = 3, .channels = 16, .heads = 4, .vocab = 300, .context = 8};
    naive_shape s = shape_of(&c);
    int64_t sizes[16];
    int64_t total = naive_sizes(&s, sizes);
    static const char *names[16] = {"wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb",
                                    "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb",
                                    "fcprojw", "fcprojb", "lnfw", "lnfb"};
    atom_param_table t;
    atom_err err;
    assert_int_equal(atom_param_table_build(&t, &c, 0, 1, &err), 0);
    assert_int_equal(t.total, total);
    int64_t off = 0;
    for (int i = 0; i < 16; i++) {
        assert_string_equal(t.params[i].name, names[i]);
        assert_int_equal(t.params[i].offset, off);
        assert_int_equal(t.params[i].numel, sizes[i]);
        off += sizes[i];
    }
    assert_int_equal(t.params[ATOM_P_WTE].shape[0], 384); /* Vp */

    /* TP rank 1 of 4: the brief's qkvw example, and the others */
    assert_int_equal(atom_param_table_build(&t, &c, 1, 4, &err), 0);
    const atom_param *q = &t.params[ATOM_P_QKVW];
    assert_int_equal(q->start[1], 1 * 16 / 4);
    assert_int_equal(q->stride[1], 16);
    assert_int_equal(q->count[1], 3);
    assert_int_equal(q->block[1], 4);
    assert_int_equal(q->block[0], 3);
    assert_int_equal(q->block[2], 16);
    assert_int_equal(q->numel, 3 * 12 * 16);
    assert_true(q->tp_split && q->decay && q->per_layer);
    const atom_param *ap = &t.params[ATOM_P_ATTPROJW];
    assert_int_equal(ap->start[2], 4);
    assert_int_equal(ap->block[2], 4);
    assert_int_equal(ap->local_shape[1], 16);
    assert_int_equal(t.params[ATOM_P_FCPROJW].start[2], 16);
    assert_int_equal(t.params[ATOM_P_FCW].start[1], 16);
    assert_int_equal(t.params[ATOM_P_WTE].start[0], 96);
    assert_int_equal(t.params[ATOM_P_WTE].local_shape[0], 96);
    assert_false(t.params[ATOM_P_ATTPROJB].tp_split);
    assert_false(t.params[ATOM_P_LN1W].decay);
    assert_true(t.params[ATOM_P_WPE].decay);

    /* the shards of a split add up to the whole parameter */
    for (int i = 0; i < 16; i++) {
        int64_t sum = 0;
        for (int r = 0; r < 4; r++) {
            atom_param_table tr;
            assert_int_equal(atom_param_table_build(&tr, &c, r, 4, &err), 0);
            sum += tr.params[i].numel;
        }
        assert_int_equal(sum, t.params[i].tp_split ? sizes[i] : 4 * sizes[i]);
    }

    /* shapes that do not split are refused with a message */
    assert_int_equal(atom_param_table_build(&t, &c, 0, 3, &err), -1);
    assert_non_null(strstr(err.msg, "heads"));
}

/* ---- initialisation ---- */

/* Every shard of every TP split, read back through its hyperslab, holds exactly the values of
 * the unsplit model at those positions. */
static void test_init_independent_of_split(void **state)
{
    (void)state;
    atom_model_cfg c = {.layers = 2, .channels = 16, .heads = 4, .vocab = 200, .context = 8};
    atom_err err;
    atom_model *whole = make_model(&c, 1, 0, 1);
    assert_int_equal(atom_model_init_weights(whole, 99, &err), 0);
    const atom_param_table *tw = atom_model_table(whole);
    float *ref = malloc((size_t)tw->total * sizeof(float));
    assert_int_equal(atom_model_download(whole, ATOM_BUF_PARAMS, ref, &err), 0);
    for (int P = 2; P <= 4; P *= 2)
        for (int r = 0; r < P; r++) {
            atom_model *m = make_model(&c, 1, r, P);
            assert_int_equal(atom_model_init_weights(m, 99, &err), 0);
            const atom_param_table *t = atom_model_table(m);
            float *w = malloc((size_t)t->total * sizeof(float));
            assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, w, &err), 0);
            for (int id = 0; id < ATOM_N_PARAMS; id++) {
                const atom_param *p = &t->params[id];
                int64_t *gi = hyperslab_indices(p);
                assert_non_null(gi);
                for (int64_t i = 0; i < p->numel; i++)
                    if (w[p->offset + i] != ref[tw->params[id].offset + gi[i]])
                        fail_msg("%s, TP rank %d of %d, local %lld: %g, unsplit %g", p->name, r,
                                 P, (long long)i, w[p->offset + i],
                                 ref[tw->params[id].offset + gi[i]]);
                free(gi);
            }
            free(w);
            atom_model_free(m);
        }
    free(ref);
    atom_model_free(whole);
}

static void test_init_distribution(void **state)
{
    (void)state;
    atom_model_cfg c = {.layers = 2, .channels = 64, .heads = 4, .vocab = 200, .context = 32};
    atom_model *m = make_model(&c, 1, 0, 1);
    atom_err err;
    assert_int_equal(atom_model_init_weights(m, 1234, &err), 0);
    const atom_param_table *t = atom_model_table(m);
    float *w = malloc((size_t)t->total * sizeof(float));
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, w, &err), 0);
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &t->params[id];
        const float *x = w + p->offset;
        int64_t n = p->numel;
        if (id == ATOM_P_WTE)
            n = (int64_t)c.vocab * c.channels; /* the real rows first; padded rows after */
        double mean = 0, sq = 0;
        for (int64_t i = 0; i < n; i++) {
            mean += x[i];
            sq += (double)x[i] * x[i];
        }
        mean /= n;
        double sd = sqrt(sq / n - mean * mean);
        const char *name = p->name;
        if (!strcmp(name, "ln1w") || !strcmp(name, "ln2w") || !strcmp(name, "lnfw")) {
            for (int64_t i = 0; i < n; i++)
                assert_true(x[i] == 1.0f);
        } else if (p->ndim == 1 || (p->ndim == 2 && p->per_layer)) {
            for (int64_t i = 0; i < n; i++) /* biases */
                assert_true(x[i] == 0.0f);
        } else {
            double want = 0.02;
            if (!strcmp(name, "attprojw") || !strcmp(name, "fcprojw"))
                want = 0.02 / sqrt(2.0 * c.layers);
            if (fabs(sd - want) > 0.05 * want || fabs(mean) > 0.1 * want)
                fail_msg("%s: mean %g sd %g, want sd %g", name, mean, sd, want);
        }
        if (id == ATOM_P_WTE)
            for (int64_t i = n; i < p->numel; i++)
                assert_true(x[i] == 0.0f); /* padded rows */
    }
    /* a different seed gives different weights; the same seed the same */
    float *w2 = malloc((size_t)t->total * sizeof(float));
    assert_int_equal(atom_model_init_weights(m, 1235, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, w2, &err), 0);
    assert_true(memcmp(w, w2, (size_t)t->total * sizeof(float)) != 0);
    assert_int_equal(atom_model_init_weights(m, 1234, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, w2, &err), 0);
    assert_memory_equal(w, w2, (size_t)t->total * sizeof(float));
    free(w);
    free(w2);
    atom_model_free(m);
}

/* ---- the naive reference ---- */

static double *to_double(const float *x, int64_t n)
{
    double *d = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* Weights with more spread than the initialisation, so every nonlinearity is exercised:
 * normal(0, 0.3) everywhere, LayerNorm weights 1 + normal(0, 0.3), padded rows zero. */
static void perturbed_weights(atom_model *m, const atom_model_cfg *c, float *w)
{
    const atom_param_table *t = atom_model_table(m);
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &t->params[id];
        bool lnw = id == ATOM_P_LN1W || id == ATOM_P_LN2W || id == ATOM_P_LNFW;
        for (int64_t i = 0; i < p->numel; i++)
            w[p->offset + i] = (float)((lnw ? 1.0 : 0.0) + 0.3 * next_normal());
        if (id == ATOM_P_WTE)
            for (int64_t i = (int64_t)c->vocab * c->channels; i < p->numel; i++)
                w[p->offset + i] = 0.0f;
    }
    atom_err err;
    assert_int_equal(atom_model_upload(m, ATOM_BUF_PARAMS, w, &err), 0);
}

static void check_against_naive(const atom_model_cfg *c, int B, bool perturb)
{
    /* room for a larger micro-batch than the one run: activations are laid out by the B of
     * the call, not max_batch */
    atom_model *m = make_model(c, B + 1, 0, 1);
    atom_err err;
    assert_int_equal(atom_model_init_weights(m, 7, &err), 0);
    const atom_param_table *t = atom_model_table(m);
    float *w = malloc((size_t)t->total * sizeof(float));
    if (perturb)
        perturbed_weights(m, c, w);
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, w, &err), 0);
    int T = c->context, Vp = atom_padded_vocab(c->vocab);
    int *tokens = malloc((size_t)B * (T + 1) * sizeof(int));
    random_tokens(tokens, B * (T + 1), c->vocab);

    float loss = 0;
    assert_int_equal(atom_model_forward(m, tokens, B, &loss, &err), 0);
    float *logits = malloc((size_t)B * T * Vp * sizeof(float));
    assert_int_equal(atom_model_copy_logits(m, logits, &err), 0);

    naive_shape s = shape_of(c);
    double *wd = to_double(w, t->total);
    double *ref_logits = malloc((size_t)B * T * c->vocab * sizeof(double));
    double ref = naive_forward(&s, wd, tokens, B, ref_logits);
    if (fabs(loss - ref) > 1e-5 * fabs(ref) + 1e-6)
        fail_msg("loss %.8f, naive %.8f", loss, ref);
    double worst = 0, scale = 0;
    for (int i = 0; i < B * T; i++)
        for (int v = 0; v < c->vocab; v++) {
            double d = fabs(logits[(size_t)i * Vp + v] - ref_logits[(size_t)i * c->vocab + v]);
            worst = fmax(worst, d);
            scale = fmax(scale, fabs(ref_logits[(size_t)i * c->vocab + v]));
        }
    if (worst > 1e-5 * fmax(scale, 1.0))
        fail_msg("logits differ by up to %g (largest logit %g)", worst, scale);

    /* forward_backward reports the same loss */
    float loss2 = 0;
    assert_int_equal(atom_model_forward_backward(m, tokens, B, 1.0f, false, &loss2, &err), 0);
    assert_true(loss2 == loss);
    free(w);
    free(wd);
    free(tokens);
    free(logits);
    free(ref_logits);
    atom_model_free(m);
}

static void test_naive_small(void **state)
{
    (void)state;
    check_against_naive(&SMALL, 2, false);
    check_against_naive(&SMALL, 2, true);
}

static void test_naive_wider(void **state)
{
    (void)state;
    atom_model_cfg c = {.layers = 2, .channels = 48, .heads = 4, .vocab = 130, .context = 16};
    check_against_naive(&c, 3, true);
}

/* ---- gradients against finite differences of the naive forward ---- */

static void check_gradients(const atom_model_cfg *c)
{
    int B = 2, T = c->context;
    atom_model *m = make_model(c, B, 0, 1);
    atom_err err;
    const atom_param_table *t = atom_model_table(m);
    float *w = malloc((size_t)t->total * sizeof(float));
    float *g = malloc((size_t)t->total * sizeof(float));
    perturbed_weights(m, c, w);
    int *tokens = malloc((size_t)B * (T + 1) * sizeof(int));
    random_tokens(tokens, B * (T + 1), c->vocab);

    atom_model_zero_grads(m);
    float loss;
    assert_int_equal(atom_model_forward_backward(m, tokens, B, 1.0f, false, &loss, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_GRADS, g, &err), 0);

    naive_shape s = shape_of(c);
    double *wd = to_double(w, t->total);
    const double h = 1e-5;
    int checked = 0;
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &t->params[id];
        int64_t range = p->numel;
        if (id == ATOM_P_WTE)
            range = (int64_t)c->vocab * c->channels; /* the real rows */
        double gmax = 0;
        for (int64_t i = 0; i < p->numel; i++)
            gmax = fmax(gmax, fabs(g[p->offset + i]));
        for (int k = 0; k < 8; k++) {
            int64_t i = p->offset + (int64_t)(next_u64() % (uint64_t)range);
            double keep = wd[i];
            wd[i] = keep + h;
            double lp = naive_forward(&s, wd, tokens, B, NULL);
            wd[i] = keep - h;
            double lm = naive_forward(&s, wd, tokens, B, NULL);
            wd[i] = keep;
            double fd = (lp - lm) / (2 * h);
            /* fp32 analytic vs double numeric: relative to the element, with a floor relative to
             * the parameter's largest gradient */
            double tol = 2e-3 * fabs(fd) + 1e-4 * gmax + 1e-7;
            if (fabs(g[i] - fd) > tol)
                fail_msg("%s[%lld]: gradient %.8g, finite difference %.8g", p->name,
                         (long long)(i - p->offset), g[i], fd);
            checked++;
        }
        assert_true(gmax > 0); /* every parameter gets some gradient */
    }
    assert_int_equal(checked, 8 * ATOM_N_PARAMS);
    /* padded vocabulary rows get none */
    const atom_param *wte = &t->params[ATOM_P_WTE];
    for (int64_t i = (int64_t)c->vocab * c->channels; i < wte->numel; i++)
        assert_true(g[wte->offset + i] == 0.0f);

    /* gradients accumulate, scaled: a second pass with scale 0.5 adds half again */
    float *g2 = malloc((size_t)t->total * sizeof(float));
    assert_int_equal(atom_model_forward_backward(m, tokens, B, 0.5f, false, &loss, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_GRADS, g2, &err), 0);
    for (int64_t i = 0; i < t->total; i++)
        assert_true(fabsf(g2[i] - 1.5f * g[i]) <= 1e-5f * fabsf(g[i]) + 1e-9f);
    atom_model_zero_grads(m);
    assert_int_equal(atom_model_download(m, ATOM_BUF_GRADS, g2, &err), 0);
    for (int64_t i = 0; i < t->total; i++)
        assert_true(g2[i] == 0.0f);

    free(g2);
    free(w);
    free(g);
    free(wd);
    free(tokens);
    atom_model_free(m);
}

static void test_gradients_finite_differences(void **state)
{
    (void)state;
    check_gradients(&SMALL);
}

/* The backward keeps every layer's attention probabilities only when they fit in the MLP inputs'
 * memory (heads * T <= 4C, model.c); gpt2-124m at T=1024 does not, and recomputes them in the
 * backward. This shape takes that path. */
static void test_gradients_recomputed_attention(void **state)
{
    (void)state;
    const atom_model_cfg c = {.layers = 2, .channels = 8, .heads = 2, .vocab = 5, .context = 20};
    assert_true(c.heads * c.context > 4 * c.channels);
    check_gradients(&c);
}

/* The CPU backend's attention multiplies only the causal half of q k^T, in tiles of 32 queries
 * (and keys): T = 70 gives two whole tiles and a partial one, against the naive forward (which
 * computes the whole square) and against finite differences. */
static void test_attention_causal_tiles(void **state)
{
    (void)state;
    const atom_model_cfg c = {.layers = 1, .channels = 8, .heads = 2, .vocab = 5, .context = 70};
    check_against_naive(&c, 2, true);
    check_gradients(&c);
}

/* ---- gpt-tiny at initialisation ---- */

static void test_tiny_initial_loss(void **state)
{
    (void)state;
    atom_model_cfg c;
    assert_int_equal(atom_model_preset("gpt-tiny", &c), 0);
    assert_int_equal(c.vocab, 256);
    int B = 2;
    atom_model *m = make_model(&c, B, 0, 1);
    atom_err err;
    assert_int_equal(atom_model_init_weights(m, 42, &err), 0);
    int *tokens = malloc((size_t)B * (c.context + 1) * sizeof(int));
    random_tokens(tokens, B * (c.context + 1), c.vocab);
    float loss;
    assert_int_equal(atom_model_forward(m, tokens, B, &loss, &err), 0);
    /* small random logits: the loss is ln V plus about half their variance */
    if (fabsf(loss - logf(256.0f)) > 0.1f)
        fail_msg("initial loss %.4f, ln V = %.4f", loss, logf(256.0f));
    free(tokens);
    atom_model_free(m);
}

/* ---- the optimizer ---- */

static void test_adamw_and_norm(void **state)
{
    (void)state;
    const atom_model_cfg *c = &SMALL;
    atom_model *m = make_model(c, 2, 0, 1);
    atom_err err;
    assert_int_equal(atom_model_init_weights(m, 3, &err), 0);
    const atom_param_table *t = atom_model_table(m);
    int64_t n = t->total;
    float *p0 = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
    float *p1 = malloc((size_t)n * sizeof(float)), *mm = malloc((size_t)n * sizeof(float));
    float *vv = malloc((size_t)n * sizeof(float));
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, p0, &err), 0);
    double sq = 0;
    for (int64_t i = 0; i < n; i++) {
        g[i] = (float)(0.1 * next_normal());
        sq += (double)g[i] * g[i];
    }
    assert_int_equal(atom_model_upload(m, ATOM_BUF_GRADS, g, &err), 0);
    double norm;
    assert_int_equal(atom_model_grad_norm(m, &norm, &err), 0);
    assert_true(fabs(norm - sqrt(sq)) <= 1e-9 * sqrt(sq));

    /* two steps with the same gradient, clipping factor 0.5 and wd 0.1, checked element by
     * element against the formula run here in double */
    float lr = 1e-2f, wdecay = 0.1f, mult = 0.5f;
    double *rp = to_double(p0, n), *rm = calloc((size_t)n, sizeof(double)),
           *rv = calloc((size_t)n, sizeof(double));
    for (int step = 1; step <= 2; step++) {
        assert_int_equal(atom_model_adamw_step(m, lr, wdecay, mult, &err), 0);
        for (int id = 0; id < ATOM_N_PARAMS; id++) {
            const atom_param *p = &t->params[id];
            double wdp = p->decay ? wdecay : 0.0;
            for (int64_t i = p->offset; i < p->offset + p->numel; i++) {
                double gi = (double)g[i] * mult;
                rm[i] = 0.9 * rm[i] + 0.1 * gi;
                rv[i] = 0.95 * rv[i] + 0.05 * gi * gi;
                double mh = rm[i] / (1 - pow(0.9, step)), vh = rv[i] / (1 - pow(0.95, step));
                rp[i] -= lr * (mh / (sqrt(vh) + 1e-8) + wdp * rp[i]);
            }
        }
    }
    assert_int_equal(atom_model_adam_steps(m), 2);
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, p1, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_ADAM_M, mm, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_ADAM_V, vv, &err), 0);
    for (int64_t i = 0; i < n; i++) {
        if (fabs(p1[i] - rp[i]) > 1e-6 + 1e-5 * fabs(rp[i]))
            fail_msg("param %lld: %.9g, formula %.9g", (long long)i, p1[i], rp[i]);
        assert_true(fabs(mm[i] - rm[i]) <= 1e-6 * fabs(rm[i]) + 1e-12);
        assert_true(fabs(vv[i] - rv[i]) <= 1e-5 * fabs(rv[i]) + 1e-12);
    }

    free(p0);
    free(p1);
    free(g);
    free(mm);
    free(vv);
    free(rp);
    free(rm);
    free(rv);
    atom_model_free(m);
}

static void test_decay_only_2d(void **state)
{
    (void)state;
    const atom_model_cfg *c = &SMALL;
    atom_model *m = make_model(c, 1, 0, 1);
    atom_err err;
    assert_int_equal(atom_model_init_weights(m, 5, &err), 0);
    const atom_param_table *t = atom_model_table(m);
    int64_t n = t->total;
    float *before = malloc((size_t)n * sizeof(float)), *after = malloc((size_t)n * sizeof(float));
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, before, &err), 0);
    /* zero gradients and moments: the Adam term is 0, only decay moves a weight */
    assert_int_equal(atom_model_adamw_step(m, 0.1f, 0.5f, 1.0f, &err), 0);
    assert_int_equal(atom_model_download(m, ATOM_BUF_PARAMS, after, &err), 0);
    for (int id = 0; id < ATOM_N_PARAMS; id++) {
        const atom_param *p = &t->params[id];
        for (int64_t i = p->offset; i < p->offset + p->numel; i++) {
            float want = p->decay ? before[i] * (1.0f - 0.1f * 0.5f) : before[i];
            if (fabsf(after[i] - want) > 1e-7f)
                fail_msg("%s: %.9g after decay, want %.9g", p->name, after[i], want);
        }
    }
    free(before);
    free(after);
    atom_model_free(m);
}

static void test_bad_input(void **state)
{
    (void)state;
    atom_model *m = make_model(&SMALL, 2, 0, 1);
    atom_err err = {{0}};
    assert_int_equal(atom_model_init_weights(m, 1, &err), 0);
    int tokens[2 * 5] = {0, 1, 2, 3, 4, 0, 1, 2, 3, 5}; /* 5 == V */
    float loss;
    assert_int_equal(atom_model_forward(m, tokens, 2, &loss, &err), -1);
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_int_equal(atom_model_forward(m, tokens, 3, &loss, &err), -1); /* > max_batch */
    atom_model_free(m);
    /* a split shard without a tensor group cannot run forward */
    m = make_model(&SMALL, 2, 1, 2);
    tokens[9] = 1;
    assert_int_equal(atom_model_forward(m, tokens, 2, &loss, &err), -1);
    assert_non_null(strstr(err.msg, "tensor group"));
    atom_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_tanh),
        cmocka_unit_test(test_kernel_bf16_rounding),
        cmocka_unit_test(test_kernel_softmax_row),
        cmocka_unit_test(test_cpu_bf16_linear),
        cmocka_unit_test(test_table_layout),
        cmocka_unit_test(test_init_independent_of_split),
        cmocka_unit_test(test_init_distribution),
        cmocka_unit_test(test_naive_small),
        cmocka_unit_test(test_naive_wider),
        cmocka_unit_test(test_gradients_finite_differences),
        cmocka_unit_test(test_gradients_recomputed_attention),
        cmocka_unit_test(test_attention_causal_tiles),
        cmocka_unit_test(test_tiny_initial_loss),
        cmocka_unit_test(test_adamw_and_norm),
        cmocka_unit_test(test_decay_only_2d),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
