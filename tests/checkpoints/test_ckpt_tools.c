/* tests/checkpoints/test_ckpt_tools.c: the `atomctl ckpt ls|verify|export` library calls, in a
 * process that never calls MPI_Init (as atomctl is), on the files ckpt_roundtrip wrote.
 * The exported safetensors file is checked value by value by check_safetensors.py. Crafted
 * copies: a dataset whose shape's element count wraps 64 bits (verify refuses it, not "0 of 0
 * elements checked"), and a flipped byte of a weight (export refuses to write it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "checkpoints/checkpoints.h"

#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[2048];

static char *slurp(FILE *f) {
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static int count_lines_starting(const char *s, const char *prefix) {
    int n = 0;
    for (const char *p = s; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        n += strncmp(p, prefix, strlen(prefix)) == 0;
    }
    return n;
}

static void test_ls(void **state) {
    (void)state;
    char dir[2300];
    snprintf(dir, sizeof dir, "%s/roundtrip/np4_tp2", root);
    FILE *out = tmpfile();
    atom_ckpt_err err = {""};
    assert_int_equal(atom_ckpt_print_list(dir, out, &err), 0);
    char *s = slurp(out);
    assert_non_null(strstr(s, "STEP"));
    assert_non_null(strstr(s, "TP2xDP2"));
    assert_non_null(strstr(s, "latest"));
    assert_non_null(strstr(s, "ckpt-0000000005.h5"));
    assert_int_equal(count_lines_starting(s, "5 "), 1);
    free(s);
    fclose(out);
    assert_int_not_equal(atom_ckpt_print_list("/nonexistent/ckpts", NULL, &err), 0);
    assert_non_null(strstr(err.msg, "/nonexistent/ckpts"));
}

static void test_verify(void **state) {
    (void)state;
    char path[2300];
    snprintf(path, sizeof path, "%s/roundtrip/np2_tp2/latest", root);
    FILE *out = tmpfile();
    atom_ckpt_err err = {""};
    assert_int_equal(atom_ckpt_verify(path, out, &err), 0);
    char *s = slurp(out);
    assert_int_equal(count_lines_starting(s, "ok "), 48); /* 16 tensors x 3 */
    assert_non_null(strstr(s, "every checksum matches"));
    free(s);
    fclose(out);

    /* a truncated copy: a clear error, printed only into out */
    char copy[2400], cmd[5000];
    snprintf(copy, sizeof copy, "%s/tools-truncated.h5", root);
    snprintf(cmd, sizeof cmd, "head -c 100000 '%s' > '%s'", path, copy);
    assert_int_equal(system(cmd), 0);
    out = tmpfile();
    assert_int_not_equal(atom_ckpt_verify(copy, out, &err), 0);
    assert_non_null(strstr(err.msg, "truncated"));
    s = slurp(out);
    assert_non_null(strstr(s, "FAILED"));
    free(s);
    fclose(out);
    unlink(copy);
}

static void test_export(void **state) {
    (void)state;
    char path[2300], dst[2300];
    snprintf(path, sizeof path, "%s/roundtrip/np4_tp4/latest", root);
    snprintf(dst, sizeof dst, "%s/export.safetensors", root);
    unlink(dst);
    atom_ckpt_err err = {""};
    assert_int_equal(atom_ckpt_export_safetensors(path, dst, NULL, &err), 0);
    struct stat st;
    assert_int_equal(stat(dst, &st), 0);
    /* the tiny model's weights, vocabulary trimmed to V=100: 30,176 floats (docs'd mapping) */
    int64_t C = 32, L = 2, floats = 100 * C + 16 * C + L * (12 * C * C + 13 * C) + 2 * C;
    assert_true(st.st_size > 8 + 4 * floats && st.st_size < 8 + 4 * floats + 16384);
}

/* A copy of src at dst (cp through the shell: paths are the test's own). */
static void copy_file(const char *src, const char *dst) {
    char cmd[5000];
    snprintf(cmd, sizeof cmd, "cp -L '%s' '%s'", src, dst);
    assert_int_equal(system(cmd), 0);
}

/* A dataset of (2^32, 2^32) floats (chunked: no storage) with no checksum row: its element
 * count wraps to 0 in 64 bits, which once matched the 0 elements its rows hold. */
static void test_verify_wrapping_shape(void **state) {
    (void)state;
    char path[2300], copy[2400];
    snprintf(path, sizeof path, "%s/roundtrip/np2_tp2/latest", root);
    snprintf(copy, sizeof copy, "%s/tools-wrap.h5", root);
    copy_file(path, copy);
    hid_t f = H5Fopen(copy, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dims[2] = {1ull << 32, 1ull << 32}, chunk[2] = {1, 1024}, rows[2] = {0, 9};
    hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t ds = H5Dcreate2(f, "/param/zzwrap", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl,
                          H5P_DEFAULT);
    assert_true(ds >= 0);
    hid_t aspace = H5Screate_simple(2, rows, NULL);
    hid_t attr = H5Acreate2(ds, "crc32c_slabs", H5T_STD_U64LE, aspace, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    H5Aclose(attr);
    H5Sclose(aspace);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
    atom_ckpt_err err = {""};
    assert_int_not_equal(atom_ckpt_verify(copy, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "/param/zzwrap"));
    assert_non_null(strstr(err.msg, "more floats than a file can"));
    unlink(copy);
}

/* A flipped byte in the middle of /param/wte: export refuses, naming the dataset and the
 * mismatch, and leaves no output file. */
static void test_export_corrupt(void **state) {
    (void)state;
    char path[2300], copy[2400], dst[2400], tmp[2500];
    snprintf(path, sizeof path, "%s/roundtrip/np4_tp4/latest", root);
    snprintf(copy, sizeof copy, "%s/tools-corrupt.h5", root);
    snprintf(dst, sizeof dst, "%s/tools-corrupt.safetensors", root);
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    copy_file(path, copy);
    unlink(dst);
    hid_t f = H5Fopen(copy, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "/param/wte", H5P_DEFAULT);
    haddr_t at = H5Dget_offset(ds) + H5Dget_storage_size(ds) / 2;
    H5Dclose(ds);
    H5Fclose(f);
    int fd = open(copy, O_RDWR);
    unsigned char b = 0;
    assert_int_equal(pread(fd, &b, 1, (off_t)at), 1);
    b ^= 0x04;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)at), 1);
    close(fd);
    atom_ckpt_err err = {""};
    assert_int_not_equal(atom_ckpt_export_safetensors(copy, dst, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "refusing to export"));
    assert_non_null(strstr(err.msg, "checksum mismatch in dataset /param/wte"));
    assert_int_not_equal(access(dst, F_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);
    unlink(copy);
}

/* The checksum is the standard CRC32C the format documents (readers elsewhere must agree). */
static void test_crc32c(void **state) {
    (void)state;
    assert_int_equal(atom_ckpt_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(atom_ckpt_crc32c(0, "", 0), 0);
    unsigned char zeros[32] = {0};
    assert_int_equal(atom_ckpt_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    /* continuing over pieces gives the CRC of the whole, at any split */
    const char *text = "the quick brown fox jumps over the lazy dog, twice over";
    uint32_t whole = atom_ckpt_crc32c(0, text, strlen(text));
    for (size_t cut = 0; cut <= strlen(text); cut++) {
        uint32_t c = atom_ckpt_crc32c(0, text, cut);
        assert_int_equal(atom_ckpt_crc32c(c, text + cut, strlen(text) - cut), whole);
    }
    /* the hardware path (SSE4.2 crc32, on this machine) and the portable table loop agree, at
     * every alignment, at lengths the 8-byte steps and the three-chain blocks can meet */
    static unsigned char bytes[3 * 3 * 8192 + 64];
    for (size_t i = 0; i < sizeof bytes; i++) {
        bytes[i] = (unsigned char)(i * 131u + (i >> 7));
    }
    for (size_t off = 0; off < 9; off++) {
        for (size_t len = 0; len < 70; len++) {
            assert_int_equal(atom_ckpt_crc32c(0, bytes + off, len),
                             atom_ckpt_crc32c_portable(0, bytes + off, len));
        }
        for (size_t len = 3 * 8192 - 9; len < sizeof bytes - 8; len += 3 * 8192 - 1) {
            assert_int_equal(atom_ckpt_crc32c(7, bytes + off, len),
                             atom_ckpt_crc32c_portable(7, bytes + off, len));
        }
    }
    assert_int_equal(atom_ckpt_crc32c_portable(0, "123456789", 9), 0xE3069283u);
}

static void test_no_mpi(void **state) {
    (void)state;
    int initialized = 1;
    MPI_Initialized(&initialized);
    assert_int_equal(initialized, 0);
}

int main(void) {
    const char *build = getenv("ATOM_BUILD_DIR");
    snprintf(root, sizeof root, "%s/tests/checkpoints/data", build ? build : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ls),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_verify_wrapping_shape),
        cmocka_unit_test(test_export_corrupt),
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_no_mpi),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
