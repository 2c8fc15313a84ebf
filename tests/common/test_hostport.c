/* tests/common/test_hostport.c: atom_hostport_parse, the HOST:PORT of atomd's tcp_listen, of
 * atomctl's --server and ATOM_SERVER and of the plan's heartbeat_tcp: what it accepts, and for
 * what it refuses, an error that names the mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"

static void test_good(void **state)
{
    (void)state;
    static const struct { const char *text, *host; int port; } good[] = {
        {"0.0.0.0:6830", "0.0.0.0", 6830},
        {"127.0.0.1:1", "127.0.0.1", 1},
        {"login1.cluster.example:65535", "login1.cluster.example", 65535},
        {"localhost:6830", "localhost", 6830},
        {"[::1]:6830", "::1", 6830},
        {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char host[64] = "";
        int port = 0;
        atom_err err = {{0}};
        if (atom_hostport_parse(good[i].text, host, sizeof host, &port, &err) != 0)
            fail_msg("'%s' refused: %s", good[i].text, err.msg);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
    }
}

static void test_bad(void **state)
{
    (void)state;
    static const struct { const char *text, *says; } bad[] = {
        {"", "is not HOST:PORT"},
        {"localhost", "is not HOST:PORT"},
        {"::1:6830", "is not HOST:PORT"},          /* IPv6 needs brackets */
        {"[::1]6830", "is not HOST:PORT"},
        {"[::1", "is not HOST:PORT"},
        {":6830", "names no host"},
        {"[]:6830", "names no host"},
        {"host:", "port must be a number"},
        {"host:0", "port must be a number"},
        {"host:65536", "port must be a number"},
        {"host:-1", "port must be a number"},
        {"host:68x", "port must be a number"},
        {"host:99999999999999999999", "port must be a number"},
        {"/run/atom/atomd.sock:1", "may not contain '/'"},
        {"a host:1", "may not contain ' '"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char host[64] = "unchanged";
        int port = 7;
        atom_err err = {{0}};
        if (atom_hostport_parse(bad[i].text, host, sizeof host, &port, &err) != -1)
            fail_msg("'%s' accepted as %s port %d", bad[i].text, host, port);
        if (!strstr(err.msg, bad[i].says) || !strstr(err.msg, bad[i].text))
            fail_msg("'%s': the error should say '%s' and quote it: %s", bad[i].text, bad[i].says, err.msg);
        assert_string_equal(host, "unchanged");
        assert_int_equal(port, 7);
    }
}

static void test_host_too_long(void **state)
{
    (void)state;
    char host[8];
    int port = 0;
    atom_err err = {{0}};
    assert_int_equal(atom_hostport_parse("a-long-host:6830", host, sizeof host, &port, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 7 characters"));
    assert_int_equal(atom_hostport_parse("shorter:6830", host, sizeof host, &port, &err), 0);
    assert_string_equal(host, "shorter");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_host_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
