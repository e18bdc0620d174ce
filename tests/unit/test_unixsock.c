/* Unit tests for unixsock: only a socket is removed to make room for a
 * listener, and the directory rule for unix-socket paths from
 * ZooKeeper. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "strata/unixsock.h"

/* A fresh directory per test, removed with what it holds. */
static int dir_setup(void **state)
{
    char *dir = strdup("/tmp/strata-test-unixsock-XXXXXX");
    if (dir == NULL || mkdtemp(dir) == NULL)
        return -1;
    *state = dir;
    return 0;
}

static int dir_teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", (char *)*state);
    int rc = system(cmd);
    free(*state);
    return rc == 0 ? 0 : -1;
}

static void in_dir(char *buf, size_t len, void **state, const char *name)
{
    snprintf(buf, len, "%s/%s", (const char *)*state, name);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void make_socket(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);   /* the file stays: a stale socket */
}

static void test_clear_nothing_there(void **state)
{
    char path[256], err[256];
    in_dir(path, sizeof(path), state, "none.sock");
    assert_int_equal(unixsock_clear(path, err, sizeof(err)), 0);
}

static void test_clear_stale_socket(void **state)
{
    char path[256], err[256];
    in_dir(path, sizeof(path), state, "stale.sock");
    make_socket(path);
    assert_int_equal(unixsock_clear(path, err, sizeof(err)), 0);
    assert_false(exists(path));
}

static void test_clear_refuses_others(void **state)
{
    char file[256], dir[256], link[256], fifo[256], err[512];
    in_dir(file, sizeof(file), state, "file");
    in_dir(dir, sizeof(dir), state, "dir");
    in_dir(link, sizeof(link), state, "link");
    in_dir(fifo, sizeof(fifo), state, "fifo");
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("keep me\n", f);
    fclose(f);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(symlink(file, link), 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    const char *paths[] = { file, dir, link, fifo };
    const char *kinds[] = { "a regular file", "a directory", "a symbolic link", "a fifo" };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(unixsock_clear(paths[i], err, sizeof(err)), -1);
        assert_non_null(strstr(err, kinds[i]));
        assert_non_null(strstr(err, "not a socket: refusing to replace it"));
        assert_true(exists(paths[i]));
        unixsock_remove(paths[i]);
        assert_true(exists(paths[i]));
    }
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_size, 8);
}

static void test_remove_socket_only(void **state)
{
    char path[256];
    in_dir(path, sizeof(path), state, "gone.sock");
    make_socket(path);
    unixsock_remove(path);
    assert_false(exists(path));
    unixsock_remove(path);   /* nothing there: nothing happens */
    unixsock_remove(NULL);
}

struct path_case {
    const char *path;
    const char *dir;
    const char *why;   /* NULL: allowed */
};

static const struct path_case path_cases[] = {
    { "/run/strata/a.sock", "/run/strata", NULL },
    { "/run/strata/a.sock", "/run/strata/", NULL },
    { "/run/strata/a.sock", "/run/strata//", NULL },
    { "/a.sock", "/", NULL },
    { "/run/strata/a.sock", NULL, "no unix_socket_dir is set" },
    { "/etc/passwd", "/run/strata", "is not in unix_socket_dir /run/strata" },
    { "/run/strata/sub/a.sock", "/run/strata", "is not in unix_socket_dir" },
    { "/run/strata.sock", "/run/strata", "is not in unix_socket_dir" },
    { "/run/strata/../../etc/passwd", "/run/strata", "'.' or '..'" },
    { "/run/strata/./a.sock", "/run/strata", "'.' or '..'" },
    { "/run/strata/..", "/run/strata", "'.' or '..'" },
    { "/run//strata/a.sock", "/run/strata", "empty path element" },
    { "run/strata/a.sock", "/run/strata", "not an absolute path" },
    { "/run/strata/", "/run/strata", "ends in '/'" },
    { "/run/strata/a.sock", "run/strata", "is not an absolute path" },
};

static void test_path_allowed(void **state)
{
    (void)state;
    char err[512];
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *c = &path_cases[i];
        int rc = unixsock_path_allowed(c->path, c->dir, err, sizeof(err));
        if (c->why == NULL && rc != 0)
            fail_msg("%s in %s refused: %s", c->path, c->dir, err);
        if (c->why != NULL && (rc != -1 || strstr(err, c->why) == NULL))
            fail_msg("%s in %s: rc %d, '%s' lacks '%s'", c->path,
                     c->dir != NULL ? c->dir : "(none)", rc, err, c->why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clear_nothing_there, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_clear_stale_socket, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_clear_refuses_others, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_remove_socket_only, dir_setup, dir_teardown),
        cmocka_unit_test(test_path_allowed),
    };
    return cmocka_run_group_tests_name("unixsock", tests, NULL, NULL);
}
