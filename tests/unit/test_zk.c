/* Unit tests for zk's parts that need no server: zk:// URLs, the
 * registration path and the registration JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata/conf.h"
#include "strata/zk.h"

struct url_case {
    const char *url;
    const char *hosts;   /* NULL: invalid */
    const char *path;    /* or the expected message part */
};

static const struct url_case url_cases[] = {
    { "zk://127.0.0.1:2181/strata/pools", "127.0.0.1:2181", "/strata/pools" },
    { "zk://a:1,b:2,c:65535/x", "a:1,b:2,c:65535", "/x" },
    { "zk://[::1]:2181/p", "[::1]:2181", "/p" },
    { "zk://zk.example.com:2181/a/b/c", "zk.example.com:2181", "/a/b/c" },
    { "zk:///strata", NULL, "names no server" },
    { "zk://host/strata", NULL, "without a port" },
    { "zk://host:0/strata", NULL, "invalid port" },
    { "zk://host:65536/strata", NULL, "invalid port" },
    { "zk://host:21x/strata", NULL, "invalid port" },
    { "zk://:2181/strata", NULL, "empty host" },
    { "zk://a:1,/strata", NULL, "without a port" },
    { "zk://a:1", NULL, "names no node" },
    { "zk://a:1/", NULL, "names no node" },
    { "zk://a:1/strata/", NULL, "ending in '/'" },
    { "zk://a:1/a//b", NULL, "empty path element" },
    { "zk://a:1/a/../b", NULL, "relative path element" },
    { "zk://a:1/a/.", NULL, "relative path element" },
    { "zk://a:1/a\tb", NULL, "control character" },
    { "zk://a:1/zookeeper/quota", NULL, "reserves" },
    { "file:///etc/pools.yml", NULL, "is not a zk:// URL" },
};

static void test_url_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        const struct url_case *c = &url_cases[i];
        struct zk_url url;
        char err[256] = "";
        int rc = zk_url_parse(c->url, &url, err, sizeof(err));
        if (c->hosts != NULL) {
            if (rc != 0)
                fail_msg("%s: %s", c->url, err);
            assert_string_equal(url.hosts, c->hosts);
            assert_string_equal(url.path, c->path);
        } else {
            if (rc == 0 || strstr(err, c->path) == NULL)
                fail_msg("%s: got rc %d \"%s\", want \"%s\"", c->url, rc, err, c->path);
            assert_null(url.hosts);
            assert_null(url.path);
        }
        zk_url_deinit(&url);
    }
}

static void test_url_is(void **state)
{
    (void)state;
    assert_true(zk_url_is("zk://a:1/b"));
    assert_false(zk_url_is("conf/nutcracker.yml"));
    assert_false(zk_url_is("ZK://a:1/b"));
    assert_false(zk_url_is(NULL));
}

static void test_reg_path(void **state)
{
    (void)state;
    struct zk_url url = { .hosts = "a:1", .path = "/strata/pools" };
    char buf[64];
    assert_int_equal(zk_reg_path(&url, "cache-7", 22222, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "/strata/pools/proxies/cache-7:22222");
    assert_int_equal(zk_reg_path(&url, "cache-7", 22222, buf, 20), -1);
}

static const char POOLS[] =
    "alpha:\n"
    "  listen: 127.0.0.1:22121\n"
    "  servers: [127.0.0.1:11211:1]\n"
    "r\"q:\n"
    "  listen: /tmp/r.sock 0600\n"
    "  redis: true\n"
    "  servers: [127.0.0.1:6379:1]\n";

static void test_reg_json(void **state)
{
    (void)state;
    struct conf *conf;
    char err[256];
    if (conf_yaml_load_text(POOLS, strlen(POOLS), "t", &conf, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    struct zk_reg_info info = {
        .conf = conf, .host = "h1", .pid = 42, .stats_addr = "0.0.0.0", .stats_port = 22222,
        .version = "0.1.0", .generation = 3, .source = "zk://a:1/strata",
    };
    char *json = zk_reg_json(&info);
    assert_non_null(json);
    assert_string_equal(json,
        "{\"host\":\"h1\",\"pid\":42,\"version\":\"0.1.0\",\"stats\":\"0.0.0.0:22222\","
        "\"generation\":3,\"source\":\"zk://a:1/strata\",\"pools\":["
        "{\"name\":\"alpha\",\"listen\":\"127.0.0.1:22121\",\"protocol\":\"memcached\"},"
        "{\"name\":\"r\\\"q\",\"listen\":\"/tmp/r.sock 0600\",\"protocol\":\"redis\"}]}");
    free(json);
    conf_destroy(&conf);
}

/* Many pools: the buffer grows. */
static void test_reg_json_large(void **state)
{
    (void)state;
    size_t cap = 200 * 96, n = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(text + n, cap - n, "pool%03d:\n  listen: 127.0.0.1:%d\n"
                              "  servers: [127.0.0.1:11211:1]\n", i, 20000 + i);
    struct conf *conf;
    char err[256];
    if (conf_yaml_load_text(text, n, "t", &conf, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    struct zk_reg_info info = { .conf = conf, .host = "h", .stats_addr = "a",
                                .version = "v", .source = "s" };
    char *json = zk_reg_json(&info);
    assert_non_null(json);
    assert_non_null(strstr(json, "{\"name\":\"pool199\",\"listen\":\"127.0.0.1:20199\""));
    assert_int_equal(json[strlen(json) - 1], '}');
    free(json);
    free(text);
    conf_destroy(&conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_cases),
        cmocka_unit_test(test_url_is),
        cmocka_unit_test(test_reg_path),
        cmocka_unit_test(test_reg_json),
        cmocka_unit_test(test_reg_json_large),
    };
    return cmocka_run_group_tests_name("zk", tests, NULL, NULL);
}
