/* test_backend_stats: reading a field out of a server's own stats reply,
 * memcached's "STAT f v" lines and Redis INFO's "f:v" lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "strata/backend_stats.h"

static const char mc_reply[] =
    "STAT pid 4242\r\nSTAT curr_items 17\r\nSTAT curr_items_x 99\r\n"
    "STAT bytes 1024\r\nSTAT get_hits 5\r\nEND\r\n";

static const char redis_reply[] =
    "# Memory\r\nused_memory:941424\r\nused_memory_human:919.36K\r\n"
    "# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:0\r\n";

static void test_memcached_lines(void **state)
{
    (void)state;
    int64_t v = -1;
    assert_int_equal(backend_stats_parse(mc_reply, "curr_items", &v), 0);
    assert_int_equal(v, 17);                 /* not curr_items_x */
    assert_int_equal(backend_stats_parse(mc_reply, "get_hits", &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(backend_stats_parse(mc_reply, "evictions", &v), -1);
}

static void test_redis_lines(void **state)
{
    (void)state;
    int64_t v = -1;
    assert_int_equal(backend_stats_parse(redis_reply, "used_memory", &v), 0);
    assert_int_equal(v, 941424);             /* not used_memory_human */
    assert_int_equal(backend_stats_parse(redis_reply, "keyspace_misses", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(backend_stats_parse(redis_reply, "evicted_keys", &v), -1);
    assert_int_equal(backend_stats_parse("used_memory:x\r\n", "used_memory", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memcached_lines),
        cmocka_unit_test(test_redis_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
