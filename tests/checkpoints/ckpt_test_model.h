/* tests/checkpoints/ckpt_test_model.h: a tiny GPT model's tensors, sharded as the worker shards
 * them (docs/model.md's table), filled with values that depend only on
 * (kind, tensor, global element index, salt), so a shard read back at any layout can be checked
 * element by element, bit for bit. */
#ifndef ATOM_CKPT_TEST_MODEL_H
#define ATOM_CKPT_TEST_MODEL_H

#include "checkpoints/checkpoints.h"

#define TM_TENSORS 16

typedef struct test_model {
    int64_t L, C, Vp, V, T;
    int tp, tp_size;
    atom_ckpt_tensor t[TM_TENSORS];
} test_model;

/* The default tiny shape: L=2, C=32, 4 heads, V=100 (Vp=128), T=16. */
void tm_init(test_model *m, int tp, int tp_size);
/* Any shape (bench/ckpt uses GPT-2 124M's): the 16 tensors as TP rank tp of tp_size holds them,
 * with their shards allocated but not filled. -1 when out of memory (tm_free still applies). */
int tm_init_shape(test_model *m, int64_t L, int64_t C, int64_t V, int64_t Vp, int64_t T, int tp,
                  int tp_size);
/* Fills every shard with the values of salt. */
void tm_fill(test_model *m, uint32_t salt);
/* Sets every shard to a value no salt gives (NaN bits), so a missed read shows. */
void tm_poison(test_model *m);
/* Elements whose bits differ from salt's values (0: bit-exact). */
int64_t tm_mismatches(const test_model *m, uint32_t salt);
void tm_free(test_model *m);
/* The metadata the tests save with: step, the model's vocabulary, everything else zero. */
atom_ckpt_meta tm_meta(const test_model *m, int64_t step);
/* The value of element g of tensor i, kind k (0 param, 1 adam_m, 2 adam_v). */
float tm_value(int kind, int tensor, int64_t g, uint32_t salt);
/* Global (row-major) index of shard element s of t. */
int64_t tm_global_index(const atom_ckpt_tensor *t, int64_t s);

/* Test assertions for the MPI test programs (cmocka is for single-process unit tests): a failed
 * check prints where and why and counts; tm_finish makes the exit status non-zero on any rank's
 * failure. */
#include <stdio.h>
extern int tm_failures;
#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            char check_msg_[1536];                                                              \
            snprintf(check_msg_, sizeof check_msg_, __VA_ARGS__);                               \
            tm_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond,         \
                    check_msg_);                                                                \
        }                                                                                       \
    } while (0)
/* Collective over MPI_COMM_WORLD: finalizes MPI and returns the exit status. */
int tm_finish(const char *test_name);

#endif
