/* tests/worker/bench_model.c: single-rank speed of the model's forward+backward on the CPU
 * backend (default gpt-tiny, B=8, T=128) and the share of that time spent inside sgemm.
 *
 * Not a test (no timing assertions): built beside the tests and run by hand,
 *   OPENBLAS_NUM_THREADS=1 build/tests/worker/worker_model_bench [B] [iterations]
 * The sgemm share is measured on the real step: this program defines cblas_sgemm itself, so the
 * model's calls land here (ELF symbol interposition), are timed, and go on to OpenBLAS's through
 * dlsym. It also reports the flop rate sgemm reached on those calls.
 */
#include <dlfcn.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "worker/model.h"

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint, const blasint,
                         const float, const float *, const blasint, const float *, const blasint,
                         const float, float *, const blasint);

static sgemm_fn real_sgemm;
static double sgemm_seconds, sgemm_flops;
static int counting;

static double clock_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double now(void) { return clock_of(CLOCK_MONOTONIC); }
/* CPU time of this process: on a shared machine it says what the step costs when it runs */
static double cpu_now(void) { return clock_of(CLOCK_PROCESS_CPUTIME_ID); }

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
                 const enum CBLAS_TRANSPOSE tb, const blasint M, const blasint N, const blasint K,
                 const float alpha, const float *A, const blasint lda, const float *B,
                 const blasint ldb, const float beta, float *C, const blasint ldc)
{
    if (!real_sgemm) {
        *(void **)&real_sgemm = dlsym(RTLD_NEXT, "cblas_sgemm");
        /* the linker may have dropped libopenblas (--as-needed: this file defines the only
         * symbol the program takes from it); then load it ourselves */
        void *lib = real_sgemm ? NULL : dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
        if (lib)
            *(void **)&real_sgemm = dlsym(lib, "cblas_sgemm");
        if (!real_sgemm) {
            fprintf(stderr, "bench: cannot find OpenBLAS's cblas_sgemm\n");
            exit(1);
        }
    }
    double t0 = counting ? now() : 0;
    real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (counting) {
        sgemm_seconds += now() - t0;
        sgemm_flops += 2.0 * M * N * K;
    }
}

int main(int argc, char **argv)
{
    int B = argc > 1 ? atoi(argv[1]) : 8;
    int iters = argc > 2 ? atoi(argv[2]) : 10;
    atom_model_cfg cfg;
    atom_model_preset("gpt-tiny", &cfg);
    atom_model_opts o = {.cfg = cfg, .max_batch = B, .backend = atom_backend_cpu(),
                         .tp_rank = 0, .tp_size = 1};
    atom_model *m;
    atom_err err;
    if (atom_model_create(&o, &m, &err) != 0 || atom_model_init_weights(m, 1, &err) != 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    int T = cfg.context;
    int *tokens = malloc(sizeof(int) * B * (T + 1));
    for (int i = 0; i < B * (T + 1); i++)
        tokens[i] = (i * 7919 + 13) % cfg.vocab;
    float loss;
    for (int i = 0; i < 2; i++) /* warm-up: page faults, OpenBLAS's buffers */
        atom_model_forward_backward(m, tokens, B, 1.0f, false, &loss, &err);

    counting = 1;
    double t0 = now(), c0 = cpu_now();
    for (int i = 0; i < iters; i++)
        if (atom_model_forward_backward(m, tokens, B, 1.0f, false, &loss, &err) != 0) {
            fprintf(stderr, "bench: %s\n", err.msg);
            return 1;
        }
    double fb = (now() - t0) / iters, fb_cpu = (cpu_now() - c0) / iters;
    double fb_sgemm = sgemm_seconds / iters, fb_flops = sgemm_flops / iters;

    sgemm_seconds = 0;
    t0 = now();
    for (int i = 0; i < iters; i++)
        atom_model_forward(m, tokens, B, &loss, &err);
    double fw = (now() - t0) / iters;
    double fw_sgemm = sgemm_seconds / iters;
    counting = 0;

    printf("gpt-tiny (L=%d C=%d NH=%d V=%d T=%d), B=%d, one rank, %d iterations\n", cfg.layers,
           cfg.channels, cfg.heads, cfg.vocab, T, B, iters);
    printf("forward+backward: %.1f ms (%.0f tokens/s); in sgemm %.1f ms = %.0f%% "
           "(%.1f GFLOP at %.1f GFLOP/s)\n",
           fb * 1e3, B * T / fb, fb_sgemm * 1e3, 100 * fb_sgemm / fb, fb_flops * 1e-9,
           fb_flops * 1e-9 / fb_sgemm);
    printf("                  CPU time %.1f ms per forward+backward (wall time above includes "
           "waiting for a core)\n", fb_cpu * 1e3);
    printf("forward only:     %.1f ms; in sgemm %.1f ms = %.0f%%\n", fw * 1e3, fw_sgemm * 1e3,
           100 * fw_sgemm / fw);
    free(tokens);
    atom_model_free(m);
    return 0;
}
