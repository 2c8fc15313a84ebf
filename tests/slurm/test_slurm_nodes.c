/* tests/slurm/test_slurm_nodes.c: atomd's view of a Slurm cluster from `sinfo --json`
 * (scheduler/launch_slurm.c): GPUs from every gres spelling Slurm uses, the GPUs in use, CPU slots
 * on GPU-less nodes, drained / down / unresponsive nodes left out, nodes listed once per partition
 * counted once, and malformed output refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/launch.h"

static void test_nodes(void **state)
{
    (void)state;
    const char *json =
        "{\"nodes\": ["
        " {\"name\": \"n1\", \"state\": \"idle\", \"state_flags\": [], \"gres\": \"gpu:8\","
        "  \"gres_used\": \"gpu:0\", \"cpus\": 16, \"alloc_cpus\": 0},"
        " {\"name\": \"n2\", \"state\": \"mixed\", \"state_flags\": [],"
        "  \"gres\": \"gpu:h100:8(S:0-1),nic:2\", \"gres_used\": \"gpu:h100:3(IDX:0-2),nic:0\","
        "  \"cpus\": 64, \"alloc_cpus\": 12},"
        " {\"name\": \"n3\", \"state\": \"idle\", \"state_flags\": [\"DRAIN\"], \"gres\": \"gpu:8\"},"
        " {\"name\": \"n4\", \"state\": \"down\", \"state_flags\": [], \"gres\": \"gpu:8\"},"
        " {\"name\": \"n5\", \"state\": [\"IDLE\", \"NOT_RESPONDING\"], \"gres\": \"gpu:8\"},"
        " {\"name\": \"cpu1\", \"state\": [\"ALLOCATED\"], \"gres\": \"\", \"cpus\": 32,"
        "  \"alloc_cpus\": 30},"
        " {\"name\": \"n1\", \"state\": \"idle\", \"state_flags\": [], \"gres\": \"gpu:8\"}"
        "]}";
    atom_inventory inv;
    int *free_gpus = NULL;
    atom_err err = {{0}};
    if (atom_slurm_nodes_from_json(json, &inv, &free_gpus, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(inv.n_nodes, 3);
    assert_string_equal(inv.nodes[0].name, "n1");
    assert_int_equal(inv.nodes[0].gpus, 8);
    assert_true(inv.nodes[0].has_gpus);
    assert_int_equal(free_gpus[0], 8);
    assert_string_equal(inv.nodes[1].name, "n2");
    assert_int_equal(inv.nodes[1].gpus, 8);
    assert_int_equal(free_gpus[1], 5);
    assert_string_equal(inv.nodes[2].name, "cpu1");
    assert_false(inv.nodes[2].has_gpus);
    assert_int_equal(inv.nodes[2].gpus, 32);
    assert_int_equal(free_gpus[2], 2);
    assert_int_equal(inv.n_switches, 1);
    free(free_gpus);
    atom_inventory_free(&inv);
}

static void test_bad_output(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "not json", "{\"jobs\": []}", "{\"nodes\": 3}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        atom_inventory inv;
        int *free_gpus = NULL;
        atom_err err = {{0}};
        if (atom_slurm_nodes_from_json(bad[i], &inv, &free_gpus, &err) == 0)
            fail_msg("'%s' was taken for sinfo output", bad[i]);
        assert_null(free_gpus);
        assert_true(strstr(err.msg, "sinfo --json") != NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_nodes), cmocka_unit_test(test_bad_output)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
