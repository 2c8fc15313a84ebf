/* tests/scheduler/test_plan_file.c: the plan file round-trips exactly through JSON and through a
 * real file, and a worker reading a corrupt plan gets an error naming what is wrong instead of a
 * wrong layout. Also the heartbeat message, both ways. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scheduler/planner.h"

/* A 16-rank job, tensor 4 x data 4, planned on two nodes of 8 under one switch. */
static void make_plan(atom_plan *plan)
{
    atom_inventory inv = {0};
    snprintf(inv.name, sizeof inv.name, "t");
    inv.n_switches = 1;
    inv.switches = calloc(1, sizeof *inv.switches);
    snprintf(inv.switches[0], ATOM_NAME_MAX, "leaf");
    inv.n_nodes = 3;
    inv.nodes = calloc(3, sizeof *inv.nodes);
    for (int i = 0; i < 3; i++) {
        snprintf(inv.nodes[i].name, ATOM_NAME_MAX, "gpu%03d", i + 1);
        inv.nodes[i].gpus = 8;
        inv.nodes[i].has_gpus = true;
    }
    snprintf(inv.nodes[1].addr, ATOM_NAME_MAX, "gpu002-ib");
    atom_spec spec;
    atom_spec_defaults(&spec);
    snprintf(spec.name, sizeof spec.name, "roundtrip");
    spec.parallelism.tensor = 4;
    spec.parallelism.data = 4;
    spec.resources.gpus = 16;
    spec.training.global_batch = 16;
    spec.training.micro_batch = 4;
    atom_planner pl;
    atom_err err;
    assert_int_equal(atom_planner_init(&pl, &inv, &err), 0);
    atom_planner_set_busy(&pl, 0, 0, true, &err); /* node 0 partly used: plan goes to 1 and 2 */
    atom_placement p;
    assert_int_equal(atom_planner_place(&pl, &spec, NULL, &p, NULL, 0, &err), ATOM_PLACE_OK);
    assert_int_equal(atom_plan_from_placement(&inv, &spec, &p, plan, &err), 0);
    snprintf(plan->job_id, sizeof plan->job_id, "j42");
    plan->attempt = 3;
    snprintf(plan->run_dir, sizeof plan->run_dir, "/var/lib/atom/runs/j42/3");
    snprintf(plan->heartbeat_addr, sizeof plan->heartbeat_addr, "/run/atom/atomd.sock");
    snprintf(plan->atomd_host, sizeof plan->atomd_host, "sched01");
    snprintf(plan->heartbeat_tcp, sizeof plan->heartbeat_tcp, "sched01:6830");
    snprintf(plan->munge_socket, sizeof plan->munge_socket, "/run/munge/munge.socket.2");
    atom_placement_free(&p);
    atom_planner_free(&pl);
    atom_inventory_free(&inv);
}

static void assert_same_plan(const atom_plan *a, const atom_plan *b)
{
    assert_string_equal(a->job_id, b->job_id);
    assert_int_equal(a->attempt, b->attempt);
    assert_string_equal(a->run_dir, b->run_dir);
    assert_string_equal(a->heartbeat_addr, b->heartbeat_addr);
    assert_string_equal(a->atomd_host, b->atomd_host);
    assert_string_equal(a->heartbeat_tcp, b->heartbeat_tcp);
    assert_string_equal(a->munge_socket, b->munge_socket);
    assert_int_equal(a->world, b->world);
    assert_int_equal(a->n_nodes, b->n_nodes);
    assert_int_equal(a->n_switches_used, b->n_switches_used);
    assert_memory_equal(a->ranks, b->ranks, (size_t)a->world * sizeof *a->ranks);
    for (int i = 0; i < a->n_nodes; i++) {
        assert_string_equal(a->nodes[i].name, b->nodes[i].name);
        assert_string_equal(a->nodes[i].addr, b->nodes[i].addr);
        assert_int_equal(a->nodes[i].gpus, b->nodes[i].gpus);
        assert_int_equal(a->nodes[i].switch_id, b->nodes[i].switch_id);
        assert_int_equal(a->nodes[i].has_gpus, b->nodes[i].has_gpus);
    }
    /* the spec survives: compare its own normalised JSON */
    char *sa = atom_spec_to_json(&a->spec), *sb = atom_spec_to_json(&b->spec);
    assert_string_equal(sa, sb);
    free(sa);
    free(sb);
}

static void test_round_trip(void **state)
{
    (void)state;
    atom_plan plan, back;
    make_plan(&plan);
    assert_int_equal(plan.n_nodes, 2);
    assert_string_equal(plan.nodes[0].name, "gpu002");
    char *json = atom_plan_to_json(&plan);
    assert_non_null(json);
    atom_err err = {{0}};
    if (atom_plan_from_json(json, &back, &err))
        fail_msg("%s", err.msg);
    assert_same_plan(&plan, &back);
    atom_plan_free(&back);

    char dir[] = "/tmp/atom-plan-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/plan.json", dir);
    assert_int_equal(atom_plan_write(&plan, path, &err), 0);
    if (atom_plan_read(path, &back, &err))
        fail_msg("%s", err.msg);
    assert_same_plan(&plan, &back);
    atom_plan_free(&back);

    /* a torn file (cut mid-way) is refused, with the path in the message */
    FILE *f = fopen(path, "w");
    fwrite(json, 1, strlen(json) / 2, f);
    fclose(f);
    assert_int_equal(atom_plan_read(path, &back, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_null(back.ranks);
    unlink(path);
    assert_int_equal(atom_plan_read(path, &back, &err), -1);
    rmdir(dir);
    free(json);
    atom_plan_free(&plan);
}

/* Replaces the first occurrence of `from` in json with `to` (the test's way of corrupting). */
static char *replace(const char *json, const char *from, const char *to)
{
    const char *at = strstr(json, from);
    assert_non_null(at);
    size_t n = strlen(json) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - json), json, to, at + strlen(from));
    return out;
}

static void test_corrupt_plans_rejected(void **state)
{
    (void)state;
    atom_plan plan;
    make_plan(&plan);
    char *json = atom_plan_to_json(&plan);
    /* what to change, and a phrase the error must contain */
    const struct {
        const char *from, *to, *words;
    } cases[] = {
        {"{\"rank\":1,", "{\"rank\":0,", "ranks must be listed"},            /* a rank twice */
        {"{\"rank\":1,\"dp\":0,\"tp\":1,", "{\"rank\":1,\"dp\":1,\"tp\":1,", "rank = dp"},
        {"\"gpu\":1}", "\"gpu\":0}", "given to two ranks"},                  /* a GPU twice */
        {"\"gpu\":1}", "\"gpu\":8}", "which has 8"},                         /* GPU out of range */
        {"\"node\":0,\"gpu\":1}", "\"node\":5,\"gpu\":1}", "node 5 of 2"},     /* node out of range */
        {"{\"rank\":3,\"dp\":0,\"tp\":3,\"node\":0,\"gpu\":3}",
         "{\"rank\":3,\"dp\":0,\"tp\":3,\"node\":1,\"gpu\":7}", "crosses nodes"},
        {"\"world\":16", "\"world\":12", "world"},
        {"\"format\":\"atom-plan\"", "\"format\":\"other\"", "not an atom plan"},
        {"\"version\":1", "\"version\":2", "version 2"},
        {"\"attempt\":3,", "", "'attempt'"},
        {"\"tensor\":4", "\"tensor\":2", "world is 16"},
        {"\"gpus\":8,", "\"gpus\":\"8\",", "nodes[0].'gpus'"},
        {"\"job_id\":\"j42\"", "\"job_id\":\"j42\",\"job_id\":\"j43\"", "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *bad = replace(json, cases[i].from, cases[i].to);
        atom_plan back;
        atom_err err = {{0}};
        if (atom_plan_from_json(bad, &back, &err) != -1)
            fail_msg("case %zu accepted: %s -> %s", i, cases[i].from, cases[i].to);
        if (!strstr(err.msg, cases[i].words))
            fail_msg("case %zu: '%s' does not say '%s'", i, err.msg, cases[i].words);
        assert_null(back.ranks);
        assert_null(back.nodes);
        free(bad);
    }
    /* a node with no rank on it, and a missing rank */
    char *extra = replace(json, "\"nodes\":[", "\"nodes\":[{\"name\":\"idle\",\"addr\":\"\","
                          "\"gpus\":8,\"switch\":0,\"has_gpus\":true},");
    atom_plan back;
    atom_err err;
    assert_int_equal(atom_plan_from_json(extra, &back, &err), -1);
    free(extra);
    assert_int_equal(atom_plan_from_json("[]", &back, &err), -1);
    assert_int_equal(atom_plan_from_json("not json", &back, &err), -1);
    assert_non_null(strstr(err.msg, "not valid JSON"));
    free(json);
    atom_plan_free(&plan);
}

/* 1,000 random edits of a good plan (each reads the spec too, slow under ASan's full unwinds): the reader must never crash, and whatever it accepts must still
 * keep every promise (checked here independently of the reader). */
static void test_mutated_plans(void **state)
{
    (void)state;
    atom_plan plan;
    make_plan(&plan);
    char *json = atom_plan_to_json(&plan);
    size_t len = strlen(json);
    static const char alphabet[] = "0123456789-\",:{}[]ntruefalsx ";
    uint64_t x = 0x1234567ull;
    int accepted = 0;
    for (int i = 0; i < 1000; i++) {
        char *bad = malloc(len + 1);
        memcpy(bad, json, len + 1);
        int edits = 1 + i % 3;
        for (int e = 0; e < edits; e++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(x >> 33) % len;
            bad[at] = alphabet[(x >> 17) % (sizeof alphabet - 1)];
        }
        atom_plan back;
        atom_err err = {{0}};
        if (atom_plan_from_json(bad, &back, &err) == 0) {
            accepted++;
            int T = back.spec.parallelism.tensor;
            assert_int_equal(back.world, T * back.spec.parallelism.data);
            for (int r = 0; r < back.world; r++) {
                const atom_rank_place *p = &back.ranks[r];
                assert_int_equal(p->rank, r);
                assert_int_equal(p->dp * T + p->tp, r);
                assert_in_range(p->node, 0, back.n_nodes - 1);
                assert_in_range(p->gpu, 0, back.nodes[p->node].gpus - 1);
                if (p->tp)
                    assert_int_equal(back.ranks[r - 1].node, p->node);
                for (int q = 0; q < r; q++)
                    assert_false(back.ranks[q].node == p->node && back.ranks[q].gpu == p->gpu);
            }
            atom_plan_free(&back);
        } else {
            assert_true(strlen(err.msg) > 0);
            assert_null(back.ranks);
        }
        free(bad);
    }
    /* some edits are harmless (a digit of the seed, a letter of a name): both outcomes occur */
    printf("mutated plans: %d of 1000 accepted\n", accepted);
    assert_true(accepted > 0 && accepted < 1000);
    free(json);
    atom_plan_free(&plan);
}

static void test_heartbeat_round_trip(void **state)
{
    (void)state;
    atom_heartbeat hb, back;
    memset(&hb, 0, sizeof hb); /* padding too, for the byte comparison below */
    snprintf(hb.job_id, sizeof hb.job_id, "j42");
    hb.attempt = 1;
    hb.rank = 0;
    snprintf(hb.host, sizeof hb.host, "gpu007");
    hb.pid = 4242;
    hb.step = 1200;
    hb.collectives[0] = 3601;
    hb.collectives[1] = 2400;
    hb.collectives[2] = 1201;
    hb.time = 1795442400.25;
    hb.has_progress = true;
    hb.loss = 3.2109876543;
    hb.tokens_per_s = 51234.5;
    hb.last_checkpoint_step = 1000;
    char *json = atom_heartbeat_to_json(&hb);
    atom_err err = {{0}};
    if (atom_heartbeat_from_json(json, &back, &err))
        fail_msg("%s", err.msg);
    assert_memory_equal(&hb, &back, sizeof hb);
    free(json);

    /* a diverged loss travels as null and comes back NaN */
    hb.loss = NAN;
    json = atom_heartbeat_to_json(&hb);
    assert_non_null(strstr(json, "\"loss\":null"));
    assert_int_equal(atom_heartbeat_from_json(json, &back, &err), 0);
    assert_true(isnan(back.loss));
    free(json);

    /* ranks other than 0 send no progress */
    hb.has_progress = false;
    hb.rank = 5;
    json = atom_heartbeat_to_json(&hb);
    assert_null(strstr(json, "loss"));
    assert_int_equal(atom_heartbeat_from_json(json, &back, &err), 0);
    assert_false(back.has_progress);
    assert_int_equal(back.rank, 5);
    assert_int_equal(back.last_checkpoint_step, -1);
    free(json);

    /* a restore that skipped checkpoints: count, step and reason travel; a control character
     * or a byte outside ASCII in the reason arrives as '?' (it reaches other users' terminals) */
    hb.ckpt_skipped = 2;
    hb.ckpt_skipped_step = 300;
    snprintf(hb.ckpt_skipped_why, sizeof hb.ckpt_skipped_why,
             "/c/ckpt-0000000300.h5: checksum mismatch\x1b[2J\xc3");
    json = atom_heartbeat_to_json(&hb);
    assert_non_null(json);
    assert_int_equal(atom_heartbeat_from_json(json, &back, &err), 0);
    assert_int_equal(back.ckpt_skipped, 2);
    assert_int_equal(back.ckpt_skipped_step, 300);
    assert_string_equal(back.ckpt_skipped_why, "/c/ckpt-0000000300.h5: checksum mismatch?[2J?");
    free(json);
}

static void test_heartbeat_rejected(void **state)
{
    (void)state;
    const char *good = "{\"type\":\"heartbeat\",\"job_id\":\"j\",\"attempt\":0,\"rank\":1,"
                       "\"host\":\"h\",\"pid\":7,\"step\":3,\"collectives\":[1,2,3],\"time\":5.5}";
    atom_heartbeat hb;
    atom_err err;
    assert_int_equal(atom_heartbeat_from_json(good, &hb, &err), 0);
    const struct {
        const char *from, *to, *words;
    } cases[] = {
        {"\"heartbeat\"", "\"hello\"", "type"},
        {"\"rank\":1", "\"rank\":-1", "'rank'"},
        {"\"step\":3", "\"step\":3.5", "'step'"},
        {"[1,2,3]", "[1,2]", "collectives"},
        {"[1,2,3]", "[1,-2,3]", "collectives[1]"},
        {"\"pid\":7,", "", "'pid'"},
        {"\"time\":5.5", "\"time\":\"now\"", "'time'"},
        {"\"time\":5.5", "\"time\":5.5,\"loss\":1.0", "come together"},
        {"\"host\":\"h\"", "\"host\":7", "'host'"},
        {"\"time\":5.5", "\"time\":5.5,\"ckpt_skipped\":1", "come together"},
        {"\"time\":5.5", "\"time\":5.5,\"ckpt_skipped\":0,\"ckpt_skipped_step\":3,"
                         "\"ckpt_skipped_why\":\"x\"", "'ckpt_skipped'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *bad = replace(good, cases[i].from, cases[i].to);
        if (atom_heartbeat_from_json(bad, &hb, &err) != -1)
            fail_msg("case %zu accepted: %s", i, bad);
        if (!strstr(err.msg, cases[i].words))
            fail_msg("case %zu: '%s' does not say '%s'", i, err.msg, cases[i].words);
        free(bad);
    }
    assert_int_equal(atom_heartbeat_from_json("{", &hb, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corrupt_plans_rejected),
        cmocka_unit_test(test_mutated_plans),
        cmocka_unit_test(test_heartbeat_round_trip),
        cmocka_unit_test(test_heartbeat_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
