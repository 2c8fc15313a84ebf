/* tests/infer/test_sampling.c: atom_sample_token (cmocka): temperature 0 is the argmax, the
 * padded vocabulary is never drawn, top-k keeps the k likeliest, a seed gives the same draws
 * and the draws follow the softmax; the bytes tokenizer round-trips every byte; which tokenizer
 * decodes a checkpoint. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker/infer.h"

#define V 10
#define VP 16 /* the padded columns V..VP-1 hold the largest logits: they must never win */

static void fill(float *logits)
{
    const float real[V] = {0.5f, 2.0f, -1.0f, 1.5f, 2.0f, 0.0f, -3.0f, 1.0f, 0.25f, 1.9f};
    memcpy(logits, real, sizeof real);
    for (int i = V; i < VP; i++)
        logits[i] = 100.0f;
}

static void test_greedy(void **state)
{
    (void)state;
    float logits[VP], scratch[VP];
    fill(logits);
    /* the lowest id among equal maxima (1 and 4 hold 2.0), whatever the seed */
    for (uint64_t s = 0; s < 5; s++)
        assert_int_equal(atom_sample_token(logits, V, 0.0f, 0, s, s, scratch), 1);
    /* top-k 1 at any temperature keeps the maxima only (ties with the k-th are kept) */
    for (uint64_t c = 0; c < 50; c++) {
        int id = atom_sample_token(logits, V, 5.0f, 1, 7, c, scratch);
        assert_true(id == 1 || id == 4);
    }
    logits[4] = 1.95f;
    for (uint64_t c = 0; c < 50; c++)
        assert_int_equal(atom_sample_token(logits, V, 5.0f, 1, 7, c, scratch), 1);
}

static void test_top_k_and_padding(void **state)
{
    (void)state;
    float logits[VP], scratch[VP];
    fill(logits);
    int seen[VP] = {0};
    for (uint64_t c = 0; c < 4000; c++) {
        int id = atom_sample_token(logits, V, 1.0f, 3, 42, c, scratch);
        assert_true(id >= 0 && id < V);
        seen[id]++;
    }
    /* the 3 likeliest: 1 and 4 (2.0) and 9 (1.9) */
    for (int i = 0; i < VP; i++)
        if (i != 1 && i != 4 && i != 9)
            assert_int_equal(seen[i], 0);
    assert_true(seen[1] > 1000 && seen[4] > 1000 && seen[9] > 1000);
    /* without top-k every real id can come, and no padded one */
    memset(seen, 0, sizeof seen);
    for (uint64_t c = 0; c < 20000; c++)
        seen[atom_sample_token(logits, V, 1.0f, 0, 42, c, scratch)]++;
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(logits[i]);
    for (int i = 0; i < V; i++) {
        double p = exp(logits[i]) / z, got = seen[i] / 20000.0;
        assert_true(fabs(got - p) < 5 * sqrt(p * (1 - p) / 20000.0) + 1e-3);
    }
}

static void test_seeded(void **state)
{
    (void)state;
    float logits[VP], scratch[VP];
    fill(logits);
    int a[64], b[64], c[64];
    for (int i = 0; i < 64; i++) {
        a[i] = atom_sample_token(logits, V, 1.0f, 0, 3, (uint64_t)i, scratch);
        b[i] = atom_sample_token(logits, V, 1.0f, 0, 3, (uint64_t)i, scratch);
        c[i] = atom_sample_token(logits, V, 1.0f, 0, 4, (uint64_t)i, scratch);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

static void test_bytes_tokenizer(void **state)
{
    (void)state;
    atom_infer_tokenizer tok;
    atom_err err = {{0}};
    assert_int_equal(atom_infer_tokenizer_open("bytes", &tok, &err), 0);
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    int *ids = NULL, n = 0;
    assert_int_equal(tok.encode(&tok, all, sizeof all, &ids, &n, &err), 0);
    assert_int_equal(n, 256);
    for (int i = 0; i < 256; i++) {
        size_t len = 0;
        const unsigned char *p = tok.token_bytes(&tok, ids[i], &len);
        assert_int_equal(ids[i], i);
        assert_int_equal(len, 1);
        assert_int_equal(p[0], i);
    }
    size_t len = 7;
    assert_null(tok.token_bytes(&tok, 256, &len));
    assert_int_equal(len, 0);
    free(ids);
    atom_infer_tokenizer_close(&tok);
    assert_int_equal(atom_infer_tokenizer_open("wordpiece", &tok, &err), -1);
    assert_non_null(strstr(err.msg, "unknown tokenizer 'wordpiece'"));
}

/* Which tokenizer decodes a checkpoint: --tokenizer, else the recorded one, else bytes for byte
 * data or a vocabulary of at most 256 (checkpoints from before it was recorded), else an error
 * that asks for --tokenizer. */
static void test_checkpoint_tokenizer(void **state)
{
    (void)state;
    static atom_infer_ckpt ck;
    char name[32];
    atom_err err = {{0}};
    memset(&ck, 0, sizeof ck);
    snprintf(ck.path, sizeof ck.path, "/ck/ckpt-0000000001.h5");
    ck.spec.data.format = ATOM_DATA_UINT16;
    ck.spec.model.vocab = 50257;
    assert_int_equal(atom_infer_ckpt_tokenizer(&ck, NULL, name, sizeof name, &err), -1);
    assert_non_null(strstr(err.msg, "/ck/ckpt-0000000001.h5 does not record the tokenizer"));
    assert_non_null(strstr(err.msg, "--tokenizer"));
    assert_int_equal(atom_infer_ckpt_tokenizer(&ck, "gpt2", name, sizeof name, &err), 0);
    assert_string_equal(name, "gpt2");
    snprintf(ck.tokenizer, sizeof ck.tokenizer, "gpt2");
    assert_int_equal(atom_infer_ckpt_tokenizer(&ck, NULL, name, sizeof name, &err), 0);
    assert_string_equal(name, "gpt2");
    assert_int_equal(atom_infer_ckpt_tokenizer(&ck, "bytes", name, sizeof name, &err), 0);
    assert_string_equal(name, "bytes");
    ck.tokenizer[0] = '\0';
    ck.spec.model.vocab = 256;
    assert_int_equal(atom_infer_ckpt_tokenizer(&ck, NULL, name, sizeof name, &err), 0);
    assert_string_equal(name, "bytes");
    ck.spec.model.vocab = 50257;
    ck.spec.data.format = ATOM_DATA_BYTES;
    assert_int_equal(atom_infer_ckpt_tokenizer(&ck, NULL, name, sizeof name, &err), 0);
    assert_string_equal(name, "bytes");
    /* and what the worker records: bytes for byte data, unknown for uint16 (for now) */
    atom_infer_data_tokenizer(&ck.spec, name, sizeof name);
    assert_string_equal(name, "bytes");
    ck.spec.data.format = ATOM_DATA_UINT16;
    atom_infer_data_tokenizer(&ck.spec, name, sizeof name);
    assert_string_equal(name, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k_and_padding),
        cmocka_unit_test(test_seeded),
        cmocka_unit_test(test_bytes_tokenizer),
        cmocka_unit_test(test_checkpoint_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
