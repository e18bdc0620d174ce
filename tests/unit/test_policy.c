/* Unit tests for policy: the plan of backend requests of a tiered pool
 * (Master-Slave-L1, replicas) for each command and each combination of
 * hits, misses and failures per tier, and the reply the client gets.
 *
 * backend_send is wrapped (-Wl,--wrap=backend_send): every send is
 * recorded as (server, cmd, bytes, callback) and answered by the test with
 * scripted memcached replies or a failure; the done callback the test
 * hands to policy_dispatch captures the completed reply (and fails the
 * test if it runs twice for one msg). No socket is ever opened. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "strata/backend.h"
#include "strata/conn.h"
#include "strata/msg.h"
#include "strata/policy.h"
#include "strata/stats.h"

/* ---- the mocked backend ---- */

#define MAX_SENT 512

struct sent {
    struct backend_server *server;
    enum mc_cmd            cmd;
    char                  *bytes;   /* NUL-ended copy of what was sent */
    backend_cb             cb;
    void                  *arg;
    bool                   answered;
};

static struct sent sent[MAX_SENT];
static int nsent;

void __wrap_backend_send(struct backend_server *s, enum mc_cmd cmd,
                         struct evbuffer *req, backend_cb cb, void *arg);
void __wrap_backend_send(struct backend_server *s, enum mc_cmd cmd,
                         struct evbuffer *req, backend_cb cb, void *arg)
{
    assert_true(nsent < MAX_SENT);
    size_t len = evbuffer_get_length(req);
    struct sent *e = &sent[nsent++];
    e->server = s;
    e->cmd = cmd;
    e->bytes = malloc(len + 1);
    assert_non_null(e->bytes);
    evbuffer_remove(req, e->bytes, len);
    e->bytes[len] = '\0';
    e->cb = cb;
    e->arg = arg;
    e->answered = false;
}

/* ---- captured replies ---- */

#define MAX_DONE 64

struct done {
    struct msg *msg;
    char       *reply;
};

static struct done done[MAX_DONE];
static int ndone;

/* The done callback of every request the tests dispatch. */
static void test_done(struct msg *msg)
{
    for (int i = 0; i < ndone; i++)
        assert_ptr_not_equal(done[i].msg, msg);   /* exactly once */
    assert_true(ndone < MAX_DONE);
    size_t len = evbuffer_get_length(msg->reply);
    char *r = malloc(len + 1);
    assert_non_null(r);
    evbuffer_copyout(msg->reply, r, len);
    r[len] = '\0';
    msg->done = true;
    done[ndone].msg = msg;
    done[ndone].reply = r;
    ndone++;
}

/* The reply of msg, or NULL while it has none. */
static const char *reply_of(const struct msg *msg)
{
    for (int i = 0; i < ndone; i++)
        if (done[i].msg == msg)
            return done[i].reply;
    return NULL;
}

/* ---- the pool under test ---- */

struct topo {
    bool     plain;        /* servers: only (twemproxy's pool) */
    bool     allow_flush;
    uint32_t nmasters;
    bool     slave;
    uint32_t nl1;
    uint32_t nreplicas;
    uint32_t async_limit;
};

#define MAX_SERVERS 16

static struct conf_server servers[MAX_SERVERS];
static char texts[MAX_SERVERS][32];
static struct conf_tier t_master, t_slave, t_l1[4], t_rep[4];
static struct conf_pool pool;
static struct conf conf;
static struct stats_worker sw;
static struct event_base *base;
static struct conn_loop loop;
static struct backend_worker bw;
static struct policy_pool pp;
static struct policy_cache pcache;
static struct msg_cache cache;
static struct mc_limits limits = { .max_line = 4096, .max_value = 1 << 20,
                                   .read_chunk = 16384 };
static uint32_t nservers_used;

static struct msg *msgs[64];
static int msgs_first_sent[64];   /* nsent when msgs[i] was dispatched */
static int nmsgs;

static struct conf_tier make_tier(uint32_t n)
{
    assert_true(nservers_used + n <= MAX_SERVERS);
    struct conf_server *first = &servers[nservers_used];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = nservers_used++;
        snprintf(texts[k], sizeof(texts[k]), "127.0.0.1:%u:1", 21000 + k);
        servers[k] = (struct conf_server){
            .addr = { .host = "127.0.0.1", .port = (uint16_t)(21000 + k) },
            .weight = 1,
            .text = texts[k],
        };
    }
    return (struct conf_tier){
        .servers = first, .nservers = n,
        .hash = HASHKIT_HASH_MD5, .distribution = HASHKIT_DIST_KETAMA,
        .timeout_ms = 500, .server_connections = 1,
        .auto_eject_hosts = false, .server_retry_timeout_ms = 30000,
        .server_failure_limit = 2,
    };
}

static void pool_up(const struct topo *tp)
{
    nservers_used = 0;
    nsent = 0;
    ndone = 0;
    nmsgs = 0;
    memset(&pool, 0, sizeof(pool));
    pool.name = "beta";
    pool.tiered = !tp->plain;
    pool.allow_flush = tp->allow_flush;
    pool.timeout_ms = 500;
    pool.backfill_ttl = 60;
    pool.server_connections = 1;
    t_master = make_tier(tp->nmasters);
    pool.master = t_master;
    if (tp->slave) {
        t_slave = make_tier(1);
        pool.slave = &t_slave;
    }
    for (uint32_t i = 0; i < tp->nl1; i++)
        t_l1[i] = make_tier(1);
    pool.l1 = tp->nl1 > 0 ? t_l1 : NULL;
    pool.nl1 = tp->nl1;
    for (uint32_t i = 0; i < tp->nreplicas; i++)
        t_rep[i] = make_tier(1);
    pool.replicas = tp->nreplicas > 0 ? t_rep : NULL;
    pool.nreplicas = tp->nreplicas;
    conf = (struct conf){ .pools = &pool, .npools = 1 };
    assert_int_equal(stats_worker_init(&sw, &conf), 0);
    base = event_base_new();
    assert_non_null(base);
    conn_loop_init(&loop, base, 0);
    backend_worker_init(&bw, &loop);
    char err[256] = "";
    policy_cache_init(&pcache);
    assert_int_equal(policy_pool_init(&pp, &pool, &bw, &limits, &sw.view->pools[0], &pcache,
                                      tp->async_limit ? tp->async_limit : 100,
                                      12345, NULL, err, sizeof(err)), 0);
    msg_cache_init(&cache);
}

/* Fails whatever is still unanswered (without retries: closing), then
 * frees everything. */
static void pool_down(void)
{
    pp.closing = true;
    for (int i = 0; i < nsent; i++)
        if (!sent[i].answered) {
            sent[i].answered = true;
            sent[i].cb(sent[i].arg, BACKEND_FAIL, NULL, "test over");
        }
    policy_pool_deinit(&pp);
    for (int i = 0; i < nmsgs; i++)
        msg_put(msgs[i]);
    policy_cache_deinit(&pcache);
    msg_cache_deinit(&cache);
    backend_worker_deinit(&bw);
    stats_worker_deinit(&sw);
    event_base_free(base);
    for (int i = 0; i < nsent; i++)
        free(sent[i].bytes);
    for (int i = 0; i < ndone; i++)
        free(done[i].reply);
    nsent = ndone = nmsgs = 0;
}

static int setup_full(void **state)
{
    (void)state;
    struct topo tp = { .nmasters = 2, .slave = true, .nl1 = 2, .nreplicas = 1 };
    pool_up(&tp);
    return 0;
}

static int setup_no_l1(void **state)
{
    (void)state;
    struct topo tp = { .nmasters = 1, .slave = true, .nl1 = 0, .nreplicas = 0 };
    pool_up(&tp);
    return 0;
}

static int setup_cross_dc(void **state)
{
    (void)state;
    struct topo tp = { .nmasters = 1, .slave = false, .nl1 = 0, .nreplicas = 2 };
    pool_up(&tp);
    return 0;
}

static int setup_small_queue(void **state)
{
    (void)state;
    struct topo tp = { .nmasters = 1, .slave = true, .nl1 = 1, .nreplicas = 1,
                       .async_limit = 2 };
    pool_up(&tp);
    return 0;
}

static int setup_plain(void **state)
{
    (void)state;
    struct topo tp = { .plain = true, .nmasters = 3 };
    pool_up(&tp);
    return 0;
}

static int setup_plain_flush(void **state)
{
    (void)state;
    struct topo tp = { .plain = true, .allow_flush = true, .nmasters = 3 };
    pool_up(&tp);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pool_down();
    return 0;
}

/* ---- helpers ---- */

/* "master[1]", "slave[0]", "l1[0][0]", "replicas[1][0]" */
static void server_label(const struct backend_server *s, char *out, size_t len)
{
    for (uint32_t t = 0; t < pp.ntiers; t++) {
        struct policy_tier *tier = &pp.tiers[t];
        for (uint32_t i = 0; i < tier->nservers; i++)
            if (tier->servers[i] == s) {
                snprintf(out, len, "%.16s[%u]", tier->name, i);
                return;
            }
    }
    snprintf(out, len, "?");
}

/* Parses a request as a client would send it and dispatches it. */
static struct msg *request(const char *wire)
{
    struct msg *msg = msg_get(&cache);
    assert_non_null(msg);
    assert_true(nmsgs < 64);
    msgs_first_sent[nmsgs] = nsent;
    msgs[nmsgs++] = msg;
    struct evbuffer *in = evbuffer_new();
    evbuffer_add(in, wire, strlen(wire));
    const char *err = NULL;
    assert_int_equal(mc_req_read(in, &msg->req, &limits, &err), MC_OK);
    assert_int_equal(evbuffer_get_length(in), 0);
    evbuffer_free(in);
    policy_dispatch(&pp, msg, test_done);
    return msg;
}

static int n_unanswered(void)
{
    int n = 0;
    for (int i = 0; i < nsent; i++)
        n += !sent[i].answered;
    return n;
}

/* The one unanswered send to `label` of exactly `bytes`;
 * fails the test if there is none or more than one. */
static struct sent *expect_sent(const char *label, const char *bytes)
{
    struct sent *found = NULL;
    char have[32];
    for (int i = 0; i < nsent; i++) {
        if (sent[i].answered)
            continue;
        server_label(sent[i].server, have, sizeof(have));
        if (strcmp(have, label) == 0 && strcmp(sent[i].bytes, bytes) == 0) {
            if (found != NULL)
                fail_msg("two sends of %s to %s", bytes, label);
            found = &sent[i];
        }
    }
    if (found == NULL) {
        for (int i = 0; i < nsent; i++) {
            server_label(sent[i].server, have, sizeof(have));
            print_error("  sent[%d] %s%s: %s", i, have,
                        sent[i].answered ? " (answered)" : "", sent[i].bytes);
        }
        fail_msg("no unanswered send of '%s' to %s", bytes, label);
    }
    return found;
}

/* Asserts that the unanswered sends are exactly the `n` given
 * (label, bytes) pairs, in any order. */
static void expect_pending(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *label = va_arg(ap, const char *);
        const char *bytes = va_arg(ap, const char *);
        expect_sent(label, bytes);
    }
    va_end(ap);
    if (n_unanswered() != n) {
        char have[32];
        for (int i = 0; i < nsent; i++)
            if (!sent[i].answered) {
                server_label(sent[i].server, have, sizeof(have));
                print_error("  pending %s: %s", have, sent[i].bytes);
            }
        fail_msg("%d sends pending, expected %d", n_unanswered(), n);
    }
}

/* Feeds a scripted memcached reply (one or more units) to a send. */
static void answer(struct sent *e, const char *wire)
{
    assert_false(e->answered);
    e->answered = true;
    struct evbuffer *in = evbuffer_new();
    evbuffer_add(in, wire, strlen(wire));
    struct mc_rsp rsp;
    mc_rsp_init(&rsp);
    while (evbuffer_get_length(in) > 0) {
        assert_int_equal(mc_rsp_read(in, &rsp, &limits), MC_OK);
        bool last = rsp.type != MC_RSP_VALUE;
        /* a VALUE the callback refuses fails the request, as backend does */
        if (!e->cb(e->arg, last ? BACKEND_DONE : BACKEND_VALUE, &rsp, NULL) && !last) {
            e->cb(e->arg, BACKEND_FAIL, NULL, "backend returned a key it was not asked for");
            evbuffer_drain(in, evbuffer_get_length(in));
        }
        mc_rsp_reset(&rsp);
        if (last)
            break;
    }
    assert_int_equal(evbuffer_get_length(in), 0);
    mc_rsp_deinit(&rsp);
    evbuffer_free(in);
}

static void reply_to(const char *label, const char *bytes, const char *wire)
{
    answer(expect_sent(label, bytes), wire);
}

static void fail_to(const char *label, const char *bytes, const char *reason)
{
    struct sent *e = expect_sent(label, bytes);
    e->answered = true;
    e->cb(e->arg, BACKEND_FAIL, NULL, reason);
}

/* Answers every pending async write with `wire` (STORED, DELETED, ...). */
static void answer_all(const char *wire)
{
    for (int i = 0; i < nsent; i++)
        if (!sent[i].answered)
            answer(&sent[i], wire);
}

static void expect_reply(const struct msg *msg, const char *want)
{
    const char *got = reply_of(msg);
    if (got == NULL)
        fail_msg("no reply yet, expected '%s'", want);
    assert_string_equal(got, want);
}

static int64_t tstat(const char *tier, enum stats_tier_field f)
{
    for (uint32_t t = 0; t < pp.ntiers; t++)
        if (strcmp(pp.tiers[t].name, tier) == 0)
            return pp.tiers[t].stats->f[f];
    fail_msg("no tier %s", tier);
    return -1;
}

static const char *master_of(const char *key)
{
    static char label[4][32];
    static int next;
    uint32_t s = router_pick(&pp.master->router, key, strlen(key));
    char *out = label[next++ % 4];
    snprintf(out, 32, "master[%u]", s);
    return out;
}

/* The L1 a tiered read chose: the L1 tier of its first send. */
static uint32_t l1_index(const struct msg *msg)
{
    for (int i = 0; i < nmsgs; i++) {
        if (msgs[i] != msg)
            continue;
        for (int e = msgs_first_sent[i]; e < nsent; e++)
            for (uint32_t l = 0; l < pp.nl1; l++)
                if (sent[e].server == pp.l1[l].servers[0])
                    return l;
    }
    fail_msg("the read sent nothing to an L1");
    return 0;
}

static const char *l1_of(const struct msg *msg)
{
    static char label[2][32];
    static int next;
    char *out = label[next++ % 2];
    snprintf(out, 32, "l1[%u][0]", l1_index(msg));
    return out;
}

/* The stats/tier name of the L1 a read chose: "l1[0]", "l1[1]". */
static const char *l1_tier(const struct msg *msg)
{
    return l1_index(msg) == 0 ? "l1[0]" : "l1[1]";
}

/* The n-th key (n = 0, 1, ...) that routes to master server s. */
static void key_on(uint32_t s, int n, char *out, size_t len)
{
    for (int i = 0; i < 10000; i++) {
        snprintf(out, len, "key%d", i);
        if (router_pick(&pp.master->router, out, strlen(out)) == s && n-- == 0)
            return;
    }
    fail_msg("no key on server %u", s);
}

/* Two keys that the two master servers split between them. */
static void keys_on_both_masters(char *k0, char *k1)
{
    key_on(0, 0, k0, 16);
    key_on(1, 0, k1, 16);
}

/* Takes every master server out of the ring, or puts them back. */
static void masters_live(bool live)
{
    for (uint32_t i = 0; i < pp.master->nservers; i++)
        pp.master->servers[i]->ejected_until_ms = live ? 0 : INT64_MAX;
    pp.master->eject_epoch++;
}

/* ================================ get ================================ */

static void test_get_l1_hit(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    expect_pending(1, l1_of(m), "get k\r\n");
    assert_null(reply_of(m));
    reply_to(l1_of(m), "get k\r\n", "VALUE k 3 2\r\nl1\r\nEND\r\n");
    expect_reply(m, "VALUE k 3 2\r\nl1\r\nEND\r\n");
    expect_pending(0);
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_hits), 1);
    assert_int_equal(tstat("master", STATS_TIER_hits) +
                     tstat("master", STATS_TIER_misses), 0);
}

static void test_get_l1_miss_master_hit_writes_back_to_that_l1(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    expect_pending(1, master_of("k"), "get k\r\n");
    reply_to(master_of("k"), "get k\r\n", "VALUE k 5 2\r\nmv\r\nEND\r\n");
    expect_reply(m, "VALUE k 5 2\r\nmv\r\nEND\r\n");
    /* add, with master's flags and backfill_ttl, to the L1 read, only */
    expect_pending(1, l1_of(m), "add k 5 60 2\r\nmv\r\n");
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_writebacks), 1);
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_misses), 1);
    assert_int_equal(tstat("master", STATS_TIER_hits), 1);
    assert_int_equal(tstat("slave", STATS_TIER_hits) +
                     tstat("slave", STATS_TIER_misses), 0);
    /* a write-back NOT_STORED (newer value there) is a success */
    answer_all("NOT_STORED\r\n");
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_async_sent), 1);
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_async_failed), 0);
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_async_pending), 0);
}

static void test_get_slave_hit_writes_back_to_master_and_l1(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    reply_to(master_of("k"), "get k\r\n", "END\r\n");
    expect_pending(1, "slave[0]", "get k\r\n");
    reply_to("slave[0]", "get k\r\n", "VALUE k 9 3\r\nsvv\r\nEND\r\n");
    expect_reply(m, "VALUE k 9 3\r\nsvv\r\nEND\r\n");
    expect_pending(2, master_of("k"), "add k 9 60 3\r\nsvv\r\n",
                   l1_of(m), "add k 9 60 3\r\nsvv\r\n");
    assert_int_equal(tstat("master", STATS_TIER_writebacks), 1);
    assert_int_equal(tstat("master", STATS_TIER_misses), 1);
    assert_int_equal(tstat("slave", STATS_TIER_hits), 1);
}

static void test_get_miss_everywhere(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    reply_to(master_of("k"), "get k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");
    expect_pending(0);
    assert_int_equal(sw.view->pools[0].f[STATS_forward_error], 0);
    assert_int_equal(sw.view->pools[0].reads[STATS_READ_MISS], 1);
    assert_int_equal(sw.view->pools[0].reads[STATS_READ_HIT], 0);
}

static void test_get_l1_failure_falls_to_master(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    fail_to(l1_of(m), "get k\r\n", "backend timed out");
    reply_to(master_of("k"), "get k\r\n", "VALUE k 0 1\r\nm\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\nm\r\nEND\r\n");
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_read_errors), 1);
    assert_int_equal(sw.view->pools[0].f[STATS_forward_error], 0);
    /* the write-back still goes to that L1 (it may be back) */
    expect_pending(1, l1_of(m), "add k 0 60 1\r\nm\r\n");
}

static void test_get_l1_error_line_falls_to_master(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "SERVER_ERROR out of memory\r\n");
    reply_to(master_of("k"), "get k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");
}

static void test_get_l1_value_then_error_keeps_the_value(void **state)
{
    (void)state;
    struct msg *m = request("get a b\r\n");
    reply_to(l1_of(m), "get a b\r\n",
             "VALUE a 0 1\r\nA\r\nSERVER_ERROR out of memory\r\n");
    /* only b is still wanted */
    const char *ma = master_of("b");
    expect_pending(1, ma, "get b\r\n");
    reply_to(ma, "get b\r\n", "VALUE b 0 1\r\nB\r\nEND\r\n");
    expect_reply(m, "VALUE a 0 1\r\nA\r\nVALUE b 0 1\r\nB\r\nEND\r\n");
}

static void test_get_master_failure_falls_to_slave(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    fail_to(master_of("k"), "get k\r\n", "backend connect failed");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 1\r\ns\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\ns\r\nEND\r\n");
    assert_int_equal(tstat("master", STATS_TIER_read_errors), 1);
    expect_pending(2, master_of("k"), "add k 0 60 1\r\ns\r\n",
                   l1_of(m), "add k 0 60 1\r\ns\r\n");
}

static void test_get_master_failure_slave_miss_is_a_miss(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    fail_to(master_of("k"), "get k\r\n", "backend timed out");
    reply_to("slave[0]", "get k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");
    /* the slave stood in: not the client's failure */
    assert_int_equal(sw.view->pools[0].f[STATS_forward_error], 0);
}

static void test_get_master_and_slave_failure_is_an_error(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    fail_to(master_of("k"), "get k\r\n", "backend timed out");
    fail_to("slave[0]", "get k\r\n", "backend timed out");
    expect_reply(m, "SERVER_ERROR master and slave unavailable\r\n");
    expect_pending(0);
    /* one request failed: one forward error, not one per tier */
    assert_int_equal(sw.view->pools[0].f[STATS_forward_error], 1);
}

static void test_get_slave_failure_after_master_miss_is_a_miss(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "END\r\n");
    reply_to(master_of("k"), "get k\r\n", "END\r\n");
    fail_to("slave[0]", "get k\r\n", "backend timed out");
    expect_reply(m, "END\r\n");
    assert_int_equal(tstat("slave", STATS_TIER_read_errors), 1);
}

static void test_get_multi_across_tiers_in_order(void **state)
{
    (void)state;
    char a[16], b[16];
    keys_on_both_masters(a, b);   /* a on master[0], b on master[1] */
    char line[128], l1q[128], m0q[64], m1q[64], sq[64], wire[256];
    /* keys: x (L1 hit), a (master[0] hit), b (slave hit), y (miss) */
    snprintf(line, sizeof(line), "get x %s %s y\r\n", a, b);
    struct msg *m = request(line);
    snprintf(l1q, sizeof(l1q), "get x %s %s y\r\n", a, b);
    expect_pending(1, l1_of(m), l1q);
    reply_to(l1_of(m), l1q, "VALUE x 1 2\r\nxx\r\nEND\r\n");
    /* the keys still wanted, grouped per master server, in request order */
    uint32_t sx = router_pick(&pp.master->router, "y", 1);
    if (sx == 0) {
        snprintf(m0q, sizeof(m0q), "get %s y\r\n", a);
        snprintf(m1q, sizeof(m1q), "get %s\r\n", b);
    } else {
        snprintf(m0q, sizeof(m0q), "get %s\r\n", a);
        snprintf(m1q, sizeof(m1q), "get %s y\r\n", b);
    }
    expect_pending(2, "master[0]", m0q, "master[1]", m1q);
    /* the second master answers first: order still comes from the request */
    reply_to("master[1]", m1q, "END\r\n");
    snprintf(wire, sizeof(wire), "VALUE %s 2 2\r\naa\r\nEND\r\n", a);
    reply_to("master[0]", m0q, wire);
    snprintf(sq, sizeof(sq), "get %s y\r\n", b);
    /* the write-back of a to that L1, and the slave read */
    snprintf(wire, sizeof(wire), "add %s 2 60 2\r\naa\r\n", a);
    expect_pending(2, l1_of(m), wire, "slave[0]", sq);
    snprintf(wire, sizeof(wire), "VALUE %s 3 2\r\nbb\r\nEND\r\n", b);
    reply_to("slave[0]", sq, wire);
    char want[256];
    snprintf(want, sizeof(want),
             "VALUE x 1 2\r\nxx\r\nVALUE %s 2 2\r\naa\r\nVALUE %s 3 2\r\nbb\r\nEND\r\n",
             a, b);
    expect_reply(m, want);
    assert_int_equal(tstat("master", STATS_TIER_hits), 1);
    assert_int_equal(tstat("master", STATS_TIER_misses), 2);
    assert_int_equal(tstat("slave", STATS_TIER_hits), 1);
    assert_int_equal(tstat("slave", STATS_TIER_misses), 1);
    /* the client asked for four keys: three found (at any tier), one not */
    assert_int_equal(sw.view->pools[0].reads[STATS_READ_HIT], 3);
    assert_int_equal(sw.view->pools[0].reads[STATS_READ_MISS], 1);
    assert_int_equal(sw.view->pools[0].cmds[MC_CMD_GET], 1);
}

static void test_get_duplicate_keys(void **state)
{
    (void)state;
    struct msg *m = request("get k k\r\n");
    reply_to(l1_of(m), "get k k\r\n", "END\r\n");
    reply_to(master_of("k"), "get k k\r\n",
             "VALUE k 0 1\r\nv\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\nv\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
}

/* An L1 that returns a key it was not asked for failed that read: the
 * key falls through to master, as for any other L1 failure. */
static void test_get_unasked_key_at_l1_falls_to_master(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    reply_to(l1_of(m), "get k\r\n", "VALUE other 0 1\r\nv\r\nEND\r\n");
    reply_to(master_of("k"), "get k\r\n", "VALUE k 0 1\r\nm\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\nm\r\nEND\r\n");
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_read_errors), 1);
    assert_int_equal(tstat(l1_tier(m), STATS_TIER_hits), 0);
    expect_pending(1, l1_of(m), "add k 0 60 1\r\nm\r\n");
}

/* A master that repeats a key failed that read: the keys it had not
 * returned yet fall to slave; the value that came whole stays a hit. */
static void test_get_repeated_key_at_master_fails_the_rest(void **state)
{
    (void)state;
    struct msg *m = request("get k j\r\n");
    reply_to(l1_of(m), "get k j\r\n", "END\r\n");
    char wire[32];
    snprintf(wire, sizeof(wire), "get %s\r\n",
             strcmp(master_of("k"), master_of("j")) == 0 ? "k j" : "k");
    /* a master that holds both keys, or k alone */
    reply_to(master_of("k"), wire,
             "VALUE k 0 1\r\nm\r\nVALUE k 0 1\r\nm\r\nEND\r\n");
    if (strcmp(master_of("k"), master_of("j")) != 0)
        reply_to(master_of("j"), "get j\r\n", "SERVER_ERROR down\r\n");
    reply_to("slave[0]", "get j\r\n", "VALUE j 0 1\r\ns\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\nm\r\nVALUE j 0 1\r\ns\r\nEND\r\n");
    assert_int_equal(tstat("master", STATS_TIER_read_errors), 1);
}

static void test_get_l1_choice_varies(void **state)
{
    (void)state;
    int seen[2] = { 0, 0 };
    for (int i = 0; i < 40; i++) {
        struct msg *m = request("get k\r\n");
        seen[l1_index(m)]++;
        reply_to(l1_of(m), "get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
        expect_reply(m, "VALUE k 0 1\r\nv\r\nEND\r\n");
        expect_pending(0);   /* one L1 read, nothing else */
    }
    assert_true(seen[0] > 0 && seen[1] > 0);
}

/* A pool without L1 starts at master. */
static void test_get_without_l1(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    expect_pending(1, "master[0]", "get k\r\n");
    reply_to("master[0]", "get k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 1\r\ns\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\ns\r\nEND\r\n");
    expect_pending(1, "master[0]", "add k 0 60 1\r\ns\r\n");
}

/* ================================ gets =============================== */

static void test_gets_master_hit(void **state)
{
    (void)state;
    struct msg *m = request("gets k\r\n");
    /* master only: no L1, the unique must be master's */
    expect_pending(1, master_of("k"), "gets k\r\n");
    reply_to(master_of("k"), "gets k\r\n", "VALUE k 1 1 77\r\nv\r\nEND\r\n");
    expect_reply(m, "VALUE k 1 1 77\r\nv\r\nEND\r\n");
    expect_pending(0);   /* no write-back anywhere */
}

static void test_gets_slave_hit_adds_to_master_then_gets_master(void **state)
{
    (void)state;
    struct msg *m = request("gets k\r\n");
    reply_to(master_of("k"), "gets k\r\n", "END\r\n");
    expect_pending(1, "slave[0]", "get k\r\n");
    reply_to("slave[0]", "get k\r\n", "VALUE k 4 2\r\nsv\r\nEND\r\n");
    /* synchronous add to master, part of the request */
    expect_pending(1, master_of("k"), "add k 4 60 2\r\nsv\r\n");
    assert_null(reply_of(m));
    reply_to(master_of("k"), "add k 4 60 2\r\nsv\r\n", "STORED\r\n");
    expect_pending(1, master_of("k"), "gets k\r\n");
    reply_to(master_of("k"), "gets k\r\n", "VALUE k 4 2 991\r\nsv\r\nEND\r\n");
    expect_reply(m, "VALUE k 4 2 991\r\nsv\r\nEND\r\n");
    expect_pending(0);   /* no L1 write-back for gets */
    assert_int_equal(tstat("master", STATS_TIER_writebacks), 1);
}

static void test_gets_add_lost_race_returns_masters_value(void **state)
{
    (void)state;
    struct msg *m = request("gets k\r\n");
    reply_to(master_of("k"), "gets k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 3\r\nold\r\nEND\r\n");
    reply_to(master_of("k"), "add k 0 60 3\r\nold\r\n", "NOT_STORED\r\n");
    reply_to(master_of("k"), "gets k\r\n", "VALUE k 0 3 5\r\nnew\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 3 5\r\nnew\r\nEND\r\n");
}

static void test_gets_master_failure_is_an_error(void **state)
{
    (void)state;
    struct msg *m = request("gets k\r\n");
    fail_to(master_of("k"), "gets k\r\n", "backend connect failed");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 1\r\ns\r\nEND\r\n");
    fail_to(master_of("k"), "add k 0 60 1\r\ns\r\n", "backend connect failed");
    fail_to(master_of("k"), "gets k\r\n", "backend connect failed");
    expect_reply(m, "SERVER_ERROR master unavailable\r\n");
}

static void test_gets_master_back_for_the_add(void **state)
{
    (void)state;
    /* master failed the first read but takes the add and the re-read */
    struct msg *m = request("gets k\r\n");
    fail_to(master_of("k"), "gets k\r\n", "backend timed out");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 1\r\ns\r\nEND\r\n");
    reply_to(master_of("k"), "add k 0 60 1\r\ns\r\n", "STORED\r\n");
    reply_to(master_of("k"), "gets k\r\n", "VALUE k 0 1 8\r\ns\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1 8\r\ns\r\nEND\r\n");
}

static void test_gets_regets_miss_is_a_miss(void **state)
{
    (void)state;
    /* the value added to master is gone again before the re-read */
    struct msg *m = request("gets k\r\n");
    reply_to(master_of("k"), "gets k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 1\r\ns\r\nEND\r\n");
    reply_to(master_of("k"), "add k 0 60 1\r\ns\r\n", "STORED\r\n");
    reply_to(master_of("k"), "gets k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");
}

static void test_gets_master_failure_slave_miss_is_an_error(void **state)
{
    (void)state;
    struct msg *m = request("gets k\r\n");
    fail_to(master_of("k"), "gets k\r\n", "backend connect failed");
    reply_to("slave[0]", "get k\r\n", "END\r\n");
    expect_reply(m, "SERVER_ERROR master unavailable\r\n");
}

static void test_gets_miss_everywhere(void **state)
{
    (void)state;
    struct msg *m = request("gets k\r\n");
    reply_to(master_of("k"), "gets k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");
    expect_pending(0);
}

static void test_gets_multi_mixed(void **state)
{
    (void)state;
    struct msg *m = request("gets a b c\r\n");
    expect_pending(1, "master[0]", "gets a b c\r\n");
    reply_to("master[0]", "gets a b c\r\n", "VALUE a 0 1 10\r\nA\r\nEND\r\n");
    reply_to("slave[0]", "get b c\r\n", "VALUE c 0 1\r\nC\r\nEND\r\n");
    reply_to("master[0]", "add c 0 60 1\r\nC\r\n", "STORED\r\n");
    reply_to("master[0]", "gets c\r\n", "VALUE c 0 1 11\r\nC\r\nEND\r\n");
    expect_reply(m, "VALUE a 0 1 10\r\nA\r\nVALUE c 0 1 11\r\nC\r\nEND\r\n");
}

/* =============================== gat, gats =========================== */

static void test_gat_master_only(void **state)
{
    (void)state;
    struct msg *m = request("gat 100 k\r\n");
    expect_pending(1, master_of("k"), "gat 100 k\r\n");
    reply_to(master_of("k"), "gat 100 k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");      /* no fall-back to slave */
    expect_pending(0);
    struct msg *m2 = request("gats 0 k\r\n");
    reply_to(master_of("k"), "gats 0 k\r\n", "VALUE k 0 1 3\r\nv\r\nEND\r\n");
    expect_reply(m2, "VALUE k 0 1 3\r\nv\r\nEND\r\n");
    expect_pending(0);               /* no write-back */
}

/* ================================ writes ============================= */

static void test_set_fans_out_to_every_tier_then_master(void **state)
{
    (void)state;
    struct msg *m = request("set k 7 100 3\r\nabc\r\n");
    const char *b = "set k 7 100 3\r\nabc\r\n";
    expect_pending(5, master_of("k"), b, "slave[0]", b, "l1[0][0]", b,
                   "l1[1][0]", b, "replicas[0][0]", b);
    /* the other tiers are sent first; master's answer is the client's */
    char have[32];
    server_label(sent[nsent - 1].server, have, sizeof(have));
    assert_string_equal(have, master_of("k"));
    reply_to("slave[0]", b, "SERVER_ERROR out of memory\r\n");
    assert_null(reply_of(m));
    reply_to(master_of("k"), b, "STORED\r\n");
    expect_reply(m, "STORED\r\n");
    answer_all("STORED\r\n");
    assert_int_equal(tstat("slave", STATS_TIER_async_failed), 1);
    assert_int_equal(tstat("l1[0]", STATS_TIER_async_sent), 1);
    assert_int_equal(tstat("replicas[0]", STATS_TIER_async_sent), 1);
    assert_int_equal(tstat("master", STATS_TIER_async_sent), 0);
    assert_int_equal(tstat("slave", STATS_TIER_async_pending), 0);
}

static void test_set_noreply_sent_with_reply(void **state)
{
    (void)state;
    struct msg *m = request("set k 0 0 1 noreply\r\nv\r\n");
    const char *b = "set k 0 0 1\r\nv\r\n";
    expect_pending(5, master_of("k"), b, "slave[0]", b, "l1[0][0]", b,
                   "l1[1][0]", b, "replicas[0][0]", b);
    reply_to(master_of("k"), b, "STORED\r\n");
    assert_non_null(reply_of(m));
}

static void test_set_master_failure(void **state)
{
    (void)state;
    struct msg *m = request("set k 0 0 1\r\nv\r\n");
    fail_to(master_of("k"), "set k 0 0 1\r\nv\r\n", "backend timed out");
    expect_reply(m, "SERVER_ERROR backend timed out\r\n");
    /* the others were sent before master answered (documented) */
    assert_int_equal(n_unanswered(), 4);
}

/* Master-first writes delete the key from every L1 before master answers,
 * so a read pipelined behind them cannot find the old value at an L1. */
static void expect_l1_invalidated_first(const char *master_bytes)
{
    const char *d = "delete k\r\n";
    expect_pending(3, master_of("k"), master_bytes, "l1[0][0]", d, "l1[1][0]", d);
    reply_to("l1[0][0]", d, "DELETED\r\n");
    reply_to("l1[1][0]", d, "NOT_FOUND\r\n");
}

static void check_store_fanout(const char *wire, const char *master_bytes,
                               const char *fan_bytes)
{
    struct msg *m = request(wire);
    expect_l1_invalidated_first(master_bytes);
    reply_to(master_of("k"), master_bytes, "STORED\r\n");
    expect_reply(m, "STORED\r\n");
    expect_pending(4, "slave[0]", fan_bytes, "l1[0][0]", fan_bytes,
                   "l1[1][0]", fan_bytes, "replicas[0][0]", fan_bytes);
    answer_all("STORED\r\n");
}

static void check_store_no_fanout(const char *wire, const char *master_bytes,
                                  const char *master_reply)
{
    struct msg *m = request(wire);
    expect_l1_invalidated_first(master_bytes);
    reply_to(master_of("k"), master_bytes, master_reply);
    expect_reply(m, master_reply);
    expect_pending(0);
}

static void test_add_cas_replace(void **state)
{
    (void)state;
    check_store_fanout("add k 1 50 2\r\nab\r\n", "add k 1 50 2\r\nab\r\n",
                       "set k 1 50 2\r\nab\r\n");
    check_store_fanout("cas k 1 50 2 99\r\nab\r\n", "cas k 1 50 2 99\r\nab\r\n",
                       "set k 1 50 2\r\nab\r\n");
    check_store_fanout("replace k 0 0 2\r\nab\r\n", "replace k 0 0 2\r\nab\r\n",
                       "set k 0 0 2\r\nab\r\n");
    check_store_no_fanout("add k 0 0 1\r\nx\r\n", "add k 0 0 1\r\nx\r\n",
                          "NOT_STORED\r\n");
    check_store_no_fanout("cas k 0 0 1 5\r\nx\r\n", "cas k 0 0 1 5\r\nx\r\n",
                          "EXISTS\r\n");
    check_store_no_fanout("cas k 0 0 1 5\r\nx\r\n", "cas k 0 0 1 5\r\nx\r\n",
                          "NOT_FOUND\r\n");
    check_store_no_fanout("replace k 0 0 1\r\nx\r\n", "replace k 0 0 1\r\nx\r\n",
                          "NOT_STORED\r\n");
    check_store_no_fanout("add k 0 0 1\r\nx\r\n", "add k 0 0 1\r\nx\r\n",
                          "SERVER_ERROR out of memory storing object\r\n");
    struct msg *m = request("add k 0 0 1\r\nx\r\n");
    expect_l1_invalidated_first("add k 0 0 1\r\nx\r\n");
    fail_to(master_of("k"), "add k 0 0 1\r\nx\r\n", "backend timed out");
    expect_reply(m, "SERVER_ERROR backend timed out\r\n");
    expect_pending(0);
}

static void test_delete_fans_out_first(void **state)
{
    (void)state;
    struct msg *m = request("delete k\r\n");
    const char *b = "delete k\r\n";
    expect_pending(5, master_of("k"), b, "slave[0]", b, "l1[0][0]", b,
                   "l1[1][0]", b, "replicas[0][0]", b);
    reply_to(master_of("k"), b, "NOT_FOUND\r\n");
    expect_reply(m, "NOT_FOUND\r\n");
    answer_all("NOT_FOUND\r\n");   /* not an async failure */
    assert_int_equal(tstat("slave", STATS_TIER_async_sent), 1);
    assert_int_equal(tstat("slave", STATS_TIER_async_failed), 0);
}

static void check_invalidate(const char *wire, const char *bytes,
                             const char *ok, const char *bad)
{
    struct msg *m = request(wire);
    expect_l1_invalidated_first(bytes);
    reply_to(master_of("k"), bytes, ok);
    expect_reply(m, ok);
    const char *d = "delete k\r\n";
    expect_pending(4, "slave[0]", d, "l1[0][0]", d, "l1[1][0]", d,
                   "replicas[0][0]", d);
    answer_all("DELETED\r\n");
    struct msg *m2 = request(wire);
    expect_l1_invalidated_first(bytes);
    reply_to(master_of("k"), bytes, bad);
    expect_reply(m2, bad);
    expect_pending(0);
}

static void test_incr_decr_append_prepend_invalidate(void **state)
{
    (void)state;
    check_invalidate("incr k 5\r\n", "incr k 5\r\n", "15\r\n", "NOT_FOUND\r\n");
    check_invalidate("decr k 5\r\n", "decr k 5\r\n", "0\r\n",
                     "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    check_invalidate("append k 0 0 1\r\nx\r\n", "append k 0 0 1\r\nx\r\n",
                     "STORED\r\n", "NOT_STORED\r\n");
    check_invalidate("prepend k 0 0 1\r\nx\r\n", "prepend k 0 0 1\r\nx\r\n",
                     "STORED\r\n", "NOT_STORED\r\n");
}

static void test_touch_replayed(void **state)
{
    (void)state;
    struct msg *m = request("touch k 300\r\n");
    expect_pending(1, master_of("k"), "touch k 300\r\n");
    reply_to(master_of("k"), "touch k 300\r\n", "TOUCHED\r\n");
    expect_reply(m, "TOUCHED\r\n");
    const char *t = "touch k 300\r\n";
    expect_pending(4, "slave[0]", t, "l1[0][0]", t, "l1[1][0]", t,
                   "replicas[0][0]", t);
    answer_all("NOT_FOUND\r\n");
    assert_int_equal(tstat("l1[1]", STATS_TIER_async_failed), 0);
    struct msg *m2 = request("touch k 300\r\n");
    reply_to(master_of("k"), "touch k 300\r\n", "NOT_FOUND\r\n");
    expect_reply(m2, "NOT_FOUND\r\n");
    expect_pending(0);
}

static void test_write_without_live_master_sends_nothing(void **state)
{
    (void)state;
    masters_live(false);   /* both master servers out of the ring */
    struct msg *m = request("set k 0 0 1\r\nv\r\n");
    expect_reply(m, "SERVER_ERROR no server available\r\n");
    expect_pending(0);
    struct msg *m2 = request("delete k\r\n");
    expect_reply(m2, "SERVER_ERROR no server available\r\n");
    expect_pending(0);
    /* a read still tries L1, then the slave */
    struct msg *m3 = request("get k\r\n");
    reply_to(l1_of(m3), "get k\r\n", "END\r\n");
    reply_to("slave[0]", "get k\r\n", "VALUE k 0 1\r\ns\r\nEND\r\n");
    expect_reply(m3, "VALUE k 0 1\r\ns\r\nEND\r\n");
    masters_live(true);
}

/* ============================ master + replicas ====================== */

static void test_cross_dc_reads_never_touch_replicas(void **state)
{
    (void)state;
    struct msg *m = request("get k\r\n");
    expect_pending(1, "master[0]", "get k\r\n");
    reply_to("master[0]", "get k\r\n", "END\r\n");
    expect_reply(m, "END\r\n");
    expect_pending(0);
    struct msg *m2 = request("gets k\r\n");
    reply_to("master[0]", "gets k\r\n", "END\r\n");
    expect_reply(m2, "END\r\n");
    struct msg *m3 = request("get k\r\n");
    fail_to("master[0]", "get k\r\n", "backend timed out");
    expect_reply(m3, "SERVER_ERROR master unavailable\r\n");   /* no slave */
    expect_pending(0);
}

static void test_cross_dc_writes_reach_replicas(void **state)
{
    (void)state;
    struct msg *m = request("set k 0 0 1\r\nv\r\n");
    const char *b = "set k 0 0 1\r\nv\r\n";
    expect_pending(3, "master[0]", b, "replicas[0][0]", b, "replicas[1][0]", b);
    reply_to("master[0]", b, "STORED\r\n");
    expect_reply(m, "STORED\r\n");
    struct msg *m2 = request("incr k 1\r\n");
    reply_to("master[0]", "incr k 1\r\n", "2\r\n");
    expect_reply(m2, "2\r\n");
    expect_pending(4, "replicas[0][0]", b, "replicas[1][0]", b,
                   "replicas[0][0]", "delete k\r\n",
                   "replicas[1][0]", "delete k\r\n");
}

/* ================================ async ============================== */

static void test_async_queue_limit_drops_and_counts(void **state)
{
    (void)state;
    /* async_limit 2: the third write to a tier with two outstanding is
     * dropped, the client is not affected */
    const char *b = "set k 0 0 1\r\nv\r\n";
    struct msg *m[3];
    for (int i = 0; i < 3; i++) {
        m[i] = request(b);
        reply_to("master[0]", b, "STORED\r\n");
        expect_reply(m[i], "STORED\r\n");
    }
    assert_int_equal(tstat("slave", STATS_TIER_async_dropped), 1);
    assert_int_equal(tstat("l1[0]", STATS_TIER_async_dropped), 1);
    assert_int_equal(tstat("replicas[0]", STATS_TIER_async_dropped), 1);
    assert_int_equal(tstat("slave", STATS_TIER_async_pending), 2);
    assert_int_equal(n_unanswered(), 6);
    answer_all("STORED\r\n");
    assert_int_equal(tstat("slave", STATS_TIER_async_pending), 0);
    assert_int_equal(tstat("slave", STATS_TIER_async_sent), 2);
    /* room again */
    struct msg *m4 = request(b);
    reply_to("master[0]", b, "STORED\r\n");
    expect_reply(m4, "STORED\r\n");
    expect_pending(3, "slave[0]", b, "l1[0][0]", b, "replicas[0][0]", b);
}

static void test_async_write_back_dropped_when_full(void **state)
{
    (void)state;
    const char *b = "set x 0 0 1\r\nv\r\n";
    for (int i = 0; i < 2; i++) {
        request(b);
        reply_to("master[0]", b, "STORED\r\n");
    }
    struct msg *m = request("get k\r\n");
    reply_to("l1[0][0]", "get k\r\n", "END\r\n");
    reply_to("master[0]", "get k\r\n", "VALUE k 0 1\r\nm\r\nEND\r\n");
    expect_reply(m, "VALUE k 0 1\r\nm\r\nEND\r\n");
    assert_int_equal(tstat("l1[0]", STATS_TIER_writebacks), 1);
    assert_int_equal(tstat("l1[0]", STATS_TIER_async_dropped), 1);
}

static void run_base_once(void)
{
    /* the next timer: a delete retry (100 ms, 400 ms, 1600 ms) */
    assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
}

static void test_async_delete_retried_then_failed(void **state)
{
    (void)state;
    struct msg *m = request("delete k\r\n");
    reply_to("master[0]", "delete k\r\n", "DELETED\r\n");
    expect_reply(m, "DELETED\r\n");
    reply_to("l1[0][0]", "delete k\r\n", "DELETED\r\n");
    reply_to("replicas[0][0]", "delete k\r\n", "NOT_FOUND\r\n");
    for (int attempt = 0; attempt < 4; attempt++) {
        fail_to("slave[0]", "delete k\r\n", "backend connect failed");
        expect_pending(0);
        assert_int_equal(tstat("slave", STATS_TIER_async_pending), 1);
        run_base_once();
        expect_pending(1, "slave[0]", "delete k\r\n");
        assert_int_equal(tstat("slave", STATS_TIER_async_retried), attempt + 1);
    }
    fail_to("slave[0]", "delete k\r\n", "backend connect failed");
    expect_pending(0);
    assert_int_equal(tstat("slave", STATS_TIER_async_failed), 1);
    assert_int_equal(tstat("slave", STATS_TIER_async_retried), 4);
    assert_int_equal(tstat("slave", STATS_TIER_async_pending), 0);
}

static void test_async_delete_retry_succeeds(void **state)
{
    (void)state;
    struct msg *m = request("delete k\r\n");
    reply_to("master[0]", "delete k\r\n", "DELETED\r\n");
    expect_reply(m, "DELETED\r\n");
    reply_to("slave[0]", "delete k\r\n", "SERVER_ERROR busy\r\n");
    run_base_once();
    reply_to("slave[0]", "delete k\r\n", "DELETED\r\n");
    assert_int_equal(tstat("slave", STATS_TIER_async_sent), 1);
    assert_int_equal(tstat("slave", STATS_TIER_async_failed), 0);
    assert_int_equal(tstat("slave", STATS_TIER_async_retried), 1);
}

static void test_async_set_not_retried(void **state)
{
    (void)state;
    const char *b = "set k 0 0 1\r\nv\r\n";
    request(b);
    reply_to("master[0]", b, "STORED\r\n");
    fail_to("slave[0]", b, "backend timed out");
    assert_int_equal(tstat("slave", STATS_TIER_async_failed), 1);
    assert_int_equal(tstat("slave", STATS_TIER_async_retried), 0);
    assert_int_equal(tstat("slave", STATS_TIER_async_pending), 0);
    expect_pending(2, "l1[0][0]", b, "replicas[0][0]", b);
}

static void test_async_retry_cancelled_at_shutdown(void **state)
{
    (void)state;
    request("delete k\r\n");
    reply_to("master[0]", "delete k\r\n", "DELETED\r\n");
    fail_to("slave[0]", "delete k\r\n", "backend connect failed");
    assert_int_equal(tstat("slave", STATS_TIER_async_pending), 1);
    answer_all("DELETED\r\n");
    pp.closing = true;
    policy_pool_deinit(&pp);
    assert_int_equal(sw.view->pools[0].tiers[1].f[STATS_TIER_async_failed], 1);
    assert_int_equal(sw.view->pools[0].tiers[1].f[STATS_TIER_async_pending], 0);
    /* pool_down deinits again: make that a no-op */
    memset(&pp, 0, sizeof(pp));
}

/* ============================ plain pools ============================ */

/* Keys a, b, c on master[0], [1], [2] and d on master[0] again; the
 * request "get a b c d" and each server's share of it. */
struct split {
    char a[16], b[16], c[16], d[16];
    char wire[80], to0[48], to1[32], to2[32];
};

static void split_keys(struct split *k)
{
    key_on(0, 0, k->a, sizeof(k->a));
    key_on(1, 0, k->b, sizeof(k->b));
    key_on(2, 0, k->c, sizeof(k->c));
    key_on(0, 1, k->d, sizeof(k->d));
    snprintf(k->wire, sizeof(k->wire), "get %s %s %s %s\r\n", k->a, k->b, k->c, k->d);
    snprintf(k->to0, sizeof(k->to0), "get %s %s\r\n", k->a, k->d);
    snprintf(k->to1, sizeof(k->to1), "get %s\r\n", k->b);
    snprintf(k->to2, sizeof(k->to2), "get %s\r\n", k->c);
}

/* "VALUE <key> 0 <len>\r\n<data>\r\n" */
static const char *value_of(char *out, size_t len, const char *key, const char *data)
{
    snprintf(out, len, "VALUE %s 0 %zu\r\n%s\r\n", key, strlen(data), data);
    return out;
}

static void test_plain_multiget_split_and_merged_in_key_order(void **state)
{
    (void)state;
    struct split k;
    split_keys(&k);
    char va[64], vb[64], vd[64], rsp0[160], want[320];
    struct msg *m = request(k.wire);
    expect_pending(3, "master[0]", k.to0, "master[1]", k.to1, "master[2]", k.to2);
    /* answers in the reverse order of the keys; d before a on server 0 */
    snprintf(rsp0, sizeof(rsp0), "%s%sEND\r\n", value_of(va, sizeof(va), k.a, "1"),
             value_of(vd, sizeof(vd), k.d, "4444"));
    reply_to("master[2]", k.to2, "END\r\n");   /* c missed */
    assert_null(reply_of(m));
    reply_to("master[0]", k.to0, rsp0);
    assert_null(reply_of(m));
    char rsp1[128];
    snprintf(rsp1, sizeof(rsp1), "%sEND\r\n", value_of(vb, sizeof(vb), k.b, "22"));
    reply_to("master[1]", k.to1, rsp1);
    snprintf(want, sizeof(want), "%s%s%sEND\r\n", va, vb, vd);
    expect_reply(m, want);
    assert_int_equal(sw.view->pools[0].f[STATS_fragments], 3);
}

static void test_plain_multiget_one_server_is_direct(void **state)
{
    (void)state;
    struct split k;
    split_keys(&k);
    char wire[48], va[64], vd[64], rsp[160];
    snprintf(wire, sizeof(wire), "get %s %s\r\n", k.d, k.a);
    struct msg *m = request(wire);
    expect_pending(1, "master[0]", wire);
    snprintf(rsp, sizeof(rsp), "%s%sEND\r\n", value_of(vd, sizeof(vd), k.d, "d"),
             value_of(va, sizeof(va), k.a, "a"));
    reply_to("master[0]", wire, rsp);
    expect_reply(m, rsp);
}

static void test_plain_multiget_server_failure_fails_all(void **state)
{
    (void)state;
    struct split k;
    split_keys(&k);
    char va[64], vb[64], rsp[160];
    struct msg *m = request(k.wire);
    snprintf(rsp, sizeof(rsp), "%sEND\r\n", value_of(va, sizeof(va), k.a, "1"));
    reply_to("master[0]", k.to0, rsp);
    fail_to("master[2]", k.to2, "backend timed out");
    assert_null(reply_of(m));   /* master[1] is still out */
    snprintf(rsp, sizeof(rsp), "%sEND\r\n", value_of(vb, sizeof(vb), k.b, "2"));
    reply_to("master[1]", k.to1, rsp);
    expect_reply(m, "SERVER_ERROR backend timed out\r\n");
    expect_pending(0);
}

static void test_plain_multiget_error_line_fails_all(void **state)
{
    (void)state;
    struct split k;
    split_keys(&k);
    struct msg *m = request(k.wire);
    reply_to("master[1]", k.to1, "SERVER_ERROR out of memory storing object\r\n");
    reply_to("master[0]", k.to0, "END\r\n");
    reply_to("master[2]", k.to2, "END\r\n");
    expect_reply(m, "SERVER_ERROR out of memory storing object\r\n");
}

static void test_plain_multiget_unasked_key_is_an_error(void **state)
{
    (void)state;
    struct split k;
    split_keys(&k);
    char vb[64], rsp[160];
    struct msg *m = request(k.wire);
    /* server 2 answers with b, which it was not asked for */
    snprintf(rsp, sizeof(rsp), "%sEND\r\n", value_of(vb, sizeof(vb), k.b, "2"));
    reply_to("master[2]", k.to2, rsp);
    reply_to("master[1]", k.to1, rsp);
    reply_to("master[0]", k.to0, "END\r\n");
    expect_reply(m, "SERVER_ERROR backend returned a key it was not asked for\r\n");
}

static void test_plain_single_key_commands(void **state)
{
    (void)state;
    char key[16], wire[64], label[16];
    key_on(1, 0, key, sizeof(key));
    snprintf(label, sizeof(label), "master[1]");
    snprintf(wire, sizeof(wire), "set %s 0 0 1\r\nv\r\n", key);
    struct msg *m = request(wire);
    expect_pending(1, label, wire);   /* no other tier: nothing else */
    reply_to(label, wire, "STORED\r\n");
    expect_reply(m, "STORED\r\n");
    snprintf(wire, sizeof(wire), "incr %s 5\r\n", key);
    m = request(wire);
    fail_to(label, wire, "backend connect failed");
    expect_reply(m, "SERVER_ERROR backend connect failed\r\n");
}

static void test_plain_no_server_available_is_immediate(void **state)
{
    (void)state;
    masters_live(false);
    struct msg *m = request("get a b c\r\n");   /* done before dispatch returned */
    expect_reply(m, "SERVER_ERROR no server available\r\n");
    m = request("delete a\r\n");
    expect_reply(m, "SERVER_ERROR no server available\r\n");
    expect_pending(0);
    assert_int_equal(sw.view->pools[0].f[STATS_forward_error], 2);
}

static void test_plain_flush_all_disabled_is_immediate(void **state)
{
    (void)state;
    struct msg *m = request("flush_all\r\n");
    expect_reply(m, "SERVER_ERROR flush_all is disabled for this pool "
                    "(set allow_flush: true)\r\n");
    expect_pending(0);
}

static void test_plain_flush_all_every_server(void **state)
{
    (void)state;
    struct msg *m = request("flush_all 10\r\n");
    expect_pending(3, "master[0]", "flush_all 10\r\n", "master[1]", "flush_all 10\r\n",
                   "master[2]", "flush_all 10\r\n");
    reply_to("master[1]", "flush_all 10\r\n", "OK\r\n");
    reply_to("master[0]", "flush_all 10\r\n", "OK\r\n");
    assert_null(reply_of(m));
    reply_to("master[2]", "flush_all 10\r\n", "OK\r\n");
    expect_reply(m, "OK\r\n");
    m = request("flush_all\r\n");
    fail_to("master[0]", "flush_all\r\n", "backend timed out");
    answer_all("OK\r\n");
    expect_reply(m, "SERVER_ERROR backend timed out\r\n");
}

/* The records a request used go back to the worker's cache and are
 * reused: a second request allocates nothing new. */
static void test_plain_request_records_recycled(void **state)
{
    (void)state;
    struct split k;
    split_keys(&k);
    struct msg *m = request(k.wire);
    assert_int_equal(pcache.nreqs, 0);
    answer_all("END\r\n");
    expect_reply(m, "END\r\n");
    assert_int_equal(pcache.nreqs, 1);
    m = request(k.wire);
    assert_int_equal(pcache.nreqs, 0);
    answer_all("END\r\n");
    expect_reply(m, "END\r\n");
    assert_int_equal(pcache.nreqs, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define FULL(t) cmocka_unit_test_setup_teardown(t, setup_full, teardown)
        FULL(test_get_l1_hit),
        FULL(test_get_l1_miss_master_hit_writes_back_to_that_l1),
        FULL(test_get_slave_hit_writes_back_to_master_and_l1),
        FULL(test_get_miss_everywhere),
        FULL(test_get_l1_failure_falls_to_master),
        FULL(test_get_l1_error_line_falls_to_master),
        FULL(test_get_l1_value_then_error_keeps_the_value),
        FULL(test_get_master_failure_falls_to_slave),
        FULL(test_get_master_failure_slave_miss_is_a_miss),
        FULL(test_get_master_and_slave_failure_is_an_error),
        FULL(test_get_slave_failure_after_master_miss_is_a_miss),
        FULL(test_get_multi_across_tiers_in_order),
        FULL(test_get_duplicate_keys),
        FULL(test_get_unasked_key_at_l1_falls_to_master),
        FULL(test_get_repeated_key_at_master_fails_the_rest),
        FULL(test_get_l1_choice_varies),
        cmocka_unit_test_setup_teardown(test_get_without_l1, setup_no_l1, teardown),
        FULL(test_gets_master_hit),
        FULL(test_gets_slave_hit_adds_to_master_then_gets_master),
        FULL(test_gets_add_lost_race_returns_masters_value),
        FULL(test_gets_master_failure_is_an_error),
        FULL(test_gets_master_back_for_the_add),
        FULL(test_gets_regets_miss_is_a_miss),
        FULL(test_gets_master_failure_slave_miss_is_an_error),
        FULL(test_gets_miss_everywhere),
        cmocka_unit_test_setup_teardown(test_gets_multi_mixed, setup_no_l1, teardown),
        FULL(test_gat_master_only),
        FULL(test_set_fans_out_to_every_tier_then_master),
        FULL(test_set_noreply_sent_with_reply),
        FULL(test_set_master_failure),
        FULL(test_add_cas_replace),
        FULL(test_delete_fans_out_first),
        FULL(test_incr_decr_append_prepend_invalidate),
        FULL(test_touch_replayed),
        FULL(test_write_without_live_master_sends_nothing),
        cmocka_unit_test_setup_teardown(test_cross_dc_reads_never_touch_replicas,
                                        setup_cross_dc, teardown),
        cmocka_unit_test_setup_teardown(test_cross_dc_writes_reach_replicas,
                                        setup_cross_dc, teardown),
#define SMALL(t) cmocka_unit_test_setup_teardown(t, setup_small_queue, teardown)
        SMALL(test_async_queue_limit_drops_and_counts),
        SMALL(test_async_write_back_dropped_when_full),
        SMALL(test_async_delete_retried_then_failed),
        SMALL(test_async_delete_retry_succeeds),
        SMALL(test_async_set_not_retried),
        SMALL(test_async_retry_cancelled_at_shutdown),
#define PLAIN(t) cmocka_unit_test_setup_teardown(t, setup_plain, teardown)
        PLAIN(test_plain_multiget_split_and_merged_in_key_order),
        PLAIN(test_plain_multiget_one_server_is_direct),
        PLAIN(test_plain_multiget_server_failure_fails_all),
        PLAIN(test_plain_multiget_error_line_fails_all),
        PLAIN(test_plain_multiget_unasked_key_is_an_error),
        PLAIN(test_plain_single_key_commands),
        PLAIN(test_plain_no_server_available_is_immediate),
        PLAIN(test_plain_flush_all_disabled_is_immediate),
        cmocka_unit_test_setup_teardown(test_plain_flush_all_every_server,
                                        setup_plain_flush, teardown),
        PLAIN(test_plain_request_records_recycled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
