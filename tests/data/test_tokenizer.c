/* tests/data/test_tokenizer.c: data.h's tokenizers on what the GPT-2 comparison
 * (test_gpt2_ids.py) cannot feed them: bytes that are not UTF-8 round-trip exactly through both
 * tokenizers, every place atom_text_cut offers is one where encoding the two parts apart gives
 * the ids of the whole, and a piece of 200,000 bytes (one word, no spaces) is encoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/data.h"

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* Fragments that meet the pre-tokenizer's edge cases: spaces of every kind (ASCII, tab, CR,
 * NBSP, U+3000), newlines, letters of several scripts, digits, contractions, combining marks,
 * emoji, and bytes that are not UTF-8 (a lone continuation, an overlong form, a surrogate, a
 * truncated sequence, 0xff). */
static const char *const fragments[] = {
    " ", "  ", "\t", "\n", "\r\n", "\n\n", "\xc2\xa0", "\xe3\x80\x80", "a", "word", "Word",
    "'s", "'ll", "'VE", "'", "1", "2026", "\xd9\xa3", "\xe4\xb8\xad\xe6\x96\x87",
    "\xd0\xb4\xd0\xb0",
    "e\xcc\x81", "\xf0\x9f\x98\x80", "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9", "!", "...",
    "\x80", "\xc0\xaf", "\xed\xa0\x80", "\xe4\xb8", "\xff", "\xf4\x90\x80\x80", "\x00",
};

static size_t random_text(unsigned char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        const char *f = fragments[rnd() % (sizeof fragments / sizeof fragments[0])];
        size_t len = f[0] ? strlen(f) : 1; /* "\x00" is one NUL byte */
        if (n + len > cap)
            return n;
        memcpy(buf + n, f, len);
        n += len;
    }
}

static void encode(atom_encoder *enc, const unsigned char *text, size_t len, atom_tokens *out)
{
    atom_err err = {{0}};
    out->n = 0;
    assert_int_equal(atom_encode(enc, text, len, out, &err), 0);
}

static void assert_decodes_to(const atom_tokenizer *tok, const atom_tokens *t,
                              const unsigned char *text, size_t len)
{
    size_t at = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t n;
        const unsigned char *b = atom_tokenizer_token(tok, t->ids[i], &n);
        assert_non_null(b);
        assert_true(at + n <= len);
        assert_memory_equal(b, text + at, n);
        at += n;
    }
    assert_int_equal(at, len);
}

static void round_trip(const char *name)
{
    atom_tokenizer *tok;
    atom_err err = {{0}};
    assert_int_equal(atom_tokenizer_open(name, &tok, &err), 0);
    atom_encoder *enc = atom_encoder_new(tok);
    atom_tokens t = {0};
    unsigned char text[600];
    for (int round = 0; round < 300; round++) {
        size_t len = random_text(text, sizeof text);
        encode(enc, text, len, &t);
        assert_decodes_to(tok, &t, text, len);
        if (!strcmp(name, "bytes")) { /* one token per byte, the byte itself */
            assert_int_equal(t.n, len);
            for (size_t i = 0; i < len; i++)
                assert_int_equal(t.ids[i], text[i]);
        }
    }
    for (int b = 0; b < 256; b++) { /* every byte alone */
        unsigned char one = (unsigned char)b;
        encode(enc, &one, 1, &t);
        assert_int_equal(t.n, 1);
        assert_decodes_to(tok, &t, &one, 1);
    }
    atom_tokens_free(&t);
    atom_encoder_free(enc);
    atom_tokenizer_close(tok);
}

static void test_bytes_round_trip(void **state)
{
    (void)state;
    round_trip("bytes");
}

static void test_gpt2_round_trip(void **state)
{
    (void)state;
    round_trip("gpt2");
}

static void test_cuts_keep_ids(void **state)
{
    (void)state;
    atom_tokenizer *tok;
    atom_err err = {{0}};
    assert_int_equal(atom_tokenizer_open("gpt2", &tok, &err), 0);
    atom_encoder *enc = atom_encoder_new(tok);
    atom_tokens whole = {0}, parts = {0};
    unsigned char text[400];
    int cuts = 0;
    for (int round = 0; round < 400; round++) {
        size_t len = random_text(text, sizeof text);
        encode(enc, text, len, &whole);
        for (size_t from = 0; from < len; from++) {
            size_t cut = atom_text_cut(text, len, from);
            assert_true(cut >= from && cut <= len);
            if (cut == len)
                break;
            cuts++;
            encode(enc, text, cut, &parts);
            atom_tokens tail = {0};
            assert_int_equal(atom_encode(enc, text + cut, len - cut, &tail, &err), 0);
            assert_int_equal(parts.n + tail.n, whole.n);
            assert_memory_equal(parts.ids, whole.ids, parts.n * sizeof *parts.ids);
            assert_memory_equal(tail.ids, whole.ids + parts.n, tail.n * sizeof *tail.ids);
            atom_tokens_free(&tail);
            from = cut;
        }
    }
    assert_true(cuts > 1000); /* the fragments make safe places common: the test tests some */
    atom_tokens_free(&whole);
    atom_tokens_free(&parts);
    atom_encoder_free(enc);
    atom_tokenizer_close(tok);
}

static void test_gpt2_facts(void **state)
{
    (void)state;
    atom_tokenizer *tok;
    atom_err err = {{0}};
    assert_int_equal(atom_tokenizer_open("gpt3", &tok, &err), -1);
    assert_non_null(strstr(err.msg, "gpt2 or bytes"));
    assert_int_equal(atom_tokenizer_open("gpt2", &tok, &err), 0);
    assert_int_equal(atom_tokenizer_vocab(tok), 50257);
    assert_int_equal(atom_tokenizer_eot(tok), 50256);
    size_t n;
    const unsigned char *eot = atom_tokenizer_token(tok, 50256, &n);
    assert_int_equal(n, 13);
    assert_memory_equal(eot, "<|endoftext|>", 13);
    assert_null(atom_tokenizer_token(tok, 50257, &n));
    assert_string_equal(atom_tokenizer_unicode_version(), "15.0.0");
    atom_encoder *enc = atom_encoder_new(tok);
    atom_tokens t = {0};
    const char *hello = "Hello world";
    encode(enc, (const unsigned char *)hello, strlen(hello), &t);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.ids[0], 15496);
    assert_int_equal(t.ids[1], 995);
    /* one piece of 200,000 bytes: merged in O(n log n), and decoded back */
    size_t long_len = 200000;
    unsigned char *eq = malloc(long_len);
    memset(eq, '=', long_len);
    encode(enc, eq, long_len, &t);
    assert_true(t.n < long_len / 4);
    assert_decodes_to(tok, &t, eq, long_len);
    free(eq);
    atom_tokens_free(&t);
    atom_encoder_free(enc);
    atom_tokenizer_close(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_round_trip),
        cmocka_unit_test(test_gpt2_round_trip),
        cmocka_unit_test(test_cuts_keep_ids),
        cmocka_unit_test(test_gpt2_facts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
