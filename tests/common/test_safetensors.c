/* tests/common/test_safetensors.c: the safetensors reader behind init.safetensors, on files
 * written here byte by byte: a good file's tensors read exactly (F32 as is, BF16 and F16 widened
 * exactly, element ranges), and every broken file (truncated, header past the end, offsets
 * outside the data, a byte count that is not its shape's, not JSON) refused with a message
 * naming the file or the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"

static char path[64];

/* header text, then `data` bytes, written as a safetensors file (the length little-endian) */
static void write_file(const char *header, const void *data, size_t len, uint64_t hlen_override)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    for (int i = 0; i < 8; i++)
        fputc((int)(hlen >> (8 * i)) & 0xff, f);
    fwrite(header, 1, strlen(header), f);
    if (len)
        fwrite(data, 1, len, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/atom-st-test-%d.safetensors", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void reads_every_dtype_exactly(void **state)
{
    (void)state;
    /* a: F32 (2, 3); b: BF16 (2); c: F16 (4); m: an int mask atom never reads */
    unsigned char data[24 + 4 + 8 + 2];
    float a[6] = {1.5f, -2.25f, 3.0e-30f, 0.1f, -0.0f, 65504.0f};
    memcpy(data, a, sizeof a);
    uint16_t b[2] = {0x3FC0, 0xC049};                 /* 1.5, -3.140625 */
    uint16_t c[4] = {0x3C00, 0xC000, 0x0001, 0x7BFF}; /* 1, -2, 2^-24 (subnormal), 65504 */
    memcpy(data + 24, b, sizeof b);
    memcpy(data + 28, c, sizeof c);
    data[36] = data[37] = 7;
    write_file("{\"__metadata__\":{\"format\":\"pt\"},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
               "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[24,28]},"
               "\"c\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[28,36]},"
               "\"m\":{\"dtype\":\"U8\",\"shape\":[1,2],\"data_offsets\":[36,38]}}",
               data, sizeof data, 0);
    atom_safetensors st;
    atom_err err;
    assert_int_equal(atom_safetensors_open(path, &st, &err), 0);
    assert_int_equal(st.count, 4);
    const atom_st_tensor *t = atom_safetensors_find(&st, "a");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    float out[6];
    assert_int_equal(atom_safetensors_read(&st, t, 0, 6, out, &err), 0);
    assert_memory_equal(out, a, sizeof a);
    assert_int_equal(atom_safetensors_read(&st, t, 2, 3, out, &err), 0);
    assert_memory_equal(out, a + 2, 3 * sizeof(float));
    assert_int_equal(atom_safetensors_read(&st, t, 4, 3, out, &err), -1); /* past the end */
    assert_non_null(strstr(err.msg, "tensor a"));

    assert_int_equal(atom_safetensors_read(&st, atom_safetensors_find(&st, "b"), 0, 2, out, &err),
                     0);
    assert_true(out[0] == 1.5f && out[1] == -3.140625f);
    assert_int_equal(atom_safetensors_read(&st, atom_safetensors_find(&st, "c"), 0, 4, out, &err),
                     0);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && out[3] == 65504.0f);
    assert_int_equal(atom_safetensors_read(&st, atom_safetensors_find(&st, "m"), 0, 2, out, &err),
                     -1);
    assert_non_null(strstr(err.msg, "tensor m has dtype U8"));
    assert_null(atom_safetensors_find(&st, "missing"));
    atom_safetensors_close(&st);
}

static void refuses_broken_files(void **state)
{
    (void)state;
    static const struct {
        const char *header;
        size_t data_len;
        uint64_t hlen;
        const char *msg;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, 0,
         "tensor a: data_offsets are not inside the file's 4 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0,
         "tensor a: 8 bytes of data for 3 elements of F32"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,0]}}", 8, 0,
         "tensor a: data_offsets are not inside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0,
         "tensor a: dim 0 of its shape is not a size"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, 0,
         "tensor a: the header entry needs dtype, shape and data_offsets"},
        {"{\"a\":3}", 0, 0, "tensor a: the header entry is not an object"},
        {"{\"a\":{\"dtype\":", 0, 0, "the header is not a JSON object"},
        {"[1,2]", 0, 0, "the header is not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, 0, "duplicate object key"},
        {"{}", 0, 1000, "header length 1000 does not fit a file of 10 bytes"},
    };
    static const unsigned char zeros[16];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(cases[i].header, zeros, cases[i].data_len, cases[i].hlen);
        atom_safetensors st;
        atom_err err;
        err.msg[0] = '\0';
        int rc = atom_safetensors_open(path, &st, &err);
        if (rc != -1 || !strstr(err.msg, cases[i].msg) || !strstr(err.msg, path)) {
            fprintf(stderr, "case %zu: rc %d, message '%s', expected '%s'\n", i, rc, err.msg,
                    cases[i].msg);
            fail();
        }
    }
    FILE *f = fopen(path, "wb"); /* shorter than the 8-byte length */
    fputs("abc", f);
    fclose(f);
    atom_safetensors st;
    atom_err err;
    assert_int_equal(atom_safetensors_open(path, &st, &err), -1);
    assert_non_null(strstr(err.msg, "is not a safetensors file"));
    unlink(path);
    assert_int_equal(atom_safetensors_open(path, &st, &err), -1);
    assert_non_null(strstr(err.msg, "No such file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(reads_every_dtype_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_broken_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
