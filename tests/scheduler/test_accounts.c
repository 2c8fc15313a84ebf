/* tests/scheduler/test_accounts.c: atomd's kept account look-ups (scheduler/accounts.h) answer
 * what the password and group databases say: names, numbers for unknown uids, membership of a
 * primary and of a supplementary group, and the same again from what was kept. */
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler/accounts.h"

static void names(void **state)
{
    (void)state;
    assert_string_equal(atomd_account_name(0), "root");
    struct passwd *nobody = getpwuid(65534);
    if (nobody)
        assert_string_equal(atomd_account_name(65534), nobody->pw_name);
    /* a uid with no account is shown as its number, and kept apart from its slot's neighbours */
    assert_string_equal(atomd_account_name(4000000001u), "4000000001");
    assert_string_equal(atomd_account_name(0), "root");
    assert_string_equal(atomd_account_name(1024), getpwuid(1024) ? getpwuid(1024)->pw_name : "1024");
    assert_string_equal(atomd_account_name(0), "root");
}

static void groups(void **state)
{
    (void)state;
    struct group *root = getgrgid(0);
    assert_non_null(root);
    assert_true(atomd_account_in_group(0, root->gr_name));   /* primary group */
    assert_true(atomd_account_in_group(0, root->gr_name));   /* kept */
    assert_false(atomd_account_in_group(65534, root->gr_name));
    assert_false(atomd_account_in_group(0, "no-such-group-here"));
    /* the kept answer is per group: asking another group asks again */
    assert_true(atomd_account_in_group(0, root->gr_name));
    assert_false(atomd_account_in_group(4000000001u, root->gr_name));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(names), cmocka_unit_test(groups)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
