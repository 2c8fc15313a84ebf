/* worker/kernels.h: the math of every model kernel, written once as per-element or per-row
 * functions. The CPU backend (worker/cpu_backend.c) calls them in loops; the CUDA backend calls
 * the same functions inside __global__ kernels, so every formula the GPU runs is tested on the
 * CPU. Matmuls are not here: they go to sgemm (OpenBLAS) or oneDNN (bf16) on the CPU, and to
 * cuBLAS on a GPU.
 *
 * Header-only, static inline, no libc beyond <math.h>: each function must compile under gcc
 * -Wall -Wextra -Werror and under nvcc as __host__ __device__.
 */
#ifndef ATOM_WORKER_KERNELS_H
#define ATOM_WORKER_KERNELS_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define ATOM_HD __host__ __device__
#else
#define ATOM_HD
#endif

#define ATOM_LN_EPS 1e-5f
#define ATOM_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define ATOM_GELU_C 0.044715f

/* ---- GELU, tanh approximation ---------------------------------------------------------- */

/* GELU's tanh is computed here rather than with libm's tanhf: glibc's tanhf (through expm1f)
 * was a third of a gpt-tiny step on the CPU, and a libm call keeps gcc from vectorizing the
 * loop. atom_exp_neg is Cephes' expf polynomial with Cody-Waite range reduction, written with
 * no branch (the clamp compares the float's bits as an integer) so that the CPU backend's GELU
 * loops vectorize at -O2. Measured against double tanh: absolute error under 1e-7. */

static inline ATOM_HD int32_t atom_float_bits(float f)
{
    union {
        float f;
        int32_t i;
    } u;
    u.f = f;
    return u.i;
}

static inline ATOM_HD float atom_bits_float(int32_t i)
{
    union {
        float f;
        int32_t i;
    } u;
    u.i = i;
    return u.f;
}

/* ---- bf16 rounding (the matmuls' operands under `training.precision: bf16`) ------------ */

/* bf16 is the top half of a float (8 exponent bits, 7 mantissa bits). These round a float to
 * the nearest bf16, ties to even, as PyTorch's and CUDA's __float2bfloat16 do: infinities stay,
 * subnormals round like any other value, a NaN stays a NaN (quietened, sign kept: truncation
 * alone could turn a NaN whose payload sits in the low half into an infinity), and values that
 * round past the largest bf16 become infinity. */
static inline ATOM_HD uint16_t atom_bf16_bits(float f)
{
    uint32_t u = (uint32_t)atom_float_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7FFFu + ((u >> 16) & 1u); /* half of the dropped part, +1 when the kept part is odd */
    return (uint16_t)(u >> 16);
}

/* The float a bf16 stands for: the bits shifted back into the top half. */
static inline ATOM_HD float atom_bf16_to_float(uint16_t h)
{
    return atom_bits_float((int32_t)((uint32_t)h << 16));
}

/* f rounded to bf16 and held as a float: the tests' reference products of bf16 operands (a
 * product of two bf16 values is exact in fp32 and in double). */
static inline ATOM_HD float atom_bf16_round(float f)
{
    return atom_bf16_to_float(atom_bf16_bits(f));
}

/* exp(-a) for a >= 0 (a NaN gives exp(-87)). */
static inline ATOM_HD float atom_exp_neg(float a)
{
    /* a >= 0, so its bits order as integers do: clamp to 87 (exp(-87) is still a normal float) */
    int32_t ai = atom_float_bits(a), lim = 0x42AE0000; /* 87.0f */
    float x = -atom_bits_float(ai > lim ? lim : ai);
    /* x = n ln2 + r, |r| <= ln2 / 2; n rounded by the 1.5 * 2^23 trick */
    float n = (x * 1.44269504088896341f - 12582912.0f) + 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * atom_bits_float(((int32_t)n + 127) << 23); /* times 2^n */
}

/* tanh(u) = sign(u) (1 - e) / (1 + e) with e = exp(-2|u|) in (0, 1]: no overflow. */
static inline ATOM_HD float atom_tanh(float u)
{
    float e = atom_exp_neg(2.0f * fabsf(u));
    return copysignf((1.0f - e) / (1.0f + e), u);
}

static inline ATOM_HD float atom_gelu(float x)
{
    float u = ATOM_GELU_K * (x + ATOM_GELU_C * x * x * x);
    return 0.5f * x * (1.0f + atom_tanh(u));
}

/* d gelu(x) / dx */
static inline ATOM_HD float atom_gelu_grad(float x)
{
    float u = ATOM_GELU_K * (x + ATOM_GELU_C * x * x * x);
    float t = atom_tanh(u);
    float du = ATOM_GELU_K * (1.0f + 3.0f * ATOM_GELU_C * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

/* ---- LayerNorm of one row of C --------------------------------------------------------- */

/* The row sums run in ATOM_LANES interleaved partial sums, added together at the end: a single
 * running sum is a chain the compiler must keep in order (it vectorizes no float reduction
 * without -ffast-math), so the CPU loops were scalar; ATOM_LANES sums are a vector's lanes. The
 * order is fixed by the code, not the machine: every device and every vector width sums alike. */
#define ATOM_LANES 16

/* The lanes' total, then the tail (the n < ATOM_LANES elements past the last full group). */
static inline ATOM_HD float atom_lanes_total(const float *lane, const float *tail, int n)
{
    float s = 0.0f;
    for (int j = 0; j < ATOM_LANES; j++)
        s += lane[j];
    for (int j = 0; j < n; j++)
        s += tail[j];
    return s;
}

/* out = (x - mean) * rstd * w + b; mean and rstd saved for the backward. */
static inline ATOM_HD void atom_layernorm_row(float *out, float *mean_out, float *rstd_out,
                                              const float *x, const float *w, const float *b,
                                              int C)
{
    int full = C / ATOM_LANES * ATOM_LANES;
    float lane[ATOM_LANES];
    for (int j = 0; j < ATOM_LANES; j++)
        lane[j] = 0.0f;
    for (int i = 0; i < full; i += ATOM_LANES)
        for (int j = 0; j < ATOM_LANES; j++)
            lane[j] += x[i + j];
    float mean = atom_lanes_total(lane, x + full, C - full) / (float)C;
    for (int j = 0; j < ATOM_LANES; j++)
        lane[j] = 0.0f;
    for (int i = 0; i < full; i += ATOM_LANES)
        for (int j = 0; j < ATOM_LANES; j++) {
            float d = x[i + j] - mean;
            lane[j] += d * d;
        }
    float var = 0.0f;
    for (int j = 0; j < ATOM_LANES; j++)
        var += lane[j];
    for (int i = full; i < C; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    var /= (float)C;
    float rstd = 1.0f / sqrtf(var + ATOM_LN_EPS);
    for (int i = 0; i < C; i++)
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    *mean_out = mean;
    *rstd_out = rstd;
}

/* The input gradient of one row: dx += (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) * rstd
 * with norm = (x - mean) * rstd and dnorm = dout * w. The weight and bias gradients are column
 * sums over rows (atom_layernorm_param_grads), kept apart so a GPU can reduce them its own way. */
static inline ATOM_HD void atom_layernorm_row_backward(float *dx, const float *dout,
                                                       const float *x, const float *w,
                                                       float mean, float rstd, int C)
{
    int full = C / ATOM_LANES * ATOM_LANES;
    float lane[ATOM_LANES], lane_n[ATOM_LANES];
    for (int j = 0; j < ATOM_LANES; j++)
        lane[j] = lane_n[j] = 0.0f;
    for (int i = 0; i < full; i += ATOM_LANES)
        for (int j = 0; j < ATOM_LANES; j++) {
            float norm = (x[i + j] - mean) * rstd;
            float dnorm = dout[i + j] * w[i + j];
            lane[j] += dnorm;
            lane_n[j] += dnorm * norm;
        }
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int j = 0; j < ATOM_LANES; j++) {
        dnorm_mean += lane[j];
        dnorm_norm_mean += lane_n[j];
    }
    for (int i = full; i < C; i++) {
        float norm = (x[i] - mean) * rstd;
        float dnorm = dout[i] * w[i];
        dnorm_mean += dnorm;
        dnorm_norm_mean += dnorm * norm;
    }
    dnorm_mean /= (float)C;
    dnorm_norm_mean /= (float)C;
    for (int i = 0; i < C; i++) {
        float norm = (x[i] - mean) * rstd;
        float dnorm = dout[i] * w[i];
        dx[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rstd;
    }
}

/* One row's contribution to the weight and bias gradients: dw += dout * norm, db += dout. */
static inline ATOM_HD void atom_layernorm_param_grads(float *dw, float *db, const float *dout,
                                                      const float *x, float mean, float rstd,
                                                      int C)
{
    for (int i = 0; i < C; i++) {
        dw[i] += dout[i] * (x[i] - mean) * rstd;
        db[i] += dout[i];
    }
}

/* ---- causal softmax of one attention row ----------------------------------------------- */

/* row holds the raw scores q.k of query t against keys 0..T-1. Makes it the probabilities
 * softmax(scale * row[0..t]) and zeroes keys after t (the causal mask). The exponentials are
 * atom_exp_neg's (max - score >= 0), in a loop of their own with no call and no branch, which
 * gcc vectorizes (libm's expf, a call per element, was half the CPU softmax); a NaN score stays
 * NaN, as expf would keep it (picked by a mask of its bits: with a select gcc moved the exp
 * into a branch and vectorized nothing). */
static inline ATOM_HD void atom_causal_softmax_row(float *row, int t, int T, float scale)
{
    /* the max and the sum in ATOM_LANES partial results (the max is exact in any order) */
    int n = t + 1, full = n / ATOM_LANES * ATOM_LANES;
    float lane[ATOM_LANES];
    for (int j = 0; j < ATOM_LANES; j++)
        lane[j] = -INFINITY;
    for (int i = 0; i < full; i += ATOM_LANES)
        for (int j = 0; j < ATOM_LANES; j++) {
            float s = row[i + j] * scale;
            lane[j] = s > lane[j] ? s : lane[j];
        }
    float maxv = -INFINITY;
    for (int j = 0; j < ATOM_LANES; j++)
        if (lane[j] > maxv)
            maxv = lane[j];
    for (int j = full; j < n; j++) {
        float s = row[j] * scale;
        if (s > maxv)
            maxv = s;
    }
    for (int j = 0; j < n; j++) {
        float d = maxv - row[j] * scale;
        int32_t di = atom_float_bits(d), ei = atom_float_bits(atom_exp_neg(d));
        int32_t nan = -(int32_t)((di & 0x7FFFFFFF) > 0x7F800000); /* all ones for a NaN */
        row[j] = atom_bits_float((di & nan) | (ei & ~nan));
    }
    for (int j = 0; j < ATOM_LANES; j++)
        lane[j] = 0.0f;
    for (int i = 0; i < full; i += ATOM_LANES)
        for (int j = 0; j < ATOM_LANES; j++)
            lane[j] += row[i + j];
    float inv = 1.0f / atom_lanes_total(lane, row + full, n - full);
    for (int j = 0; j < n; j++)
        row[j] *= inv;
    for (int j = n; j < T; j++)
        row[j] = 0.0f;
}

/* The softmax's backward for one row: drow = att * (datt - sum(att * datt)) over keys 0..t,
 * 0 after t. Gives the gradient of the scaled scores; the caller applies the scale. drow may
 * alias datt. */
static inline ATOM_HD void atom_causal_softmax_row_backward(float *drow, const float *datt,
                                                            const float *att, int t, int T)
{
    int n = t + 1, full = n / ATOM_LANES * ATOM_LANES;
    float lane[ATOM_LANES];
    for (int j = 0; j < ATOM_LANES; j++)
        lane[j] = 0.0f;
    for (int i = 0; i < full; i += ATOM_LANES)
        for (int j = 0; j < ATOM_LANES; j++)
            lane[j] += att[i + j] * datt[i + j];
    float dot = 0.0f;
    for (int j = 0; j < ATOM_LANES; j++)
        dot += lane[j];
    for (int j = full; j < n; j++)
        dot += att[j] * datt[j];
    for (int j = 0; j < n; j++)
        drow[j] = att[j] * (datt[j] - dot);
    for (int j = n; j < T; j++)
        drow[j] = 0.0f;
}

/* ---- cross-entropy over a vocabulary slice --------------------------------------------- */

/* max over the first `valid` logits of a row (-INFINITY when valid == 0). */
static inline ATOM_HD float atom_ce_row_max(const float *logits, int valid)
{
    float m = -INFINITY;
    for (int j = 0; j < valid; j++)
        if (logits[j] > m)
            m = logits[j];
    return m;
}

/* sum over the first `valid` logits of a row of exp(logit - rowmax). */
static inline ATOM_HD float atom_ce_row_sumexp(const float *logits, int valid, float rowmax)
{
    float s = 0.0f;
    for (int j = 0; j < valid; j++)
        s += expf(logits[j] - rowmax);
    return s;
}

/* d loss / d logit for one valid column: dloss * (softmax - [column is the target]). */
static inline ATOM_HD float atom_ce_dlogit(float logit, float rowmax, float sumexp, int is_target,
                                           float dloss)
{
    float p = expf(logit - rowmax) / sumexp;
    return dloss * (p - (is_target ? 1.0f : 0.0f));
}

/* ---- AdamW, one element ------------------------------------------------------------------ */

/* PyTorch's AdamW: m and v updated with g, bias-corrected, and decoupled weight decay scaled by
 * the learning rate: p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p). beta1_correction is
 * 1 - beta1^t, beta2_correction 1 - beta2^t. */
static inline ATOM_HD void atom_adamw_element(float *p, float *m, float *v, float g, float lr,
                                              float beta1, float beta2, float eps, float wd,
                                              float beta1_correction, float beta2_correction)
{
    float mt = beta1 * *m + (1.0f - beta1) * g;
    float vt = beta2 * *v + (1.0f - beta2) * g * g;
    *m = mt;
    *v = vt;
    float m_hat = mt / beta1_correction;
    float v_hat = vt / beta2_correction;
    *p -= lr * (m_hat / (sqrtf(v_hat) + eps) + wd * *p);
}

/* ---- counter-based random numbers for initialisation ----------------------------------- */

/* splitmix64's finaliser: a bijective mix of 64 bits. */
static inline ATOM_HD uint64_t atom_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A standard normal keyed by (seed, stream, counter): the same key gives the same value on any
 * rank and device, so a parameter's element gets its value from its GLOBAL index whatever the
 * tensor-parallel split. Two uniforms from two hashes, then Box-Muller (in double, so the CPU and
 * GPU agree up to the final rounding). */
static inline ATOM_HD float atom_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter)
{
    uint64_t key = atom_mix64(atom_mix64(seed ^ 0x5DEECE66Dull) + stream * 0x9E3779B97F4A7C15ull);
    uint64_t r1 = atom_mix64(key + 2 * counter);
    uint64_t r2 = atom_mix64(key + 2 * counter + 1);
    double u1 = ((double)(r1 >> 11) + 1.0) * (1.0 / 9007199254740992.0); /* (0, 1] */
    double u2 = (double)(r2 >> 11) * (1.0 / 9007199254740992.0);         /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
