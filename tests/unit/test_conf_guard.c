/* test_conf_guard: the reload shrink guard over pool files parsed by the
 * real loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "strata/conf.h"
#include "strata/conf_guard.h"

#define POOL2 "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n" \
              "    - 127.0.0.1:11211:1\n    - 127.0.0.1:11212:1\n"
#define POOL1 "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n" \
              "    - 127.0.0.1:11211:1\n"
#define POOL3 POOL2 "    - 127.0.0.1:11213:1\n"
#define MOVED "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n" \
              "    - 127.0.0.1:11311:1\n    - 127.0.0.1:11312:1\n"
#define BETA  "beta:\n  listen: 127.0.0.1:22122\n  servers:\n    - 127.0.0.1:11221:1\n"
#define TIERED "alpha:\n  listen: 127.0.0.1:22121\n" \
               "  master:\n    servers: [127.0.0.1:11211:1, 127.0.0.1:11212:1]\n" \
               "  l1:\n    - servers: [127.0.0.1:11241:1]\n"
#define TIERED_NO_L1 "alpha:\n  listen: 127.0.0.1:22121\n" \
               "  master:\n    servers: [127.0.0.1:11211:1, 127.0.0.1:11212:1]\n"

static struct conf *load(const char *text)
{
    struct conf *conf = NULL;
    char err[256];
    if (conf_yaml_load_text(text, strlen(text), "test", &conf, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return conf;
}

/* conf_guard_check of `from` → `to` at max_pct; why is checked to name
 * `want` when refused (want NULL: must pass). */
static void check(const char *from, const char *to, uint32_t max_pct, const char *want)
{
    struct conf *a = load(from), *b = load(to);
    char why[256] = "";
    int rc = conf_guard_check(a, b, max_pct, why, sizeof(why));
    if (want == NULL && rc != 0)
        fail_msg("refused: %s", why);
    if (want != NULL && (rc != -1 || strstr(why, want) == NULL))
        fail_msg("rc %d, why \"%s\", want \"%s\"", rc, why, want);
    conf_destroy(&a);
    conf_destroy(&b);
}

static void test_half_of_a_pool_lost_is_refused(void **state)
{
    (void)state;
    check(POOL2, POOL1, 49,
          "pool alpha: tier master would go from 2 servers to 1 (50% fewer; "
          "reload_max_server_loss is 49)");
    check(POOL2, POOL1, 50, NULL);       /* the setting lets it through */
    check(POOL2, POOL1, 100, NULL);
}

static void test_growth_replacement_and_small_loss_pass(void **state)
{
    (void)state;
    check(POOL1, POOL2, 0, NULL);        /* growth */
    check(POOL2, MOVED, 0, NULL);        /* every server replaced: same count */
    check(POOL3, POOL2, 49, NULL);       /* one of three: 33% */
    check(POOL3, POOL2, 33, NULL);
    check(POOL3, POOL2, 32, "from 3 servers to 2 (33% fewer");
}

static void test_whole_pools_are_not_judged(void **state)
{
    (void)state;
    check(POOL2 BETA, POOL2, 0, NULL);   /* beta removed */
    check(POOL2, POOL2 BETA, 0, NULL);   /* beta added */
}

static void test_whole_tiers_are_not_judged(void **state)
{
    (void)state;
    check(TIERED, TIERED_NO_L1, 0, NULL);
    check(TIERED_NO_L1, TIERED, 0, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_of_a_pool_lost_is_refused),
        cmocka_unit_test(test_growth_replacement_and_small_loss_pass),
        cmocka_unit_test(test_whole_pools_are_not_judged),
        cmocka_unit_test(test_whole_tiers_are_not_judged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
