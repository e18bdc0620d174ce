/* test_dns: server host names followed — which servers are followed, the
 * address a server keeps after an answer, a configuration pinned with a
 * stub resolver, the configuration that moves a server whose name
 * resolves elsewhere, and the backend's reuse decided by the pinned
 * address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strata/backend.h"
#include "strata/conf.h"
#include "strata/dns.h"
#include "strata/util.h"

/* ---- helpers ---- */

static struct conf *load(const char *text)
{
    struct conf *conf = NULL;
    char err[256];
    if (conf_yaml_load_text(text, strlen(text), "test", &conf, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return conf;
}

/* The stub resolver's zone: host → one or two addresses; unknown: fails. */
struct stub_rr {
    const char *host;
    const char *a;
    const char *b;
};

static const struct stub_rr *stub_zone;
static unsigned stub_calls;

static void stub_resolve(const char *host, struct dns_answer *out)
{
    stub_calls++;
    out->ok = false;
    out->naddrs = 0;
    for (const struct stub_rr *rr = stub_zone; rr != NULL && rr->host != NULL; rr++) {
        if (strcmp(rr->host, host) != 0)
            continue;
        snprintf(out->addrs[out->naddrs++], DNS_ADDR_LEN, "%s", rr->a);
        if (rr->b != NULL)
            snprintf(out->addrs[out->naddrs++], DNS_ADDR_LEN, "%s", rr->b);
        out->ok = true;
        return;
    }
    snprintf(out->why, sizeof(out->why), "Name or service not known");
}

static struct dns_answer answer(const char *host, const char *a, const char *b)
{
    struct dns_answer ans = { .ok = a != NULL };
    snprintf(ans.host, sizeof(ans.host), "%s", host);
    if (a != NULL)
        snprintf(ans.addrs[ans.naddrs++], DNS_ADDR_LEN, "%s", a);
    if (b != NULL)
        snprintf(ans.addrs[ans.naddrs++], DNS_ADDR_LEN, "%s", b);
    if (a == NULL)
        snprintf(ans.why, sizeof(ans.why), "Temporary failure in name resolution");
    return ans;
}

#define POOLS \
    "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n" \
    "    - cache1:11211:1 one\n    - 127.0.0.1:11212:1 two\n    - cache2:11213:1 three\n" \
    "beta:\n  listen: 127.0.0.1:22122\n  master:\n    servers: [cache1:11221:1]\n" \
    "  l1:\n    - servers: ['[::1]:11231:1', 'cache3:11232:1']\n" \
    "gamma:\n  listen: /tmp/strata-test-dns.sock\n  servers:\n    - /tmp/mc.sock:1\n"

/* ---- which servers ---- */

static void test_addr_is_name(void **state)
{
    (void)state;
    struct conf_addr name = { .host = "cache1", .port = 1 };
    struct conf_addr v4 = { .host = "127.0.0.2", .port = 1 };
    struct conf_addr v6 = { .host = "::1", .port = 1 };
    struct conf_addr unix_path = { .path = "/tmp/x.sock" };
    assert_true(dns_addr_is_name(&name));
    assert_false(dns_addr_is_name(&v4));
    assert_false(dns_addr_is_name(&v6));
    assert_false(dns_addr_is_name(&unix_path));
}

static void test_hosts_distinct_names_only(void **state)
{
    (void)state;
    struct conf *c = load(POOLS);
    uint32_t n = 0;
    char **hosts = dns_hosts(c, &n);
    assert_int_equal(n, 3);
    assert_string_equal(hosts[0], "cache1");
    assert_string_equal(hosts[1], "cache2");
    assert_string_equal(hosts[2], "cache3");
    dns_hosts_free(&hosts, n);
    assert_null(hosts);
    conf_destroy(&c);
}

static void test_sentinel_pools_not_followed(void **state)
{
    (void)state;
    struct conf *c = load("alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n"
                          "  sentinels: [sentinel1:26379]\n  master_name: m\n");
    uint32_t n = 0;
    char **hosts = dns_hosts(c, &n);
    assert_int_equal(n, 0);
    assert_null(hosts);
    conf_destroy(&c);
}

/* ---- the address kept ---- */

static void test_pick(void **state)
{
    (void)state;
    struct dns_answer two = answer("h", "10.0.0.1", "10.0.0.2");
    struct dns_answer failed = answer("h", NULL, NULL);
    assert_string_equal(dns_pick(NULL, &two), "10.0.0.1");
    assert_string_equal(dns_pick("10.0.0.2", &two), "10.0.0.2");   /* still listed: stays */
    assert_string_equal(dns_pick("10.0.0.9", &two), "10.0.0.1");   /* gone: the first */
    assert_null(dns_pick("10.0.0.9", &failed));                     /* unreachable: keep */
    assert_null(dns_pick(NULL, &failed));
}

/* ---- pinning ---- */

static const struct conf_server *server(const struct conf *c, uint32_t pool, uint32_t i)
{
    return &c->pools[pool].master.servers[i];
}

static void test_pin_resolves_each_name_once(void **state)
{
    (void)state;
    static const struct stub_rr zone[] = {
        { "cache1", "127.0.0.2", NULL }, { "cache3", "127.0.0.4", NULL }, { NULL, NULL, NULL },
    };
    stub_zone = zone;
    stub_calls = 0;
    struct conf *c = load(POOLS);
    assert_int_equal(dns_conf_pin(c, NULL, stub_resolve), 3);   /* cache2 fails */
    assert_int_equal(stub_calls, 3);
    assert_string_equal(server(c, 0, 0)->addr.resolved, "127.0.0.2");
    assert_null(server(c, 0, 1)->addr.resolved);                 /* a literal address */
    assert_null(server(c, 0, 2)->addr.resolved);                 /* failed: not pinned */
    assert_string_equal(server(c, 1, 0)->addr.resolved, "127.0.0.2");
    assert_null(c->pools[1].l1[0].servers[0].addr.resolved);
    assert_string_equal(c->pools[1].l1[0].servers[1].addr.resolved, "127.0.0.4");
    conf_destroy(&c);
}

static void test_pin_keeps_the_running_addresses(void **state)
{
    (void)state;
    static const struct stub_rr zone[] = {
        { "cache1", "127.0.0.9", NULL }, { "cache2", "127.0.0.9", NULL },
        { "cache3", "127.0.0.9", NULL }, { NULL, NULL, NULL },
    };
    stub_zone = zone;
    struct conf *run = load(POOLS);
    dns_conf_pin(run, NULL, stub_resolve);
    free(run->pools[0].master.servers[0].addr.resolved);
    run->pools[0].master.servers[0].addr.resolved = util_xstrdup("127.0.0.2");
    /* a reload of the file: the names in use keep their addresses */
    struct conf *next = load(POOLS "delta:\n  listen: 127.0.0.1:22124\n  servers:\n"
                                   "    - cache4:1:1\n");
    stub_calls = 0;
    assert_int_equal(dns_conf_pin(next, run, stub_resolve), 1);  /* cache4 only */
    assert_string_equal(server(next, 0, 0)->addr.resolved, "127.0.0.2");
    assert_string_equal(server(next, 1, 0)->addr.resolved, "127.0.0.2");
    assert_null(server(next, 3, 0)->addr.resolved);              /* cache4 unknown */
    conf_destroy(&run);
    conf_destroy(&next);
}

/* ---- following ---- */

/* POOLS pinned: cache1 127.0.0.2, cache2 127.0.0.3, cache3 127.0.0.4. */
static struct conf *pinned_pools(void)
{
    static const struct stub_rr zone[] = {
        { "cache1", "127.0.0.2", NULL }, { "cache2", "127.0.0.3", NULL },
        { "cache3", "127.0.0.4", NULL }, { NULL, NULL, NULL },
    };
    stub_zone = zone;
    struct conf *run = load(POOLS);
    dns_conf_pin(run, NULL, stub_resolve);
    return run;
}

static void test_follow_nothing_moves(void **state)
{
    (void)state;
    struct conf *run = pinned_pools();
    struct dns_answer same[] = {
        answer("cache1", "127.0.0.5", "127.0.0.2"),   /* still listed */
        answer("cache2", NULL, NULL),                 /* unreachable: keep */
        answer("cache3", "127.0.0.4", NULL),
    };
    assert_null(dns_conf_follow(run, same, 3));
    conf_destroy(&run);
}

static void test_follow_moves_the_name_only(void **state)
{
    (void)state;
    struct conf *run = pinned_pools();
    struct dns_answer moved[] = {
        answer("cache2", NULL, NULL),
        answer("cache1", "127.0.0.7", NULL),
    };
    struct conf *next = dns_conf_follow(run, moved, 2);
    assert_non_null(next);
    /* both servers named cache1 move; text and name stay (same ring point) */
    assert_string_equal(server(next, 0, 0)->addr.resolved, "127.0.0.7");
    assert_string_equal(server(next, 0, 0)->addr.host, "cache1");
    assert_string_equal(server(next, 0, 0)->text, "cache1:11211:1");
    assert_string_equal(server(next, 0, 0)->name, "one");
    assert_string_equal(server(next, 1, 0)->addr.resolved, "127.0.0.7");
    /* the others as they were; the running configuration untouched */
    assert_null(server(next, 0, 1)->addr.resolved);
    assert_string_equal(server(next, 0, 2)->addr.resolved, "127.0.0.3");
    assert_string_equal(next->pools[1].l1[0].servers[1].addr.resolved, "127.0.0.4");
    assert_string_equal(server(run, 0, 0)->addr.resolved, "127.0.0.2");
    conf_destroy(&run);
    conf_destroy(&next);
}

/* ---- the system resolver (no network: literals and a reserved name) ---- */

static void test_resolve_system(void **state)
{
    (void)state;
    struct dns_answer a = { .ok = false };
    dns_resolve_system("127.0.0.2", &a);
    assert_true(a.ok);
    assert_int_equal(a.naddrs, 1);
    assert_string_equal(a.addrs[0], "127.0.0.2");
    dns_resolve_system("::1", &a);
    assert_true(a.ok);
    assert_string_equal(a.addrs[0], "::1");
    int64_t start = util_now_ms();
    dns_resolve_system("no-such-host.invalid", &a);   /* RFC 6761: never resolves */
    assert_false(a.ok);
    assert_int_equal(a.naddrs, 0);
    assert_true(a.why[0] != '\0');
    assert_true(util_now_ms() - start <= DNS_LOOKUP_MS + 1000);
}

/* ---- connecting and reuse ---- */

static void test_resolve_uses_the_pinned_address(void **state)
{
    (void)state;
    struct conf_addr addr = { .host = "no-such-host.invalid", .port = 11211,
                              .resolved = "127.0.0.3" };
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    assert_int_equal(util_resolve(&addr, &ss, &len, err, sizeof(err)), 0);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    char text[INET_ADDRSTRLEN];
    assert_int_equal(in->sin_family, AF_INET);
    assert_int_equal(ntohs(in->sin_port), 11211);
    assert_string_equal(inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)), "127.0.0.3");
}

static void test_reuse_follows_the_pinned_address(void **state)
{
    (void)state;
    struct conf_tier tier = { .server_connections = 1 };
    struct conf_server old = { .addr = { .host = "cache1", .port = 1, .resolved = "127.0.0.2" } };
    struct conf_server same = old;
    struct conf_server moved = old;
    moved.addr.resolved = "127.0.0.3";
    struct conf_server unpinned = old;
    unpinned.addr.resolved = NULL;
    struct backend_server s = { .conf = &old, .nconns = 1 };
    assert_true(backend_server_reusable(&s, &same, &tier, false, NULL, 0));
    assert_false(backend_server_reusable(&s, &moved, &tier, false, NULL, 0));
    assert_false(backend_server_reusable(&s, &unpinned, &tier, false, NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_is_name),
        cmocka_unit_test(test_hosts_distinct_names_only),
        cmocka_unit_test(test_sentinel_pools_not_followed),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_pin_resolves_each_name_once),
        cmocka_unit_test(test_pin_keeps_the_running_addresses),
        cmocka_unit_test(test_follow_nothing_moves),
        cmocka_unit_test(test_follow_moves_the_name_only),
        cmocka_unit_test(test_resolve_system),
        cmocka_unit_test(test_resolve_uses_the_pinned_address),
        cmocka_unit_test(test_reuse_follows_the_pinned_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
