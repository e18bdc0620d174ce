/* Unit tests for zk's parts that need no server: zk:// URLs, ACLs,
 * credentials, the node size limit, the registration path and the
 * registration JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- ACLs ---- */

static void test_acl_parse(void **state)
{
    (void)state;
    struct zk_acl acl;
    char err[256];
    assert_int_equal(zk_acl_parse("digest:ops:x1Z/Ab+c=:cdrwa,world:anyone:r,auth::rw,"
                                  "ip:10.0.0.0/8:r,ip:::1:r", &acl, err, sizeof(err)), 0);
    assert_int_equal(acl.n, 5);
    assert_string_equal(acl.entries[0].scheme, "digest");
    assert_string_equal(acl.entries[0].id, "ops:x1Z/Ab+c=");
    assert_int_equal(acl.entries[0].perms, ZK_PERM_ALL);
    assert_string_equal(acl.entries[1].id, "anyone");
    assert_int_equal(acl.entries[1].perms, ZK_PERM_READ);
    assert_string_equal(acl.entries[2].scheme, "auth");
    assert_string_equal(acl.entries[2].id, "");
    assert_int_equal(acl.entries[2].perms, ZK_PERM_READ | ZK_PERM_WRITE);
    assert_string_equal(acl.entries[4].id, "::1");
    assert_int_equal(zk_acl_world_perms(&acl), ZK_PERM_READ);
    assert_false(zk_perms_writable(zk_acl_world_perms(&acl)));
    zk_acl_deinit(&acl);
    assert_int_equal(acl.n, 0);
}

struct acl_bad {
    const char *text;
    const char *why;
};

static const struct acl_bad acl_bad[] = {
    { "", "is not SCHEME:ID:PERMS" },
    { "world:anyone", "is not SCHEME:ID:PERMS" },
    { ":anyone:r", "is not SCHEME:ID:PERMS" },
    { "world:anyone:", "gives no permission" },
    { "world:anyone:rx", "not one of c, d, r, w, a" },
    { "world:everyone:r", "only id is 'anyone'" },
    { "digest:ops:r", "USER:BASE64" },
    { "ip::r", "empty id" },
    { "kerberos:x:r", "unknown scheme" },
    { "world:anyone:r,,auth::r", "is not SCHEME:ID:PERMS" },
    { "world:anyone:r,", "is not SCHEME:ID:PERMS" },
};

static void test_acl_bad(void **state)
{
    (void)state;
    struct zk_acl acl;
    char err[256];
    for (size_t i = 0; i < sizeof(acl_bad) / sizeof(acl_bad[0]); i++) {
        assert_int_equal(zk_acl_parse(acl_bad[i].text, &acl, err, sizeof(err)), -1);
        if (strstr(err, acl_bad[i].why) == NULL)
            fail_msg("'%s': '%s' lacks '%s'", acl_bad[i].text, err, acl_bad[i].why);
        assert_int_equal(acl.n, 0);
    }
    char many[1024] = "";
    for (int i = 0; i <= ZK_ACL_MAX; i++)
        strcat(many, i > 0 ? ",world:anyone:r" : "world:anyone:r");
    assert_int_equal(zk_acl_parse(many, &acl, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "at most"));
}

static void test_acl_world(void **state)
{
    (void)state;
    struct zk_acl acl;
    char err[256], text[8];
    assert_int_equal(zk_acl_parse(ZK_ACL_OPEN, &acl, err, sizeof(err)), 0);
    assert_int_equal(zk_acl_world_perms(&acl), ZK_PERM_ALL);
    assert_true(zk_perms_writable(zk_acl_world_perms(&acl)));
    zk_acl_deinit(&acl);
    assert_int_equal(zk_acl_parse(ZK_ACL_CREATOR, &acl, err, sizeof(err)), 0);
    assert_int_equal(zk_acl_world_perms(&acl), 0);
    zk_acl_deinit(&acl);
    /* ip 0.0.0.0/0 is everyone; admin alone can rewrite the ACL */
    assert_int_equal(zk_acl_parse("ip:0.0.0.0/0:a,world:anyone:r", &acl, err, sizeof(err)), 0);
    assert_int_equal(zk_acl_world_perms(&acl), ZK_PERM_ADMIN | ZK_PERM_READ);
    assert_true(zk_perms_writable(zk_acl_world_perms(&acl)));
    zk_acl_deinit(&acl);
    zk_perms_text(ZK_PERM_ALL, text);
    assert_string_equal(text, "cdrwa");
    zk_perms_text(ZK_PERM_READ | ZK_PERM_ADMIN, text);
    assert_string_equal(text, "ra");
    zk_perms_text(0, text);
    assert_string_equal(text, "");
}

/* ---- credentials ---- */

static void test_auth_parse(void **state)
{
    (void)state;
    char *auth, err[256];
    assert_int_equal(zk_auth_parse("ops:s3cr:et\n", 12, &auth, err, sizeof(err)), 0);
    assert_string_equal(auth, "ops:s3cr:et");
    free(auth);
    assert_int_equal(zk_auth_parse("ops:pw\r\n", 8, &auth, err, sizeof(err)), 0);
    assert_string_equal(auth, "ops:pw");
    free(auth);
    static const char *bad[] = { "", "\n", "ops", ":pw", "ops:", "ops:pw\nmore\n",
                                 "ops:p\tw" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(zk_auth_parse(bad[i], strlen(bad[i]), &auth, err, sizeof(err)), -1);
        assert_null(auth);
        assert_non_null(strstr(err, "USER:PASSWORD"));
    }
    char big[ZK_AUTH_MAX + 2];
    memset(big, 'a', sizeof(big));
    big[1] = ':';
    assert_int_equal(zk_auth_parse(big, sizeof(big), &auth, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
}

static void test_auth_load(void **state)
{
    (void)state;
    char path[] = "/tmp/strata-test-zk-auth-XXXXXX", *auth, err[512];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "ops:secret\n", 11), 11);
    close(fd);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(zk_auth_load(path, &auth, err, sizeof(err)), 0);
    assert_string_equal(auth, "ops:secret");
    free(auth);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(zk_auth_load(path, &auth, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "only its owner may read (mode 0640"));
    assert_null(strstr(err, "secret"));
    unlink(path);
    assert_int_equal(zk_auth_load(path, &auth, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot open"));
}

/* ---- the size limit ---- */

static void test_node_check(void **state)
{
    (void)state;
    char err[256];
    struct zk_node node = { .text = NULL, .len = ZK_MAX_DATA, .version = 3 };
    assert_int_equal(zk_node_check(&node, err, sizeof(err)), 0);
    node.len = 1040000;
    assert_int_equal(zk_node_check(&node, err, sizeof(err)), -1);
    assert_string_equal(err, "version 3 of the node has 1040000 bytes; a pool file in "
                        "ZooKeeper holds at most 1000000: refused");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_cases),
        cmocka_unit_test(test_url_is),
        cmocka_unit_test(test_reg_path),
        cmocka_unit_test(test_reg_json),
        cmocka_unit_test(test_reg_json_large),
        cmocka_unit_test(test_acl_parse),
        cmocka_unit_test(test_acl_bad),
        cmocka_unit_test(test_acl_world),
        cmocka_unit_test(test_auth_parse),
        cmocka_unit_test(test_auth_load),
        cmocka_unit_test(test_node_check),
    };
    return cmocka_run_group_tests_name("zk", tests, NULL, NULL);
}
