/* Unit tests for msg: the cache of request records (what a cached msg
 * keeps and counts, shrinking after a burst) and msg_admit, the bound a
 * reply meets as its bytes arrive:
 *   - a cached msg keeps no buffer over MSG_KEEP_BYTES (a large Redis
 *     request's) and what it keeps counts in the worker's buffered bytes;
 *   - msg_cache_shrink frees the cached msgs beyond the most in use since
 *     the last shrink;
 *   - a reply for a request behind the client's head passes while the
 *     client holds at most MSG_BUDGET_SLACK x client_max_pending, the
 *     head's while its output is within that, and none past max_memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/msg.h"
#include "strata/stats.h"

struct fx {
    struct msg_cache     mc;
    int64_t              buffered;   /* the worker's count */
    struct stats_worker  sw;         /* what msg_memory_ok sums */
    struct stats_worker *workers[1];
    size_t               max_memory;
    struct msg_list      queue;      /* the client's msgs */
    struct evbuffer     *out;        /* the client's output */
    size_t               limit;      /* client_max_pending */
    struct msg_budget    budget;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    msg_cache_init(&f->mc);
    f->workers[0] = &f->sw;
    f->mc.acct = &f->sw.buffered;
    f->mc.max_memory = &f->max_memory;
    f->mc.workers = f->workers;
    f->mc.nworkers = 1;
    TAILQ_INIT(&f->queue);
    f->out = evbuffer_new();
    assert_non_null(f->out);
    f->limit = 1000;
    f->budget = (struct msg_budget){ .out = f->out, .queue = &f->queue, .limit = &f->limit };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    msg_cache_deinit(&f->mc);
    assert_int_equal(f->sw.buffered, 0);   /* every kept byte given back */
    evbuffer_free(f->out);
    free(f);
    return 0;
}

/* A msg of the client, queued in request order. */
static struct msg *queued(struct fx *f)
{
    struct msg *m = msg_get(&f->mc);
    assert_non_null(m);
    m->budget = &f->budget;
    TAILQ_INSERT_TAIL(&f->queue, m, link);
    return m;
}

static void unqueue_all(struct fx *f)
{
    struct msg *m;
    while ((m = TAILQ_FIRST(&f->queue)) != NULL) {
        TAILQ_REMOVE(&f->queue, m, link);
        msg_put(m);
    }
}

/* A 64 KB Redis SET leaves its request buffer behind when cached. */
static void test_cached_msg_keeps_no_large_buffer(void **state)
{
    struct fx *f = *state;
    struct redis_limits lim = { .max_bulk = 1 << 20, .max_args = 16,
                                .max_request = 2 << 20, .max_reply = 1 << 20,
                                .max_depth = 8 };
    struct evbuffer *in = evbuffer_new();
    assert_non_null(in);
    size_t n = 64 * 1024;
    char *val = malloc(n);
    assert_non_null(val);
    memset(val, 'v', n);
    evbuffer_add_printf(in, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%zu\r\n", n);
    evbuffer_add(in, val, n);
    evbuffer_add(in, "\r\n", 2);
    struct msg *m = msg_get(&f->mc);
    const char *err = NULL;
    assert_int_equal(redis_req_read(in, &m->redis, &lim, &err), REDIS_OK);
    assert_true(m->redis.cap > n);
    msg_put(m);
    assert_int_equal(f->mc.nfree, 1);
    assert_null(m->redis.buf);
    assert_true(m->kept > 0 && m->kept <= sizeof(*m) + 2 * MSG_KEEP_BYTES);
    assert_int_equal(f->sw.buffered, (int64_t)m->kept);
    assert_ptr_equal(msg_get(&f->mc), m);   /* reused, uncounted */
    assert_int_equal(f->sw.buffered, 0);
    msg_put(m);
    free(val);
    evbuffer_free(in);
}

/* 100 in use at once, then 3: the next shrink keeps 100, the one after
 * keeps 3 (or `keep`). */
static void test_shrink_frees_beyond_recent_use(void **state)
{
    struct fx *f = *state;
    struct msg *ms[100];
    for (int i = 0; i < 100; i++)
        ms[i] = msg_get(&f->mc);
    for (int i = 0; i < 100; i++)
        msg_put(ms[i]);
    assert_int_equal(msg_cache_shrink(&f->mc, 2), 0);
    for (int i = 0; i < 3; i++)
        ms[i] = msg_get(&f->mc);
    for (int i = 0; i < 3; i++)
        msg_put(ms[i]);
    assert_int_equal(msg_cache_shrink(&f->mc, 2), 97);
    assert_int_equal(f->mc.nfree, 3);
    assert_int_equal(msg_cache_shrink(&f->mc, 2), 1);
    assert_int_equal(f->mc.nfree, 2);
}

/* Behind the head: up to twice client_max_pending held, counting the
 * output, done replies and what is gathered. */
static void test_admit_behind_head(void **state)
{
    struct fx *f = *state;
    struct msg *head = queued(f), *next = queued(f);
    (void)head;
    assert_int_equal(msg_admit(next, 2 * f->limit), MSG_ADMIT_OK);
    msg_account(next, 1500);
    assert_int_equal(f->budget.gathered, 1500);
    assert_int_equal(msg_admit(next, 500), MSG_ADMIT_OK);
    assert_int_equal(msg_admit(next, 501), MSG_ADMIT_CLIENT);
    f->budget.held = 400;
    evbuffer_add(f->out, "xxxxxxxxxx", 10);
    assert_int_equal(msg_admit(next, 90), MSG_ADMIT_OK);
    assert_int_equal(msg_admit(next, 91), MSG_ADMIT_CLIENT);
    f->budget.held = 0;
    unqueue_all(f);
}

/* The head passes the bound while its output is within it. */
static void test_admit_head(void **state)
{
    struct fx *f = *state;
    struct msg *head = queued(f);
    msg_account(head, 5000);
    assert_int_equal(msg_admit(head, 1 << 20), MSG_ADMIT_OK);
    char big[2001];
    memset(big, 'o', sizeof(big));
    evbuffer_add(f->out, big, 2000);
    assert_int_equal(msg_admit(head, 1), MSG_ADMIT_OK);
    evbuffer_add(f->out, big, 1);
    assert_int_equal(msg_admit(head, 1), MSG_ADMIT_CLIENT);
    unqueue_all(f);
}

/* max_memory binds every request, the head too; a client gone only
 * meets max_memory. */
static void test_admit_max_memory(void **state)
{
    struct fx *f = *state;
    struct msg *head = queued(f);
    f->max_memory = 1 << 20;
    int64_t before = f->sw.buffered;
    f->sw.buffered = before + (1 << 20) - 100;
    assert_int_equal(msg_admit(head, 99), MSG_ADMIT_OK);
    assert_int_equal(msg_admit(head, 100), MSG_ADMIT_MEMORY);
    head->budget = NULL;
    assert_int_equal(msg_admit(head, 100), MSG_ADMIT_MEMORY);
    f->sw.buffered = before;
    assert_int_equal(msg_admit(head, 1 << 19), MSG_ADMIT_OK);
    f->max_memory = 0;
    unqueue_all(f);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_cached_msg_keeps_no_large_buffer),
        T(test_shrink_frees_beyond_recent_use),
        T(test_admit_behind_head),
        T(test_admit_head),
        T(test_admit_max_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
