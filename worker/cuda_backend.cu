/* worker/cuda_backend.cu: the CUDA implementation of the backend ops (worker/backend.h).
 *
 * A thin layer, because there is no GPU where it is built and tested: every formula is a
 * worker/kernels.h function, called here inside __global__ kernels exactly as
 * worker/cpu_backend.c calls it in loops (one thread per element, or one thread per row for the
 * per-row functions); matmuls, including attention's per-head products, go to cuBLAS with the
 * same arguments the CPU backend gives cblas_sgemm (see gemm_rowmajor for the mapping). The
 * rest is memory moves and a few reductions (column sums, the sum of squares).
 *
 * One thread per row runs the very function the CPU tests check, at the price of speed: rows
 * are read by one thread each, not by a cooperating block. Faster kernels (a block per row,
 * fused attention, bf16) belong after a measurement on a GPU, with tests/cuda as their check.
 *
 * Everything is queued on the legacy default stream, in call order, from the thread that drives
 * the model; to_host/from_host/synchronize wait for it. The collectives' NCCL backend orders its
 * own stream after that one (coll_config.cuda_compute_stream NULL).
 *
 * The ops return nothing (the table's contract), so a failed CUDA or cuBLAS call is recorded:
 * the first one is logged with the call, file and line, and from then on synchronize, to_host
 * and from_host return -1, which the model turns into an error. All arithmetic is fp32 (cuBLAS in
 * its default, non-TF32 math mode), so a run matches the CPU backend within float rounding.
 * Under `training.precision: bf16` the Linear matmuls round their operands to bf16 by a kernel
 * (kernels.h atom_bf16_bits, the CPU backend's rounding) into a fixed scratch and multiply
 * them with cublasGemmEx (bf16 inputs, fp32 compute and output): PyTorch's autocast.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>

extern "C" {
#include "common/common.h"
#include "worker/backend.h"
}
#include "worker/bf16_gemm.h"
#include "worker/kernels.h"

/* ---- errors ---------------------------------------------------------------------------- */

static bool cuda_failed; /* set by the first failed call; never cleared */
static char cuda_first_error[512];

static void cuda_record_failure(const char *call, const char *why, const char *file, int line)
{
    if (cuda_failed)
        return; /* the first failure is the cause; later ones are its echoes */
    cuda_failed = true;
    snprintf(cuda_first_error, sizeof cuda_first_error, "%s:%d: %s: %s", file, line, call, why);
    atom_log(ATOM_LOG_ERROR, "cuda backend: %s", cuda_first_error);
}

static bool cuda_check(cudaError_t status, const char *call, const char *file, int line)
{
    if (status == cudaSuccess)
        return true;
    cuda_record_failure(call, cudaGetErrorString(status), file, line);
    return false;
}

static bool cublas_check(cublasStatus_t status, const char *call, const char *file, int line)
{
    if (status == CUBLAS_STATUS_SUCCESS)
        return true;
    cuda_record_failure(call, cublasGetStatusString(status), file, line);
    return false;
}

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
/* A launch reports a bad configuration at once and a fault in the kernel later (at the next
 * synchronising call, which then fails and is recorded). */
#define LAUNCH_CHECK(kernel_name)                                                                  \
    cuda_check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)

/* ---- launch geometry ------------------------------------------------------------------- */

#define THREADS 256
#define MAX_BLOCKS 65535 /* kernels loop with a grid stride, so any n fits */

static unsigned blocks_for(int64_t n)
{
    int64_t blocks = (n + THREADS - 1) / THREADS;
    return (unsigned)(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

/* The indices i in [0, n) this thread handles. */
#define FOR_EACH_INDEX(i, n)                                                                       \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* Column sums (bias and LayerNorm parameter gradients) run one block per tile of TILE_COLS
 * columns: threadIdx.x picks the column (a warp reads 32 neighbouring floats of a row) and
 * threadIdx.y every TILE_ROWS-th row, then the block adds its TILE_ROWS partial sums. */
#define TILE_COLS 32
#define TILE_ROWS 32

/* The sum over threadIdx.y of `value`, per column threadIdx.x; every thread of the block must
 * call it. Callable twice in a row: the last barrier keeps the next call's writes behind this
 * call's reads. */
static __device__ float column_tile_sum(float value)
{
    __shared__ float partial[TILE_ROWS][TILE_COLS];
    partial[threadIdx.y][threadIdx.x] = value;
    __syncthreads();
    for (int half = TILE_ROWS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.y < half)
            partial[threadIdx.y][threadIdx.x] += partial[threadIdx.y + half][threadIdx.x];
        __syncthreads();
    }
    float total = partial[0][threadIdx.x];
    __syncthreads();
    return total;
}

static dim3 column_tiles(int cols) { return dim3((unsigned)((cols + TILE_COLS - 1) / TILE_COLS)); }

/* ---- cuBLAS ---------------------------------------------------------------------------- */

static cublasHandle_t cublas_handle; /* created on first use; lives as long as the process */

static cublasHandle_t get_cublas(void)
{
    if (!cublas_handle) {
        if (!CUBLAS_CHECK(cublasCreate(&cublas_handle)))
            return NULL;
        /* fp32 products as the CPU's sgemm computes them: no TF32 tensor-core shortcut */
        CUBLAS_CHECK(cublasSetMathMode(cublas_handle, CUBLAS_DEFAULT_MATH));
    }
    return cublas_handle;
}

/* C = alpha * op(A) op(B) + beta * C for ROW-MAJOR matrices, with cblas_sgemm(CblasRowMajor,
 * ...)'s arguments: op(A) (M, K), op(B) (K, N), C (M, N), leading dims lda, ldb, ldc; `batch`
 * such products with the operands `stride_*` floats apart (batch 1: strides unused).
 *
 * cuBLAS is column-major, and a row-major (r, c) matrix with leading dim ld is, read
 * column-major, its transpose (c, r) with the same ld. So the row-major C = op(A) op(B) is the
 * column-major C^T (N, M) = op(B)^T (N, K) * op(A)^T (K, M): call cuBLAS with the operands
 * swapped (B first), the transposes kept as given, and m = N, n = M. */
static void gemm_rowmajor(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float *A, int lda, long long stride_a, const float *B, int ldb,
                          long long stride_b, float beta, float *C, int ldc, long long stride_c,
                          int batch)
{
    cublasHandle_t h = get_cublas();
    if (!h || M == 0 || N == 0 || batch == 0)
        return;
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, op_b, op_a, N, M, K, &alpha, B, ldb, stride_b, A, lda,
                                           stride_a, &beta, C, ldc, stride_c, batch));
}

/* One product, no batch. */
static void gemm_rowmajor1(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C,
                           int ldc)
{
    gemm_rowmajor(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

/* ---- memory ---------------------------------------------------------------------------- */

static void *cuda_alloc(size_t bytes)
{
    void *p = NULL;
    size_t rounded = bytes == 0 ? 256 : bytes; /* never a zero-byte (NULL) allocation */
    if (!CUDA_CHECK(cudaMalloc(&p, rounded)))
        return NULL;
    if (!CUDA_CHECK(cudaMemset(p, 0, rounded))) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_release(void *p)
{
    if (p)
        CUDA_CHECK(cudaFree(p));
}

static void cuda_zero(float *x, int64_t n)
{
    if (n > 0)
        CUDA_CHECK(cudaMemsetAsync(x, 0, (size_t)n * sizeof(float), 0));
}

/* cudaMemcpy waits for the queued work before it copies and returns when the copy is done. */
static int cuda_to_host(void *host, const void *src, size_t bytes)
{
    if (bytes > 0 && !CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost)))
        return -1;
    return cuda_failed ? -1 : 0;
}

static int cuda_from_host(void *dst, const void *host, size_t bytes)
{
    if (bytes > 0 && !CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice)))
        return -1;
    return cuda_failed ? -1 : 0;
}

static int cuda_synchronize(void)
{
    if (!CUDA_CHECK(cudaDeviceSynchronize()))
        return -1;
    return cuda_failed ? -1 : 0;
}

/* ---- embedding ------------------------------------------------------------------------- */

/* One thread per element of out (N, C). */
static __global__ void encoder_forward_kernel(float *out, const int *tokens, const float *wte,
                                              const float *wpe, int vocab_start, int vrows, int T,
                                              int C, int64_t total)
{
    FOR_EACH_INDEX(i, total) {
        int64_t n = i / C;
        int c = (int)(i % C);
        int t = (int)(n % T);
        int row = tokens[n] - vocab_start;
        float w = (row >= 0 && row < vrows) ? wte[(int64_t)row * C + c] : 0.0f;
        float p = wpe ? wpe[(int64_t)t * C + c] : 0.0f;
        out[i] = w + p;
    }
}

static void cuda_encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                                 int vocab_start, int vrows, int B, int T, int C)
{
    int64_t total = (int64_t)B * T * C;
    if (total == 0)
        return;
    encoder_forward_kernel<<<blocks_for(total), THREADS>>>(out, tokens, wte, wpe, vocab_start,
                                                           vrows, T, C, total);
    LAUNCH_CHECK("encoder_forward_kernel");
}

/* dwte: two positions with the same token add into the same row, so each thread owns a
 * (channel, slice of the vocabulary rows) pair and walks all positions in order, adding those
 * whose token falls in its slice: race-free without atomics, and every element sums in the
 * CPU's order. Thread i has channel i % C and slice i / C of `slices`. */
static __global__ void encoder_backward_wte_kernel(float *dwte, const float *dout,
                                                   const int *tokens, int vocab_start, int vrows,
                                                   int slices, int N, int C)
{
    FOR_EACH_INDEX(i, (int64_t)C * slices) {
        int c = (int)(i % C), slice = (int)(i / C);
        int first = (int)((int64_t)vrows * slice / slices);
        int end = (int)((int64_t)vrows * (slice + 1) / slices);
        for (int n = 0; n < N; n++) {
            int row = tokens[n] - vocab_start;
            if (row >= first && row < end)
                dwte[(int64_t)row * C + c] += dout[(int64_t)n * C + c];
        }
    }
}

/* dwpe (T, C) += dout summed over the batch: one thread per element of dwpe, b in order. */
static __global__ void encoder_backward_wpe_kernel(float *dwpe, const float *dout, int B, int T,
                                                   int C)
{
    FOR_EACH_INDEX(i, (int64_t)T * C) {
        float s = dwpe[i];
        for (int b = 0; b < B; b++)
            s += dout[(int64_t)b * T * C + i];
        dwpe[i] = s;
    }
}

/* About this many threads for dwte: enough to fill a GPU, each still scanning every token. */
#define WTE_GRAD_THREADS 65536

static void cuda_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                                  int vocab_start, int vrows, int B, int T, int C)
{
    if (C == 0 || B * T == 0)
        return;
    int slices = WTE_GRAD_THREADS / C;
    slices = slices < 1 ? 1 : (slices > vrows ? vrows : slices);
    if (vrows > 0) {
        int64_t threads = (int64_t)C * slices;
        encoder_backward_wte_kernel<<<blocks_for(threads), THREADS>>>(
            dwte, dout, tokens, vocab_start, vrows, slices, B * T, C);
        LAUNCH_CHECK("encoder_backward_wte_kernel");
    }
    if (dwpe) {
        encoder_backward_wpe_kernel<<<blocks_for((int64_t)T * C), THREADS>>>(dwpe, dout, B, T, C);
        LAUNCH_CHECK("encoder_backward_wpe_kernel");
    }
}

/* ---- LayerNorm ------------------------------------------------------------------------- */

/* One thread per row: kernels.h's row function as it is. */
static __global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd,
                                                const float *inp, const float *weight,
                                                const float *bias, int N, int C)
{
    FOR_EACH_INDEX(n, N) {
        atom_layernorm_row(out + n * C, &mean[n], &rstd[n], inp + n * C, weight, bias, C);
    }
}

static __global__ void layernorm_backward_rows_kernel(float *dinp, const float *dout,
                                                      const float *inp, const float *weight,
                                                      const float *mean, const float *rstd, int N,
                                                      int C)
{
    FOR_EACH_INDEX(n, N) {
        atom_layernorm_row_backward(dinp + n * C, dout + n * C, inp + n * C, weight, mean[n],
                                    rstd[n], C);
    }
}

/* The weight and bias gradients are column sums over the rows, by column tiles: each thread
 * adds its rows' contributions with kernels.h's per-row function on a one-column slice
 * (C = 1), the same formula the CPU runs. */
static __global__ void layernorm_param_grads_kernel(float *dweight, float *dbias, const float *dout,
                                                    const float *inp, const float *mean,
                                                    const float *rstd, int N, int C)
{
    int c = (int)(blockIdx.x * TILE_COLS + threadIdx.x);
    float dw = 0.0f, db = 0.0f;
    if (c < C)
        for (int n = (int)threadIdx.y; n < N; n += TILE_ROWS) {
            int64_t at = (int64_t)n * C + c;
            atom_layernorm_param_grads(&dw, &db, dout + at, inp + at, mean[n], rstd[n], 1);
        }
    float dw_total = column_tile_sum(dw);
    float db_total = column_tile_sum(db);
    if (threadIdx.y == 0 && c < C) {
        dweight[c] += dw_total;
        dbias[c] += db_total;
    }
}

static void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                   const float *weight, const float *bias, int N, int C)
{
    if (N == 0)
        return;
    layernorm_forward_kernel<<<blocks_for(N), THREADS>>>(out, mean, rstd, inp, weight, bias, N, C);
    LAUNCH_CHECK("layernorm_forward_kernel");
}

static void cuda_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight, const float *mean,
                                    const float *rstd, int N, int C)
{
    if (N == 0 || C == 0)
        return;
    layernorm_backward_rows_kernel<<<blocks_for(N), THREADS>>>(dinp, dout, inp, weight, mean, rstd,
                                                               N, C);
    LAUNCH_CHECK("layernorm_backward_rows_kernel");
    layernorm_param_grads_kernel<<<column_tiles(C), dim3(TILE_COLS, TILE_ROWS)>>>(
        dweight, dbias, dout, inp, mean, rstd, N, C);
    LAUNCH_CHECK("layernorm_param_grads_kernel");
}

/* ---- Linear ---------------------------------------------------------------------------- */

/* out (N, OUT): every row = bias, so the matmul can add onto it (beta = 1). */
static __global__ void fill_rows_kernel(float *out, const float *row, int64_t total, int cols)
{
    FOR_EACH_INDEX(i, total) {
        out[i] = row[i % cols];
    }
}

/* out (cols) += column sums of in (rows, cols), by column tiles. */
static __global__ void add_column_sums_kernel(float *out, const float *in, int rows, int cols)
{
    int c = (int)(blockIdx.x * TILE_COLS + threadIdx.x);
    float s = 0.0f;
    if (c < cols)
        for (int r = (int)threadIdx.y; r < rows; r += TILE_ROWS)
            s += in[(int64_t)r * cols + c];
    float total = column_tile_sum(s);
    if (threadIdx.y == 0 && c < cols)
        out[c] += total;
}

/* ---- bf16 operands (bf16_gemm.h) ---- */

/* 8 Mi elements per operand (16 MiB of bf16): every product of gpt2-124m's Linear layers at
 * B=16, T=1024 in one block (the widest, the tied head's weight gradient, is 50304 x 768 from
 * K = 16384 tokens: 2 K chunks). Allocated on the first bf16 matmul, kept for the process. */
#define CUDA_BF16_SCRATCH ((int64_t)1 << 23)
static uint16_t *bf16_scratch[2]; /* device memory, bf16 bit patterns */

/* dst (rows, cols) dense = src (rows, cols; leading dim ld) rounded to bf16. */
static __global__ void round_bf16_kernel(uint16_t *dst, const float *src, int rows, int cols,
                                         int ld)
{
    FOR_EACH_INDEX(i, (int64_t)rows * cols) {
        int64_t r = i / cols, c = i % cols;
        dst[i] = atom_bf16_bits(src[r * ld + c]);
    }
}

static void cuda_bf16_round(int operand, const float *src, int rows, int cols, int ld)
{
    int64_t total = (int64_t)rows * cols;
    if (!bf16_scratch[operand] || total == 0)
        return;
    round_bf16_kernel<<<blocks_for(total), THREADS>>>(bf16_scratch[operand], src, rows, cols, ld);
    LAUNCH_CHECK("round_bf16_kernel");
}

/* As gemm_rowmajor (operands swapped for column-major cuBLAS), on the two scratch blocks. */
static void cuda_bf16_block_gemm(bool trans_a, bool trans_b, int m, int n, int k, float beta,
                                 const float *bias, float *C, int ldc)
{
    (void)bias; /* always NULL: cuda_matmul_forward fills the bias in before the product */
    cublasHandle_t h = get_cublas();
    if (!h || !bf16_scratch[0] || !bf16_scratch[1])
        return;
    float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                              trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha,
                              bf16_scratch[1], CUDA_R_16BF, trans_b ? k : n, bf16_scratch[0],
                              CUDA_R_16BF, trans_a ? m : k, &beta, C, CUDA_R_32F, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static const atom_bf16_gemm_ops CUDA_BF16_OPS = {CUDA_BF16_SCRATCH, cuda_bf16_round,
                                                 cuda_bf16_block_gemm};

/* Row-major C (M, N) = op(A) op(B) + beta C, in fp32 or with bf16 operands. A failed scratch
 * allocation is recorded (the next synchronize fails the step) and the product skipped. */
static void cuda_gemm(bool bf16, bool trans_a, bool trans_b, int M, int N, int K, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (!bf16) {
        gemm_rowmajor1(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    for (int i = 0; i < 2; i++)
        if (!bf16_scratch[i] &&
            !CUDA_CHECK(cudaMalloc(&bf16_scratch[i], CUDA_BF16_SCRATCH * sizeof(uint16_t)))) {
            bf16_scratch[i] = NULL;
            return;
        }
    atom_bf16_gemm(&CUDA_BF16_OPS, trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, NULL, C,
                   ldc);
}

static void cuda_matmul_forward(float *out, const float *inp, const float *weight,
                                const float *bias, int N, int IN, int OUT, bool bf16)
{
    float beta = 0.0f;
    if (bias) {
        int64_t total = (int64_t)N * OUT;
        if (total > 0) {
            fill_rows_kernel<<<blocks_for(total), THREADS>>>(out, bias, total, OUT);
            LAUNCH_CHECK("fill_rows_kernel");
        }
        beta = 1.0f;
    }
    /* out (N, OUT) = inp (N, IN) @ weight^T, weight (OUT, IN): as the CPU's
     * cblas_sgemm(RowMajor, NoTrans, Trans, N, OUT, IN, 1, inp, IN, weight, IN, beta, out, OUT) */
    cuda_gemm(bf16, false, true, N, OUT, IN, inp, IN, weight, IN, beta, out, OUT);
}

static void cuda_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *weight, int N, int IN, int OUT,
                                 bool bf16)
{
    /* dinp (N, IN) = dout (N, OUT) @ weight (OUT, IN) */
    if (dinp)
        cuda_gemm(bf16, false, false, N, IN, OUT, dout, OUT, weight, IN, 0.0f, dinp, IN);
    /* dweight (OUT, IN) += dout^T (OUT, N) @ inp (N, IN) */
    cuda_gemm(bf16, true, false, OUT, IN, N, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias && OUT > 0) {
        add_column_sums_kernel<<<column_tiles(OUT), dim3(TILE_COLS, TILE_ROWS)>>>(dbias, dout, N,
                                                                                  OUT);
        LAUNCH_CHECK("add_column_sums_kernel");
    }
}

/* ---- attention ------------------------------------------------------------------------- */
/* Per batch element, the NH heads are one strided batch of products: head h's q, k, v, its
 * output and its gradients start h*hs floats into their rows, and its (T, T) score matrix
 * h*T*T floats into att. Between the products, one thread per score row runs kernels.h's
 * causal softmax (or its backward) on all B*NH*T rows at once. */

static __global__ void causal_softmax_kernel(float *att, int64_t rows, int T, float scale)
{
    FOR_EACH_INDEX(r, rows) {
        atom_causal_softmax_row(att + r * T, (int)(r % T), T, scale);
    }
}

static __global__ void causal_softmax_backward_kernel(float *datt, const float *att, int64_t rows,
                                                      int T)
{
    FOR_EACH_INDEX(r, rows) {
        atom_causal_softmax_row_backward(datt + r * T, datt + r * T, att + r * T, (int)(r % T), T);
    }
}

static void cuda_attention_forward(float *out, float *att, const float *qkv, int B, int T, int NH,
                                   int hs)
{
    int Cl = NH * hs, ld = 3 * Cl;
    long long TT = (long long)T * T;
    float scale = 1.0f / sqrtf((float)hs);
    int64_t rows = (int64_t)B * NH * T;
    if (rows == 0)
        return;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * ld, *k = q + Cl;
        /* raw scores (T, T) = q (T, hs) @ k^T, per head */
        gemm_rowmajor(false, true, T, T, hs, 1.0f, q, ld, hs, k, ld, hs, 0.0f,
                      att + (size_t)b * NH * TT, T, TT, NH);
    }
    causal_softmax_kernel<<<blocks_for(rows), THREADS>>>(att, rows, T, scale);
    LAUNCH_CHECK("causal_softmax_kernel");
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * ld + 2 * Cl;
        /* out (T, hs) = att (T, T) @ v (T, hs), per head, into the head's columns of out */
        gemm_rowmajor(false, false, T, hs, T, 1.0f, att + (size_t)b * NH * TT, T, TT, v, ld, hs,
                      0.0f, out + (size_t)b * T * Cl, Cl, hs, NH);
    }
}

static void cuda_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                                    const float *att, int B, int T, int NH, int hs)
{
    int Cl = NH * hs, ld = 3 * Cl;
    long long TT = (long long)T * T;
    float scale = 1.0f / sqrtf((float)hs);
    int64_t rows = (int64_t)B * NH * T;
    if (rows == 0)
        return;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * ld, *v = q + 2 * Cl;
        float *dv = dqkv + (size_t)b * T * ld + 2 * Cl;
        const float *a = att + (size_t)b * NH * TT;
        float *da = datt + (size_t)b * NH * TT;
        const float *dO = dout + (size_t)b * T * Cl;
        /* datt (T, T) = dout (T, hs) @ v^T */
        gemm_rowmajor(false, true, T, T, hs, 1.0f, dO, Cl, hs, v, ld, hs, 0.0f, da, T, TT, NH);
        /* dv (T, hs) = att^T (T, T) @ dout (T, hs) */
        gemm_rowmajor(true, false, T, hs, T, 1.0f, a, T, TT, dO, Cl, hs, 0.0f, dv, ld, hs, NH);
    }
    causal_softmax_backward_kernel<<<blocks_for(rows), THREADS>>>(datt, att, rows, T);
    LAUNCH_CHECK("causal_softmax_backward_kernel");
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * ld, *k = q + Cl;
        float *dq = dqkv + (size_t)b * T * ld, *dk = dq + Cl;
        const float *da = datt + (size_t)b * NH * TT;
        /* the scores were q k^T * scale: dq = scale dS (T, T) @ k, dk = scale dS^T @ q */
        gemm_rowmajor(false, false, T, hs, T, scale, da, T, TT, k, ld, hs, 0.0f, dq, ld, hs, NH);
        gemm_rowmajor(true, false, T, hs, T, scale, da, T, TT, q, ld, hs, 0.0f, dk, ld, hs, NH);
    }
}

/* ---- elementwise ----------------------------------------------------------------------- */

static __global__ void gelu_forward_kernel(float *out, const float *inp, int64_t n)
{
    FOR_EACH_INDEX(i, n) {
        out[i] = atom_gelu(inp[i]);
    }
}

static __global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout,
                                            int64_t n)
{
    FOR_EACH_INDEX(i, n) {
        dinp[i] = atom_gelu_grad(inp[i]) * dout[i]; /* dinp may alias dout: same element */
    }
}

static __global__ void residual_forward_kernel(float *out, const float *x, const float *y,
                                               const float *bias, int64_t total, int C)
{
    FOR_EACH_INDEX(i, total) {
        out[i] = x[i] + y[i] + (bias ? bias[i % C] : 0.0f);
    }
}

static __global__ void accumulate_kernel(float *out, const float *x, int64_t n)
{
    FOR_EACH_INDEX(i, n) {
        out[i] += x[i];
    }
}

static __global__ void column_max_kernel(float *out, const float *in, int rows, int cols)
{
    FOR_EACH_INDEX(j, cols) {
        float m = in[j];
        for (int i = 1; i < rows; i++)
            m = fmaxf(m, in[(int64_t)i * cols + j]);
        out[j] = m;
    }
}

static void cuda_gelu_forward(float *out, const float *inp, int64_t n)
{
    if (n == 0)
        return;
    gelu_forward_kernel<<<blocks_for(n), THREADS>>>(out, inp, n);
    LAUNCH_CHECK("gelu_forward_kernel");
}

static void cuda_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
    if (n == 0)
        return;
    gelu_backward_kernel<<<blocks_for(n), THREADS>>>(dinp, inp, dout, n);
    LAUNCH_CHECK("gelu_backward_kernel");
}

static void cuda_residual_forward(float *out, const float *x, const float *y, const float *bias,
                                  int N, int C)
{
    int64_t total = (int64_t)N * C;
    if (total == 0)
        return;
    residual_forward_kernel<<<blocks_for(total), THREADS>>>(out, x, y, bias, total, C);
    LAUNCH_CHECK("residual_forward_kernel");
}

static void cuda_accumulate(float *out, const float *x, int64_t n)
{
    if (n == 0)
        return;
    accumulate_kernel<<<blocks_for(n), THREADS>>>(out, x, n);
    LAUNCH_CHECK("accumulate_kernel");
}

static void cuda_column_max(float *out, const float *in, int rows, int cols)
{
    if (rows == 0 || cols == 0)
        return;
    column_max_kernel<<<blocks_for(cols), THREADS>>>(out, in, rows, cols);
    LAUNCH_CHECK("column_max_kernel");
}

/* ---- cross-entropy: one thread per row, except the backward (one per element) ---------- */

static __global__ void ce_rowmax_kernel(float *rowmax, const float *logits, int N, int vcols,
                                        int valid)
{
    FOR_EACH_INDEX(n, N) {
        rowmax[n] = atom_ce_row_max(logits + n * vcols, valid);
    }
}

static __global__ void ce_sums_kernel(float *sums, const float *logits, const float *rowmax,
                                      const int *targets, int vocab_start, int N, int vcols,
                                      int valid)
{
    FOR_EACH_INDEX(n, N) {
        const float *row = logits + n * vcols;
        sums[n] = atom_ce_row_sumexp(row, valid, rowmax[n]);
        int col = targets[n] - vocab_start;
        sums[N + n] = (col >= 0 && col < valid) ? row[col] : 0.0f;
    }
}

static __global__ void ce_loss_kernel(float *losses, const float *rowmax, const float *sums, int N)
{
    FOR_EACH_INDEX(n, N) {
        losses[n] = logf(sums[n]) + rowmax[n] - sums[N + n];
    }
}

/* dlogits may alias logits: each thread reads its own element before writing it. */
static __global__ void ce_backward_kernel(float *dlogits, const float *logits, const float *rowmax,
                                          const float *sums, const int *targets, int vocab_start,
                                          float dloss, int vcols, int valid, int64_t total)
{
    FOR_EACH_INDEX(i, total) {
        int64_t n = i / vcols;
        int j = (int)(i % vcols);
        if (j < valid)
            dlogits[i] =
                atom_ce_dlogit(logits[i], rowmax[n], sums[n], j == targets[n] - vocab_start, dloss);
        else
            dlogits[i] = 0.0f;
    }
}

static void cuda_ce_rowmax(float *rowmax, const float *logits, int N, int vcols, int valid)
{
    if (N == 0)
        return;
    ce_rowmax_kernel<<<blocks_for(N), THREADS>>>(rowmax, logits, N, vcols, valid);
    LAUNCH_CHECK("ce_rowmax_kernel");
}

static void cuda_ce_sums(float *sums, const float *logits, const float *rowmax, const int *targets,
                         int vocab_start, int N, int vcols, int valid)
{
    if (N == 0)
        return;
    ce_sums_kernel<<<blocks_for(N), THREADS>>>(sums, logits, rowmax, targets, vocab_start, N, vcols,
                                               valid);
    LAUNCH_CHECK("ce_sums_kernel");
}

static void cuda_ce_loss(float *losses, const float *rowmax, const float *sums, int N)
{
    if (N == 0)
        return;
    ce_loss_kernel<<<blocks_for(N), THREADS>>>(losses, rowmax, sums, N);
    LAUNCH_CHECK("ce_loss_kernel");
}

static void cuda_ce_backward(float *dlogits, const float *logits, const float *rowmax,
                             const float *sums, const int *targets, int vocab_start, float dloss,
                             int N, int vcols, int valid)
{
    int64_t total = (int64_t)N * vcols;
    if (total == 0)
        return;
    ce_backward_kernel<<<blocks_for(total), THREADS>>>(dlogits, logits, rowmax, sums, targets,
                                                       vocab_start, dloss, vcols, valid, total);
    LAUNCH_CHECK("ce_backward_kernel");
}

/* ---- optimizer ------------------------------------------------------------------------- */

/* Sum of the block's `value`s, returned to every thread (THREADS threads, a power of two). */
static __device__ double block_sum(double value)
{
    __shared__ double partial[THREADS];
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    return partial[0];
}

/* Pass 1: block b writes the sum of squares of its grid-stride share to partials[b]. */
static __global__ void sum_squares_blocks_kernel(double *partials, const float *x, int64_t n)
{
    double s = 0.0;
    FOR_EACH_INDEX(i, n) {
        s += (double)x[i] * x[i];
    }
    double total = block_sum(s);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = total;
}

/* Pass 2: one block adds the partials. Two fixed passes, no atomics: the same x gives the same
 * sum every time. */
static __global__ void sum_partials_kernel(double *result, const double *partials, int count)
{
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x)
        s += partials[i];
    double total = block_sum(s);
    if (threadIdx.x == 0)
        *result = total;
}

#define SUM_SQUARES_BLOCKS 1024

static void cuda_sum_squares(double *host_result, const float *x, int64_t n)
{
    *host_result = 0.0;
    if (n == 0)
        return;
    double *scratch = NULL; /* SUM_SQUARES_BLOCKS partials, then the result */
    if (!CUDA_CHECK(cudaMalloc(&scratch, (SUM_SQUARES_BLOCKS + 1) * sizeof(double))))
        return;
    unsigned blocks = blocks_for(n) < SUM_SQUARES_BLOCKS ? blocks_for(n) : SUM_SQUARES_BLOCKS;
    sum_squares_blocks_kernel<<<blocks, THREADS>>>(scratch, x, n);
    if (LAUNCH_CHECK("sum_squares_blocks_kernel")) {
        sum_partials_kernel<<<1, THREADS>>>(scratch + SUM_SQUARES_BLOCKS, scratch, (int)blocks);
        if (LAUNCH_CHECK("sum_partials_kernel"))
            CUDA_CHECK(cudaMemcpy(host_result, scratch + SUM_SQUARES_BLOCKS, sizeof(double),
                                  cudaMemcpyDeviceToHost));
    }
    CUDA_CHECK(cudaFree(scratch));
}

static __global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, int64_t n,
                                    float lr, float beta1, float beta2, float eps,
                                    float weight_decay, float beta1_correction,
                                    float beta2_correction, float grad_multiplier)
{
    FOR_EACH_INDEX(i, n) {
        atom_adamw_element(&param[i], &m[i], &v[i], grad[i] * grad_multiplier, lr, beta1, beta2,
                           eps, weight_decay, beta1_correction, beta2_correction);
    }
}

static void cuda_adamw(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay,
                       float beta1_correction, float beta2_correction, float grad_multiplier)
{
    if (n == 0)
        return;
    adamw_kernel<<<blocks_for(n), THREADS>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                             weight_decay, beta1_correction, beta2_correction,
                                             grad_multiplier);
    LAUNCH_CHECK("adamw_kernel");
}

/* ---- the table ------------------------------------------------------------------------- */

static atom_backend make_cuda_backend(void)
{
    atom_backend be = {};
    be.name = "cuda";
    be.device_memory = true;
    be.alloc = cuda_alloc;
    be.release = cuda_release;
    be.zero = cuda_zero;
    be.to_host = cuda_to_host;
    be.from_host = cuda_from_host;
    be.synchronize = cuda_synchronize;
    be.encoder_forward = cuda_encoder_forward;
    be.encoder_backward = cuda_encoder_backward;
    be.layernorm_forward = cuda_layernorm_forward;
    be.layernorm_backward = cuda_layernorm_backward;
    be.matmul_forward = cuda_matmul_forward;
    be.matmul_backward = cuda_matmul_backward;
    be.attention_forward = cuda_attention_forward;
    be.attention_backward = cuda_attention_backward;
    be.gelu_forward = cuda_gelu_forward;
    be.gelu_backward = cuda_gelu_backward;
    be.residual_forward = cuda_residual_forward;
    be.accumulate = cuda_accumulate;
    be.column_max = cuda_column_max;
    be.ce_rowmax = cuda_ce_rowmax;
    be.ce_sums = cuda_ce_sums;
    be.ce_loss = cuda_ce_loss;
    be.ce_backward = cuda_ce_backward;
    be.sum_squares = cuda_sum_squares;
    be.adamw = cuda_adamw;
    return be;
}

/* Built at static initialisation; nothing touches the GPU until an op is called. */
static const atom_backend CUDA_BACKEND = make_cuda_backend();

extern "C" const atom_backend *atom_backend_cuda(void) { return &CUDA_BACKEND; }
