/* worker/generate.c: text generation with a key/value cache (infer.h), on the CPU backend.
 *
 * Each feed runs only the new positions p0..p0+n-1 through the model: per layer the same ops
 * as the training forward (worker/model.c) on n rows, except attention, whose queries are the
 * new positions and whose keys and values are the cache's rows 0..p0+n-1 (the new ones
 * appended first). Causality is by construction (no later position exists yet), and within a
 * prompt kernels.h's causal softmax row masks keys after each query, as in training. Only the
 * last position goes through the final LayerNorm and the tied head.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "worker/backend.h"
#include "worker/infer.h"
#include "worker/kernels.h"

struct atom_generator {
    const atom_infer_ckpt *ck;
    const atom_backend *be;
    int T, C, L, NH, hs, V, Vp;
    bool bf16;
    int len;                       /* positions in the cache */
    float *k_cache, *v_cache;      /* (L, T, C) each: per position every head's k (v) */
    /* one chunk of up to T positions */
    float *x;                      /* (T, C) the residual stream */
    float *ln;                     /* (T, C) */
    float *mean, *rstd;            /* (T) */
    float *qkv;                    /* (T, 3C) */
    float *atty;                   /* (T, C) */
    float *proj;                   /* (T, C) */
    float *fch, *fch_gelu;         /* (T, 4C) */
    float *scores;                 /* (T, T) one head's attention rows */
    float *logits;                 /* (Vp) the last position's */
};

static const float *weight(const atom_generator *g, atom_param_id id, int layer)
{
    const atom_param *p = &g->ck->table.params[id];
    const float *base = g->ck->params + p->offset;
    return p->per_layer ? base + (int64_t)layer * (p->numel / g->L) : base;
}

int atom_generator_create(const atom_infer_ckpt *ck, atom_generator **out, atom_err *err)
{
    *out = NULL;
    const atom_model_cfg *c = &ck->spec.model;
    if (c->context < 2)
        return atom_errf(err, "generation needs a context of at least 2, not %d", c->context);
    atom_generator *g = calloc(1, sizeof *g);
    if (!g)
        return atom_errf(err, "out of memory");
    g->ck = ck;
    g->be = atom_backend_cpu();
    g->T = c->context;
    g->C = c->channels;
    g->L = c->layers;
    g->NH = c->heads;
    g->hs = c->channels / c->heads;
    g->V = c->vocab;
    g->Vp = (int)ck->table.params[ATOM_P_WTE].shape[0];
    g->bf16 = ck->spec.training.precision == ATOM_PRECISION_BF16;
    size_t T = (size_t)g->T, C = (size_t)g->C, f = sizeof(float);
    float **bufs[] = {&g->k_cache, &g->v_cache, &g->x,    &g->ln,  &g->mean,   &g->rstd,
                      &g->qkv,     &g->atty,    &g->proj, &g->fch, &g->fch_gelu, &g->scores,
                      &g->logits};
    size_t sizes[] = {g->L * T * C, g->L * T * C, T * C,     T * C,     T, T, 3 * T * C,
                      T * C,        T * C,        4 * T * C, 4 * T * C, T * T, (size_t)g->Vp};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *bufs[i] = calloc(sizes[i], f);
        if (!*bufs[i]) {
            atom_generator_free(g);
            return atom_errf(err, "out of memory for the key/value cache (context %d)", g->T);
        }
    }
    *out = g;
    return 0;
}

void atom_generator_free(atom_generator *g)
{
    if (!g)
        return;
    float *bufs[] = {g->k_cache, g->v_cache, g->x,   g->ln,       g->mean,   g->rstd,  g->qkv,
                     g->atty,    g->proj,    g->fch, g->fch_gelu, g->scores, g->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(g);
}

void atom_generator_reset(atom_generator *g) { g->len = 0; }
int atom_generator_length(const atom_generator *g) { return g->len; }
const float *atom_generator_logits(const atom_generator *g) { return g->logits; }

/* A Linear layer over n rows: the backend's matmul (sgemm), except for one fp32 row, the
 * decode step, where sgemv reads the weights once as they lie; sgemm would first pack them,
 * a second pass over every weight per token. The same products, summed in another order. */
static void linear(atom_generator *g, float *out, const float *inp, const float *w,
                   const float *bias, int n, int in, int outs)
{
    if (n > 1 || g->bf16) {
        g->be->matmul_forward(out, inp, w, bias, n, in, outs, g->bf16);
        return;
    }
    if (bias)
        memcpy(out, bias, (size_t)outs * sizeof(float));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, outs, in, 1.0f, w, in, inp, 1, bias ? 1.0f : 0.0f,
                out, 1);
}

/* Attention of the n new positions p0.. of one layer over the cache's rows 0..p0+n-1, every
 * head: the CPU backend's attention (cpu_backend.c) with the keys and values read from the
 * cache instead of the chunk. */
static void cached_attention(atom_generator *g, const float *k_layer, const float *v_layer,
                             int p0, int n)
{
    int C = g->C, S = p0 + n, hs = g->hs;
    float scale = 1.0f / sqrtf((float)hs);
    for (int h = 0; h < g->NH; h++) {
        const float *q = g->qkv + (size_t)h * hs;
        const float *k = k_layer + (size_t)h * hs, *v = v_layer + (size_t)h * hs;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, S, hs, 1.0f, q, 3 * C, k, C,
                    0.0f, g->scores, S);
        for (int i = 0; i < n; i++)
            atom_causal_softmax_row(g->scores + (size_t)i * S, p0 + i, S, scale);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, S, 1.0f, g->scores, S, v,
                    C, 0.0f, g->atty + (size_t)h * hs, C);
    }
}

int atom_generator_feed(atom_generator *g, const int *ids, int n, atom_err *err)
{
    const atom_backend *be = g->be;
    int p0 = g->len, C = g->C, F = 4 * g->C;
    if (n < 1 || p0 + n > g->T)
        return atom_errf(err, "%d positions after %d pass the model's context of %d", n, p0,
                         g->T);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g->V)
            return atom_errf(err, "token %d at position %d is outside the model's vocabulary "
                                  "of %d", ids[i], p0 + i, g->V);
    be->encoder_forward(g->x, ids, weight(g, ATOM_P_WTE, 0), weight(g, ATOM_P_WPE, 0) +
                        (size_t)p0 * C, 0, g->Vp, 1, n, C);
    for (int l = 0; l < g->L; l++) {
        float *k_layer = g->k_cache + (size_t)l * g->T * C;
        float *v_layer = g->v_cache + (size_t)l * g->T * C;
        be->layernorm_forward(g->ln, g->mean, g->rstd, g->x, weight(g, ATOM_P_LN1W, l),
                              weight(g, ATOM_P_LN1B, l), n, C);
        linear(g, g->qkv, g->ln, weight(g, ATOM_P_QKVW, l), weight(g, ATOM_P_QKVB, l), n, C,
               3 * C);
        for (int i = 0; i < n; i++) {
            const float *row = g->qkv + (size_t)i * 3 * C;
            memcpy(k_layer + (size_t)(p0 + i) * C, row + C, (size_t)C * sizeof(float));
            memcpy(v_layer + (size_t)(p0 + i) * C, row + 2 * C, (size_t)C * sizeof(float));
        }
        cached_attention(g, k_layer, v_layer, p0, n);
        linear(g, g->proj, g->atty, weight(g, ATOM_P_ATTPROJW, l), NULL, n, C, C);
        be->residual_forward(g->x, g->x, g->proj, weight(g, ATOM_P_ATTPROJB, l), n, C);
        be->layernorm_forward(g->ln, g->mean, g->rstd, g->x, weight(g, ATOM_P_LN2W, l),
                              weight(g, ATOM_P_LN2B, l), n, C);
        linear(g, g->fch, g->ln, weight(g, ATOM_P_FCW, l), weight(g, ATOM_P_FCB, l), n, C, F);
        be->gelu_forward(g->fch_gelu, g->fch, (int64_t)n * F);
        linear(g, g->proj, g->fch_gelu, weight(g, ATOM_P_FCPROJW, l), NULL, n, F, C);
        be->residual_forward(g->x, g->x, g->proj, weight(g, ATOM_P_FCPROJB, l), n, C);
    }
    /* the tied head, for the last position only */
    be->layernorm_forward(g->ln, g->mean, g->rstd, g->x + (size_t)(n - 1) * C,
                          weight(g, ATOM_P_LNFW, 0), weight(g, ATOM_P_LNFB, 0), 1, C);
    linear(g, g->logits, g->ln, weight(g, ATOM_P_WTE, 0), NULL, 1, C, g->Vp);
    g->len = p0 + n;
    return 0;
}

/* ---- sampling ---- */

/* A uniform number in [0, 1) keyed by (seed, counter): kernels.h's counter-based mixing, so a
 * seed gives the same draws on every machine. */
static double uniform(uint64_t seed, uint64_t counter)
{
    uint64_t key = atom_mix64(atom_mix64(seed ^ 0x73616D706C65ull) + 0x9E3779B97F4A7C15ull);
    return (double)(atom_mix64(key + counter) >> 11) * (1.0 / 9007199254740992.0);
}

/* The k-th largest of x[0..n) (1 <= k <= n), reordering x: quickselect. */
static float kth_largest(float *x, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = x[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (x[i] > pivot)
                i++;
            while (x[j] < pivot)
                j--;
            if (i <= j) {
                float t = x[i];
                x[i++] = x[j];
                x[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return x[want];
}

int atom_sample_token(const float *logits, int vocab, float temperature, int top_k,
                      uint64_t seed, uint64_t counter, float *scratch)
{
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    if (temperature <= 0.0f)
        return best;
    float floor_logit = -INFINITY;
    if (top_k > 0 && top_k < vocab) {
        memcpy(scratch, logits, (size_t)vocab * sizeof(float));
        floor_logit = kth_largest(scratch, vocab, top_k);
    }
    /* softmax(logits / temperature) over the kept ids, in double */
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) {
        double p = logits[i] >= floor_logit
                       ? exp(((double)logits[i] - logits[best]) / temperature)
                       : 0.0;
        scratch[i] = (float)p;
        sum += scratch[i];
    }
    double u = uniform(seed, counter) * sum, acc = 0.0;
    int last = best;
    for (int i = 0; i < vocab; i++) {
        if (scratch[i] <= 0.0f)
            continue;
        acc += scratch[i];
        last = i;
        if (u < acc)
            return i;
    }
    return last; /* u within rounding of the total */
}

/* ---- the generation loop ---- */

int atom_generate(atom_generator *g, const int *prompt, int n_prompt,
                  const atom_generate_opts *opts, int *out, atom_generate_stats *stats,
                  atom_err *err)
{
    memset(stats, 0, sizeof *stats);
    if (n_prompt < 1 || n_prompt > g->T)
        return atom_errf(err, "the prompt is %d tokens; the model's context holds 1 to %d",
                         n_prompt, g->T);
    if (opts->tokens < 1)
        return atom_errf(err, "tokens to generate must be at least 1, not %d", opts->tokens);
    int *history = malloc(((size_t)n_prompt + opts->tokens) * sizeof(int));
    float *scratch = malloc((size_t)g->V * sizeof(float));
    if (!history || !scratch) {
        free(history);
        free(scratch);
        return atom_errf(err, "out of memory for %d tokens", opts->tokens);
    }
    memcpy(history, prompt, (size_t)n_prompt * sizeof(int));
    int n = n_prompt, rc = 0;
    double t0 = atom_monotonic();
    atom_generator_reset(g);
    rc = atom_generator_feed(g, prompt, n_prompt, err);
    double t1 = atom_monotonic();
    stats->prefill_s = t1 - t0;
    for (int i = 0; rc == 0 && i < opts->tokens; i++) {
        int id = atom_sample_token(g->logits, g->V, opts->temperature, opts->top_k, opts->seed,
                                   (uint64_t)i, scratch);
        out[i] = history[n++] = id;
        if (opts->on_token)
            opts->on_token(opts->arg, id);
        if (i == opts->tokens - 1)
            break;
        if (g->len < g->T) {
            rc = atom_generator_feed(g, &id, 1, err);
        } else {
            /* the context is full: keep the last T-1 tokens, this one included */
            atom_generator_reset(g);
            rc = atom_generator_feed(g, history + n - (g->T - 1), g->T - 1, err);
            stats->slides++;
        }
    }
    stats->decode_s = atom_monotonic() - t1;
    free(history);
    free(scratch);
    return rc;
}
