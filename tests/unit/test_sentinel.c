/* test_sentinel: Sentinel's replies read into a state (with input split
 * at every byte), and the configuration built from the running one with
 * a pool's masters and replicas replaced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strata/conf.h"
#include "strata/conf_guard.h"
#include "strata/sentinel.h"

/* ---- helpers ---- */

/* Parses a whole reply; every shorter prefix must be AGAIN. */
static void parse_whole(const char *raw, struct sentinel_val *v)
{
    size_t len = strlen(raw), used = 0;
    for (size_t cut = 0; cut < len; cut++) {
        struct sentinel_val part;
        assert_int_equal(sentinel_resp_parse(raw, cut, &used, &part), SENTINEL_AGAIN);
    }
    assert_int_equal(sentinel_resp_parse(raw, len, &used, v), SENTINEL_OK);
    assert_int_equal(used, len);
}

static struct conf *load(const char *text)
{
    struct conf *conf = NULL;
    char err[256];
    if (conf_yaml_load_text(text, strlen(text), "test", &conf, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return conf;
}

static void node(struct sentinel_node *n, const char *host, uint16_t port)
{
    strcpy(n->host, host);
    n->port = port;
}

/* ---- RESP ---- */

static void test_resp_values(void **state)
{
    (void)state;
    struct sentinel_val v;
    parse_whole("*4\r\n+OK\r\n-ERR no\r\n:-12\r\n$-1\r\n", &v);
    assert_int_equal(v.type, SENTINEL_V_ARRAY);
    assert_int_equal(v.n, 4);
    assert_string_equal(v.elems[0].str, "OK");
    assert_int_equal(v.elems[1].type, SENTINEL_V_ERROR);
    assert_string_equal(v.elems[1].str, "ERR no");
    assert_int_equal(v.elems[2].integer, -12);
    assert_int_equal(v.elems[3].type, SENTINEL_V_NIL);
    sentinel_val_deinit(&v);
}

static void test_resp_garbage(void **state)
{
    (void)state;
    struct sentinel_val v;
    size_t used;
    const char *bad[] = { "?x\r\n", "$3\r\nabcd\r\n", ":1x\r\n", "*1\n", "$99999999\r\n" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sentinel_resp_parse(bad[i], strlen(bad[i]), &used, &v),
                         SENTINEL_ERROR);
}

static void test_resp_leaves_the_next_reply(void **state)
{
    (void)state;
    struct sentinel_val v;
    size_t used;
    const char *two = "*3\r\n$7\r\nmessage\r\n$4\r\n+sdo\r\n$1\r\nx\r\n+OK\r\n";
    assert_int_equal(sentinel_resp_parse(two, strlen(two), &used, &v), SENTINEL_OK);
    assert_string_equal(two + used, "+OK\r\n");
    char channel[16];
    assert_true(sentinel_event(&v, channel, sizeof(channel)));
    assert_string_equal(channel, "+sdo");
    sentinel_val_deinit(&v);
}

static void test_command(void **state)
{
    (void)state;
    const char *argv[] = { "SENTINEL", "get-master-addr-by-name", "m" };
    size_t len;
    char *cmd = sentinel_command(3, argv, &len);
    const char *want = "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$1\r\nm\r\n";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(cmd, want, len);
    free(cmd);
}

/* ---- Sentinel's replies ---- */

static void test_master_reply(void **state)
{
    (void)state;
    struct sentinel_val v;
    struct sentinel_node n;
    parse_whole("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n", &v);
    assert_int_equal(sentinel_master_reply(&v, &n), 0);
    assert_string_equal(n.host, "127.0.0.1");
    assert_int_equal(n.port, 6380);
    sentinel_val_deinit(&v);
    parse_whole("*-1\r\n", &v);                    /* unknown name */
    assert_int_equal(sentinel_master_reply(&v, &n), -1);
    sentinel_val_deinit(&v);
    parse_whole("-IDONTKNOW\r\n", &v);
    assert_int_equal(sentinel_master_reply(&v, &n), -1);
    sentinel_val_deinit(&v);
    parse_whole("*2\r\n$9\r\n127.0.0.1\r\n$5\r\n70000\r\n", &v);
    assert_int_equal(sentinel_master_reply(&v, &n), -1);
    sentinel_val_deinit(&v);
}

#define REPLICA(ip, port, flags, link)                                         \
    "*8\r\n$2\r\nip\r\n$" ip "\r\n$4\r\nport\r\n$" port "\r\n$5\r\nflags\r\n$" \
    flags "\r\n$18\r\nmaster-link-status\r\n$" link "\r\n"

static void test_replicas_reply(void **state)
{
    (void)state;
    struct sentinel_val v;
    struct sentinel_shard sh;
    memset(&sh, 0, sizeof(sh));
    parse_whole("*4\r\n"
                REPLICA("9\r\n127.0.0.1", "4\r\n6390", "5\r\nslave", "2\r\nok")
                REPLICA("9\r\n127.0.0.1", "4\r\n6382", "5\r\nslave", "2\r\nok")
                REPLICA("9\r\n127.0.0.1", "4\r\n6383", "12\r\nslave,s_down", "2\r\nok")
                REPLICA("9\r\n127.0.0.1", "4\r\n6384", "5\r\nslave", "3\r\nerr"), &v);
    assert_int_equal(sentinel_replicas_reply(&v, &sh), 0);
    assert_int_equal(sh.nreplicas, 2);
    assert_int_equal(sh.replicas[0].port, 6382);   /* sorted */
    assert_int_equal(sh.replicas[1].port, 6390);
    sentinel_val_deinit(&v);
    parse_whole("*0\r\n", &v);
    assert_int_equal(sentinel_replicas_reply(&v, &sh), 0);
    assert_int_equal(sh.nreplicas, 0);
    sentinel_val_deinit(&v);
}

static void test_role(void **state)
{
    (void)state;
    struct sentinel_val v;
    parse_whole("*3\r\n$6\r\nmaster\r\n:3129659\r\n*0\r\n", &v);
    assert_true(sentinel_role_is_master(&v));
    sentinel_val_deinit(&v);
    parse_whole("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9000\r\n$9\r\nconnected\r\n:1\r\n",
                &v);
    assert_false(sentinel_role_is_master(&v));
    sentinel_val_deinit(&v);
    parse_whole("-NOAUTH Authentication required.\r\n", &v);
    assert_false(sentinel_role_is_master(&v));
    sentinel_val_deinit(&v);
}

static void test_subscribe_confirmation_is_no_event(void **state)
{
    (void)state;
    struct sentinel_val v;
    char channel[32];
    parse_whole("*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n", &v);
    assert_false(sentinel_event(&v, channel, sizeof(channel)));
    sentinel_val_deinit(&v);
}

static void test_instance_event(void **state)
{
    (void)state;
    struct sentinel_node n;
    char m[32];
    assert_int_equal(sentinel_instance_event("slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster "
                                             "127.0.0.1 6379", &n, m, sizeof(m)), 0);
    assert_string_equal(n.host, "127.0.0.1");
    assert_int_equal(n.port, 6380);
    assert_string_equal(m, "mymaster");
    assert_int_equal(sentinel_instance_event("mymaster 127.0.0.1 6379 127.0.0.1 6380", &n, m,
                                             sizeof(m)), -1);    /* +switch-master */
    assert_int_equal(sentinel_instance_event("slave a b 0 @ m h 1", &n, m, sizeof(m)), -1);
}

/* ---- the configuration ---- */

#define SENT "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  timeout: 400\n" \
             "  sentinels: [127.0.0.1:26379]\n"
#define PLAIN "beta:\n  listen: 127.0.0.1:22122\n  servers:\n    - 127.0.0.1:11211:1\n"

static void test_loaded_pool_has_placeholders(void **state)
{
    (void)state;
    struct conf *c = load(SENT "  master_names: [a, b]\n");
    const struct conf_pool *p = &c->pools[0];
    assert_int_equal(p->nsentinels, 1);
    assert_int_equal(p->sentinels[0].addr.port, 26379);
    assert_int_equal(p->master.nservers, 2);
    assert_string_equal(p->master.servers[1].name, "b");
    assert_int_equal(p->master.servers[1].addr.port, 0);
    assert_int_equal(p->master.timeout_ms, 400);
    assert_int_equal(p->sentinel_interval_ms, CONF_DEFAULT_SENTINEL_INTERVAL_MS);
    assert_true(p->read_from_master);
    conf_destroy(&c);
}

static void test_switch_replaces_the_master_only(void **state)
{
    (void)state;
    struct conf *run = load(SENT "  master_name: m\n" PLAIN);
    struct sentinel_shard sh;
    memset(&sh, 0, sizeof(sh));
    struct sentinel_state st = { &sh, 1 };
    node(&sh.master, "127.0.0.1", 6379);
    struct conf *a = sentinel_conf_switch(run, "alpha", &st);
    node(&sh.master, "127.0.0.1", 6380);
    struct conf *b = sentinel_conf_switch(a, "alpha", &st);
    assert_non_null(b);
    assert_string_equal(a->pools[0].master.servers[0].text, "127.0.0.1:6379:1");
    assert_string_equal(b->pools[0].master.servers[0].text, "127.0.0.1:6380:1");
    assert_int_equal(b->pools[0].master.servers[0].addr.port, 6380);
    assert_string_equal(b->pools[0].master.servers[0].name, "m");   /* routing kept */
    assert_int_equal(b->pools[0].master.timeout_ms, 400);
    assert_string_equal(b->pools[1].master.servers[0].text, "127.0.0.1:11211:1");
    assert_string_equal(b->pools[1].name, "beta");
    char why[256];
    assert_int_equal(conf_guard_check(a, b, 0, why, sizeof(why)), 0);
    assert_null(sentinel_conf_switch(a, "beta", &st));    /* not a Sentinel pool */
    assert_null(sentinel_conf_switch(a, "gamma", &st));
    conf_destroy(&run);
    conf_destroy(&a);
    conf_destroy(&b);
}

static void test_replicas_become_slave_tiers(void **state)
{
    (void)state;
    struct conf *run = load(SENT "  master_names: [a, b]\n  sentinel_read_replicas: true\n");
    struct sentinel_shard sh[2];
    memset(sh, 0, sizeof(sh));
    struct sentinel_state st = { sh, 2 };
    node(&sh[0].master, "10.0.0.1", 6379);
    node(&sh[0].replicas[0], "10.0.0.2", 6379);
    node(&sh[0].replicas[1], "10.0.0.3", 6379);
    sh[0].nreplicas = 2;
    node(&sh[1].master, "10.0.1.1", 6379);       /* b: no replica */
    struct conf *c = sentinel_conf_switch(run, "alpha", &st);
    const struct conf_pool *p = &c->pools[0];
    assert_int_equal(p->nslaves, 2);
    assert_false(p->read_from_master);
    assert_string_equal(p->slaves[0].servers[0].addr.host, "10.0.0.2");
    assert_string_equal(p->slaves[1].servers[0].addr.host, "10.0.0.3");
    assert_string_equal(p->slaves[1].servers[0].name, "a");
    assert_string_equal(p->slaves[0].servers[1].addr.host, "10.0.1.1");   /* its master */
    assert_string_equal(p->slaves[1].servers[1].name, "b");
    /* the replicas gone: reads go to master */
    sh[0].nreplicas = 0;
    struct conf *d = sentinel_conf_switch(c, "alpha", &st);
    assert_int_equal(d->pools[0].nslaves, 0);
    assert_true(d->pools[0].read_from_master);
    conf_destroy(&run);
    conf_destroy(&c);
    conf_destroy(&d);
}

#define TIERED "beta:\n  listen: 127.0.0.1:22122\n  hash_tag: \"{}\"\n" \
               "  master:\n    servers: [127.0.0.1:11211:1 a, 127.0.0.1:11212:2 b]\n" \
               "  slave:\n    servers: [127.0.0.1:11231:1]\n" \
               "  l1:\n    - servers: [127.0.0.1:11241:1]\n    - servers: [/tmp/l1.sock:1]\n" \
               "  replicas:\n    - servers: [127.0.0.1:11261:1]\n"
#define SPLIT "gamma:\n  listen: /tmp/gamma.sock 0600\n  redis: true\n  redis_auth: pw\n" \
              "  master:\n    servers: [127.0.0.1:6379:1 a]\n" \
              "  slaves:\n    - servers: [127.0.0.1:6380:1 a]\n"

/* conf_copy: every string and list is a copy of its own. */
static void test_conf_copy_is_deep(void **state)
{
    (void)state;
    struct conf *a = load(SENT "  master_names: [x, y]\n  sentinel_auth: s\n" TIERED SPLIT);
    struct conf *b = conf_copy(a);
    assert_non_null(b);
    assert_int_equal(b->npools, 3);
    const struct conf_pool *beta = conf_pool_find(b, "beta");
    assert_non_null(beta);
    assert_ptr_not_equal(beta->master.servers, a->pools[1].master.servers);
    assert_string_equal(beta->master.servers[1].name, "b");
    assert_int_equal(beta->master.servers[1].weight, 2);
    assert_string_equal(beta->l1[1].servers[0].addr.path, "/tmp/l1.sock");
    assert_int_equal(beta->nl1, 2);
    assert_string_equal(beta->replicas[0].servers[0].text, "127.0.0.1:11261:1");
    assert_string_equal(beta->slave->servers[0].addr.host, "127.0.0.1");
    assert_memory_equal(beta->hash_tag, "{}", 2);
    const struct conf_pool *gamma = conf_pool_find(b, "gamma");
    assert_string_equal(gamma->listen.addr.path, "/tmp/gamma.sock");
    assert_string_equal(gamma->redis_auth, "pw");
    assert_int_equal(gamma->slaves[0].servers[0].addr.port, 6380);
    const struct conf_pool *alpha = conf_pool_find(b, "alpha");
    assert_string_equal(alpha->master_names[1], "y");
    assert_string_equal(alpha->sentinel_auth, "s");
    assert_string_equal(alpha->sentinels[0].text, "127.0.0.1:26379");
    assert_null(conf_pool_find(b, "delta"));
    conf_destroy(&a);               /* b stands alone */
    assert_string_equal(conf_pool_find(b, "beta")->l1[0].servers[0].text, "127.0.0.1:11241:1");
    conf_destroy(&b);
}

static void test_shard_equal(void **state)
{
    (void)state;
    struct sentinel_shard a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    node(&a.master, "h", 1);
    node(&b.master, "h", 1);
    assert_true(sentinel_shard_equal(&a, &b));
    node(&b.replicas[0], "r", 2);
    b.nreplicas = 1;
    assert_false(sentinel_shard_equal(&a, &b));
    node(&b.master, "h", 2);
    b.nreplicas = 0;
    assert_false(sentinel_shard_equal(&a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resp_values),
        cmocka_unit_test(test_resp_garbage),
        cmocka_unit_test(test_resp_leaves_the_next_reply),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_master_reply),
        cmocka_unit_test(test_replicas_reply),
        cmocka_unit_test(test_role),
        cmocka_unit_test(test_subscribe_confirmation_is_no_event),
        cmocka_unit_test(test_instance_event),
        cmocka_unit_test(test_loaded_pool_has_placeholders),
        cmocka_unit_test(test_switch_replaces_the_master_only),
        cmocka_unit_test(test_replicas_become_slave_tiers),
        cmocka_unit_test(test_conf_copy_is_deep),
        cmocka_unit_test(test_shard_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
