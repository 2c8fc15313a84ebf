/* tests/worker_run/test_data_order.c: what a user relies on from the data loader: the global
 * batch of a step is the same whatever the data-parallel split and micro-batch size (so a
 * resumed or re-split job sees the same data), steps differ, and bad files fail clearly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "worker/data.h"

enum { T = 16, GLOBAL = 24, N_BYTES = 5000 };

static char g_path[256];

static int make_file(void **state)
{
    (void)state;
    snprintf(g_path, sizeof g_path, "/tmp/atom-data-order-%d.bin", (int)getpid());
    FILE *f = fopen(g_path, "wb");
    if (!f)
        return -1;
    for (int i = 0; i < N_BYTES; i++)
        fputc((i * 7 + i / 13) & 0xff, f);
    fclose(f);
    return 0;
}

static int remove_file(void **state)
{
    (void)state;
    unlink(g_path);
    return 0;
}

/* The global batch of a step as replicas x micro-batches read it, laid end to end. */
static void read_global(const atom_data *d, int64_t step, int data_parallel, int micro_batch,
                        int *out)
{
    int per_replica = GLOBAL / data_parallel;
    int accum = per_replica / micro_batch;
    atom_err err;
    for (int r = 0; r < data_parallel; r++)
        for (int m = 0; m < accum; m++) {
            int64_t first = atom_data_first_sample(r, per_replica, m, micro_batch);
            assert_int_equal(atom_data_read(d, 42, step, first, micro_batch,
                                            out + first * (T + 1), &err), 0);
        }
}

static void global_batch_is_independent_of_the_split(void **state)
{
    (void)state;
    atom_data d;
    atom_err err;
    assert_int_equal(atom_data_open(&d, g_path, ATOM_DATA_BYTES, 256, T, &err), 0);
    int *ref = calloc(GLOBAL * (T + 1), sizeof *ref);
    int *got = calloc(GLOBAL * (T + 1), sizeof *got);
    read_global(&d, 7, 1, GLOBAL, ref);
    const int splits[][2] = {{1, 4}, {2, 12}, {2, 3}, {3, 8}, {4, 2}, {4, 1}, {8, 3}, {24, 1}};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        memset(got, 0xff, GLOBAL * (T + 1) * sizeof *got);
        read_global(&d, 7, splits[i][0], splits[i][1], got);
        assert_memory_equal(ref, got, GLOBAL * (T + 1) * sizeof *got);
    }
    /* Each sample is T+1 consecutive tokens of the file. */
    for (int b = 0; b < GLOBAL; b++) {
        int64_t off = atom_data_sample_offset(&d, 42, 7, b);
        assert_true(off >= 0 && off <= N_BYTES - T - 1);
        for (int t = 0; t <= T; t++)
            assert_int_equal(ref[b * (T + 1) + t], d.map[off + t]);
    }
    free(ref);
    free(got);
    atom_data_close(&d);
}

static void steps_and_seeds_draw_different_samples(void **state)
{
    (void)state;
    atom_data d;
    atom_err err;
    assert_int_equal(atom_data_open(&d, g_path, ATOM_DATA_BYTES, 256, T, &err), 0);
    int same_step = 0, same_seed = 0;
    for (int b = 0; b < GLOBAL; b++) {
        same_step += atom_data_sample_offset(&d, 42, 7, b) == atom_data_sample_offset(&d, 42, 8, b);
        same_seed += atom_data_sample_offset(&d, 42, 7, b) == atom_data_sample_offset(&d, 43, 7, b);
    }
    /* 4984 offsets: a few coincidences are chance, most must differ. */
    assert_true(same_step <= 2);
    assert_true(same_seed <= 2);
    /* Offsets cover the whole file, ends included, over many draws. */
    int64_t lo = N_BYTES, hi = -1;
    for (int s = 0; s < 2000; s++)
        for (int b = 0; b < 8; b++) {
            int64_t off = atom_data_sample_offset(&d, 1, s, b);
            lo = off < lo ? off : lo;
            hi = off > hi ? off : hi;
        }
    assert_true(lo < 10);
    assert_true(hi > N_BYTES - T - 1 - 10 && hi <= N_BYTES - T - 1);
    atom_data_close(&d);
}

static void uint16_tokens_are_little_endian_and_checked_against_vocab(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s.u16", g_path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 200; i++) {
        int tok = i == 150 ? 60000 : 1000 + i; /* token 60000 is just outside a 60000 vocabulary */
        fputc(tok & 0xff, f);
        fputc(tok >> 8, f);
    }
    fclose(f);
    atom_data d;
    atom_err err;
    assert_int_equal(atom_data_open(&d, path, ATOM_DATA_UINT16, 60000, T, &err), 0);
    assert_int_equal(d.n_tokens, 200);
    int row[T + 1];
    int bad = 0;
    for (int s = 0; s < 200; s++) {
        int64_t off = atom_data_sample_offset(&d, 5, s, 0);
        int rc = atom_data_read(&d, 5, s, 0, 1, row, &err);
        if (off <= 150 && 150 <= off + T) {
            assert_int_equal(rc, -1);
            /* The message names the file and the offset of the bad token. */
            assert_non_null(strstr(err.msg, path));
            assert_non_null(strstr(err.msg, "offset 150"));
            bad++;
        } else {
            assert_int_equal(rc, 0);
            for (int t = 0; t <= T; t++)
                assert_int_equal(row[t], 1000 + off + t);
        }
    }
    assert_true(bad > 0);
    atom_data_close(&d);
    unlink(path);
}

static void short_odd_and_missing_files_fail_clearly(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s.short", g_path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("0123456789abcdef", 1, T, f); /* T tokens: one short of a sample */
    fclose(f);
    atom_data d;
    atom_err err;
    assert_int_equal(atom_data_open(&d, path, ATOM_DATA_BYTES, 256, T, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "fewer than one sample"));
    assert_int_equal(atom_data_open(&d, path, ATOM_DATA_BYTES, 256, T - 1, &err), 0);
    atom_data_close(&d);
    f = fopen(path, "ab");
    fputc('x', f); /* 17 bytes: not whole uint16 tokens */
    fclose(f);
    assert_int_equal(atom_data_open(&d, path, ATOM_DATA_UINT16, 256, 4, &err), -1);
    assert_non_null(strstr(err.msg, "whole number"));
    unlink(path);
    assert_int_equal(atom_data_open(&d, path, ATOM_DATA_BYTES, 256, 4, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(global_batch_is_independent_of_the_split),
        cmocka_unit_test(steps_and_seeds_draw_different_samples),
        cmocka_unit_test(uint16_tokens_are_little_endian_and_checked_against_vocab),
        cmocka_unit_test(short_odd_and_missing_files_fail_clearly),
    };
    return cmocka_run_group_tests(tests, make_file, remove_file);
}
