/* worker/bf16_gemm.h: the blocking both backends use for a matmul under `training.precision:
 * bf16` (backend.h), so that its operands' bf16 copies fit a scratch buffer of a fixed size
 * whatever the shapes. Each backend supplies the scratch (scratch_elems bf16 values per
 * operand) and two callbacks (the product: a oneDNN primitive on the CPU, cublasGemmEx on the
 * GPU); this header walks the blocks. Included by worker/cpu_backend.c and
 * worker/cuda_backend.cu only.
 *
 * The row-major product C (M, N) = op(A) (M, K) op(B) (K, N) + beta C is cut along K into
 * chunks of kc (accumulated with beta 1 after the first), and along M and N only when a single
 * row or column of an operand would not fit (a vocabulary of millions): with gpt-tiny and
 * gpt-tiny on the CPU and gpt2-124m on a GPU every product is one block.
 */
#ifndef ATOM_WORKER_BF16_GEMM_H
#define ATOM_WORKER_BF16_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* round: scratch `operand` (0: A, 1: B) = the rows x cols block of src (leading dim ld),
 *        rounded to bf16, stored densely (leading dim cols). It may skip a block it knows the
 *        scratch holds already.
 * gemm: C (m, n) (leading dim ldc) = op(scratch A) op(scratch B) + beta C, row-major, the
 *       scratch blocks dense: A (m, k) or, transposed, (k, m); B (k, n) or (n, k); plus bias
 *       (n) on every row when not NULL (then beta is 0; only the CPU's callers pass one). */
typedef struct atom_bf16_gemm_ops {
    int64_t scratch_elems; /* of each operand's scratch */
    void (*round)(int operand, const float *src, int rows, int cols, int ld);
    void (*gemm)(bool trans_a, bool trans_b, int m, int n, int k, float beta, const float *bias,
                 float *C, int ldc);
} atom_bf16_gemm_ops;

static inline int atom_bf16_min(int64_t a, int64_t b) { return (int)(a < b ? a : b); }

/* C (M, N) = op(A) op(B) + beta C (+ bias (N) on every row, when not NULL: then beta must be
 * 0) with both operands rounded to bf16 and fp32 accumulation. A is
 * (M, K) row-major with leading dim lda, or (K, M) when trans_a; B is (K, N), or (N, K) when
 * trans_b. M, N, K >= 1 (the model's shapes are). */
static inline void atom_bf16_gemm(const atom_bf16_gemm_ops *ops, bool trans_a, bool trans_b,
                                  int M, int N, int K, const float *A, int lda, const float *B,
                                  int ldb, float beta, const float *bias, float *C, int ldc)
{
    if (M <= 0 || N <= 0 || K <= 0)
        return;
    /* as deep a K chunk as the wider operand allows; 1 when one of its rows alone fills it */
    int64_t widest = M > N ? M : N, S = ops->scratch_elems;
    int kc = atom_bf16_min(K, widest >= S ? 1 : S / widest);
    int mb = atom_bf16_min(M, S / kc);
    int nb = atom_bf16_min(N, S / kc);
    for (int k0 = 0; k0 < K; k0 += kc) {
        int k = atom_bf16_min(kc, K - k0);
        float chunk_beta = k0 == 0 ? beta : 1.0f;
        for (int m0 = 0; m0 < M; m0 += mb) {
            int m = atom_bf16_min(mb, M - m0);
            if (trans_a)
                ops->round(0, A + (int64_t)k0 * lda + m0, k, m, lda);
            else
                ops->round(0, A + (int64_t)m0 * lda + k0, m, k, lda);
            for (int n0 = 0; n0 < N; n0 += nb) {
                int n = atom_bf16_min(nb, N - n0);
                if (trans_b)
                    ops->round(1, B + (int64_t)n0 * ldb + k0, n, k, ldb);
                else
                    ops->round(1, B + (int64_t)k0 * ldb + n0, k, n, ldb);
                /* the bias goes in with the first K chunk; the later ones add onto it */
                ops->gemm(trans_a, trans_b, m, n, k, chunk_beta,
                          bias && k0 == 0 ? bias + n0 : NULL, C + (int64_t)m0 * ldc + n0, ldc);
            }
        }
    }
}

#endif
