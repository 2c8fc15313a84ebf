/* worker/backend.h: the operations the model runs on its tensors, as a small table of function
 * pointers with two real implementations: the CPU one (worker/cpu_backend.c: OpenBLAS sgemm,
 * oneDNN for the bf16 matmuls, and loops over the worker/kernels.h functions) and the CUDA one
 * (the worker/ .cu files: cuBLAS and the same kernels.h functions inside __global__ kernels).
 * The model chooses one at creation and never looks at which.
 *
 * Every pointer argument is in the backend's memory (host for the CPU, device for CUDA), except
 * where a comment says "host". Shapes are row-major; N is the number of token positions (B*T).
 * "+=" means the op accumulates into its output (gradients over micro-batches, or two
 * contributions to one activation gradient); "=" means it overwrites.
 */
#ifndef ATOM_WORKER_BACKEND_H
#define ATOM_WORKER_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct atom_backend {
    const char *name;     /* "cpu", "cuda" */
    bool device_memory;   /* true: pointers are not host-addressable */

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);   /* zero-filled; NULL on failure */
    void (*release)(void *ptr);     /* NULL is fine */
    void (*zero)(float *x, int64_t n);
    /* Byte copies between host and backend memory; return 0, or -1 on failure. */
    int (*to_host)(void *host, const void *src, size_t bytes);
    int (*from_host)(void *dst, const void *host, size_t bytes);
    /* Waits until every queued op has finished (before handing a buffer to MPI or the host). */
    int (*synchronize)(void);

    /* ---- embedding ---- */
    /* out (N, C) = wte[tokens - vocab_start] for tokens in [vocab_start, vocab_start + vrows),
     * 0 for the others (another TP rank holds them), + wpe[t] when wpe is not NULL.
     * tokens (B, T) int; wte (vrows, C); wpe (T, C) or NULL. */
    void (*encoder_forward)(float *out, const int *tokens, const float *wte, const float *wpe,
                            int vocab_start, int vrows, int B, int T, int C);
    /* dwte (vrows, C) += dout rows of the tokens this rank holds; dwpe (T, C) += sum over b. */
    void (*encoder_backward)(float *dwte, float *dwpe, const float *dout, const int *tokens,
                             int vocab_start, int vrows, int B, int T, int C);

    /* ---- LayerNorm over the last dim, eps 1e-5 ---- */
    /* out (N, C); mean, rstd (N) saved for the backward. */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C);
    /* dinp (N, C) +=; dweight, dbias (C) +=. */
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C);

    /* ---- Linear: weight (OUT, IN) as a Linear layer's ----
     * bf16 (training.precision: bf16) is PyTorch's autocast of a matmul: both operands of each
     * product are rounded to bf16 (kernels.h atom_bf16_bits) and multiplied with fp32
     * accumulation into the fp32 output; every buffer stays fp32. The bias and its gradient
     * are fp32 either way. */
    /* out (N, OUT) = inp (N, IN) @ weight^T + bias (OUT, or NULL). */
    void (*matmul_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IN, int OUT, bool bf16);
    /* dinp (N, IN) = dout @ weight (skipped when NULL); dweight (OUT, IN) += dout^T @ inp;
     * dbias (OUT) += column sums of dout (skipped when NULL). */
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IN, int OUT,
                            bool bf16);

    /* ---- causal self-attention over NH heads of hs channels (NH * hs = Cl) ---- */
    /* qkv (B, T, 3*Cl): per token the q of every head, then k, then v. out (B, T, Cl): heads
     * concatenated. att (B, NH, T, T): the softmax probabilities, saved for the backward. */
    void (*attention_forward)(float *out, float *att, const float *qkv, int B, int T, int NH,
                              int hs);
    /* dqkv (B, T, 3*Cl) =; datt (B, NH, T, T) scratch. */
    void (*attention_backward)(float *dqkv, float *datt, const float *dout, const float *qkv,
                               const float *att, int B, int T, int NH, int hs);

    /* ---- GELU (tanh approximation), elementwise ---- */
    void (*gelu_forward)(float *out, const float *inp, int64_t n);
    /* dinp = gelu'(inp) * dout. No argument may overlap another (out and inp neither in the
     * forward): the CPU loops are vectorized on that promise. */
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, int64_t n);

    /* out (N, C) = x + y + bias (C, or NULL); out may alias x. The row-parallel layers' bias
     * goes here, after the all-reduce, so it is added once. */
    void (*residual_forward)(float *out, const float *x, const float *y, const float *bias,
                             int N, int C);
    /* out (n) += x. */
    void (*accumulate)(float *out, const float *x, int64_t n);
    /* out (cols) = max over rows of in (rows, cols): the all-reduce MAX of the cross-entropy's
     * row maxima, done as an all-gather (the collectives offer sum and average only) and this. */
    void (*column_max)(float *out, const float *in, int rows, int cols);

    /* ---- cross-entropy over a vocabulary slice (Megatron's parallel cross-entropy) ----
     * logits (N, vcols) hold columns [vocab_start, vocab_start + vcols) of the full logits, of
     * which the first `valid` are real tokens (the rest are padding, outside the softmax).
     * Between the steps the caller all-reduces across the TP group: max after step 1, both
     * sums after step 2. */
    /* 1. rowmax (N) = max over this slice's valid columns (-INFINITY when valid == 0). */
    void (*ce_rowmax)(float *rowmax, const float *logits, int N, int vcols, int valid);
    /* 2. sums (2N): sums[i] = sum over valid columns of exp(logit - rowmax[i]);
     *    sums[N + i] = the target's logit when this slice holds it, else 0. targets (N). */
    void (*ce_sums)(float *sums, const float *logits, const float *rowmax, const int *targets,
                    int vocab_start, int N, int vcols, int valid);
    /* 3. losses (N) = log(sums[i]) + rowmax[i] - sums[N + i]. */
    void (*ce_loss)(float *losses, const float *rowmax, const float *sums, int N);
    /* 4. dlogits (N, vcols) = dloss * (softmax - onehot(target)) on valid columns, 0 on
     *    padding; dlogits may alias logits. */
    void (*ce_backward)(float *dlogits, const float *logits, const float *rowmax,
                        const float *sums, const int *targets, int vocab_start, float dloss,
                        int N, int vcols, int valid);

    /* ---- optimizer ---- */
    /* *host_result = sum of x[i]^2 in double. */
    void (*sum_squares)(double *host_result, const float *x, int64_t n);
    /* AdamW over n elements (kernels.h atom_adamw_element), the gradient taken as
     * grad * grad_multiplier; beta1_correction = 1 - beta1^t, beta2_correction = 1 - beta2^t. */
    void (*adamw)(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay,
                  float beta1_correction, float beta2_correction, float grad_multiplier);
} atom_backend;

const atom_backend *atom_backend_cpu(void);
#ifdef ATOM_HAVE_CUDA
const atom_backend *atom_backend_cuda(void); /* in the worker/ .cu files */
#endif

#endif
