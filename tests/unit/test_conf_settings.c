/* Unit tests for conf_settings: defaults, every key, partial files, and
 * every error message with its file, line and key. Fixture files are
 * written into a mkdtemp directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata/conf.h"

#ifndef SRCDIR
#define SRCDIR "."
#endif

/* Per-test state: a temporary directory with one settings file, and the
 * settings under test (deinit in teardown). */
struct fx {
    const void     *param;      /* the table row, for table-driven tests */
    char            dir[64];
    char            path[PATH_MAX];
    char            err[1024];
    struct settings s;
};

static int fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->param = *state;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/strata-settings-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/strata.cfg", fx->dir);
    settings_init(&fx->s);
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    unlink(fx->path);
    rmdir(fx->dir);
    settings_deinit(&fx->s);
    free(fx);
    return 0;
}

static void fx_write(struct fx *fx, const char *text)
{
    FILE *fp = fopen(fx->path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

static void fx_load(struct fx *fx, const char *text)
{
    fx_write(fx, text);
    fx->err[0] = '\0';
    if (settings_load(&fx->s, fx->path, fx->err, sizeof(fx->err)) != 0) {
        fail_msg("load failed: %s", fx->err);
    }
}

static void assert_defaults(const struct settings *s)
{
    assert_null(s->conf_file);      /* settings_conf_file_default picks it */
    assert_int_equal(s->workers, 0);
    assert_false(s->daemonize);
    assert_int_equal(s->log_level, 5);
    assert_null(s->log_file);
    assert_null(s->pid_file);
    assert_null(s->user);
    assert_string_equal(s->stats_addr, "0.0.0.0");
    assert_int_equal(s->stats_port, 22222);
    assert_int_equal(s->stats_interval_ms, 30000);
    assert_int_equal(s->mbuf_size, 16384);
    assert_int_equal(s->max_value_size, 1024 * 1024);
    assert_int_equal(s->max_line_size, 256 * 1024);
    assert_int_equal(s->client_max_pending, 4 * 1024 * 1024);
    assert_int_equal(s->async_queue_limit, 10000);
    assert_int_equal(s->max_reply_size, 64 * 1024 * 1024);
    assert_int_equal(s->max_memory, 0);   /* main: a quarter of the RAM */
    assert_int_equal(s->client_request_timeout_ms, 30000);
    assert_int_equal(s->max_clients, 0);  /* main: from RLIMIT_NOFILE */
    assert_null(s->zk_cache_file);        /* derived from the stats port */
    assert_int_equal(s->zk_session_timeout_ms, 10000);
    assert_true(s->zk_register);
    assert_null(s->zk_auth_file);
    assert_null(s->zk_acl);
    assert_null(s->unix_socket_dir);
    assert_null(s->metrics_listen);       /* off */
    assert_int_equal(s->fence_replies, SETTINGS_FENCE_OFF);
    assert_true(s->redis_fence_replies);
    assert_int_equal(s->dns_refresh_interval_ms, 30000);
}

static void test_defaults(void **state)
{
    struct fx *fx = *state;
    assert_defaults(&fx->s);
}

static void test_empty_file(void **state)
{
    struct fx *fx = *state;
    fx_load(fx, "# nothing set\n");
    assert_defaults(&fx->s);
}

static void test_every_key(void **state)
{
    struct fx *fx = *state;
    fx_load(fx,
        "workers = 8;\n"
        "pool_file = \"/etc/strata/pools.yml\";\n"
        "daemonize = true;\n"
        "log_level = 7;\n"
        "log_file = \"/var/log/strata.log\";\n"
        "pid_file = \"/run/strata.pid\";\n"
        "user = \"nobody\";\n"
        "stats_addr = \"127.0.0.1\";\n"
        "stats_port = 22223;\n"
        "stats_interval = 10000;\n"
        "mbuf_size = 512;\n"
        "max_value_size = 2097152;\n"
        "max_line_size = 1024;\n"
        "client_max_pending = 8589934592L;\n"
        "async_queue_limit = 500;\n"
        "max_reply_size = 1048576;\n"
        "max_memory = 2147483648L;\n"
        "client_request_timeout = 0;\n"
        "max_clients = 100;\n"
        "zk_cache_file = \"/var/cache/strata/pools.yml\";\n"
        "zk_session_timeout = 4000;\n"
        "zk_register = false;\n"
        "zk_auth_file = \"/etc/strata/zk.auth\";\n"
        "zk_acl = \"auth::cdrwa,world:anyone:r\";\n"
        "unix_socket_dir = \"/run/strata\";\n"
        "fence_replies = true;\n"
        "redis_fence_replies = false;\n"
        "metrics_listen = \"127.0.0.1:9187\";\n");
    const struct settings *s = &fx->s;
    assert_int_equal(s->workers, 8);
    assert_string_equal(s->conf_file, "/etc/strata/pools.yml");
    assert_true(s->daemonize);
    assert_int_equal(s->log_level, 7);
    assert_string_equal(s->log_file, "/var/log/strata.log");
    assert_string_equal(s->pid_file, "/run/strata.pid");
    assert_string_equal(s->user, "nobody");
    assert_string_equal(s->stats_addr, "127.0.0.1");
    assert_int_equal(s->stats_port, 22223);
    assert_int_equal(s->stats_interval_ms, 10000);
    assert_int_equal(s->mbuf_size, 512);
    assert_int_equal(s->max_value_size, 2097152);
    assert_int_equal(s->max_line_size, 1024);
    assert_int_equal(s->client_max_pending, 8589934592ULL);
    assert_int_equal(s->async_queue_limit, 500);
    assert_int_equal(s->max_reply_size, 1048576);
    assert_int_equal(s->max_memory, 2147483648ULL);
    assert_int_equal(s->client_request_timeout_ms, 0);
    assert_int_equal(s->max_clients, 100);
    assert_string_equal(s->zk_cache_file, "/var/cache/strata/pools.yml");
    assert_int_equal(s->zk_session_timeout_ms, 4000);
    assert_false(s->zk_register);
    assert_string_equal(s->zk_auth_file, "/etc/strata/zk.auth");
    assert_string_equal(s->zk_acl, "auth::cdrwa,world:anyone:r");
    assert_string_equal(s->unix_socket_dir, "/run/strata");
    assert_int_equal(s->fence_replies, SETTINGS_FENCE_BATCH);   /* true: per batch */
    assert_false(s->redis_fence_replies);
    assert_string_equal(s->metrics_listen, "127.0.0.1:9187");
}

/* fence_replies: false, true (per batch) or the name of a form. */
static void test_fence_replies_forms(void **state)
{
    struct fx *fx = *state;
    static const struct { const char *text; int want; } forms[] = {
        { "fence_replies = false;\n", SETTINGS_FENCE_OFF },
        { "fence_replies = true;\n", SETTINGS_FENCE_BATCH },
        { "fence_replies = \"off\";\n", SETTINGS_FENCE_OFF },
        { "fence_replies = \"batch\";\n", SETTINGS_FENCE_BATCH },
        { "fence_replies = \"request\";\n", SETTINGS_FENCE_REQUEST },
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        fx_load(fx, forms[i].text);
        assert_int_equal(fx->s.fence_replies, forms[i].want);
    }
}

/* The cache file: the setting, else one file per stats port. */
static void test_zk_cache_file(void **state)
{
    struct fx *fx = *state;
    char path[256];
    settings_zk_cache_file(&fx->s, path, sizeof(path));
    assert_string_equal(path, "/var/lib/strata/zk-22222.yml");
    fx->s.stats_port = 22223;
    settings_zk_cache_file(&fx->s, path, sizeof(path));
    assert_string_equal(path, "/var/lib/strata/zk-22223.yml");
    fx_load(fx, "zk_cache_file = \"/tmp/c.yml\";\n");
    settings_zk_cache_file(&fx->s, path, sizeof(path));
    assert_string_equal(path, "/tmp/c.yml");
}

/* Only keys present override; a second file applies over the first. */
static void test_partial_override(void **state)
{
    struct fx *fx = *state;
    fx_load(fx, "workers = 2;\nlog_file = \"/tmp/a.log\";\n");
    fx_load(fx, "log_level = 9\nlog_file = \"/tmp/b.log\"\n");
    assert_int_equal(fx->s.workers, 2);
    assert_int_equal(fx->s.log_level, 9);
    assert_string_equal(fx->s.log_file, "/tmp/b.log");
    assert_null(fx->s.conf_file);
    assert_int_equal(fx->s.stats_port, 22222);
}

/* On error nothing changes, even keys before the bad one. */
static void test_error_keeps_settings(void **state)
{
    struct fx *fx = *state;
    fx_write(fx, "workers = 3;\npool_file = \"x.yml\";\nbogus = 1;\n");
    assert_int_equal(settings_load(&fx->s, fx->path, fx->err, sizeof(fx->err)), -1);
    assert_defaults(&fx->s);
}

static void test_bounds_accepted(void **state)
{
    struct fx *fx = *state;
    fx_load(fx, "workers = 1024; log_level = 0; stats_port = 1; mbuf_size = 16777216;\n"
                "max_value_size = 1; async_queue_limit = 1; stats_interval = 1;\n");
    assert_int_equal(fx->s.workers, 1024);
    assert_int_equal(fx->s.log_level, 0);
    assert_int_equal(fx->s.stats_port, 1);
    assert_int_equal(fx->s.mbuf_size, 16777216);
    fx_load(fx, "log_level = 11; stats_port = 65535;\n");
    assert_int_equal(fx->s.log_level, 11);
    assert_int_equal(fx->s.stats_port, 65535);
    fx_load(fx, "dns_refresh_interval = 0;\n");           /* off */
    assert_int_equal(fx->s.dns_refresh_interval_ms, 0);
    fx_load(fx, "dns_refresh_interval = 86400000;\n");    /* a day */
    assert_int_equal(fx->s.dns_refresh_interval_ms, 86400000);
}

static void test_example(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(settings_load(&fx->s, SRCDIR "/conf/strata.cfg", fx->err,
                                   sizeof(fx->err)), 0);
    assert_defaults(&fx->s);
}

static void test_missing_file(void **state)
{
    struct fx *fx = *state;
    char want[PATH_MAX + 64];
    assert_int_equal(settings_load(&fx->s, fx->path, fx->err, sizeof(fx->err)), -1);
    snprintf(want, sizeof(want), "%s:0: cannot open the settings file: ", fx->path);
    assert_memory_equal(fx->err, want, strlen(want));
    assert_defaults(&fx->s);
}

static void test_no_err_buffer(void **state)
{
    struct fx *fx = *state;
    fx_write(fx, "workers = \"x\";\n");
    assert_int_equal(settings_load(&fx->s, fx->path, NULL, 0), -1);
}

static void test_deinit_twice(void **state)
{
    struct fx *fx = *state;
    settings_deinit(&fx->s);
    settings_deinit(&fx->s);
    assert_null(fx->s.conf_file);
    assert_null(fx->s.stats_addr);
}

/* No pool file given: the first default candidate that exists; run from
 * a directory holding conf/nutcracker.yml, so that at least the last
 * (twemproxy's relative default) does. */
static void test_conf_file_default(void **state)
{
    struct fx *fx = *state;
    static const char *const candidates[] = SETTINGS_DEFAULT_CONF_FILES;
    char cwd[PATH_MAX], sub[sizeof(fx->dir) + 8];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(sub, sizeof(sub), "%s/conf", fx->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(fx->path, sizeof(fx->path), "%s/nutcracker.yml", sub);
    fx_write(fx, "alpha:\n");
    assert_int_equal(chdir(fx->dir), 0);
    const char *want = candidates[2];
    for (int i = 1; i >= 0; i--)
        if (access(candidates[i], F_OK) == 0)
            want = candidates[i];
    settings_conf_file_default(&fx->s, false);
    assert_string_equal(fx->s.conf_file, want);
    /* as nutcracker: Debian's nutcracker's file before Strata's */
    free(fx->s.conf_file);
    fx->s.conf_file = NULL;
    if (access(candidates[1], F_OK) == 0)
        want = candidates[1];
    settings_conf_file_default(&fx->s, true);
    assert_string_equal(fx->s.conf_file, want);
    assert_int_equal(chdir(cwd), 0);
    unlink(fx->path);
    rmdir(sub);
}

/* A pool file named by -c or pool_file is kept, existing or not. */
static void test_conf_file_given(void **state)
{
    struct fx *fx = *state;
    fx_load(fx, "pool_file = \"/nonexistent/pools.yml\";\n");
    settings_conf_file_default(&fx->s, true);
    assert_string_equal(fx->s.conf_file, "/nonexistent/pools.yml");
}

/* ---- errors: one row per message --------------------------------------- */

struct err_case {
    const char *name;
    const char *text;
    int         line;
    const char *msg;
};

static const struct err_case err_cases[] = {
    { "unknown", "workers = 1;\nworkerz = 2;\n", 2, "unknown setting 'workerz'" },
    { "unknown_group", "pools = { a = 1; };\n", 1, "unknown setting 'pools'" },
    { "workers_string", "workers = \"4\";\n", 1, "setting 'workers' must be an integer" },
    { "workers_float", "workers = 4.0;\n", 1, "setting 'workers' must be an integer" },
    { "workers_group", "workers = { n = 1; };\n", 1, "setting 'workers' must be an integer" },
    { "workers_range", "workers = 5000;\n", 1,
      "setting 'workers' is out of range 0..1024: 5000" },
    { "workers_negative", "workers = -1;\n", 1,
      "setting 'workers' is out of range 0..1024: -1" },
    { "log_level_range", "\nlog_level = 12;\n", 2,
      "setting 'log_level' is out of range 0..11: 12" },
    { "stats_port_zero", "stats_port = 0;\n", 1,
      "setting 'stats_port' is out of range 1..65535: 0" },
    { "stats_port_big", "stats_port = 70000;\n", 1,
      "setting 'stats_port' is out of range 1..65535: 70000" },
    { "stats_interval_zero", "stats_interval = 0;\n", 1,
      "setting 'stats_interval' is out of range 1..2147483647: 0" },
    { "mbuf_size_small", "mbuf_size = 100;\n", 1,
      "setting 'mbuf_size' is out of range 512..16777216: 100" },
    { "mbuf_size_big", "mbuf_size = 16777217;\n", 1,
      "setting 'mbuf_size' is out of range 512..16777216: 16777217" },
    { "max_value_size_zero", "max_value_size = 0;\n", 1,
      "setting 'max_value_size' is out of range 1..1073741824: 0" },
    { "max_line_size_small", "max_line_size = 100;\n", 1,
      "setting 'max_line_size' is out of range 1024..1073741824: 100" },
    { "client_max_pending_small", "client_max_pending = 10;\n", 1,
      "setting 'client_max_pending' is out of range 1024..1099511627776: 10" },
    { "async_queue_limit_zero", "async_queue_limit = 0;\n", 1,
      "setting 'async_queue_limit' is out of range 1..100000000: 0" },
    { "max_reply_size_small", "max_reply_size = 10;\n", 1,
      "setting 'max_reply_size' is out of range 1024..1099511627776: 10" },
    { "max_memory_small", "max_memory = 1000;\n", 1,
      "setting 'max_memory' is out of range 1048576..1125899906842624: 1000" },
    { "dns_refresh_interval_negative", "dns_refresh_interval = -1;\n", 1,
      "setting 'dns_refresh_interval' is out of range 0..86400000: -1" },
    { "client_request_timeout_negative", "client_request_timeout = -1;\n", 1,
      "setting 'client_request_timeout' is out of range 0..2147483647: -1" },
    { "max_clients_zero", "max_clients = 0;\n", 1,
      "setting 'max_clients' is out of range 1..100000000: 0" },
    { "zk_session_timeout_small", "zk_session_timeout = 999;\n", 1,
      "setting 'zk_session_timeout' is out of range 1000..600000: 999" },
    { "zk_session_timeout_string", "zk_session_timeout = \"10s\";\n", 1,
      "setting 'zk_session_timeout' must be an integer" },
    { "zk_register_int", "zk_register = 1;\n", 1,
      "setting 'zk_register' must be true or false" },
    { "zk_cache_file_empty", "zk_cache_file = \"\";\n", 1,
      "setting 'zk_cache_file' must not be empty" },
    { "fence_replies_word", "fence_replies = \"always\";\n", 1,
      "setting 'fence_replies' must be true, false, \"off\", \"request\" or \"batch\"" },
    { "fence_replies_int", "fence_replies = 1;\n", 1,
      "setting 'fence_replies' must be true, false, \"off\", \"request\" or \"batch\"" },
    { "redis_fence_replies_string", "redis_fence_replies = \"on\";\n", 1,
      "setting 'redis_fence_replies' must be true or false" },
    { "daemonize_int", "daemonize = 1;\n", 1, "setting 'daemonize' must be true or false" },
    { "daemonize_string", "daemonize = \"yes\";\n", 1,
      "setting 'daemonize' must be true or false" },
    { "pool_file_int", "pool_file = 3;\n", 1, "setting 'pool_file' must be a string" },
    { "pool_file_empty", "pool_file = \"\";\n", 1, "setting 'pool_file' must not be empty" },
    { "log_file_list", "log_file = [\"a\"];\n", 1, "setting 'log_file' must be a string" },
    { "pid_file_bool", "pid_file = true;\n", 1, "setting 'pid_file' must be a string" },
    { "user_int", "user = 65534;\n", 1, "setting 'user' must be a string" },
    { "user_empty", "user = \"\";\n", 1, "setting 'user' must not be empty" },
    { "stats_addr_int", "stats_addr = 1;\n", 1, "setting 'stats_addr' must be a string" },
    { "syntax", "workers = ;\n", 1, "syntax error" },
    { "syntax_line3", "workers = 1;\n\nlog_level 3;\n", 3, "syntax error" },
    { "duplicate", "workers = 1;\nworkers = 2;\n", 2, "duplicate setting name" },
};

static void test_error_case(void **state)
{
    struct fx *fx = *state;
    const struct err_case *c = fx->param;
    char prefix[PATH_MAX + 32];

    fx_write(fx, c->text);
    assert_int_equal(settings_load(&fx->s, fx->path, fx->err, sizeof(fx->err)), -1);
    snprintf(prefix, sizeof(prefix), "%s:%d: ", fx->path, c->line);
    if (strncmp(fx->err, prefix, strlen(prefix)) != 0 || strstr(fx->err, c->msg) == NULL) {
        fail_msg("got   \"%s\"\nwant  \"%s...%s\"", fx->err, prefix, c->msg);
    }
    assert_defaults(&fx->s);
}

/* ---- runner ------------------------------------------------------------ */

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        FX_TEST(test_defaults),
        FX_TEST(test_empty_file),
        FX_TEST(test_every_key),
        FX_TEST(test_partial_override),
        FX_TEST(test_error_keeps_settings),
        FX_TEST(test_bounds_accepted),
        FX_TEST(test_example),
        FX_TEST(test_missing_file),
        FX_TEST(test_no_err_buffer),
        FX_TEST(test_deinit_twice),
        FX_TEST(test_zk_cache_file),
        FX_TEST(test_fence_replies_forms),
        FX_TEST(test_conf_file_default),
        FX_TEST(test_conf_file_given),
    };
    int failed = cmocka_run_group_tests_name("conf_settings", tests, NULL, NULL);

    /* One named test per error row, so a failure names the case. */
    size_t n = sizeof(err_cases) / sizeof(err_cases[0]);
    struct CMUnitTest *errs = calloc(n, sizeof(*errs));
    assert_non_null(errs);
    for (size_t i = 0; i < n; i++) {
        errs[i] = (struct CMUnitTest)cmocka_unit_test_prestate_setup_teardown(
            test_error_case, fx_setup, fx_teardown, (void *)&err_cases[i]);
        errs[i].name = err_cases[i].name;
    }
    failed += _cmocka_run_group_tests("conf_settings_errors", errs, n, NULL, NULL);
    free(errs);
    return failed != 0;
}
