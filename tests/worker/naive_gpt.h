/* tests/worker/naive_gpt.h: an independent, deliberately simple GPT forward pass in double
 * precision, written from docs/model.md with plain loops: no sgemm, no
 * fusion, no code shared with worker/. The model tests compare the worker's loss, logits and
 * gradients (through finite differences of this loss) with it.
 */
#ifndef ATOM_TEST_NAIVE_GPT_H
#define ATOM_TEST_NAIVE_GPT_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct naive_shape {
    int V, Vp, T, C, L, NH;
} naive_shape;

/* The unsplit parameters, by name, inside one flat array in the reference order. */
typedef struct naive_params {
    const double *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b,
        *fcw, *fcb, *fcprojw, *fcprojb, *lnfw, *lnfb;
} naive_params;

/* Element counts of the 16 parameters, in the reference order; returns the total. */
static inline int64_t naive_sizes(const naive_shape *s, int64_t sizes[16])
{
    int64_t L = s->L, C = s->C;
    int64_t v[16] = {(int64_t)s->Vp * C, (int64_t)s->T * C, L * C, L * C, L * 3 * C * C, L * 3 * C,
                     L * C * C, L * C, L * C, L * C, L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C,
                     C, C};
    int64_t total = 0;
    for (int i = 0; i < 16; i++) {
        sizes[i] = v[i];
        total += v[i];
    }
    return total;
}

static inline naive_params naive_view(const naive_shape *s, const double *flat)
{
    int64_t sizes[16];
    naive_sizes(s, sizes);
    const double *ptr[16];
    for (int i = 0; i < 16; i++) {
        ptr[i] = flat;
        flat += sizes[i];
    }
    naive_params p = {ptr[0], ptr[1], ptr[2],  ptr[3],  ptr[4],  ptr[5],  ptr[6],  ptr[7],
                      ptr[8], ptr[9], ptr[10], ptr[11], ptr[12], ptr[13], ptr[14], ptr[15]};
    return p;
}

static inline void naive_layernorm(double *out, const double *x, const double *w, const double *b,
                                   int C)
{
    double mean = 0, var = 0;
    for (int i = 0; i < C; i++)
        mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= C;
    for (int i = 0; i < C; i++)
        out[i] = (x[i] - mean) / sqrt(var + 1e-5) * w[i] + b[i];
}

/* y (OUT) = W (OUT, IN) x (IN) + bias */
static inline void naive_linear(double *y, const double *x, const double *W, const double *bias,
                                int IN, int OUT)
{
    for (int o = 0; o < OUT; o++) {
        double s = bias ? bias[o] : 0.0;
        for (int i = 0; i < IN; i++)
            s += W[(int64_t)o * IN + i] * x[i];
        y[o] = s;
    }
}

/* Mean cross-entropy of the batch tokens (B, T+1); logits (B, T, V) filled when not NULL. */
static inline double naive_forward(const naive_shape *s, const double *flat, const int *tokens,
                                   int B, double *logits)
{
    naive_params p = naive_view(s, flat);
    int T = s->T, C = s->C, V = s->V, hs = C / s->NH;
    double *x = calloc((size_t)T * C, sizeof(double));
    double *h = calloc((size_t)T * C, sizeof(double));
    double *qkv = calloc((size_t)T * 3 * C, sizeof(double));
    double *a = calloc((size_t)T * C, sizeof(double));
    double *u = calloc((size_t)4 * C, sizeof(double));
    double *y = calloc((size_t)C, sizeof(double));
    double *w = calloc((size_t)T, sizeof(double));
    double *lg = calloc((size_t)V, sizeof(double));
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const int *tok = tokens + (size_t)b * (T + 1);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++)
                x[t * C + i] = p.wte[(int64_t)tok[t] * C + i] + p.wpe[t * C + i];
        for (int l = 0; l < s->L; l++) {
            for (int t = 0; t < T; t++) {
                naive_layernorm(h + t * C, x + t * C, p.ln1w + l * C, p.ln1b + l * C, C);
                naive_linear(qkv + t * 3 * C, h + t * C, p.qkvw + (int64_t)l * 3 * C * C,
                             p.qkvb + l * 3 * C, C, 3 * C);
            }
            for (int head = 0; head < s->NH; head++)
                for (int t = 0; t < T; t++) {
                    const double *q = qkv + t * 3 * C + head * hs;
                    double mx = -INFINITY, sum = 0;
                    for (int j = 0; j <= t; j++) {
                        const double *k = qkv + j * 3 * C + C + head * hs;
                        double d = 0;
                        for (int i = 0; i < hs; i++)
                            d += q[i] * k[i];
                        w[j] = d / sqrt((double)hs);
                        if (w[j] > mx)
                            mx = w[j];
                    }
                    for (int j = 0; j <= t; j++) {
                        w[j] = exp(w[j] - mx);
                        sum += w[j];
                    }
                    for (int i = 0; i < hs; i++) {
                        double o = 0;
                        for (int j = 0; j <= t; j++)
                            o += w[j] / sum * qkv[j * 3 * C + 2 * C + head * hs + i];
                        a[t * C + head * hs + i] = o;
                    }
                }
            for (int t = 0; t < T; t++) {
                naive_linear(y, a + t * C, p.attprojw + (int64_t)l * C * C, p.attprojb + l * C, C,
                             C);
                for (int i = 0; i < C; i++)
                    x[t * C + i] += y[i];
                naive_layernorm(h + t * C, x + t * C, p.ln2w + l * C, p.ln2b + l * C, C);
                naive_linear(u, h + t * C, p.fcw + (int64_t)l * 4 * C * C, p.fcb + l * 4 * C, C,
                             4 * C);
                for (int i = 0; i < 4 * C; i++)
                    u[i] = 0.5 * u[i] *
                           (1.0 + tanh(sqrt(2.0 / M_PI) * (u[i] + 0.044715 * u[i] * u[i] * u[i])));
                naive_linear(y, u, p.fcprojw + (int64_t)l * C * 4 * C, p.fcprojb + l * C, 4 * C,
                             C);
                for (int i = 0; i < C; i++)
                    x[t * C + i] += y[i];
            }
        }
        for (int t = 0; t < T; t++) {
            naive_layernorm(h + t * C, x + t * C, p.lnfw, p.lnfb, C);
            double mx = -INFINITY, sum = 0;
            for (int v = 0; v < V; v++) { /* padded rows are not in the softmax */
                double d = 0;
                for (int i = 0; i < C; i++)
                    d += h[t * C + i] * p.wte[(int64_t)v * C + i];
                lg[v] = d;
                if (d > mx)
                    mx = d;
                if (logits)
                    logits[((size_t)b * T + t) * V + v] = d;
            }
            for (int v = 0; v < V; v++)
                sum += exp(lg[v] - mx);
            loss += log(sum) + mx - lg[tok[t + 1]];
        }
    }
    free(x); free(h); free(qkv); free(a); free(u); free(y); free(w); free(lg);
    return loss / ((double)B * T);
}

#endif
