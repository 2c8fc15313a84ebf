/* tests/common/test_private_path.c: common/private_path.c, the folders and files that must be
 * the caller's alone (the socket folder, the state folder, atomctl run's atomd log).
 *
 * Runs as root (the tests' user): "another user" is uid 65534, made owner with chown. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"

#define OTHER_UID 65534

static char base[64];

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/atom-test-private-XXXXXX");
    return mkdtemp(base) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", base, name);
}

static void assert_has(const char *msg, const char *part)
{
    if (!strstr(msg, part))
        fail_msg("'%s' does not say '%s'", msg, part);
}

static int entries(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    return system(cmd) == 0 ? 0 : 1;
}

/* A folder another user created first (the /tmp/atom-UID attack): refused with a sentence
 * naming it and its owner; nothing is created inside. */
static void test_other_users_folder(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char dir[256];
    path_in(dir, sizeof dir, "atom-1000");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chown(dir, OTHER_UID, OTHER_UID), 0);
    atom_err err = {{0}};
    assert_int_equal(atom_private_dir(dir, 0700, &err), -1);
    assert_has(err.msg, dir);
    assert_has(err.msg, "uid 65534");
    assert_has(err.msg, "not to you");
    /* also when it is wide open, as a /tmp squatter would leave it */
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(atom_private_dir(dir, 0755, &err), -1);
    assert_has(err.msg, "uid 65534");
    assert_int_equal(entries(dir), 0);
}

/* A symlink to a folder (even one of ours) is not taken: lstat, not stat. */
static void test_symlink_refused(void **state)
{
    (void)state;
    char real[256], link[256];
    path_in(real, sizeof real, "real");
    path_in(link, sizeof link, "link");
    assert_int_equal(mkdir(real, 0700), 0);
    assert_int_equal(symlink(real, link), 0);
    atom_err err = {{0}};
    assert_int_equal(atom_private_dir(link, 0700, &err), -1);
    assert_has(err.msg, link);
    assert_has(err.msg, "symbolic link");
}

/* Fresh folders get the mode asked (and missing parents); an existing one of ours is taken
 * unless others may write it, and a 0700 one must give others nothing. */
static void test_modes(void **state)
{
    (void)state;
    char dir[256], loose[256], open_dir[256];
    path_in(dir, sizeof dir, "a/b/socket");
    atom_err err = {{0}};
    mode_t old = umask(0);
    assert_int_equal(atom_private_dir(dir, 0700, &err), 0);
    umask(old);
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(atom_private_dir(dir, 0700, &err), 0); /* again: it is ours */

    path_in(loose, sizeof loose, "loose");
    assert_int_equal(mkdir(loose, 0700), 0);
    assert_int_equal(chmod(loose, 0755), 0);
    assert_int_equal(atom_private_dir(loose, 0755, &err), 0);
    assert_int_equal(atom_private_dir(loose, 0700, &err), -1);
    assert_has(err.msg, "0755");
    assert_has(err.msg, "chmod go-rwx");

    path_in(open_dir, sizeof open_dir, "open");
    assert_int_equal(mkdir(open_dir, 0700), 0);
    assert_int_equal(chmod(open_dir, 01777), 0);
    assert_int_equal(atom_private_dir(open_dir, 0755, &err), -1);
    assert_has(err.msg, "writable");
}

/* A file planted where atom opens one: a symlink (the victim's ~/.bashrc), a FIFO (would block),
 * another user's file. Refused; the link's target is unchanged. */
static void test_private_open(void **state)
{
    (void)state;
    char victim[256], link[256], fifo[256], theirs[256], mine[256];
    path_in(victim, sizeof victim, "bashrc");
    path_in(link, sizeof link, "atomd.sock.atomd.log");
    path_in(fifo, sizeof fifo, "fifo");
    path_in(theirs, sizeof theirs, "theirs");
    path_in(mine, sizeof mine, "mine");
    FILE *f = fopen(victim, "w");
    fputs("export PATH\n", f);
    fclose(f);
    assert_int_equal(symlink(victim, link), 0);
    atom_err err = {{0}};
    assert_int_equal(atom_private_open(link, O_WRONLY | O_CREAT | O_APPEND, 0600, &err), -1);
    assert_has(err.msg, "symbolic link");
    struct stat st;
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_size, strlen("export PATH\n"));

    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(atom_private_open(fifo, O_WRONLY | O_CREAT | O_APPEND, 0600, &err), -1);
    assert_has(err.msg, "not a regular file");
    if (geteuid() == 0) {
        int fd = open(theirs, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(chown(theirs, OTHER_UID, OTHER_UID), 0);
        assert_int_equal(atom_private_open(theirs, O_WRONLY | O_APPEND, 0600, &err), -1);
        assert_has(err.msg, "uid 65534");
    }
    int fd = atom_private_open(mine, O_WRONLY | O_CREAT | O_APPEND, 0600, &err);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
}

/* The state folder: XDG_STATE_HOME, else HOME, else the account's home; never /tmp. */
static void test_state_dir(void **state)
{
    (void)state;
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char *xdg = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;
    char out[1024];
    atom_err err = {{0}};
    setenv("XDG_STATE_HOME", "/x/state", 1);
    assert_int_equal(atom_user_state_dir(out, sizeof out, &err), 0);
    assert_string_equal(out, "/x/state/atom");
    unsetenv("XDG_STATE_HOME");
    setenv("HOME", "/home/alice", 1);
    assert_int_equal(atom_user_state_dir(out, sizeof out, &err), 0);
    assert_string_equal(out, "/home/alice/.local/state/atom");
    unsetenv("HOME");
    char want[1024];
    assert_int_equal(atom_user_home(want, sizeof want, &err), 0);
    assert_true(want[0] == '/' && strncmp(want, "/tmp", 4) != 0);
    assert_int_equal(atom_user_state_dir(out, sizeof out, &err), 0);
    assert_true(strncmp(out, want, strlen(want)) == 0);
    if (home)
        setenv("HOME", home, 1);
    if (xdg)
        setenv("XDG_STATE_HOME", xdg, 1);
    free(home);
    free(xdg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_other_users_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_private_open, setup, teardown),
        cmocka_unit_test(test_state_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
