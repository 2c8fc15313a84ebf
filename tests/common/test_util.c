/* tests/common/test_util.c: durations, atomic writes, capped file reads, model presets and
 * parameter counts, diagnostics' printed form, log lines, and the clocks. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"

static void test_durations(void **state)
{
    (void)state;
    static const struct { const char *text; int64_t seconds; } good[] = {
        {"90s", 90}, {"30m", 1800}, {"2h", 7200}, {"1d", 86400}, {"1h30m", 5400},
        {"1d2h3m4s", 93784}, {"01:30:00", 5400}, {"30:00", 1800}, {"1:00:00:00", 86400},
        {"45", 45}, {"0", 0}, {"0s", 0}, {"10m", 600}, {"60s", 60},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t v = -1;
        if (atom_parse_duration(good[i].text, &v) != 0 || v != good[i].seconds)
            fail_msg("'%s': expected %lld, got %lld", good[i].text, (long long)good[i].seconds,
                     (long long)v);
    }
    static const char *const bad[] = {
        "", "10x", "-5", "1.5h", "30m1h", "1h30", "1:75:00", "99999999999999999999s",
        "9999999999999999d", "h", "1hh", "1h 30m", " 5", "5 ", ":30", "1::2", "1:2:3:4:5", "1m1m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 7;
        if (atom_parse_duration(bad[i], &v) == 0)
            fail_msg("'%s' parsed as %lld, expected an error", bad[i], (long long)v);
        assert_int_equal(v, 7); /* untouched on error */
    }
    assert_int_equal(atom_parse_duration(NULL, NULL), -1);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_atomic_write(void **state)
{
    (void)state;
    char dir[] = "/tmp/atom-test-write-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/plan.json", dir);
    atom_err err = {{0}};
    size_t len;

    assert_int_equal(atom_write_file_atomic(path, "first", 5, &err), 0);
    char *got = atom_read_file(path, 1024, &len, &err);
    assert_non_null(got);
    assert_int_equal(len, 5);
    assert_string_equal(got, "first");
    free(got);

    /* Replacing: the reader sees the whole new content, and no temporary file stays behind. */
    assert_int_equal(atom_write_file_atomic(path, "second, longer", 14, &err), 0);
    got = atom_read_file(path, 1024, &len, &err);
    assert_string_equal(got, "second, longer");
    free(got);
    assert_int_equal(count_entries(dir), 1);

    /* Empty content is a valid file. */
    assert_int_equal(atom_write_file_atomic(path, "", 0, &err), 0);
    got = atom_read_file(path, 1024, &len, &err);
    assert_int_equal(len, 0);
    free(got);

    /* A folder that does not exist: an error naming the path, nothing created, old file intact. */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/missing/plan.json", dir);
    assert_int_equal(atom_write_file_atomic(bad, "x", 1, &err), -1);
    assert_non_null(strstr(err.msg, "missing/plan.json"));
    assert_int_equal(count_entries(dir), 1);

    /* Where the target is a folder, rename fails and the temporary file is cleaned up. */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    char inner[320];
    snprintf(inner, sizeof inner, "%s/x", sub);
    assert_int_equal(atom_write_file_atomic(inner, "x", 1, &err), 0);
    assert_int_equal(atom_write_file_atomic(sub, "x", 1, &err), -1);
    assert_int_equal(count_entries(dir), 2);

    unlink(inner);
    rmdir(sub);
    unlink(path);
    rmdir(dir);
}

/* The folder a spec's relative paths resolve against, and the one fsynced after a rename. */
static void test_path_dir(void **state)
{
    (void)state;
    char dir[64];
    atom_path_dir("/a/b/spec.yaml", dir, sizeof dir);
    assert_string_equal(dir, "/a/b");
    atom_path_dir("spec.yaml", dir, sizeof dir);
    assert_string_equal(dir, ".");
    atom_path_dir("/spec.yaml", dir, sizeof dir);
    assert_string_equal(dir, "/");
    atom_path_dir("runs/spec.yaml", dir, sizeof dir);
    assert_string_equal(dir, "runs");
}

/* atomd finds atom-worker, atomctl finds atomd, atom-srun finds atom-worker: beside themselves
 * unless the environment names another. */
static void test_program_path(void **state)
{
    (void)state;
    char path[PATH_MAX], self[PATH_MAX];
    atom_err err;
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    char want[PATH_MAX + 16];
    snprintf(want, sizeof want, "%s/atom-worker", self);
    unsetenv("ATOM_TEST_PROGRAM");
    assert_int_equal(atom_program_path("ATOM_TEST_PROGRAM", "atom-worker", path, sizeof path, &err), 0);
    assert_string_equal(path, want);
    setenv("ATOM_TEST_PROGRAM", "/opt/atom/bin/atom-worker", 1);
    assert_int_equal(atom_program_path("ATOM_TEST_PROGRAM", "atom-worker", path, sizeof path, &err), 0);
    assert_string_equal(path, "/opt/atom/bin/atom-worker");
    char small[8];
    assert_int_equal(atom_program_path("ATOM_TEST_PROGRAM", "atom-worker", small, sizeof small, &err), -1);
    assert_non_null(strstr(err.msg, "ATOM_TEST_PROGRAM is too long"));
    unsetenv("ATOM_TEST_PROGRAM");
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/atom-test-read-XXXXXX";
    int fd = mkstemp(path);
    char buf[100];
    memset(buf, 'x', sizeof buf);
    assert_int_equal(write(fd, buf, sizeof buf), 100);
    close(fd);
    atom_err err = {{0}};
    size_t len = 0;
    char *got = atom_read_file(path, 100, &len, &err); /* exactly at the cap: fine */
    assert_non_null(got);
    assert_int_equal(len, 100);
    assert_int_equal(got[100], '\0');
    free(got);
    assert_null(atom_read_file(path, 99, &len, &err));
    assert_non_null(strstr(err.msg, "limit"));
    assert_null(atom_read_file("/nonexistent/x", 99, &len, &err));
    assert_non_null(strstr(err.msg, "No such file"));
    assert_null(atom_read_file("/tmp", 99, &len, &err));
    /* A file whose size stat does not know (a /proc file reports 0). */
    got = atom_read_file("/proc/self/status", 1 << 20, &len, &err);
    assert_non_null(got);
    assert_true(len > 0);
    assert_non_null(strstr(got, "Name:"));
    free(got);
    assert_null(atom_read_file("/proc/self/status", 10, &len, &err));
    unlink(path);
}

static void test_model_presets(void **state)
{
    (void)state;
    atom_model_cfg m;
    assert_int_equal(atom_model_preset("gpt2-124m", &m), 0);
    assert_int_equal(m.layers, 12);
    assert_int_equal(m.channels, 768);
    assert_int_equal(m.heads, 12);
    assert_int_equal(m.vocab, 50257);
    assert_int_equal(m.context, 1024);
    assert_int_equal(atom_padded_vocab(m.vocab), 50304);
    /* llm.c's count for GPT-2 small with the padded vocabulary */
    assert_int_equal(atom_model_params(&m), 124475904);
    assert_int_equal(atom_model_preset("gpt-tiny", &m), 0);
    assert_int_equal(atom_model_params(&m), 3257856);
    assert_int_equal(atom_model_preset("gpt2-1558m", &m), 0);
    assert_int_equal(m.heads, 25);
    assert_int_equal(m.channels, 1600);
    assert_int_equal(atom_model_params(&m), 1557686400);
    assert_int_equal(atom_model_preset("gpt2-350m", &m), 0);
    assert_int_equal(atom_model_preset("gpt2-774m", &m), 0);
    assert_int_equal(atom_model_preset("gpt3", &m), -1);
    int n = 0;
    while (atom_model_preset_name(n))
        n++;
    assert_int_equal(n, 5);
    assert_null(atom_model_preset_name(-1));
}

static char *capture(FILE *f)
{
    static char out[4096];
    rewind(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    return out;
}

static void test_diags_print(void **state)
{
    (void)state;
    atom_diags d = {0};
    atom_diags_add(&d, "job.yaml", 3, 14, "training.lr", "expected a number, got %s", "'fast'");
    atom_diags_add(&d, "job.yaml", 0, 0, "", "the spec file is empty");
    atom_diags_add(&d, NULL, 0, 0, "data.path", "is required");
    for (int i = 0; i < 20; i++) /* grows past its first capacity */
        atom_diags_add(&d, "f", i + 1, 1, "", "n%d", i);
    assert_int_equal(d.count, 23);
    FILE *f = tmpfile();
    atom_diags_print(&d, f);
    const char *out = capture(f);
    assert_non_null(strstr(out, "job.yaml:3:14: training.lr: expected a number, got 'fast'\n"
                                "job.yaml: the spec file is empty\n"
                                "<spec>: data.path: is required\n"
                                "f:1:1: n0\n"));
    assert_non_null(strstr(out, "f:20:1: n19\n"));
    fclose(f);
    atom_diags_free(&d);
    assert_int_equal(d.count, 0);
    assert_null(d.items);
}

static void test_log_lines(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    int saved = dup(2);
    dup2(fileno(f), 2);
    atom_log_init("atomtest", ATOM_LOG_INFO);
    atom_log(ATOM_LOG_DEBUG, "hidden %d", 1);
    atom_log(ATOM_LOG_WARN, "disk %d%% full", 93);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    const char *out = capture(f);
    char expect[128];
    snprintf(expect, sizeof expect, "Z atomtest[%ld] WARN disk 93%% full\n", (long)getpid());
    assert_non_null(strstr(out, expect));
    assert_null(strstr(out, "hidden"));
    /* "YYYY-MM-DDTHH:MM:SSZ " */
    assert_true(strlen(out) > 21);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], 'Z');
    fclose(f);
}

static void test_errf_and_clocks(void **state)
{
    (void)state;
    atom_err err;
    assert_int_equal(atom_errf(&err, "rank %d: %s", 3, "gone"), -1);
    assert_string_equal(err.msg, "rank 3: gone");
    assert_int_equal(atom_errf(NULL, "ignored"), -1);
    double now = atom_now();
    assert_true(now > (double)time(NULL) - 5 && now < (double)time(NULL) + 5);
    double a = atom_monotonic(), b = atom_monotonic();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),     cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_read_file),     cmocka_unit_test(test_model_presets),
        cmocka_unit_test(test_diags_print),   cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_errf_and_clocks), cmocka_unit_test(test_path_dir),
        cmocka_unit_test(test_program_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
