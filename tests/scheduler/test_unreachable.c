/* tests/scheduler/test_unreachable.c: how atomd tells a node mpirun could not reach (down) from a
 * program that ran there and failed (drained), on real mpirun output from this machine: a
 * 127.0.0.x address with no ssh server, a name that resolves nowhere, and a program that exits 1
 * on a node that is reached. Also which node of an attempt the message names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/health.h"

/* mpirun's output (stdout and stderr) for one process on host running argv0; fixed strings only. */
static char *mpirun_output(const char *host, const char *program, int *status)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mpirun -np 1 --host %s %s 2>&1", host, program);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0, n;
    char *text = calloc(cap + 1, 1);
    assert_non_null(text);
    while (len < cap && (n = fread(text + len, 1, cap - len, p)) > 0)
        len += n;
    *status = pclose(p);
    return text;
}

static atom_node node_at(const char *addr)
{
    atom_node node;
    memset(&node, 0, sizeof node);
    snprintf(node.name, sizeof node.name, "n");
    snprintf(node.addr, sizeof node.addr, "%s", addr);
    return node;
}

static void no_ssh_server(void **state)
{
    (void)state;
    int status;
    char *text = mpirun_output("127.0.0.2", "true", &status);
    assert_int_not_equal(status, 0);
    assert_true(atomd_mpirun_unreachable(text));
    atom_node here = node_at("127.0.0.2"), other = node_at("127.0.0.20"), prefix = node_at("127.0.0");
    assert_true(atomd_node_named_in(&here, text));
    assert_false(atomd_node_named_in(&other, text));
    assert_false(atomd_node_named_in(&prefix, text));
    char why[140];
    atomd_mpirun_unreachable_why(text, why, sizeof why);
    assert_non_null(strstr(why, "ssh: connect to host 127.0.0.2 port 22"));
    free(text);
}

static void name_resolves_nowhere(void **state)
{
    (void)state;
    int status;
    char *text = mpirun_output("node-unreachable.invalid", "true", &status);
    assert_int_not_equal(status, 0);
    assert_true(atomd_mpirun_unreachable(text));
    /* Open MPI hands ssh the name without its domain: both forms name the node. */
    atom_node full = node_at("node-unreachable.invalid"), shorter = node_at("node"),
              longer = node_at("node-unreachable2.invalid");
    assert_true(atomd_node_named_in(&full, text));
    assert_false(atomd_node_named_in(&shorter, text));
    assert_false(atomd_node_named_in(&longer, text));
    char why[140];
    atomd_mpirun_unreachable_why(text, why, sizeof why);
    assert_non_null(strstr(why, "Could not resolve hostname node-unreachable"));
    free(text);
}

static void program_fails_where_reached(void **state)
{
    (void)state;
    int status;
    char *text = mpirun_output("localhost", "false", &status);
    assert_int_not_equal(status, 0);
    assert_false(atomd_mpirun_unreachable(text));
    free(text);
    assert_false(atomd_mpirun_unreachable(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_ssh_server),
        cmocka_unit_test(name_resolves_nowhere),
        cmocka_unit_test(program_fails_where_reached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
