/* Unit tests for conf_yaml: every pool and tier key with its value and
 * default, tiers and inheritance, and every error message with its file,
 * line and key. Fixture files are written into a mkdtemp directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strata/conf.h"

#ifndef SRCDIR
#define SRCDIR "."
#endif

/* Per-test state: a temporary directory, the last file written and the
 * last configuration loaded (freed in teardown). */
struct fx {
    const void  *param;       /* the table row, for table-driven tests */
    char         dir[64];
    char         path[PATH_MAX];
    char         err[1024];
    struct conf *conf;
};

static int fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->param = *state;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/strata-conf-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    DIR *d = opendir(fx->dir);
    struct dirent *e;
    char path[PATH_MAX];

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof(path), "%s/%s", fx->dir, e->d_name);
            unlink(path);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(fx->dir);
    conf_destroy(&fx->conf);
    free(fx);
    return 0;
}

static const char *fx_write(struct fx *fx, const char *name, const char *text)
{
    snprintf(fx->path, sizeof(fx->path), "%s/%s", fx->dir, name);
    FILE *fp = fopen(fx->path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    return fx->path;
}

/* Loads `text`; fails the test with the loader's message on error. */
static struct conf *fx_load(struct fx *fx, const char *text)
{
    conf_destroy(&fx->conf);
    fx_write(fx, "pools.yml", text);
    fx->err[0] = '\0';
    int rc = conf_yaml_load(fx->path, &fx->conf, fx->err, sizeof(fx->err));
    if (rc != 0) {
        fail_msg("load failed: %s", fx->err);
    }
    assert_non_null(fx->conf);
    return fx->conf;
}

/* Loads `text` expecting an error "PATH:LINE: ...msg...". */
static void fx_load_err(struct fx *fx, const char *text, int line, const char *msg)
{
    char prefix[PATH_MAX + 32];

    conf_destroy(&fx->conf);
    fx_write(fx, "bad.yml", text);
    fx->err[0] = '\0';
    assert_int_equal(conf_yaml_load(fx->path, &fx->conf, fx->err, sizeof(fx->err)), -1);
    assert_null(fx->conf);
    snprintf(prefix, sizeof(prefix), "%s:%d: ", fx->path, line);
    if (strncmp(fx->err, prefix, strlen(prefix)) != 0 || strstr(fx->err, msg) == NULL) {
        fail_msg("got   \"%s\"\nwant  \"%s...%s\"", fx->err, prefix, msg);
    }
}

/* ---- keys, values and defaults ----------------------------------------- */

static void assert_tier_defaults(const struct conf_tier *t)
{
    assert_int_equal(t->hash, CONF_DEFAULT_HASH);
    assert_int_equal(t->distribution, CONF_DEFAULT_DIST);
    assert_false(t->has_hash_tag);
    assert_int_equal(t->timeout_ms, CONF_DEFAULT_TIMEOUT_MS);
    assert_int_equal(t->server_connections, CONF_DEFAULT_SERVER_CONNECTIONS);
    assert_false(t->auto_eject_hosts);
    assert_int_equal(t->server_retry_timeout_ms, CONF_DEFAULT_SERVER_RETRY_MS);
    assert_int_equal(t->server_failure_limit, CONF_DEFAULT_SERVER_FAILURE_LIMIT);
}

static void test_defaults(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 127.0.0.1:22121\n"
        "  servers:\n"
        "    - 127.0.0.1:11211:1\n");
    assert_int_equal(c->npools, 1);
    assert_string_equal(c->path, ((struct fx *)*state)->path);
    const struct conf_pool *p = &c->pools[0];
    assert_string_equal(p->name, "alpha");
    assert_int_equal(p->line, 1);
    assert_string_equal(p->listen.text, "127.0.0.1:22121");
    assert_string_equal(p->listen.addr.host, "127.0.0.1");
    assert_int_equal(p->listen.addr.port, 22121);
    assert_null(p->listen.addr.path);
    assert_int_equal(p->listen.perm, 0);
    assert_int_equal(p->hash, HASHKIT_HASH_FNV1A_64);
    assert_false(p->has_hash_tag);
    assert_int_equal(p->distribution, HASHKIT_DIST_KETAMA);
    assert_int_equal(p->timeout_ms, -1);
    assert_int_equal(p->backlog, 512);
    assert_false(p->preconnect);
    assert_false(p->redis);
    assert_null(p->redis_auth);
    assert_int_equal(p->redis_db, 0);
    assert_int_equal(p->server_connections, 1);
    assert_false(p->auto_eject_hosts);
    assert_int_equal(p->server_retry_timeout_ms, 30000);
    assert_int_equal(p->server_failure_limit, 2);
    assert_int_equal(p->client_connections, 0);
    assert_false(p->tcpkeepalive);
    assert_false(p->allow_flush);
    assert_int_equal(p->backfill_ttl, 0);
    assert_false(p->tiered);
    assert_null(p->slave);
    assert_null(p->l1);
    assert_int_equal(p->nl1, 0);
    assert_null(p->replicas);
    assert_int_equal(p->nreplicas, 0);
    assert_null(p->slaves);
    assert_int_equal(p->nslaves, 0);
    assert_true(p->read_from_master);      /* no slaves: reads go to master */
    assert_int_equal(p->master.nservers, 1);
    assert_tier_defaults(&p->master);
}

static void test_every_key(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 0.0.0.0:22121\n"
        "  hash: murmur\n"
        "  hash_tag: \"{}\"\n"
        "  distribution: modula\n"
        "  timeout: 400\n"
        "  backlog: 1024\n"
        "  preconnect: true\n"
        "  redis: false\n"
        "  redis_auth: secret\n"
        "  redis_db: 3\n"
        "  server_connections: 4\n"
        "  auto_eject_hosts: true\n"
        "  server_retry_timeout: 2000\n"
        "  server_failure_limit: 5\n"
        "  client_connections: 100\n"
        "  tcpkeepalive: true\n"
        "  allow_flush: true\n"
        "  backfill_ttl: 60\n"
        "  servers:\n"
        "    - 127.0.0.1:11211:1\n");
    const struct conf_pool *p = &c->pools[0];
    assert_string_equal(p->listen.addr.host, "0.0.0.0");
    assert_int_equal(p->hash, HASHKIT_HASH_MURMUR);
    assert_true(p->has_hash_tag);
    assert_memory_equal(p->hash_tag, "{}", 2);
    assert_int_equal(p->distribution, HASHKIT_DIST_MODULA);
    assert_int_equal(p->timeout_ms, 400);
    assert_int_equal(p->backlog, 1024);
    assert_true(p->preconnect);
    assert_false(p->redis);
    assert_string_equal(p->redis_auth, "secret");
    assert_int_equal(p->redis_db, 3);
    assert_int_equal(p->server_connections, 4);
    assert_true(p->auto_eject_hosts);
    assert_int_equal(p->server_retry_timeout_ms, 2000);
    assert_int_equal(p->server_failure_limit, 5);
    assert_int_equal(p->client_connections, 100);
    assert_true(p->tcpkeepalive);
    assert_true(p->allow_flush);
    assert_int_equal(p->backfill_ttl, 60);
    /* a plain pool's servers carry the pool's settings */
    const struct conf_tier *m = &p->master;
    assert_int_equal(m->hash, HASHKIT_HASH_MURMUR);
    assert_true(m->has_hash_tag);
    assert_memory_equal(m->hash_tag, "{}", 2);
    assert_int_equal(m->distribution, HASHKIT_DIST_MODULA);
    assert_int_equal(m->timeout_ms, 400);
    assert_int_equal(m->server_connections, 4);
    assert_true(m->auto_eject_hosts);
    assert_int_equal(m->server_retry_timeout_ms, 2000);
    assert_int_equal(m->server_failure_limit, 5);
}

/* Settings written after `servers:` still apply to them. */
static void test_key_order(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  servers:\n"
        "    - 127.0.0.1:11211:1\n"
        "  timeout: 250\n"
        "  hash: md5\n"
        "  listen: 127.0.0.1:22121\n");
    assert_int_equal(c->pools[0].master.timeout_ms, 250);
    assert_int_equal(c->pools[0].master.hash, HASHKIT_HASH_MD5);
}

static void test_false_and_zero(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 127.0.0.1:22121\n"
        "  preconnect: false\n"
        "  auto_eject_hosts: false\n"
        "  tcpkeepalive: false\n"
        "  allow_flush: false\n"
        "  timeout: 0\n"
        "  backfill_ttl: 2592000\n"
        "  server_failure_limit: 0\n"
        "  server_retry_timeout: 0\n"
        "  servers: [127.0.0.1:11211:1]\n");
    const struct conf_pool *p = &c->pools[0];
    assert_false(p->preconnect);
    assert_false(p->auto_eject_hosts);
    assert_false(p->tcpkeepalive);
    assert_false(p->allow_flush);
    assert_int_equal(p->timeout_ms, -1);          /* 0: none, as twemproxy */
    assert_int_equal(p->master.timeout_ms, -1);
    assert_int_equal(p->backfill_ttl, 2592000);
    assert_int_equal(p->server_failure_limit, 0);
    assert_int_equal(p->server_retry_timeout_ms, 0);
}

static void test_every_hash(void **state)
{
    for (int h = 0; h < HASHKIT_HASH_COUNT; h++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "a:\n  listen: 127.0.0.1:1\n  hash: %s\n  servers: [h:1:1]\n",
                 hashkit_hash_name((enum hashkit_hash)h));
        struct conf *c = fx_load(*state, text);
        assert_int_equal(c->pools[0].hash, h);
        assert_int_equal(c->pools[0].master.hash, h);
    }
}

static void test_every_distribution(void **state)
{
    for (int d = 0; d < HASHKIT_DIST_COUNT; d++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "a:\n  listen: 127.0.0.1:1\n  distribution: %s\n  servers: [h:1:1]\n",
                 hashkit_dist_name((enum hashkit_dist)d));
        struct conf *c = fx_load(*state, text);
        assert_int_equal(c->pools[0].distribution, d);
        assert_int_equal(c->pools[0].master.distribution, d);
    }
}

static void test_several_pools(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 127.0.0.1:22121\n"
        "  servers:\n"
        "    - 127.0.0.1:11211:1\n"
        "\n"
        "beta:\n"
        "  listen: 127.0.0.1:22122\n"
        "  hash: crc32a\n"
        "  servers:\n"
        "    - 127.0.0.1:11212:1\n"
        "gamma:\n"
        "  listen: 127.0.0.1:22123\n"
        "  servers:\n"
        "    - 127.0.0.1:11213:1\n");
    assert_int_equal(c->npools, 3);
    assert_string_equal(c->pools[0].name, "alpha");
    assert_string_equal(c->pools[1].name, "beta");
    assert_string_equal(c->pools[2].name, "gamma");
    assert_int_equal(c->pools[0].line, 1);
    assert_int_equal(c->pools[1].line, 6);
    assert_int_equal(c->pools[2].line, 11);
    assert_int_equal(c->pools[1].listen.addr.port, 22122);
    assert_int_equal(c->pools[1].hash, HASHKIT_HASH_CRC32A);
    assert_int_equal(c->pools[0].hash, HASHKIT_HASH_FNV1A_64);
    assert_int_equal(c->pools[2].master.servers[0].addr.port, 11213);
}

static void test_server_forms(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 127.0.0.1:22121\n"
        "  servers:\n"
        "    - 127.0.0.1:11211:1\n"
        "    - cache.example.com:11212:3 cache-b\n"
        "    - \"[::1]:11213:1\"\n"
        "    - ::1:11214:2\n"
        "    - /var/run/memcached.sock:5 local\n");
    const struct conf_tier *t = &c->pools[0].master;
    assert_int_equal(t->nservers, 5);
    const struct conf_server *s = t->servers;
    assert_string_equal(s[0].addr.host, "127.0.0.1");
    assert_int_equal(s[0].addr.port, 11211);
    assert_null(s[0].addr.path);
    assert_int_equal(s[0].weight, 1);
    assert_null(s[0].name);
    assert_string_equal(s[0].text, "127.0.0.1:11211:1");
    assert_int_equal(s[0].line, 4);
    assert_string_equal(s[1].addr.host, "cache.example.com");
    assert_int_equal(s[1].addr.port, 11212);
    assert_int_equal(s[1].weight, 3);
    assert_string_equal(s[1].name, "cache-b");
    assert_string_equal(s[1].text, "cache.example.com:11212:3");
    assert_int_equal(s[1].line, 5);
    assert_string_equal(s[2].addr.host, "::1");
    assert_int_equal(s[2].addr.port, 11213);
    assert_string_equal(s[3].addr.host, "::1");
    assert_int_equal(s[3].addr.port, 11214);
    assert_int_equal(s[3].weight, 2);
    assert_null(s[4].addr.host);
    assert_int_equal(s[4].addr.port, 0);
    assert_string_equal(s[4].addr.path, "/var/run/memcached.sock");
    assert_int_equal(s[4].weight, 5);
    assert_string_equal(s[4].name, "local");
    assert_string_equal(s[4].text, "/var/run/memcached.sock:5");
    assert_int_equal(s[4].line, 8);
}

static void test_unix_listen(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: /tmp/strata-alpha.sock 0666\n"
        "  servers: [127.0.0.1:11211:1]\n"
        "beta:\n"
        "  listen: /tmp/strata-beta.sock\n"
        "  servers: [127.0.0.1:11211:1]\n"
        "gamma:\n"
        "  listen: \"/tmp/strata-gamma.sock 600\"\n"
        "  servers: [127.0.0.1:11211:1]\n");
    const struct conf_listen *l = &c->pools[0].listen;
    assert_string_equal(l->addr.path, "/tmp/strata-alpha.sock");
    assert_null(l->addr.host);
    assert_int_equal(l->addr.port, 0);
    assert_int_equal(l->perm, 0666);
    assert_string_equal(l->text, "/tmp/strata-alpha.sock 0666");
    assert_string_equal(c->pools[1].listen.addr.path, "/tmp/strata-beta.sock");
    assert_int_equal(c->pools[1].listen.perm, 0);
    assert_int_equal(c->pools[2].listen.perm, 0600);
}

static void test_listen_ipv6(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: \"[::1]:22121\"\n"
        "  servers: [127.0.0.1:11211:1]\n"
        "beta:\n"
        "  listen: localhost:22122\n"
        "  servers: [127.0.0.1:11211:1]\n");
    assert_string_equal(c->pools[0].listen.addr.host, "::1");
    assert_int_equal(c->pools[0].listen.addr.port, 22121);
    assert_string_equal(c->pools[0].listen.text, "[::1]:22121");
    assert_string_equal(c->pools[1].listen.addr.host, "localhost");
}

static void test_flow_and_block(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha: {listen: \"127.0.0.1:22121\", servers: [a:1:1, b:2:1]}\n"
        "beta:\n"
        "  listen: 127.0.0.1:22122\n"
        "  master: {servers: [c:3:1, d:4:1], timeout: 7}\n"
        "  l1: [{servers: [e:5:1]}, {servers: [f:6:1]}]\n"
        "  replicas:\n"
        "    - servers:\n"
        "        - g:7:1\n"
        "        - h:8:1\n");
    const struct conf_pool *a = &c->pools[0];
    assert_int_equal(a->master.nservers, 2);
    assert_string_equal(a->master.servers[1].addr.host, "b");
    const struct conf_pool *b = &c->pools[1];
    assert_int_equal(b->master.nservers, 2);
    assert_int_equal(b->master.timeout_ms, 7);
    assert_int_equal(b->nl1, 2);
    assert_string_equal(b->l1[1].servers[0].addr.host, "f");
    assert_int_equal(b->nreplicas, 1);
    assert_int_equal(b->replicas[0].nservers, 2);
    assert_int_equal(b->replicas[0].servers[1].line, 9);
}

/* Anchors and aliases are plain YAML; the document API resolves them. */
static void test_alias(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 127.0.0.1:22121\n"
        "  servers: &shared\n"
        "    - 127.0.0.1:11211:1\n"
        "beta:\n"
        "  listen: 127.0.0.1:22122\n"
        "  servers: *shared\n");
    assert_int_equal(c->pools[1].master.nservers, 1);
    assert_int_equal(c->pools[1].master.servers[0].addr.port, 11211);
}

static void test_tiers_inherit(void **state)
{
    struct conf *c = fx_load(*state,
        "beta:\n"
        "  listen: 127.0.0.1:22122\n"
        "  hash: md5\n"
        "  hash_tag: \"{}\"\n"
        "  distribution: modula\n"
        "  timeout: 400\n"
        "  server_connections: 2\n"
        "  auto_eject_hosts: true\n"
        "  server_retry_timeout: 1000\n"
        "  server_failure_limit: 3\n"
        "  backfill_ttl: 60\n"
        "  master:\n"
        "    servers: [127.0.0.1:11221:1, 127.0.0.1:11222:1]\n"
        "  slave:\n"
        "    hash: crc32\n"
        "    hash_tag: \"[]\"\n"
        "    distribution: random\n"
        "    timeout: 50\n"
        "    server_connections: 8\n"
        "    auto_eject_hosts: false\n"
        "    server_retry_timeout: 10\n"
        "    server_failure_limit: 9\n"
        "    servers: [127.0.0.1:11231:1]\n"
        "  l1:\n"
        "    - servers: [127.0.0.1:11241:1]\n"
        "      timeout: 20\n"
        "    - servers: [127.0.0.1:11251:1]\n"
        "  replicas:\n"
        "    - servers: [127.0.0.1:11261:1]\n"
        "      timeout: 0\n");
    const struct conf_pool *p = &c->pools[0];
    assert_true(p->tiered);
    assert_int_equal(p->backfill_ttl, 60);

    const struct conf_tier *m = &p->master;   /* all inherited */
    assert_int_equal(m->nservers, 2);
    assert_int_equal(m->servers[1].addr.port, 11222);
    assert_int_equal(m->hash, HASHKIT_HASH_MD5);
    assert_true(m->has_hash_tag);
    assert_memory_equal(m->hash_tag, "{}", 2);
    assert_int_equal(m->distribution, HASHKIT_DIST_MODULA);
    assert_int_equal(m->timeout_ms, 400);
    assert_int_equal(m->server_connections, 2);
    assert_true(m->auto_eject_hosts);
    assert_int_equal(m->server_retry_timeout_ms, 1000);
    assert_int_equal(m->server_failure_limit, 3);

    const struct conf_tier *s = p->slave;     /* all overridden */
    assert_non_null(s);
    assert_int_equal(s->nservers, 1);
    assert_int_equal(s->hash, HASHKIT_HASH_CRC32);
    assert_memory_equal(s->hash_tag, "[]", 2);
    assert_int_equal(s->distribution, HASHKIT_DIST_RANDOM);
    assert_int_equal(s->timeout_ms, 50);
    assert_int_equal(s->server_connections, 8);
    assert_false(s->auto_eject_hosts);
    assert_int_equal(s->server_retry_timeout_ms, 10);
    assert_int_equal(s->server_failure_limit, 9);

    assert_int_equal(p->nl1, 2);
    assert_int_equal(p->l1[0].timeout_ms, 20);
    assert_int_equal(p->l1[0].hash, HASHKIT_HASH_MD5);
    assert_int_equal(p->l1[1].timeout_ms, 400);
    assert_int_equal(p->l1[1].servers[0].addr.port, 11251);
    assert_int_equal(p->nreplicas, 1);
    assert_int_equal(p->replicas[0].distribution, HASHKIT_DIST_MODULA);
    assert_int_equal(p->replicas[0].timeout_ms, -1);   /* 0 turns it off */
    assert_int_equal(p->replicas[0].servers[0].addr.port, 11261);
}

/* Tiers inherit settings written after them in the file. */
static void test_tiers_before_settings(void **state)
{
    struct conf *c = fx_load(*state,
        "beta:\n"
        "  master:\n"
        "    servers: [127.0.0.1:11221:1]\n"
        "  slave:\n"
        "    servers: [127.0.0.1:11231:1]\n"
        "    timeout: 9\n"
        "  timeout: 400\n"
        "  hash: hsieh\n"
        "  listen: 127.0.0.1:22122\n");
    const struct conf_pool *p = &c->pools[0];
    assert_int_equal(p->master.timeout_ms, 400);
    assert_int_equal(p->master.hash, HASHKIT_HASH_HSIEH);
    assert_int_equal(p->slave->timeout_ms, 9);
    assert_int_equal(p->slave->hash, HASHKIT_HASH_HSIEH);
    assert_int_equal(p->nl1, 0);
    assert_null(p->l1);
}

static void test_master_replicas(void **state)
{
    struct conf *c = fx_load(*state,
        "xdc:\n"
        "  listen: 127.0.0.1:22123\n"
        "  master:\n"
        "    servers: [10.0.1.10:11211:1]\n"
        "  replicas:\n"
        "    - servers: [10.0.2.10:11211:1]\n"
        "    - servers: [10.0.3.10:11211:1]\n"
        "      timeout: 1000\n");
    const struct conf_pool *p = &c->pools[0];
    assert_true(p->tiered);
    assert_null(p->slave);
    assert_int_equal(p->nl1, 0);
    assert_int_equal(p->nreplicas, 2);
    assert_int_equal(p->replicas[0].timeout_ms, -1);
    assert_int_equal(p->replicas[1].timeout_ms, 1000);
    assert_string_equal(p->replicas[1].servers[0].addr.host, "10.0.3.10");
}

/* Servers of different tiers may share a name; within a tier they may
 * not. Named servers are compared by name only, as twemproxy does. */
static void test_server_names(void **state)
{
    struct conf *c = fx_load(*state,
        "alpha:\n"
        "  listen: 127.0.0.1:22121\n"
        "  servers:\n"
        "    - 127.0.0.1:11211:1 one\n"
        "    - 127.0.0.1:11211:1 two\n"
        "    - 127.0.0.1:11212:1\n"
        "    - 127.0.0.2:11212:1\n"
        "beta:\n"
        "  listen: 127.0.0.1:22122\n"
        "  master: {servers: [127.0.0.1:11211:1]}\n"
        "  slave: {servers: [127.0.0.1:11211:1]}\n");
    assert_int_equal(c->pools[0].master.nservers, 4);
    assert_int_equal(c->pools[1].slave->nservers, 1);
}

/* ---- redis pools ------------------------------------------------------- */

/* twemproxy's Redis pool: the same keys, defaults and routing. */
static void test_redis_plain(void **state)
{
    struct conf *c = fx_load(*state,
        "r:\n"
        "  listen: 127.0.0.1:22123\n"
        "  redis: true\n"
        "  redis_auth: s3cret\n"
        "  redis_db: 5\n"
        "  hash: murmur\n"
        "  servers:\n"
        "    - 127.0.0.1:6379:1 a\n"
        "    - 127.0.0.1:6380:2 b\n"
        "d:\n"
        "  listen: 127.0.0.1:22124\n"
        "  redis: true\n"
        "  read_from: master\n"
        "  servers: [127.0.0.1:6381:1]\n");
    const struct conf_pool *p = &c->pools[0];
    assert_true(p->redis);
    assert_string_equal(p->redis_auth, "s3cret");
    assert_int_equal(p->redis_db, 5);
    assert_false(p->tiered);
    assert_int_equal(p->master.nservers, 2);
    assert_int_equal(p->master.hash, HASHKIT_HASH_MURMUR);
    assert_int_equal(p->master.servers[1].weight, 2);
    assert_null(p->slaves);
    assert_int_equal(p->nslaves, 0);
    assert_true(p->read_from_master);
    const struct conf_pool *d = &c->pools[1];   /* twemproxy's defaults */
    assert_true(d->redis);
    assert_null(d->redis_auth);
    assert_int_equal(d->redis_db, 0);
    assert_int_equal(d->timeout_ms, -1);
    assert_true(d->read_from_master);
    assert_tier_defaults(&d->master);
}

/* Two slave tiers: matched to master by name, put in master's order,
 * routing taken from master, other settings inherited from the pool. */
static void test_redis_slaves(void **state)
{
    struct conf *c = fx_load(*state,
        "sessions:\n"
        "  listen: 127.0.0.1:22123\n"
        "  slaves:\n"
        "    - servers:\n"
        "        - 10.0.2.1:6379:1 shard-a\n"
        "        - 10.0.2.2:6379:2 shard-b\n"
        "    - servers:\n"
        "        - 10.0.3.2:6379:2 shard-b\n"
        "        - 10.0.3.1:6379:1 shard-a\n"
        "      timeout: 900\n"
        "      distribution: modula\n"
        "  redis: true\n"
        "  hash: fnv1a_64\n"
        "  hash_tag: \"{}\"\n"
        "  timeout: 300\n"
        "  master:\n"
        "    distribution: modula\n"
        "    servers:\n"
        "      - 10.0.1.1:6379:1 shard-a\n"
        "      - 10.0.1.2:6379:2 shard-b\n");
    const struct conf_pool *p = &c->pools[0];
    assert_true(p->redis);
    assert_true(p->tiered);
    assert_false(p->read_from_master);      /* default with slaves */
    assert_int_equal(p->master.distribution, HASHKIT_DIST_MODULA);
    assert_int_equal(p->nslaves, 2);
    for (uint32_t k = 0; k < p->nslaves; k++) {
        const struct conf_tier *s = &p->slaves[k];
        assert_int_equal(s->nservers, 2);
        assert_string_equal(s->servers[0].name, "shard-a");
        assert_string_equal(s->servers[1].name, "shard-b");
        assert_int_equal(s->servers[1].weight, 2);
        assert_int_equal(s->hash, HASHKIT_HASH_FNV1A_64);
        assert_int_equal(s->distribution, HASHKIT_DIST_MODULA);   /* master's */
        assert_true(s->has_hash_tag);
        assert_memory_equal(s->hash_tag, "{}", 2);
    }
    assert_string_equal(p->slaves[0].servers[0].addr.host, "10.0.2.1");
    assert_int_equal(p->slaves[0].timeout_ms, 300);
    /* slaves[1] was written shard-b first: reordered, lines kept */
    assert_string_equal(p->slaves[1].servers[0].addr.host, "10.0.3.1");
    assert_int_equal(p->slaves[1].servers[0].line, 9);
    assert_int_equal(p->slaves[1].servers[1].line, 8);
    assert_int_equal(p->slaves[1].timeout_ms, 900);
}

/* Unnamed master servers: slaves copy them by position. */
static void test_redis_slaves_by_position(void **state)
{
    struct conf *c = fx_load(*state,
        "r:\n"
        "  listen: 127.0.0.1:22123\n"
        "  redis: true\n"
        "  read_from: master\n"
        "  master: {servers: [10.0.1.1:6379:1, 10.0.1.2:6379:3]}\n"
        "  slaves:\n"
        "    - servers: [10.0.2.1:6379:1, 10.0.2.2:6379:3]\n");
    const struct conf_pool *p = &c->pools[0];
    assert_true(p->read_from_master);
    assert_int_equal(p->nslaves, 1);
    assert_string_equal(p->slaves[0].servers[1].addr.host, "10.0.2.2");
    assert_int_equal(p->slaves[0].servers[1].weight, 3);
}

/* A tiered Redis pool may have a master and no slaves. */
static void test_redis_master_only(void **state)
{
    struct conf *c = fx_load(*state,
        "r:\n"
        "  listen: 127.0.0.1:22123\n"
        "  redis: true\n"
        "  master: {servers: [10.0.1.1:6379:1]}\n");
    assert_true(c->pools[0].tiered);
    assert_int_equal(c->pools[0].nslaves, 0);
    assert_true(c->pools[0].read_from_master);
}

static void test_examples(void **state)
{
    struct fx *fx = *state;
    struct conf *c = NULL;

    assert_int_equal(conf_yaml_load(SRCDIR "/conf/nutcracker.yml", &c, fx->err,
                                    sizeof(fx->err)), 0);
    assert_int_equal(c->npools, 1);
    assert_int_equal(c->pools[0].listen.addr.port, 22121);
    assert_int_equal(c->pools[0].master.nservers, 2);
    assert_int_equal(c->pools[0].master.servers[0].addr.port, 11211);
    assert_int_equal(c->pools[0].master.servers[1].addr.port, 11212);
    conf_destroy(&c);
    assert_null(c);

    assert_int_equal(conf_yaml_load(SRCDIR "/conf/tiers.yml", &c, fx->err,
                                    sizeof(fx->err)), 0);
    assert_int_equal(c->npools, 2);
    assert_false(c->pools[0].tiered);
    assert_true(c->pools[1].tiered);
    assert_non_null(c->pools[1].slave);
    assert_int_equal(c->pools[1].nl1, 2);
    assert_int_equal(c->pools[1].nreplicas, 1);
    assert_int_equal(c->pools[1].backfill_ttl, 60);
    conf_destroy(&c);

    assert_int_equal(conf_yaml_load(SRCDIR "/conf/cross-dc.yml", &c, fx->err,
                                    sizeof(fx->err)), 0);
    assert_true(c->pools[0].tiered);
    assert_null(c->pools[0].slave);
    assert_int_equal(c->pools[0].nl1, 0);
    assert_int_equal(c->pools[0].nreplicas, 2);
    conf_destroy(&c);

    assert_int_equal(conf_yaml_load(SRCDIR "/conf/redis.yml", &c, fx->err,
                                    sizeof(fx->err)), 0);
    assert_true(c->pools[0].redis);
    assert_false(c->pools[0].tiered);
    assert_int_equal(c->pools[0].master.nservers, 2);
    conf_destroy(&c);

    assert_int_equal(conf_yaml_load(SRCDIR "/conf/redis_replicas.yml", &c, fx->err,
                                    sizeof(fx->err)), 0);
    assert_true(c->pools[0].redis);
    assert_true(c->pools[0].tiered);
    assert_int_equal(c->pools[0].nslaves, 2);
    assert_false(c->pools[0].read_from_master);
    assert_int_equal(c->pools[0].slaves[1].timeout_ms, 1000);
    conf_destroy(&c);
}

/* Every file under conf/ that is a pool file loads. */
static void test_every_example(void **state)
{
    struct fx *fx = *state;
    DIR *d = opendir(SRCDIR "/conf");
    struct dirent *e;
    unsigned n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".yml") != 0 ||
            strcmp(e->d_name, "demo.yml") == 0) {      /* a template for demo.sh */
            continue;
        }
        char path[PATH_MAX];
        struct conf *c = NULL;
        snprintf(path, sizeof(path), "%s/conf/%s", SRCDIR, e->d_name);
        if (conf_yaml_load(path, &c, fx->err, sizeof(fx->err)) != 0) {
            fail_msg("%s", fx->err);
        }
        conf_destroy(&c);
        n++;
    }
    closedir(d);
    assert_true(n >= 5);
}

static void test_missing_file(void **state)
{
    struct fx *fx = *state;
    char path[PATH_MAX + 32];
    char want[PATH_MAX + 64];

    struct conf *c = (struct conf *)&path;   /* must be reset to NULL */

    snprintf(path, sizeof(path), "%s/none.yml", fx->dir);
    assert_int_equal(conf_yaml_load(path, &c, fx->err, sizeof(fx->err)), -1);
    assert_null(c);
    snprintf(want, sizeof(want), "%s:0: cannot open the pool file: ", path);
    assert_memory_equal(fx->err, want, strlen(want));
}

/* No error buffer: still -1, nothing written. */
static void test_no_err_buffer(void **state)
{
    struct fx *fx = *state;
    fx_write(fx, "bad.yml", "alpha: 1\n");
    assert_int_equal(conf_yaml_load(fx->path, &fx->conf, NULL, 0), -1);
    assert_null(fx->conf);
}

/* A short buffer gets a truncated, NUL-terminated message. */
static void test_short_err_buffer(void **state)
{
    struct fx *fx = *state;
    char err[8];
    fx_write(fx, "bad.yml", "alpha: 1\n");
    assert_int_equal(conf_yaml_load(fx->path, &fx->conf, err, sizeof(err)), -1);
    assert_int_equal(strlen(err), sizeof(err) - 1);
}

static void test_destroy_null(void **state)
{
    (void)state;
    struct conf *c = NULL;
    conf_destroy(&c);
    conf_destroy(NULL);
    assert_null(c);
}

/* ---- errors: one row per message --------------------------------------- */

struct err_case {
    const char *name;
    const char *yaml;
    int         line;
    const char *msg;
};

#define POOL_HEAD "alpha:\n  listen: 127.0.0.1:22121\n"
#define SERVERS   "  servers:\n    - 127.0.0.1:11211:1\n"
#define REDIS_HEAD "r:\n  listen: 127.0.0.1:22123\n  redis: true\n"
#define MASTER_AB "  master:\n    servers:\n      - 10.0.1.1:6379:1 shard-a\n" \
                  "      - 10.0.1.2:6379:1 shard-b\n"
#define MASTER_UNNAMED "  master:\n    servers: [10.0.1.1:6379:1, 10.0.1.2:6379:1]\n"
#define SLAVES_AB "  slaves:\n    - servers:\n        - 10.0.2.1:6379:1 shard-a\n" \
                  "        - 10.0.2.2:6379:1 shard-b\n"
#define TIER_HEAD "beta:\n  listen: 127.0.0.1:22122\n  master:\n    servers: [127.0.0.1:1:1]\n"

static const struct err_case err_cases[] = {
    /* keys */
    { "unknown_key", POOL_HEAD "  hashh: fnv1a_64\n" SERVERS, 3,
      "unknown key 'hashh' in pool 'alpha'" },
    { "duplicate_key", POOL_HEAD "  timeout: 1\n  timeout: 2\n" SERVERS, 4,
      "duplicate key 'timeout' in pool 'alpha'" },
    { "duplicate_servers_key", POOL_HEAD SERVERS SERVERS, 5,
      "duplicate key 'servers' in pool 'alpha'" },
    { "key_not_string", POOL_HEAD "  [a]: b\n" SERVERS, 3,
      "a key in pool 'alpha' is not a string" },
    { "missing_listen", "alpha:\n" SERVERS, 1, "missing key 'listen' in pool 'alpha'" },
    { "missing_servers_key", POOL_HEAD "  timeout: 5\n", 1,
      "missing key 'servers' in pool 'alpha'" },
    /* numbers */
    { "timeout_abc", POOL_HEAD "  timeout: abc\n" SERVERS, 3,
      "key 'timeout' in pool 'alpha' is not a number: 'abc'" },
    { "timeout_negative", POOL_HEAD "  timeout: -1\n" SERVERS, 3,
      "key 'timeout' in pool 'alpha' is not a number: '-1'" },
    { "timeout_empty", POOL_HEAD "  timeout:\n" SERVERS, 3,
      "key 'timeout' in pool 'alpha' is not a number: ''" },
    { "timeout_float", POOL_HEAD "  timeout: 1.5\n" SERVERS, 3,
      "key 'timeout' in pool 'alpha' is not a number: '1.5'" },
    { "timeout_huge", POOL_HEAD "  timeout: 99999999999999999999999\n" SERVERS, 3,
      "key 'timeout' in pool 'alpha' is out of range 0..2147483647" },
    { "timeout_list", POOL_HEAD "  timeout: [1]\n" SERVERS, 3,
      "key 'timeout' in pool 'alpha' must be a single value" },
    { "backlog_abc", POOL_HEAD "  backlog: x\n" SERVERS, 3,
      "key 'backlog' in pool 'alpha' is not a number: 'x'" },
    { "redis_db_abc", POOL_HEAD "  redis_db: x\n" SERVERS, 3,
      "key 'redis_db' in pool 'alpha' is not a number" },
    { "client_connections_abc", POOL_HEAD "  client_connections: x\n" SERVERS, 3,
      "key 'client_connections' in pool 'alpha' is not a number" },
    { "server_connections_zero", POOL_HEAD "  server_connections: 0\n" SERVERS, 3,
      "key 'server_connections' in pool 'alpha' is out of range 1..2147483647: '0'" },
    { "server_retry_timeout_abc", POOL_HEAD "  server_retry_timeout: 1s\n" SERVERS, 3,
      "key 'server_retry_timeout' in pool 'alpha' is not a number: '1s'" },
    { "server_failure_limit_abc", POOL_HEAD "  server_failure_limit: many\n" SERVERS, 3,
      "key 'server_failure_limit' in pool 'alpha' is not a number: 'many'" },
    { "backfill_ttl_large", POOL_HEAD "  backfill_ttl: 2592001\n" SERVERS, 3,
      "key 'backfill_ttl' in pool 'alpha' is out of range 0..2592000: '2592001'" },
    { "backfill_ttl_negative", POOL_HEAD "  backfill_ttl: -5\n" SERVERS, 3,
      "key 'backfill_ttl' in pool 'alpha' is not a number: '-5'" },
    /* booleans, strings, names */
    { "preconnect_yes", POOL_HEAD "  preconnect: yes\n" SERVERS, 3,
      "key 'preconnect' in pool 'alpha' is not \"true\" or \"false\": 'yes'" },
    { "auto_eject_hosts_1", POOL_HEAD "  auto_eject_hosts: 1\n" SERVERS, 3,
      "key 'auto_eject_hosts' in pool 'alpha' is not \"true\" or \"false\": '1'" },
    { "tcpkeepalive_on", POOL_HEAD "  tcpkeepalive: on\n" SERVERS, 3,
      "key 'tcpkeepalive' in pool 'alpha' is not \"true\" or \"false\"" },
    { "allow_flush_True", POOL_HEAD "  allow_flush: True\n" SERVERS, 3,
      "key 'allow_flush' in pool 'alpha' is not \"true\" or \"false\": 'True'" },
    { "redis_maybe", POOL_HEAD "  redis: maybe\n" SERVERS, 3,
      "key 'redis' in pool 'alpha' is not \"true\" or \"false\"" },
    { "redis_auth_list", POOL_HEAD "  redis_auth: [a]\n" SERVERS, 3,
      "key 'redis_auth' in pool 'alpha' must be a single value" },
    { "hash_foo", POOL_HEAD "  hash: foo\n" SERVERS, 3,
      "key 'hash' in pool 'alpha' is not a valid hash: 'foo'" },
    { "distribution_foo", POOL_HEAD "  distribution: foo\n" SERVERS, 3,
      "key 'distribution' in pool 'alpha' is not a valid distribution" },
    { "hash_tag_one", POOL_HEAD "  hash_tag: \"{\"\n" SERVERS, 3,
      "key 'hash_tag' in pool 'alpha' is not a hash tag of exactly two characters: '{'" },
    { "hash_tag_three", POOL_HEAD "  hash_tag: \"{}}\"\n" SERVERS, 3,
      "key 'hash_tag' in pool 'alpha' is not a hash tag of exactly two characters" },
    { "hash_tag_mapping", POOL_HEAD "  hash_tag: {}\n" SERVERS, 3,
      "key 'hash_tag' in pool 'alpha' must be a single value" },
    /* listen */
    { "listen_no_port", "alpha:\n  listen: 127.0.0.1\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has no port (\"host:port\"): '127.0.0.1'" },
    { "listen_bad_port", "alpha:\n  listen: 127.0.0.1:99999\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has an invalid port (1..65535): '127.0.0.1:99999'" },
    { "listen_port_zero", "alpha:\n  listen: 127.0.0.1:0\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has an invalid port" },
    { "listen_port_text", "alpha:\n  listen: 127.0.0.1:http\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has an invalid port" },
    { "listen_empty_host", "alpha:\n  listen: :22121\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has an empty host" },
    { "listen_bad_perm", "alpha:\n  listen: /tmp/s.sock 0999\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has invalid permissions (\"/path/socket 0666\")" },
    { "listen_perm_too_big", "alpha:\n  listen: /tmp/s.sock 01777\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has invalid permissions" },
    { "listen_long_path", "alpha:\n  listen: /tmp/"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n" SERVERS, 2,
      "key 'listen' in pool 'alpha' has a unix socket path that is too long" },
    { "listen_mapping", "alpha:\n  listen:\n    host: x\n" SERVERS, 3,
      "key 'listen' in pool 'alpha' must be a single value" },
    { "duplicate_listen", POOL_HEAD SERVERS "beta:\n  listen: 127.0.0.1:22121\n" SERVERS, 6,
      "key 'listen' in pool 'beta' has the same address as pool 'alpha': '127.0.0.1:22121'" },
    { "duplicate_listen_unix",
      "alpha:\n  listen: /tmp/s.sock 0600\n" SERVERS
      "beta:\n  listen: /tmp/s.sock\n" SERVERS, 6,
      "key 'listen' in pool 'beta' has the same address as pool 'alpha'" },
    /* servers */
    { "server_zero_weight", POOL_HEAD "  servers:\n    - 127.0.0.1:11211:1\n"
      "    - 127.0.0.1:11212:0\n", 5,
      "key 'servers' in pool 'alpha' has a zero weight: '127.0.0.1:11212:0'" },
    { "server_bad_weight", POOL_HEAD "  servers:\n    - 127.0.0.1:11211:x\n", 4,
      "key 'servers' in pool 'alpha' has an invalid weight: '127.0.0.1:11211:x'" },
    { "server_no_weight", POOL_HEAD "  servers:\n    - 127.0.0.1:11211\n", 4,
      "key 'servers' in pool 'alpha' is not \"host:port:weight [name]\" or "
      "\"/path:weight [name]\": '127.0.0.1:11211'" },
    { "server_bad_port", POOL_HEAD "  servers:\n    - 127.0.0.1:70000:1\n", 4,
      "key 'servers' in pool 'alpha' has an invalid port (1..65535): '127.0.0.1:70000:1'" },
    { "server_port_zero", POOL_HEAD "  servers:\n    - 127.0.0.1:0:1\n", 4,
      "key 'servers' in pool 'alpha' has an invalid port" },
    { "server_empty_host", POOL_HEAD "  servers:\n    - :11211:1\n", 4,
      "key 'servers' in pool 'alpha' has an empty host" },
    { "server_two_names", POOL_HEAD "  servers:\n    - 127.0.0.1:11211:1 a b\n", 4,
      "key 'servers' in pool 'alpha' is not \"host:port:weight [name]\"" },
    { "server_unix_no_weight", POOL_HEAD "  servers:\n    - /tmp/mc.sock\n", 4,
      "key 'servers' in pool 'alpha' is not \"host:port:weight [name]\"" },
    { "server_unix_zero_weight", POOL_HEAD "  servers:\n    - /tmp/mc.sock:0\n", 4,
      "key 'servers' in pool 'alpha' has a zero weight" },
    { "server_not_scalar", POOL_HEAD "  servers:\n    - [127.0.0.1:11211:1]\n", 4,
      "key 'servers' in pool 'alpha' must be a single value" },
    { "server_nul", POOL_HEAD "  servers:\n    - \"a\\0b:1:1\"\n", 4,
      "key 'servers' in pool 'alpha' contains a NUL character" },
    { "servers_scalar", POOL_HEAD "  servers: 127.0.0.1:11211:1\n", 3,
      "key 'servers' in pool 'alpha' must be a list of servers: '127.0.0.1:11211:1'" },
    { "servers_empty", POOL_HEAD "  servers: []\n", 3,
      "key 'servers' in pool 'alpha' is an empty list" },
    { "servers_same_address", POOL_HEAD "  servers:\n    - 127.0.0.1:11211:1\n"
      "    - 127.0.0.1:11212:1\n    - 127.0.0.1:11211:2\n", 6,
      "key 'servers' in pool 'alpha' has two servers named '127.0.0.1'" },
    { "servers_same_name", POOL_HEAD "  servers:\n    - 127.0.0.1:11211:1 a\n"
      "    - 127.0.0.2:11211:1 a\n", 5,
      "key 'servers' in pool 'alpha' has two servers named 'a'" },
    { "servers_same_port", POOL_HEAD "  servers: [h:2:1, h:2:3]\n", 3,
      "key 'servers' in pool 'alpha' has two servers named 'h:2'" },
    /* tiers */
    { "servers_with_master", POOL_HEAD SERVERS "  master:\n    servers: [127.0.0.1:1:1]\n", 5,
      "key 'master' in pool 'alpha' cannot be used together with 'servers'" },
    { "servers_with_l1", POOL_HEAD "  l1:\n    - servers: [127.0.0.1:1:1]\n" SERVERS, 3,
      "key 'l1' in pool 'alpha' cannot be used together with 'servers'" },
    { "tiers_without_master", POOL_HEAD "  slave:\n    servers: [127.0.0.1:1:1]\n", 3,
      "missing key 'master' in pool 'alpha': key 'slave' needs a master tier" },
    { "replicas_without_master", POOL_HEAD "  replicas:\n    - servers: [127.0.0.1:1:1]\n", 3,
      "missing key 'master' in pool 'alpha': key 'replicas' needs a master tier" },
    { "master_not_mapping", POOL_HEAD "  master: [127.0.0.1:1:1]\n", 3,
      "key 'master' in pool 'alpha' must be a mapping with a 'servers' key" },
    { "slave_null", TIER_HEAD "  slave:\n", 5,
      "key 'slave' in pool 'beta' must be a mapping with a 'servers' key" },
    { "tier_unknown_key", TIER_HEAD "  slave:\n    servers: [a:1:1]\n    listen: a:1\n", 7,
      "unknown key 'listen' in pool 'beta' tier 'slave'" },
    { "tier_duplicate_key", TIER_HEAD "  slave:\n    timeout: 1\n    timeout: 2\n"
      "    servers: [a:1:1]\n", 7,
      "duplicate key 'timeout' in pool 'beta' tier 'slave'" },
    { "tier_bad_value", TIER_HEAD "  l1:\n    - servers: [a:1:1]\n    - servers: [b:1:1]\n"
      "      timeout: abc\n", 8,
      "key 'timeout' in pool 'beta' tier 'l1[1]' is not a number: 'abc'" },
    { "tier_bad_hash", TIER_HEAD "  replicas:\n    - servers: [a:1:1]\n      hash: sha1\n", 7,
      "key 'hash' in pool 'beta' tier 'replicas[0]' is not a valid hash: 'sha1'" },
    { "tier_bad_server", TIER_HEAD "  slave:\n    servers: [a:1:0]\n", 6,
      "key 'servers' in pool 'beta' tier 'slave' has a zero weight: 'a:1:0'" },
    { "tier_missing_servers", TIER_HEAD "  slave:\n    timeout: 5\n", 6,
      "missing key 'servers' in pool 'beta' tier 'slave'" },
    { "tier_empty_servers", TIER_HEAD "  replicas:\n    - servers: []\n", 6,
      "key 'servers' in pool 'beta' tier 'replicas[0]' is an empty list" },
    { "tier_same_servers", "beta:\n  listen: 127.0.0.1:22122\n  master:\n"
      "    servers:\n      - a:1:1\n      - a:1:1\n", 6,
      "key 'servers' in pool 'beta' tier 'master' has two servers named 'a:1'" },
    { "tier_pool_key", TIER_HEAD "  slave:\n    servers: [a:1:1]\n    backfill_ttl: 5\n", 7,
      "unknown key 'backfill_ttl' in pool 'beta' tier 'slave'" },
    { "l1_mapping", TIER_HEAD "  l1:\n    servers: [a:1:1]\n", 6,
      "key 'l1' in pool 'beta' must be a non-empty list of tiers" },
    { "l1_empty", TIER_HEAD "  l1: []\n", 5,
      "key 'l1' in pool 'beta' must be a non-empty list of tiers" },
    { "l1_item_scalar", TIER_HEAD "  l1:\n    - a:1:1\n", 6,
      "key 'l1[0]' in pool 'beta' must be a mapping with a 'servers' key: 'a:1:1'" },
    /* redis pools: keys of the other kind */
    { "redis_db_negative", REDIS_HEAD "  redis_db: -1\n" SERVERS, 4,
      "key 'redis_db' in pool 'r' is not a number: '-1'" },
    { "redis_slave", REDIS_HEAD MASTER_AB "  slave:\n    servers: [a:1:1]\n", 8,
      "key 'slave' in pool 'r' is for memcached pools, not redis pools: "
      "a redis pool's copies are 'slaves', a list of tiers" },
    { "redis_l1", REDIS_HEAD SERVERS "  l1:\n    - servers: [a:1:1]\n", 6,
      "key 'l1' in pool 'r' is for memcached pools, not redis pools" },
    { "redis_replicas", REDIS_HEAD MASTER_AB "  replicas:\n    - servers: [a:1:1]\n", 8,
      "key 'replicas' in pool 'r' is for memcached pools, not redis pools" },
    { "redis_allow_flush", REDIS_HEAD "  allow_flush: false\n" SERVERS, 4,
      "key 'allow_flush' in pool 'r' is for memcached pools, not redis pools" },
    { "redis_backfill_ttl", REDIS_HEAD SERVERS "  backfill_ttl: 60\n", 6,
      "key 'backfill_ttl' in pool 'r' is for memcached pools, not redis pools" },
    { "memcached_slaves", TIER_HEAD "  slaves:\n    - servers: [a:1:1]\n", 5,
      "key 'slaves' in pool 'beta' is for redis pools only ('redis: true')" },
    { "memcached_read_from", POOL_HEAD "  redis: false\n  read_from: master\n" SERVERS, 4,
      "key 'read_from' in pool 'alpha' is for redis pools only ('redis: true')" },
    /* redis pools: read_from */
    { "read_from_bad", REDIS_HEAD "  read_from: replicas\n" SERVERS, 4,
      "key 'read_from' in pool 'r' is not \"master\" or \"slaves\": 'replicas'" },
    { "read_from_slaves_alone", REDIS_HEAD "  read_from: slaves\n" SERVERS, 4,
      "key 'read_from' in pool 'r' is 'slaves', but the pool has no 'slaves' tiers" },
    { "read_from_slaves_master_only", REDIS_HEAD MASTER_AB "  read_from: slaves\n", 8,
      "key 'read_from' in pool 'r' is 'slaves', but the pool has no 'slaves' tiers" },
    /* redis pools: the shape of slaves */
    { "slaves_with_servers", REDIS_HEAD SERVERS "  slaves:\n    - servers: [a:1:1]\n", 6,
      "key 'slaves' in pool 'r' cannot be used together with 'servers'" },
    { "slaves_without_master", REDIS_HEAD "  slaves:\n    - servers: [a:1:1]\n", 4,
      "missing key 'master' in pool 'r': key 'slaves' needs a master tier" },
    { "slaves_mapping", REDIS_HEAD MASTER_AB "  slaves:\n    servers: [a:1:1]\n", 9,
      "key 'slaves' in pool 'r' must be a non-empty list of tiers" },
    { "slaves_empty", REDIS_HEAD MASTER_AB "  slaves: []\n", 8,
      "key 'slaves' in pool 'r' must be a non-empty list of tiers" },
    { "slaves_item_scalar", REDIS_HEAD MASTER_AB "  slaves:\n    - a:1:1\n", 9,
      "key 'slaves[0]' in pool 'r' must be a mapping with a 'servers' key" },
    { "slaves_unknown_key", REDIS_HEAD MASTER_AB SLAVES_AB "      listen: a:1\n", 12,
      "unknown key 'listen' in pool 'r' tier 'slaves[0]'" },
    { "slaves_no_servers", REDIS_HEAD MASTER_AB SLAVES_AB "    - timeout: 5\n", 12,
      "missing key 'servers' in pool 'r' tier 'slaves[1]'" },
    { "slaves_empty_servers", REDIS_HEAD MASTER_AB SLAVES_AB "    - servers: []\n", 12,
      "key 'servers' in pool 'r' tier 'slaves[1]' is an empty list" },
    /* redis pools: each slave tier copies every master shard */
    { "slave_not_a_shard", REDIS_HEAD MASTER_AB SLAVES_AB
      "    - servers:\n        - 10.0.3.1:6379:1 shard-a\n        - 10.0.3.3:6379:1 shard-c\n",
      14, "key 'servers' in pool 'r' tier 'slaves[1]': server 'shard-c' is not a master shard" },
    { "slave_weight", REDIS_HEAD MASTER_AB "  slaves:\n    - servers:\n"
      "        - 10.0.2.1:6379:2 shard-a\n        - 10.0.2.2:6379:1 shard-b\n", 10,
      "key 'servers' in pool 'r' tier 'slaves[0]': server 'shard-a': weight 2 differs "
      "from master's 1" },
    { "slave_missing_shard", REDIS_HEAD MASTER_AB SLAVES_AB
      "    - servers: [10.0.3.2:6379:1 shard-b]\n", 12,
      "pool 'r' tier 'slaves[1]' has no copy of master shard 'shard-a'" },
    { "slave_unnamed", REDIS_HEAD MASTER_AB "  slaves:\n    - servers:\n"
      "        - 10.0.2.1:6379:1 shard-a\n        - 10.0.2.2:6379:1\n", 11,
      "key 'servers' in pool 'r' tier 'slaves[0]': server '10.0.2.2:6379:1' has no name, "
      "but master's servers are named" },
    { "slave_same_shard_twice", REDIS_HEAD MASTER_AB "  slaves:\n    - servers:\n"
      "        - 10.0.2.1:6379:1 shard-a\n        - 10.0.2.2:6379:1 shard-a\n", 11,
      "key 'servers' in pool 'r' tier 'slaves[0]' has two servers named 'shard-a'" },
    { "master_mixed_names", REDIS_HEAD "  master:\n    servers:\n"
      "      - 10.0.1.1:6379:1 shard-a\n      - 10.0.1.2:6379:1\n" SLAVES_AB, 7,
      "key 'servers' in pool 'r' tier 'master' names some servers and not others" },
    { "slave_position_more", REDIS_HEAD MASTER_UNNAMED
      "  slaves:\n    - servers: [10.0.2.1:6379:1, 10.0.2.2:6379:1,\n"
      "                10.0.2.3:6379:1]\n", 8,
      "key 'servers' in pool 'r' tier 'slaves[0]': server '10.0.2.3:6379:1' is not a "
      "master shard: master has 2 servers" },
    { "slave_position_fewer", REDIS_HEAD MASTER_UNNAMED
      "  slaves:\n    - servers: [10.0.2.1:6379:1, 10.0.2.2:6379:1]\n"
      "    - servers: [10.0.3.1:6379:1]\n", 8,
      "pool 'r' tier 'slaves[1]' has 1 server(s), master has 2" },
    { "slave_position_weight", REDIS_HEAD MASTER_UNNAMED
      "  slaves:\n    - servers:\n        - 10.0.2.1:6379:1\n        - 10.0.2.2:6379:4\n",
      9, "key 'servers' in pool 'r' tier 'slaves[0]': server '10.0.2.2:6379:4': weight 4 "
      "differs from master's 1" },
    /* redis pools: slave tiers route as master */
    { "slave_hash", REDIS_HEAD MASTER_AB SLAVES_AB "      hash: md5\n", 12,
      "key 'hash' in pool 'r' tier 'slaves[0]' is 'md5', but master's is 'fnv1a_64'" },
    { "slave_distribution", REDIS_HEAD "  distribution: modula\n" MASTER_AB SLAVES_AB
      "      distribution: ketama\n", 13,
      "key 'distribution' in pool 'r' tier 'slaves[0]' is 'ketama', but master's is 'modula'" },
    { "slave_hash_tag", REDIS_HEAD "  hash_tag: \"{}\"\n" MASTER_AB SLAVES_AB
      "      hash_tag: \"[]\"\n", 13,
      "key 'hash_tag' in pool 'r' tier 'slaves[0]' is '[]', but master's is '{}'" },
    { "slave_hash_tag_master_none", REDIS_HEAD MASTER_AB SLAVES_AB "      hash_tag: \"{}\"\n",
      12, "key 'hash_tag' in pool 'r' tier 'slaves[0]' is '{}', but master has none" },
    /* file structure */
    { "duplicate_pool", POOL_HEAD SERVERS "alpha:\n  listen: 127.0.0.1:22122\n" SERVERS, 5,
      "duplicate pool name 'alpha'" },
    { "pool_name_empty", "\"\":\n  listen: 127.0.0.1:22121\n" SERVERS, 1,
      "a pool name must be a non-empty string" },
    { "pool_scalar", "alpha: 3\n", 1, "pool 'alpha' must be a mapping of keys" },
    { "root_list", "- a\n- b\n", 1,
      "the pool file must be a mapping of pool names to pools" },
    { "root_scalar", "hello\n", 1,
      "the pool file must be a mapping of pool names to pools" },
    { "root_empty_mapping", "{}\n", 1,
      "the pool file must be a mapping of pool names to pools" },
    { "empty_file", "", 1, "the pool file has no pools" },
    { "comments_only", "# nothing here\n", 1, "the pool file has no pools" },
    { "syntax_unclosed", POOL_HEAD "  servers: [127.0.0.1:11211:1\n", 4,
      "YAML syntax error: " },
    { "syntax_indent", "alpha:\n  listen: 127.0.0.1:22121\n    hash: md5\n", 3,
      "YAML syntax error: mapping values are not allowed" },
    { "syntax_tab", "alpha:\n\tlisten: 127.0.0.1:22121\n", 2, "YAML syntax error: " },
    { "two_documents", "---\n" POOL_HEAD SERVERS "---\nbeta: {}\n", 6,
      "the pool file must hold a single YAML document" },
};

/* From memory (conf_yaml_load_text) the same message, with the origin
 * in place of the file name. */
static void fx_load_text_err(struct fx *fx, const char *text, int line, const char *msg)
{
    char prefix[128];
    const char *origin = "zk://127.0.0.1:2181/strata/pools";

    conf_destroy(&fx->conf);
    fx->err[0] = '\0';
    assert_int_equal(conf_yaml_load_text(text, strlen(text), origin, &fx->conf, fx->err,
                                         sizeof(fx->err)), -1);
    assert_null(fx->conf);
    snprintf(prefix, sizeof(prefix), "%s:%d: ", origin, line);
    if (strncmp(fx->err, prefix, strlen(prefix)) != 0 || strstr(fx->err, msg) == NULL) {
        fail_msg("text: got   \"%s\"\nwant  \"%s...%s\"", fx->err, prefix, msg);
    }
}

static void test_error_case(void **state)
{
    struct fx *fx = *state;
    const struct err_case *c = fx->param;
    fx_load_err(fx, c->yaml, c->line, c->msg);
    fx_load_text_err(fx, c->yaml, c->line, c->msg);
}

/* ---- from memory ------------------------------------------------------- */

#define TEXT_POOLS "alpha:\n  listen: 127.0.0.1:22121\n  hash: md5\n" \
                   "  servers:\n    - 127.0.0.1:11211:1 a\n    - 127.0.0.1:11212:2 b\n" \
                   "beta:\n  listen: 127.0.0.1:22122\n  master:\n" \
                   "    servers: [127.0.0.1:11221:1]\n"

/* A text loads to the same model as the file, named by its origin; only
 * `len` bytes are read (the text needs no NUL). */
static void test_text_valid(void **state)
{
    struct fx *fx = *state;
    const char *origin = "zk://127.0.0.1:2181/strata/pools";
    char text[] = TEXT_POOLS "garbage: [";
    size_t len = strlen(TEXT_POOLS);

    struct conf *file = fx_load(fx, TEXT_POOLS);
    struct conf *mem = NULL;
    assert_int_equal(conf_yaml_load_text(text, len, origin, &mem, fx->err, sizeof(fx->err)), 0);
    assert_non_null(mem);
    assert_string_equal(mem->path, origin);
    assert_int_equal(mem->npools, file->npools);
    for (uint32_t i = 0; i < mem->npools; i++) {
        const struct conf_pool *a = &mem->pools[i], *b = &file->pools[i];
        assert_string_equal(a->name, b->name);
        assert_string_equal(a->listen.text, b->listen.text);
        assert_int_equal(a->hash, b->hash);
        assert_int_equal(a->tiered, b->tiered);
        assert_int_equal(a->master.nservers, b->master.nservers);
        for (uint32_t j = 0; j < a->master.nservers; j++) {
            assert_string_equal(a->master.servers[j].text, b->master.servers[j].text);
            assert_int_equal(a->master.servers[j].weight, b->master.servers[j].weight);
            assert_int_equal(a->master.servers[j].line, b->master.servers[j].line);
        }
    }
    conf_destroy(&mem);
}

/* An invalid text: "ORIGIN:LINE: message", for a key and for syntax. */
static void test_text_invalid(void **state)
{
    struct fx *fx = *state;
    fx_load_text_err(fx, POOL_HEAD "  timeout: soon\n" SERVERS, 3,
                     "key 'timeout' in pool 'alpha' is not a number: 'soon'");
    fx_load_text_err(fx, POOL_HEAD "  servers: [a\n", 4, "YAML syntax error");
    fx_load_text_err(fx, "", 1, "the pool file has no pools");
    fx_load_text_err(fx, "alpha: 1\n---\nbeta: 2\n", 2, "a single YAML document");
}

/* ---- runner ------------------------------------------------------------ */

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        FX_TEST(test_defaults),
        FX_TEST(test_every_key),
        FX_TEST(test_key_order),
        FX_TEST(test_false_and_zero),
        FX_TEST(test_every_hash),
        FX_TEST(test_every_distribution),
        FX_TEST(test_several_pools),
        FX_TEST(test_server_forms),
        FX_TEST(test_unix_listen),
        FX_TEST(test_listen_ipv6),
        FX_TEST(test_flow_and_block),
        FX_TEST(test_alias),
        FX_TEST(test_tiers_inherit),
        FX_TEST(test_tiers_before_settings),
        FX_TEST(test_master_replicas),
        FX_TEST(test_server_names),
        FX_TEST(test_redis_plain),
        FX_TEST(test_redis_slaves),
        FX_TEST(test_redis_slaves_by_position),
        FX_TEST(test_redis_master_only),
        FX_TEST(test_examples),
        FX_TEST(test_every_example),
        FX_TEST(test_missing_file),
        FX_TEST(test_no_err_buffer),
        FX_TEST(test_short_err_buffer),
        FX_TEST(test_text_valid),
        FX_TEST(test_text_invalid),
        cmocka_unit_test(test_destroy_null),
    };
    int failed = cmocka_run_group_tests_name("conf_yaml", tests, NULL, NULL);

    /* One named test per error row, so a failure names the case. */
    size_t n = sizeof(err_cases) / sizeof(err_cases[0]);
    struct CMUnitTest *errs = calloc(n, sizeof(*errs));
    assert_non_null(errs);
    for (size_t i = 0; i < n; i++) {
        errs[i] = (struct CMUnitTest)cmocka_unit_test_prestate_setup_teardown(
            test_error_case, fx_setup, fx_teardown, (void *)&err_cases[i]);
        errs[i].name = err_cases[i].name;
    }
    failed += _cmocka_run_group_tests("conf_yaml_errors", errs, n, NULL, NULL);
    free(errs);
    return failed != 0;
}
