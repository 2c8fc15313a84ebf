/* tests/slurm/test_plan_slurm.c: the plan built from a Slurm allocation. Host lists expand as
 * `scontrol show hostnames` does, tasks-per-node lists as Slurm writes them, and the plan puts
 * ranks in block order with tensor groups inside nodes; allocations that break atom's rules (a
 * node's tasks not a multiple of the tensor size, the wrong task count, cyclic distribution,
 * several GPUs per task) are refused with a sentence that says what to change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"

/* Expands list and compares with the space-separated names in expected. */
static void check_hosts(const char *list, const char *expected)
{
    char (*names)[ATOM_NAME_MAX] = NULL;
    int n = 0;
    atom_err err = {{0}};
    if (atom_slurm_hostnames(list, &names, &n, &err) != 0)
        fail_msg("\"%s\": %s", list, err.msg);
    char joined[4096] = "";
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(joined + len, sizeof joined - len, "%s%s", i ? " " : "", names[i]);
    free(names);
    if (strcmp(joined, expected))
        fail_msg("\"%s\" expanded to \"%s\", expected \"%s\"", list, joined, expected);
}

static void test_hostnames(void **state)
{
    (void)state;
    check_hosts("n[1-4]", "n1 n2 n3 n4");
    check_hosts("node7", "node7");
    check_hosts("gpu[01-03,7],login1", "gpu01 gpu02 gpu03 gpu7 login1");
    check_hosts("n[08-11]", "n08 n09 n10 n11");
    check_hosts("n[098-101]", "n098 n099 n100 n101");
    check_hosts("a[1-2]b[1-2]", "a1b1 a1b2 a2b1 a2b2");
    check_hosts("rack[1-2]-gpu[3,5].example.org",
                "rack1-gpu3.example.org rack1-gpu5.example.org rack2-gpu3.example.org "
                "rack2-gpu5.example.org");
    check_hosts("x,y[2-3],z", "x y2 y3 z");
    check_hosts("n[5]", "n5");
}

static void check_bad_hosts(const char *list, const char *words)
{
    char (*names)[ATOM_NAME_MAX] = (void *)1;
    int n = 7;
    atom_err err = {{0}};
    if (atom_slurm_hostnames(list, &names, &n, &err) == 0)
        fail_msg("\"%s\" expanded to %d hosts, expected an error", list, n);
    if (names != NULL || n != 0)
        fail_msg("\"%s\": a failed expansion left a result behind", list);
    if (!strstr(err.msg, words))
        fail_msg("\"%s\": error \"%s\" does not say \"%s\"", list, err.msg, words);
}

static void test_bad_hostnames(void **state)
{
    (void)state;
    check_bad_hosts("", "empty");
    check_bad_hosts("n[1-", "unbalanced");
    check_bad_hosts("n[1-4", "unbalanced");
    check_bad_hosts("n[]", "empty brackets");
    check_bad_hosts("n[3-1]", "backwards");
    check_bad_hosts("n[1-2]]", "unbalanced");
    check_bad_hosts("n[[1-2]]", "unbalanced");
    check_bad_hosts("a,,b", "empty entry");
    check_bad_hosts("a,", "empty entry");
    check_bad_hosts("n[a-b]", "expected a number");
    check_bad_hosts("n[1-x]", "after '-'");
    check_bad_hosts("n[1;2]", "unexpected character");
    check_bad_hosts("bad host", "unexpected character");
    check_bad_hosts("n[0-999999]", "more than 65536 hosts");
    check_bad_hosts("a[0-999]b[0-999]", "more than 65536 hosts");
    check_bad_hosts("n[99999999999-1]", "expected a number");
    char long_name[200];
    memset(long_name, 'h', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    check_bad_hosts(long_name, "longer than 63");
}

static void test_tasks_per_node(void **state)
{
    (void)state;
    static const struct { const char *text; int n; int counts[8]; } good[] = {
        {"4(x2),2", 3, {4, 4, 2}}, {"1", 1, {1}}, {"8(x4)", 4, {8, 8, 8, 8}},
        {"2,3,2(x2)", 4, {2, 3, 2, 2}},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int *counts = NULL, n = 0;
        atom_err err = {{0}};
        if (atom_slurm_tasks_per_node(good[i].text, &counts, &n, &err))
            fail_msg("\"%s\": %s", good[i].text, err.msg);
        assert_int_equal(n, good[i].n);
        for (int k = 0; k < n; k++)
            assert_int_equal(counts[k], good[i].counts[k]);
        free(counts);
    }
    static const char *const bad[] = {"", "0", "4(x0)", "4(2)", "x", "4,", "4(x2", "-1", "4(x2)3",
                                      "4(x99999999)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int *counts = NULL, n = 0;
        atom_err err = {{0}};
        if (atom_slurm_tasks_per_node(bad[i], &counts, &n, &err) == 0)
            fail_msg("\"%s\" parsed as %d nodes, expected an error", bad[i], n);
        assert_null(counts);
    }
}

/* gpt-tiny on tensor x data ranks, valid as a spec. */
static void tiny_spec(atom_spec *spec, int tensor, int data)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "name: slurm-test\nresources: {gpus: %d}\nparallelism: {tensor: %d, data: %d}\n"
             "model: {preset: gpt-tiny}\ndata: {path: /usr/share/common-licenses/GPL-3}\n"
             "training: {steps: 4, global_batch: %d, micro_batch: 1}\n",
             tensor * data, tensor, data, data);
    atom_diags diags = {0};
    int rc = atom_spec_parse(yaml, strlen(yaml), "test.yaml", NULL, spec, &diags);
    if (rc) {
        atom_diags_print(&diags, stderr);
        fail_msg("the test's own spec does not parse");
    }
    atom_diags_free(&diags);
}

/* The environment of task procid in a block-distributed step of tasks_per_node on nodelist. */
static atom_slurm_env block_env(const char *nodelist, const char *tasks_per_node, int per_node,
                                int procid, char ids[3][16])
{
    snprintf(ids[0], 16, "%d", procid);
    snprintf(ids[1], 16, "%d", procid / per_node);
    snprintf(ids[2], 16, "%d", procid % per_node);
    return (atom_slurm_env){.job_id = "42", .nodelist = nodelist,
                            .tasks_per_node = tasks_per_node, .procid = ids[0],
                            .nodeid = ids[1], .localid = ids[2]};
}

static void test_plan_four_nodes(void **state)
{
    (void)state;
    atom_spec spec;
    tiny_spec(&spec, 2, 4);
    /* Every task of the step builds the same plan. */
    char *first_json = NULL;
    for (int procid = 0; procid < 8; procid++) {
        char ids[3][16];
        atom_slurm_env env = block_env("n[1-4]", "2(x4)", 2, procid, ids);
        env.ntasks = "8";
        env.gpus = "0";
        env.restart_count = "3";
        atom_plan plan;
        atom_err err = {{0}};
        if (atom_plan_from_slurm(&spec, &env, &plan, &err))
            fail_msg("task %d: %s", procid, err.msg);
        assert_int_equal(plan.world, 8);
        assert_int_equal(plan.n_nodes, 4);
        assert_int_equal(plan.attempt, 3);
        assert_string_equal(plan.job_id, "slurm-42");
        for (int r = 0; r < 8; r++) {
            assert_int_equal(plan.ranks[r].node, r / 2);
            assert_int_equal(plan.ranks[r].tp, r % 2);
            assert_int_equal(plan.ranks[r].dp, r / 2);
            assert_int_equal(plan.ranks[r].gpu, r % 2);
        }
        assert_string_equal(plan.nodes[3].name, "n4");
        assert_true(plan.nodes[0].has_gpus);
        char *json = atom_plan_to_json(&plan);
        assert_non_null(json);
        /* The plan reader's own checks (ranks, GPUs, tensor groups inside nodes) accept it. */
        atom_plan back;
        if (atom_plan_from_json(json, &back, &err))
            fail_msg("task %d: the plan does not read back: %s", procid, err.msg);
        atom_plan_free(&back);
        if (!first_json)
            first_json = json;
        else {
            assert_string_equal(json, first_json);
            free(json);
        }
        atom_plan_free(&plan);
    }
    free(first_json);
}

static void test_plan_uneven_nodes(void **state)
{
    (void)state;
    /* tensor 2: nodes with 4, 2 and 2 tasks are fine; rank 5 is the second task of node b. */
    atom_spec spec;
    tiny_spec(&spec, 2, 4);
    atom_slurm_env env = {.job_id = "7", .nodelist = "a,b,c", .tasks_per_node = "4,2(x2)",
                          .procid = "5", .nodeid = "1", .localid = "1"};
    atom_plan plan;
    atom_err err = {{0}};
    if (atom_plan_from_slurm(&spec, &env, &plan, &err))
        fail_msg("%s", err.msg);
    int want_node[8] = {0, 0, 0, 0, 1, 1, 2, 2}, want_gpu[8] = {0, 1, 2, 3, 0, 1, 0, 1};
    for (int r = 0; r < 8; r++) {
        assert_int_equal(plan.ranks[r].node, want_node[r]);
        assert_int_equal(plan.ranks[r].gpu, want_gpu[r]);
    }
    assert_int_equal(plan.nodes[0].gpus, 4);
    assert_false(plan.nodes[0].has_gpus);
    assert_int_equal(plan.attempt, 0);
    assert_string_equal(plan.job_id, "slurm-7");
    atom_plan_free(&plan);
    /* Launched by atomd: its job id, its attempt plus Slurm's own requeues. */
    env.atom_job_id = "j-000123";
    env.atom_attempt = "2";
    env.restart_count = "1";
    if (atom_plan_from_slurm(&spec, &env, &plan, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(plan.job_id, "j-000123");
    assert_int_equal(plan.attempt, 3);
    atom_plan_free(&plan);
}

static void check_refused(const atom_spec *spec, const atom_slurm_env *env, const char *words)
{
    atom_plan plan;
    atom_err err = {{0}};
    if (atom_plan_from_slurm(spec, env, &plan, &err) == 0)
        fail_msg("expected a refusal saying \"%s\"", words);
    if (!strstr(err.msg, words))
        fail_msg("error \"%s\" does not say \"%s\"", err.msg, words);
    assert_null(plan.ranks);
    assert_null(plan.nodes);
}

static void test_plan_refusals(void **state)
{
    (void)state;
    atom_spec spec;
    tiny_spec(&spec, 2, 3);
    char ids[3][16];
    /* 6 ranks as 3 + 3: a tensor group of 2 would straddle the two nodes. */
    atom_slurm_env env = block_env("n[1-2]", "3(x2)", 3, 0, ids);
    check_refused(&spec, &env, "node n1 3 tasks, which is not a multiple of the tensor-parallel "
                               "size 2");
    /* 8 tasks for a 6-rank job. */
    env = block_env("n[1-4]", "2(x4)", 2, 0, ids);
    check_refused(&spec, &env, "Slurm started 8 tasks but the job needs tensor x data = 2 x 3 = 6");
    /* Node list and counts disagree. */
    env = block_env("n[1-4]", "2(x3)", 2, 0, ids);
    check_refused(&spec, &env, "has 4 nodes but its tasks per node \"2(x3)\" describe 3");
    /* SLURM_NTASKS disagrees with the counts. */
    env = block_env("n[1-3]", "2(x3)", 2, 0, ids);
    env.ntasks = "5";
    check_refused(&spec, &env, "SLURM_NTASKS is 5");
    /* Cyclic distribution: task 1 on node 1 as local 0. */
    env = (atom_slurm_env){.nodelist = "n[1-3]", .tasks_per_node = "2(x3)", .procid = "1",
                           .nodeid = "1", .localid = "0"};
    check_refused(&spec, &env, "--distribution=block");
    /* A task that sees every GPU of its node. */
    env = block_env("n[1-3]", "2(x3)", 2, 2, ids);
    env.gpus = "0,1";
    check_refused(&spec, &env, "sees 2 GPUs");
    /* Outside Slurm. */
    env = (atom_slurm_env){0};
    check_refused(&spec, &env, "SLURM_JOB_NODELIST is not set");
    env = block_env("n[1-3]", "2(x3)", 2, 0, ids);
    env.procid = NULL;
    check_refused(&spec, &env, "SLURM_PROCID is not set");
    env = block_env("n[1-3]", "2(x3)", 2, 0, ids);
    env.procid = "6";
    check_refused(&spec, &env, "SLURM_PROCID is \"6\", not a number in 0..5");
    env = block_env("n[1-3]", "2(x3)", 2, 0, ids);
    env.restart_count = "x";
    check_refused(&spec, &env, "SLURM_RESTART_COUNT");
    env = block_env("n[1-3]", "2(x3)", 2, 0, ids);
    env.atom_attempt = "-1";
    check_refused(&spec, &env, "ATOM_ATTEMPT");
    env = block_env("n[1-3", "2(x3)", 2, 0, ids);
    check_refused(&spec, &env, "unbalanced brackets");
}

static void test_env_get(void **state)
{
    (void)state;
    /* The step's variables win over the job's; CUDA_VISIBLE_DEVICES over SLURM_STEP_GPUS. */
    setenv("SLURM_JOB_NODELIST", "n[1-4]", 1);
    setenv("SLURM_STEP_NODELIST", "n[2-3]", 1);
    setenv("SLURM_TASKS_PER_NODE", "2(x4)", 1);
    setenv("SLURM_STEP_TASKS_PER_NODE", "2(x2)", 1);
    setenv("SLURM_STEP_GPUS", "5", 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    atom_slurm_env env;
    atom_slurm_env_get(&env);
    assert_string_equal(env.nodelist, "n[2-3]");
    assert_string_equal(env.tasks_per_node, "2(x2)");
    assert_string_equal(env.gpus, "5");
    setenv("CUDA_VISIBLE_DEVICES", "1", 1);
    unsetenv("SLURM_STEP_NODELIST");
    atom_slurm_env_get(&env);
    assert_string_equal(env.nodelist, "n[1-4]");
    assert_string_equal(env.gpus, "1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostnames),         cmocka_unit_test(test_bad_hostnames),
        cmocka_unit_test(test_tasks_per_node),    cmocka_unit_test(test_plan_four_nodes),
        cmocka_unit_test(test_plan_uneven_nodes), cmocka_unit_test(test_plan_refusals),
        cmocka_unit_test(test_env_get),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
