/* tests/scheduler/test_atomctl.c: atomctl run as a process, the way a user runs it: exit codes
 * (0 ok, 1 failed, 2 usage), what goes to stdout and what to stderr, on the example specs, the
 * shipped inventories, a bad spec, a bad inventory and bad flags. */
#include <fcntl.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"

extern char **environ;

static char atomctl[1024], src[1024], tmpdir[64];

typedef struct run_result {
    int status;  /* exit code */
    char *out, *err;
} run_result;

static char *slurp(const char *path)
{
    atom_err e;
    size_t len;
    char *s = atom_read_file(path, 64u << 20, &len, &e);
    return s ? s : strdup("");
}

/* Runs atomctl with up to 8 arguments (NULL-terminated), capturing stdout and stderr. */
static run_result run(const char *arg, ...)
{
    char *argv[10] = {atomctl};
    int argc = 1;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && argc < 9; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char out_path[128], err_path[128];
    snprintf(out_path, sizeof out_path, "%s/stdout", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, atomctl, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int wstatus;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFEXITED(wstatus)); /* never a crash */
    run_result r = {WEXITSTATUS(wstatus), slurp(out_path), slurp(err_path)};
    return r;
}

static void done(run_result *r)
{
    free(r->out);
    free(r->err);
}

static const char *path_in(const char *rel)
{
    static char buf[16][2200]; /* a ring: a test may hold a few paths at once */
    static int next;
    char *p = buf[next++ % 16];
    snprintf(p, sizeof buf[0], "%s/%s", src, rel);
    return p;
}

static void expect(const run_result *r, int status, const char *in_out, const char *in_err)
{
    if (r->status != status || (in_out && !strstr(r->out, in_out)) ||
        (in_err && !strstr(r->err, in_err)))
        fail_msg("atomctl exited %d (expected %d)\n--- stdout (expected '%s'):\n%.2000s\n--- stderr "
                 "(expected '%s'):\n%.2000s", r->status, status, in_out ? in_out : "",
                 r->out, in_err ? in_err : "", r->err);
}

static int setup(void **state)
{
    (void)state;
    const char *build = getenv("ATOM_BUILD_DIR"), *source = getenv("ATOM_SOURCE_DIR");
    if (!build || !source)
        return -1;
    snprintf(atomctl, sizeof atomctl, "%s/bin/atomctl", build);
    snprintf(src, sizeof src, "%s", source);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/atomctl-test-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"stdout", "stderr", "bad.yaml", "badinv.yaml"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
    return 0;
}

static void test_validate_examples(void **state)
{
    (void)state;
    const char *examples[] = {"configs/examples/tiny-cpu.yaml",
                              "configs/examples/gpt2-124m-64gpu.yaml",
                              "configs/examples/gpt2-1.5b-1024gpu.yaml"};
    for (size_t i = 0; i < 3; i++) {
        const char *p = path_in(examples[i]);
        run_result r = run("validate", p, NULL);
        if (i == 0) { /* its data is on every Debian machine */
            char ok[2300];
            snprintf(ok, sizeof ok, "%s: ok\n", p);
            expect(&r, 0, ok, NULL);
            assert_non_null(strstr(r.out, "tensor"));
            assert_string_equal(r.err, "");
        } else {
            /* the cluster examples' data is not on this machine: the job could not start, so
             * validate fails, naming the file's key */
            expect(&r, 1, NULL, "data.path");
            assert_non_null(strstr(r.err, "No such file or directory"));
        }
        done(&r);
    }
}

static void test_bad_spec(void **state)
{
    (void)state;
    /* tiny-cpu.yaml with one wrong value on line 5 */
    char *text = slurp(path_in("configs/examples/tiny-cpu.yaml"));
    char *at = strstr(text, "priority: 100");
    assert_non_null(at);
    char bad[128];
    snprintf(bad, sizeof bad, "%s/bad.yaml", tmpdir);
    FILE *f = fopen(bad, "w");
    fprintf(f, "%.*spriority: lots%s", (int)(at - text), text, at + strlen("priority: 100"));
    fclose(f);
    free(text);
    char where[200];
    snprintf(where, sizeof where, "%s:5:11: priority:", bad);
    run_result r = run("validate", bad, NULL);
    expect(&r, 1, NULL, where);
    assert_string_equal(r.out, "");
    done(&r);
    r = run("plan", bad, NULL);
    expect(&r, 1, NULL, where);
    done(&r);
    r = run("validate", "/nonexistent/job.yaml", NULL);
    expect(&r, 1, NULL, "/nonexistent/job.yaml");
    done(&r);
}

/* A job whose data file is missing is refused by run and submit before anything starts (no
 * atomd is reached: the socket given does not exist). */
static void test_missing_data_refused(void **state)
{
    (void)state;
    char *text = slurp(path_in("configs/examples/tiny-cpu.yaml"));
    char *at = strstr(text, "/usr/share/common-licenses/GPL-3");
    assert_non_null(at);
    char spec[128], sock[128];
    snprintf(spec, sizeof spec, "%s/nodata.yaml", tmpdir);
    snprintf(sock, sizeof sock, "%s/no-atomd.sock", tmpdir);
    FILE *f = fopen(spec, "w");
    fprintf(f, "%.*s/nonexistent/corpus.bin%s", (int)(at - text), text,
            at + strlen("/usr/share/common-licenses/GPL-3"));
    fclose(f);
    free(text);
    const char *cmds[] = {"run", "submit"};
    for (int i = 0; i < 2; i++) {
        run_result r = run(cmds[i], spec, "--socket", sock, NULL);
        expect(&r, 1, NULL, "data.path: /nonexistent/corpus.bin: No such file or directory");
        done(&r);
    }
}

static void test_plan_local_and_json(void **state)
{
    (void)state;
    const char *tiny = path_in("configs/examples/tiny-cpu.yaml");
    run_result r = run("plan", tiny, NULL);
    expect(&r, 0, "4 ranks = tensor 2 x data 2 on 1 node, 1 switch", NULL);
    assert_non_null(strstr(r.out, "dp 1: ranks 2-3"));
    assert_non_null(strstr(r.out, "tp 0: ranks 0,2"));
    done(&r);
    /* --json prints a plan file that the workers' reader accepts */
    r = run("plan", "--json", tiny, NULL);
    expect(&r, 0, "\"format\":\"atom-plan\"", NULL);
    atom_plan plan;
    atom_err err = {{0}};
    if (atom_plan_from_json(r.out, &plan, &err))
        fail_msg("atomctl plan --json printed a plan that does not read back: %s", err.msg);
    assert_int_equal(plan.world, 4);
    atom_plan_free(&plan);
    done(&r);
}

static void test_plan_on_clusters(void **state)
{
    (void)state;
    const char *big = path_in("configs/examples/gpt2-1.5b-1024gpu.yaml");
    if (access(big, R_OK) != 0)
        skip();
    run_result r = run("plan", big, "--cluster", path_in("configs/clusters/cluster-10k.yaml"),
                       NULL);
    expect(&r, 0, "1024 ranks = tensor 8 x data 128 on 128 nodes, 4 switches", NULL);
    done(&r);
    /* gpus_per_node 8: eight whole nodes under one switch, the tightest (a 31-node one) */
    const char *small = path_in("configs/examples/gpt2-124m-64gpu.yaml");
    if (access(small, R_OK) == 0) {
        r = run("plan", small, "--cluster", path_in("configs/clusters/cluster-10k.yaml"), NULL);
        expect(&r, 0, "64 ranks = tensor 1 x data 64 on 8 nodes, 1 switch", NULL);
        assert_non_null(strstr(r.out, "switches used (1): leaf11 (8 nodes)"));
        done(&r);
    }
    r = run("plan", "--cluster", path_in("configs/clusters/lab-cluster.yaml"), big, NULL);
    expect(&r, 1, NULL, "does not fit on cluster lab-cluster: needs 1024 GPUs");
    done(&r);
    /* a bad inventory names its file:line:column */
    char badinv[128];
    snprintf(badinv, sizeof badinv, "%s/badinv.yaml", tmpdir);
    FILE *f = fopen(badinv, "w");
    fprintf(f, "name: x\nswitches: [a]\nnodes:\n  - {name: n1, switch: b, gpus: 8}\n");
    fclose(f);
    char where[200];
    snprintf(where, sizeof where, "%s:4:24: nodes[0].switch:", badinv);
    r = run("plan", path_in("configs/examples/tiny-cpu.yaml"), "--cluster", badinv, NULL);
    expect(&r, 1, NULL, where);
    done(&r);
}

static void test_usage(void **state)
{
    (void)state;
    run_result r = run("--help", NULL);
    expect(&r, 0, "exit codes:", NULL);
    assert_non_null(strstr(r.out, "validate"));
    assert_non_null(strstr(r.out, "plan"));
    assert_string_equal(r.err, "");
    done(&r);
    r = run("plan", "--help", NULL);
    expect(&r, 0, "--cluster", NULL);
    done(&r);
    r = run("plan", "--frobnicate", path_in("configs/examples/tiny-cpu.yaml"), NULL);
    expect(&r, 2, NULL, "unknown option '--frobnicate'");
    assert_string_equal(r.out, "");
    done(&r);
    r = run("plan", path_in("configs/examples/tiny-cpu.yaml"), "--cluster", NULL);
    expect(&r, 2, NULL, "--cluster needs");
    done(&r);
    r = run("validate", NULL);
    expect(&r, 2, NULL, "no job spec");
    done(&r);
    r = run("launch-missiles", NULL);
    expect(&r, 2, NULL, "unknown command 'launch-missiles'");
    done(&r);
    r = run(NULL);
    expect(&r, 2, NULL, "no command");
    done(&r);
    r = run("--bogus", NULL);
    expect(&r, 2, NULL, "unknown option");
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_examples),
        cmocka_unit_test(test_bad_spec),
        cmocka_unit_test(test_missing_data_refused),
        cmocka_unit_test(test_plan_local_and_json),
        cmocka_unit_test(test_plan_on_clusters),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
