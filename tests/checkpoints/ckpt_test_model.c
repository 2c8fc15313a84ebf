/* tests/checkpoints/ckpt_test_model.c: the tiny sharded model the checkpoint tests save and
 * load. */
#include "tests/checkpoints/ckpt_test_model.h"

#include <stdlib.h>
#include <string.h>

static void dims(atom_ckpt_tensor *t, const char *name, int nd, int64_t a, int64_t b, int64_t c) {
    memset(t, 0, sizeof *t);
    t->name = name;
    t->ndims = nd;
    t->dims[0] = a;
    t->dims[1] = b;
    t->dims[2] = c;
    atom_ckpt_select_all(t);
}

void tm_init(test_model *m, int tp, int P) {
    tm_init_shape(m, 2, 32, 100, 128, 16, tp, P);
}

int tm_init_shape(test_model *m, int64_t L, int64_t C, int64_t V, int64_t Vp, int64_t T, int tp,
                  int P) {
    memset(m, 0, sizeof *m);
    m->L = L, m->C = C, m->V = V, m->Vp = Vp, m->T = T;
    m->tp = tp, m->tp_size = P;
    atom_ckpt_tensor *t = m->t;
    dims(&t[0], "wte", 2, m->Vp, C, 0);
    t[0].sel[0] = (atom_ckpt_dimsel){tp * m->Vp / P, 1, 1, m->Vp / P}; /* vocab-parallel rows */
    dims(&t[1], "wpe", 2, m->T, C, 0);
    dims(&t[2], "ln1w", 2, L, C, 0);
    dims(&t[3], "ln1b", 2, L, C, 0);
    dims(&t[4], "qkvw", 3, L, 3 * C, C);
    t[4].sel[1] = (atom_ckpt_dimsel){tp * C / P, C, 3, C / P}; /* q, k, v rows of its heads */
    dims(&t[5], "qkvb", 2, L, 3 * C, 0);
    t[5].sel[1] = t[4].sel[1];
    dims(&t[6], "attprojw", 3, L, C, C);
    t[6].sel[2] = (atom_ckpt_dimsel){tp * C / P, 1, 1, C / P}; /* input columns of its heads */
    dims(&t[7], "attprojb", 2, L, C, 0);
    dims(&t[8], "ln2w", 2, L, C, 0);
    dims(&t[9], "ln2b", 2, L, C, 0);
    dims(&t[10], "fcw", 3, L, 4 * C, C);
    t[10].sel[1] = (atom_ckpt_dimsel){tp * 4 * C / P, 1, 1, 4 * C / P};
    dims(&t[11], "fcb", 2, L, 4 * C, 0);
    t[11].sel[1] = t[10].sel[1];
    dims(&t[12], "fcprojw", 3, L, C, 4 * C);
    t[12].sel[2] = (atom_ckpt_dimsel){tp * 4 * C / P, 1, 1, 4 * C / P};
    dims(&t[13], "fcprojb", 2, L, C, 0);
    dims(&t[14], "lnfw", 1, C, 0, 0);
    dims(&t[15], "lnfb", 1, C, 0, 0);
    for (int i = 0; i < TM_TENSORS; i++) {
        size_t n = (size_t)atom_ckpt_shard_elems(&t[i]);
        t[i].param = malloc(n * sizeof(float));
        t[i].adam_m = malloc(n * sizeof(float));
        t[i].adam_v = malloc(n * sizeof(float));
        if (!t[i].param || !t[i].adam_m || !t[i].adam_v) {
            return -1;
        }
    }
    return 0;
}

void tm_free(test_model *m) {
    for (int i = 0; i < TM_TENSORS; i++) {
        free(m->t[i].param);
        free(m->t[i].adam_m);
        free(m->t[i].adam_v);
    }
}

atom_ckpt_meta tm_meta(const test_model *m, int64_t step) {
    atom_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = step;
    meta.vocab = m->V;
    return meta;
}

float tm_value(int kind, int tensor, int64_t g, uint32_t salt) {
    uint64_t h = (uint64_t)g * 0x9E3779B97F4A7C15ull ^ ((uint64_t)salt << 32) ^
                 ((uint64_t)tensor << 8) ^ (uint64_t)kind;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return (float)(h >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

int64_t tm_global_index(const atom_ckpt_tensor *t, int64_t s) {
    int64_t idx[ATOM_CKPT_MAX_DIMS];
    for (int d = t->ndims - 1; d >= 0; d--) {
        int64_t ext = t->sel[d].count * t->sel[d].block;
        int64_t c = s % ext;
        s /= ext;
        idx[d] = t->sel[d].start + (c / t->sel[d].block) * t->sel[d].stride + c % t->sel[d].block;
    }
    int64_t g = 0;
    for (int d = 0; d < t->ndims; d++) {
        g = g * t->dims[d] + idx[d];
    }
    return g;
}

static float *kind_ptr(const atom_ckpt_tensor *t, int k) {
    return k == 0 ? t->param : k == 1 ? t->adam_m : t->adam_v;
}

void tm_fill(test_model *m, uint32_t salt) {
    for (int i = 0; i < TM_TENSORS; i++) {
        int64_t n = atom_ckpt_shard_elems(&m->t[i]);
        for (int k = 0; k < 3; k++) {
            float *p = kind_ptr(&m->t[i], k);
            for (int64_t s = 0; s < n; s++) {
                p[s] = tm_value(k, i, tm_global_index(&m->t[i], s), salt);
            }
        }
    }
}

void tm_poison(test_model *m) {
    for (int i = 0; i < TM_TENSORS; i++) {
        size_t n = (size_t)atom_ckpt_shard_elems(&m->t[i]);
        for (int k = 0; k < 3; k++) {
            memset(kind_ptr(&m->t[i], k), 0xFF, n * sizeof(float));
        }
    }
}

int64_t tm_mismatches(const test_model *m, uint32_t salt) {
    int64_t bad = 0;
    for (int i = 0; i < TM_TENSORS; i++) {
        int64_t n = atom_ckpt_shard_elems(&m->t[i]);
        for (int k = 0; k < 3; k++) {
            const float *p = kind_ptr(&m->t[i], k);
            for (int64_t s = 0; s < n; s++) {
                float want = tm_value(k, i, tm_global_index(&m->t[i], s), salt);
                bad += memcmp(&p[s], &want, sizeof want) != 0;
            }
        }
    }
    return bad;
}

int tm_failures;

int tm_finish(const char *test_name) {
    int total = 0, rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Allreduce(&tm_failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("%s: %s (%d failed checks)\n", test_name, total ? "FAILED" : "passed", total);
    }
    MPI_Finalize();
    return total ? 1 : 0;
}
