/* test_app: the process layer without workers — the -C settings' reload
 * with the command line over it, pool-file reloads (the shrink guard, a
 * file that does not load, a valid one), and a ZooKeeper start from the
 * cache file while ZooKeeper is away. libstrata links on its own: no
 * symbol of main.c is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "strata/conf.h"
#include "strata/log.h"
#include "strata/reload.h"
#include "strata/util.h"
#include "strata/zk.h"
#include "app.h"
#include "zk_app.h"

#define POOL2 "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n" \
              "    - 127.0.0.1:11211:1\n    - 127.0.0.1:11212:1\n"
#define POOL1 "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n" \
              "    - 127.0.0.1:11211:1\n"
#define POOL3 POOL2 "    - 127.0.0.1:11213:1\n"

struct fixture {
    struct app app;
    char       dir[64];
    char       pools[128];   /* the pool file */
    char       cfg[128];     /* the -C file */
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    struct fixture *f = test_calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_app.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->pools, sizeof(f->pools), "%s/pools.yml", f->dir);
    snprintf(f->cfg, sizeof(f->cfg), "%s/strata.cfg", f->dir);
    app_init(&f->app);
    settings_init(&f->app.settings);
    log_setup(LOG_CRIT, NULL);   /* quiet */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->app.gen != NULL)
        reload_teardown(&f->app);
    if (f->app.base != NULL)
        event_base_free(f->app.base);
    app_deinit(&f->app);
    unlink(f->pools);
    unlink(f->cfg);
    char cache[160];
    snprintf(cache, sizeof(cache), "%s/zk.yml", f->dir);
    unlink(cache);
    rmdir(f->dir);
    test_free(f);
    return 0;
}

/* The command line's log level, as main.c would apply it. */
static void override_log_level(struct settings *s, const void *arg)
{
    s->log_level = *(const int *)arg;
}

static void test_settings_reload_with_the_command_line_over_it(void **state)
{
    struct fixture *f = *state;
    static const int cli_level = 7;
    char err[256];
    write_file(f->cfg, "client_max_pending = 1048576;\nlog_level = 3;\n"
                       "reload_max_server_loss = 80;\n");
    f->app.settings_file = f->cfg;
    f->app.settings_override = override_log_level;
    f->app.settings_override_arg = &cli_level;
    assert_int_equal(conf_yaml_load_text(POOL2, strlen(POOL2), "t", &f->app.conf, err,
                                         sizeof(err)), 0);
    assert_int_equal(app_settings_reload(&f->app, err, sizeof(err)), 0);
    assert_int_equal(f->app.settings.client_max_pending, 1048576);
    assert_int_equal(f->app.settings.reload_max_server_loss, 80);
    assert_int_equal(f->app.settings.log_level, 7);      /* the flag wins */
    write_file(f->cfg, "client_max_pending = \"many\";\n");
    assert_int_equal(app_settings_reload(&f->app, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "client_max_pending"));
    assert_int_equal(f->app.settings.client_max_pending, 1048576);   /* unchanged */
}

/* A running configuration (generation 1) with no worker: what reload
 * does on the main thread is all there is. */
static void start_reloadable(struct fixture *f, const char *text)
{
    char err[256];
    write_file(f->pools, text);
    f->app.settings.conf_file = util_xstrdup(f->pools);
    assert_int_equal(conf_yaml_load(f->pools, &f->app.conf, err, sizeof(err)), 0);
    f->app.base = event_base_new();
    f->app.nworkers = 0;
    reload_setup(&f->app);
}

static void test_reload_guard_bad_file_and_good_file(void **state)
{
    struct fixture *f = *state;
    start_reloadable(f, POOL2);
    assert_int_equal(reload_generation(&f->app), 1);
    write_file(f->pools, POOL1);                 /* half the servers */
    reload_from_file(&f->app);
    assert_int_equal(reload_generation(&f->app), 1);
    assert_int_equal(f->app.rt.reload_failures, 1);
    write_file(f->pools, "alpha:\n  listen: 127.0.0.1:22121\n  nope: 1\n");
    reload_from_file(&f->app);
    assert_int_equal(reload_generation(&f->app), 1);
    assert_int_equal(f->app.rt.reload_failures, 2);
    write_file(f->pools, POOL3);                 /* growth: applied */
    reload_from_file(&f->app);
    assert_int_equal(reload_generation(&f->app), 2);
    assert_int_equal(f->app.rt.reloads, 1);
    assert_int_equal(f->app.conf->pools[0].master.nservers, 3);
}

/* A port nothing listens on (bound, never listened, then closed). */
static uint16_t dead_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void test_zk_start_from_the_cache_does_not_wait(void **state)
{
    struct fixture *f = *state;
    char url[128], cache[160], text[512], err[1024];
    if (!zk_supported())
        skip();
    snprintf(url, sizeof(url), "zk://127.0.0.1:%u/strata/pools", (unsigned)dead_port());
    snprintf(cache, sizeof(cache), "%s/zk.yml", f->dir);
    snprintf(text, sizeof(text), "# strata: cache of %s\n%s", url, POOL2);
    write_file(cache, text);
    f->app.settings.conf_file = util_xstrdup(url);
    f->app.settings.zk_cache_file = util_xstrdup(cache);
    f->app.settings.zk_session_timeout_ms = 10000;
    int64_t t0 = util_now_ms();
    assert_int_equal(zk_app_load(&f->app, false, err, sizeof(err)), 0);
    /* 0.5 s of waiting for the node at most, not the 10 s session */
    assert_true(util_now_ms() - t0 < 5000);
    assert_non_null(f->app.conf);
    assert_int_equal(f->app.conf->pools[0].master.nservers, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settings_reload_with_the_command_line_over_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_guard_bad_file_and_good_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_zk_start_from_the_cache_does_not_wait, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
