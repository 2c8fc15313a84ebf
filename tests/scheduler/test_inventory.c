/* tests/scheduler/test_inventory.c: the cluster inventory reader: host ranges expand, the shipped
 * inventories load, and each kind of mistake is reported at its file:line:column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"

static const char *source_dir(void)
{
    const char *d = getenv("ATOM_SOURCE_DIR");
    return d ? d : ".";
}

static int parse(const char *text, atom_inventory *inv, atom_diags *diags)
{
    return atom_inventory_parse(text, strlen(text), "inv.yaml", inv, diags);
}

static void test_ranges_expand(void **state)
{
    (void)state;
    const char *text =
        "name: lab\n"
        "switches: [leaf01, leaf02]\n"
        "nodes:\n"
        "  - {name: gpu001, switch: leaf01, gpus: 8, addr: gpu001-ib}\n"
        "  - {name: \"gpu[002-004]\", switch: leaf01, gpus: 8}\n"
        "  - {name: \"gpu[9-10,012]\", switch: leaf02, gpus: 4}\n"
        "  - name: cpu01\n"
        "    switch: leaf02\n"
        "    gpus: 16\n"
        "    has_gpus: false\n";
    atom_inventory inv;
    atom_diags diags = {0};
    assert_int_equal(parse(text, &inv, &diags), 0);
    assert_int_equal(diags.count, 0);
    assert_string_equal(inv.name, "lab");
    assert_int_equal(inv.n_switches, 2);
    assert_int_equal(inv.n_nodes, 8);
    const char *names[] = {"gpu001", "gpu002", "gpu003", "gpu004", "gpu9", "gpu10", "gpu012",
                           "cpu01"};
    for (int i = 0; i < 8; i++)
        assert_string_equal(inv.nodes[i].name, names[i]);
    assert_string_equal(inv.nodes[0].addr, "gpu001-ib");
    assert_string_equal(inv.nodes[1].addr, "");
    assert_int_equal(inv.nodes[3].switch_id, 0);
    assert_int_equal(inv.nodes[4].switch_id, 1);
    assert_int_equal(inv.nodes[4].gpus, 4);
    assert_true(inv.nodes[0].has_gpus);
    assert_false(inv.nodes[7].has_gpus);
    assert_int_equal(inv.nodes[7].gpus, 16);
    atom_inventory_free(&inv);
}

static void test_shipped_inventories(void **state)
{
    (void)state;
    char path[1024];
    atom_inventory inv;
    atom_diags diags = {0};
    snprintf(path, sizeof path, "%s/configs/clusters/cluster-10k.yaml", source_dir());
    assert_int_equal(atom_inventory_load(path, &inv, &diags), 0);
    assert_int_equal(inv.n_nodes, 1250);
    assert_int_equal(inv.n_switches, 40);
    long gpus = 0;
    int per_switch[40] = {0};
    for (int i = 0; i < inv.n_nodes; i++) {
        gpus += inv.nodes[i].gpus;
        per_switch[inv.nodes[i].switch_id]++;
    }
    assert_int_equal(gpus, 10000);
    for (int s = 0; s < 40; s++)
        assert_in_range(per_switch[s], 31, 32);
    assert_string_equal(inv.nodes[0].name, "gpu0001");
    assert_string_equal(inv.nodes[1249].name, "gpu1250");
    atom_inventory_free(&inv);

    snprintf(path, sizeof path, "%s/configs/clusters/lab-cluster.yaml", source_dir());
    assert_int_equal(atom_inventory_load(path, &inv, &diags), 0);
    assert_int_equal(inv.n_nodes, 16);
    atom_inventory_free(&inv);
    assert_int_equal(diags.count, 0);
}

/* One mistake per case: where it must be reported and a word the message must contain. */
typedef struct bad_case {
    const char *text;
    int line, column;
    const char *key, *words;
} bad_case;

static void test_errors_have_positions(void **state)
{
    (void)state;
    const char *head = "name: c\nswitches: [a, b]\nnodes:\n";
    const bad_case cases[] = {
        {"  - {name: n1, switch: zz, gpus: 8}\n", 4, 24, "nodes[0].switch", "not in the switches"},
        {"  - {name: n1, switch: a, gpus: eight}\n", 4, 33, "nodes[0].gpus", "whole number"},
        {"  - {name: n1, switch: a, gpus: 0}\n", 4, 33, "nodes[0].gpus", "whole number"},
        {"  - {name: \"n[5-2]\", switch: a, gpus: 8}\n", 4, 12, "nodes[0].name", "backwards"},
        {"  - {name: \"n[1-x]\", switch: a, gpus: 8}\n", 4, 12, "nodes[0].name", "not a number"},
        {"  - {name: \"n[1-2\", switch: a, gpus: 8}\n", 4, 12, "nodes[0].name", "without"},
        {"  - {name: n1, switch: a}\n", 4, 5, "nodes[0]", "missing 'gpus'"},
        {"  - {name: n1, switch: a, gpus: 8, color: red}\n", 4, 36, "nodes[0].color",
         "unknown key"},
        {"  - {name: n1, switch: a, gpus: 8}\n  - {name: \"n[0-2]\", switch: b, gpus: 8}\n", 5, 12,
         "nodes", "listed twice"},
        {"  - {name: \"n[1-2]\", switch: a, gpus: 8, addr: h}\n", 4, 48, "nodes[0]",
         "range of nodes"},
        {"  - {name: n1, switch: a, gpus: 8\n", 5, 1, "", "YAML"},
        {"  - {name: n1, switch: a, gpus: 8, has_gpus: maybe}\n", 4, 46, "nodes[0].has_gpus",
         "true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "%s%s", head, cases[i].text);
        atom_inventory inv;
        atom_diags diags = {0};
        int rc = parse(text, &inv, &diags);
        if (rc != -1 || diags.count < 1)
            fail_msg("case %zu was accepted:\n%s", i, text);
        const atom_diag *d = &diags.items[0];
        if (d->line != cases[i].line || d->column != cases[i].column ||
            strcmp(d->key, cases[i].key) || !strstr(d->msg, cases[i].words))
            fail_msg("case %zu: got %s:%d:%d: %s: %s; expected line %d column %d key %s with "
                     "'%s'", i, d->file, d->line, d->column, d->key, d->msg, cases[i].line,
                     cases[i].column, cases[i].key, cases[i].words);
        assert_string_equal(d->file, "inv.yaml");
        assert_null(inv.nodes); /* nothing half-built is handed back */
        atom_diags_free(&diags);
    }
}

static void test_every_error_reported(void **state)
{
    (void)state;
    const char *text =
        "name: c\n"
        "switches: [a, a]\n"
        "nodes:\n"
        "  - {name: n1, switch: b, gpus: 8}\n"
        "  - {name: n2, switch: a, gpus: -1}\n";
    atom_inventory inv;
    atom_diags diags = {0};
    assert_int_equal(parse(text, &inv, &diags), -1);
    assert_int_equal(diags.count, 3); /* duplicate switch, unknown switch, bad gpus */
    assert_int_equal(diags.items[0].line, 2);
    assert_int_equal(diags.items[1].line, 4);
    assert_int_equal(diags.items[2].line, 5);
    atom_diags_free(&diags);

    assert_int_equal(parse("", &inv, &diags), -1);
    assert_true(diags.count >= 1);
    atom_diags_free(&diags);
    assert_int_equal(parse("[1, 2]", &inv, &diags), -1);
    atom_diags_free(&diags);
    assert_int_equal(atom_inventory_load("/nonexistent/inv.yaml", &inv, &diags), -1);
    assert_int_equal(diags.count, 1);
    assert_string_equal(diags.items[0].file, "/nonexistent/inv.yaml");
    atom_diags_free(&diags);
}

/* Random edits of a good inventory: never a crash; an accepted one is consistent, a refused one
 * says where. */
static void test_mutated_inventories(void **state)
{
    (void)state;
    const char *good =
        "name: lab\n"
        "switches: [leaf01, leaf02]\n"
        "nodes:\n"
        "  - {name: gpu001, switch: leaf01, gpus: 8, addr: gpu001-ib}\n"
        "  - {name: \"gpu[002-004]\", switch: leaf01, gpus: 8}\n"
        "  - {name: \"gpu[9-10,012]\", switch: leaf02, gpus: 4}\n";
    size_t len = strlen(good);
    static const char alphabet[] = "0123456789-[],:{}\"' \n#&*!|>abz";
    uint64_t x = 0xabcdefull;
    int accepted = 0;
    for (int i = 0; i < 3000; i++) {
        char text[512];
        memcpy(text, good, len + 1);
        for (int e = 0; e < 1 + i % 3; e++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            text[(x >> 33) % len] = alphabet[(x >> 17) % (sizeof alphabet - 1)];
        }
        atom_inventory inv;
        atom_diags diags = {0};
        if (parse(text, &inv, &diags) == 0) {
            accepted++;
            assert_int_equal(diags.count, 0);
            assert_true(inv.n_nodes > 0);
            for (int n = 0; n < inv.n_nodes; n++) {
                assert_in_range(inv.nodes[n].switch_id, 0, inv.n_switches - 1);
                assert_in_range(inv.nodes[n].gpus, 1, 1024);
                assert_true(inv.nodes[n].name[0] != '\0');
                for (int m = 0; m < n; m++)
                    assert_true(strcmp(inv.nodes[m].name, inv.nodes[n].name) != 0);
            }
            atom_inventory_free(&inv);
        } else {
            assert_true(diags.count > 0);
            assert_null(inv.nodes);
            for (int d = 0; d < diags.count; d++)
                assert_string_equal(diags.items[d].file, "inv.yaml");
        }
        atom_diags_free(&diags);
    }
    printf("mutated inventories: %d of 3000 accepted\n", accepted);
    assert_true(accepted > 0 && accepted < 3000);
}

static void test_local(void **state)
{
    (void)state;
    atom_inventory inv;
    atom_inventory_local(&inv, 0);
    assert_int_equal(inv.n_nodes, 1);
    assert_int_equal(inv.n_switches, 1);
    assert_true(inv.nodes[0].gpus >= 4);
    assert_false(inv.nodes[0].has_gpus);
    assert_string_equal(inv.nodes[0].addr, "localhost");
    atom_inventory_free(&inv);
    atom_inventory_local(&inv, 6);
    assert_int_equal(inv.nodes[0].gpus, 6);
    atom_inventory_free(&inv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_expand),
        cmocka_unit_test(test_shipped_inventories),
        cmocka_unit_test(test_errors_have_positions),
        cmocka_unit_test(test_every_error_reported),
        cmocka_unit_test(test_mutated_inventories),
        cmocka_unit_test(test_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
