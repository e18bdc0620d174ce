/* Unit tests for router: hash tag, picking, live servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "strata/router.h"

#define NSERVERS 4

static struct conf_server servers[NSERVERS];
static char hosts[NSERVERS][16];

static struct conf_tier make_tier(enum hashkit_dist dist, const char *tag)
{
    for (int i = 0; i < NSERVERS; i++) {
        snprintf(hosts[i], sizeof(hosts[i]), "127.0.0.%d", i + 1);
        servers[i] = (struct conf_server){
            .addr = { .host = hosts[i], .port = 11311 },
            .weight = 1,
        };
    }
    struct conf_tier t = {
        .servers = servers, .nservers = NSERVERS,
        .hash = HASHKIT_HASH_FNV1A_64, .distribution = dist,
    };
    if (tag != NULL) {
        memcpy(t.hash_tag, tag, 2);
        t.has_hash_tag = true;
    }
    return t;
}

static void expect_hash_key(const struct conf_tier *t, const char *key,
                            const char *want)
{
    const char *k = key;
    size_t len = strlen(key);
    router_hash_key(t, &k, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(k, want, len);
}

static void test_hash_tag(void **state)
{
    (void)state;
    struct conf_tier t = make_tier(HASHKIT_DIST_KETAMA, "{}");
    expect_hash_key(&t, "user:{42}:name", "42");
    expect_hash_key(&t, "{a}{b}", "a");             /* first tag wins */
    expect_hash_key(&t, "user:{}:name", "user:{}:name"); /* empty tag: whole key */
    expect_hash_key(&t, "user:{42:name", "user:{42:name"); /* unclosed */
    expect_hash_key(&t, "user:42}:name", "user:42}:name"); /* no opener */
    struct conf_tier none = make_tier(HASHKIT_DIST_KETAMA, NULL);
    expect_hash_key(&none, "user:{42}:name", "user:{42}:name");
    struct conf_tier same = make_tier(HASHKIT_DIST_KETAMA, "::");
    expect_hash_key(&same, "a:b:c", "b");
}

static void test_tagged_keys_share_server(void **state)
{
    (void)state;
    struct conf_tier t = make_tier(HASHKIT_DIST_KETAMA, "{}");
    struct router r;
    assert_int_equal(router_init(&r, &t, 1), 0);
    uint32_t first = router_pick(&r, "{7}", 3);
    char key[64];
    for (int i = 0; i < 200; i++) {
        int n = snprintf(key, sizeof(key), "obj%d:{7}:field", i);
        assert_int_equal(router_pick(&r, key, (size_t)n), first);
    }
    router_deinit(&r);
}

static void test_pick_matches_hashkit(void **state)
{
    (void)state;
    struct conf_tier t = make_tier(HASHKIT_DIST_MODULA, NULL);
    struct router r;
    assert_int_equal(router_init(&r, &t, 1), 0);
    char key[32];
    uint32_t seen[NSERVERS] = { 0 };
    for (int i = 0; i < 400; i++) {
        int n = snprintf(key, sizeof(key), "key-%d", i);
        uint32_t want = hashkit_ring_pick(&r.ring, hashkit_hash(t.hash, key, (size_t)n));
        uint32_t got = router_pick(&r, key, (size_t)n);
        assert_int_equal(got, want);
        assert_true(got < NSERVERS);
        seen[got]++;
    }
    for (int i = 0; i < NSERVERS; i++)
        assert_true(seen[i] > 0);
    router_deinit(&r);
}

static void test_eject_moves_only_that_server(void **state)
{
    (void)state;
    struct conf_tier t = make_tier(HASHKIT_DIST_KETAMA, NULL);
    struct router r;
    assert_int_equal(router_init(&r, &t, 1), 0);
    uint32_t before[500];
    char key[32];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        before[i] = router_pick(&r, key, (size_t)n);
    }
    assert_true(router_set_live(&r, 2, false));
    assert_false(router_set_live(&r, 2, false));   /* no change */
    assert_int_equal(router_rebuild(&r), 0);
    for (int i = 0; i < 500; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        uint32_t now = router_pick(&r, key, (size_t)n);
        assert_int_not_equal(now, 2);
        if (before[i] != 2)
            assert_int_equal(now, before[i]);
    }
    router_deinit(&r);
}

static void test_no_live_server(void **state)
{
    (void)state;
    struct conf_tier t = make_tier(HASHKIT_DIST_RANDOM, NULL);
    struct router r;
    assert_int_equal(router_init(&r, &t, 7), 0);
    for (uint32_t i = 1; i < NSERVERS; i++)
        router_set_live(&r, i, false);
    router_rebuild(&r);
    for (int i = 0; i < 100; i++)
        assert_int_equal(router_pick(&r, "x", 1), 0);   /* random: only live */
    router_set_live(&r, 0, false);
    router_rebuild(&r);
    assert_int_equal(router_pick(&r, "x", 1), UINT32_MAX);
    router_deinit(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_tag),
        cmocka_unit_test(test_tagged_keys_share_server),
        cmocka_unit_test(test_pick_matches_hashkit),
        cmocka_unit_test(test_eject_moves_only_that_server),
        cmocka_unit_test(test_no_live_server),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
