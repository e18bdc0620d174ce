/* policy_async: writes to the tiers other than master. They never delay
 * the client and never grow without bound:
 *
 *   write ─► per-server count < async_queue_limit? ─no─► dropped (counted)
 *              │yes
 *              ▼
 *   backend pipeline ─► ok: sent │ error: failed │ delete: retry after
 *                                                   100, 400, 1600, 6400 ms
 *
 * A lost delete means a stale read, so deletes are retried; a lost set or
 * write-back only costs a later miss, so they are not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "policy_int.h"
#include "strata/log.h"
#include "strata/util.h"

#define ASYNC_DELETE_RETRIES 4   /* 100, 400, 1600, 6400 ms: rides out a restart */
#define ASYNC_RETRY_FIRST_MS 100

struct policy_async_op {
    TAILQ_ENTRY(policy_async_op) link;   /* in pp->retrying while waiting,
                                            in cache->ops while free */
    struct policy_cache *cache;          /* where it returns */
    struct policy_pool *pp;
    struct policy_tier *tier;
    uint32_t            server;
    enum mc_cmd         cmd;
    uint8_t             attempt;
    struct event       *timer;           /* deletes only */
    uint8_t             klen;
    char                key[MC_KEY_MAX + 1];
};

/* ---- records, recycled through the worker's policy_cache ---- */

/* A zeroed op from the cache (or new); NULL when out of memory. */
static struct policy_async_op *op_get(struct policy_cache *pc)
{
    struct policy_async_op *op = TAILQ_FIRST(&pc->ops);
    if (op != NULL) {
        TAILQ_REMOVE(&pc->ops, op, link);
        pc->nops--;
    } else if ((op = malloc(sizeof(*op))) == NULL) {
        return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->cache = pc;
    return op;
}

/* Frees the op's timer and keeps the op for reuse, or frees it when the
 * cache is full. */
static void op_put(struct policy_async_op *op)
{
    struct policy_cache *pc = op->cache;
    if (op->timer != NULL)
        event_free(op->timer);
    op->timer = NULL;
    if (pc->nops >= POLICY_CACHE_MAX) {
        free(op);
        return;
    }
    TAILQ_INSERT_HEAD(&pc->ops, op, link);
    pc->nops++;
}

uint32_t policy_async_cache_shrink(struct policy_cache *pc, uint32_t keep)
{
    uint32_t freed = 0;
    struct policy_async_op *op;
    while (pc->nops > keep && (op = TAILQ_FIRST(&pc->ops)) != NULL) {
        TAILQ_REMOVE(&pc->ops, op, link);
        pc->nops--;
        free(op);
        freed++;
    }
    return freed;
}

void policy_async_cache_deinit(struct policy_cache *pc)
{
    policy_async_cache_shrink(pc, 0);
}

/* ---- sending and retrying ---- */

static void op_finish(struct policy_async_op *op)
{
    op->pp->inflight--;
    op->tier->async_pending[op->server]--;
    stats_tier_add(op->tier->stats, async_pending, -1);
    op_put(op);
}

static bool async_reply_ok(const struct mc_rsp *rsp)
{
    switch (rsp->type) {
    case MC_RSP_STORED:
    case MC_RSP_NOT_STORED:   /* write-back add: a newer value is there */
    case MC_RSP_DELETED:
    case MC_RSP_NOT_FOUND:
    case MC_RSP_TOUCHED:
        return true;
    default:
        return false;
    }
}

static bool async_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                     const char *reason);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct policy_async_op *op = arg;
    struct evbuffer *out = op->pp->scratch;
    TAILQ_REMOVE(&op->pp->retrying, op, link);
    stats_tier_add(op->tier->stats, async_retried, 1);
    if (mc_compose_delete(out, op->key, op->klen) != 0) {
        stats_tier_add(op->tier->stats, async_failed, 1);
        op_finish(op);
        return;
    }
    backend_send(op->tier->servers[op->server], MC_CMD_DELETE, out, async_cb, op);
}

static bool op_retry(struct policy_async_op *op)
{
    if (op->cmd != MC_CMD_DELETE || op->pp->closing || op->klen == 0 ||
        op->attempt >= ASYNC_DELETE_RETRIES)
        return false;
    if (op->timer == NULL)
        op->timer = evtimer_new(op->pp->base, on_retry, op);
    if (op->timer == NULL)
        return false;
    int64_t ms = (int64_t)ASYNC_RETRY_FIRST_MS << (2 * op->attempt);
    op->attempt++;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    if (evtimer_add(op->timer, &tv) != 0)
        return false;
    TAILQ_INSERT_TAIL(&op->pp->retrying, op, link);
    return true;
}

static bool async_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                     const char *reason)
{
    struct policy_async_op *op = arg;
    if (ev == BACKEND_VALUE)
        return true;
    if (ev == BACKEND_DONE && async_reply_ok(rsp)) {
        stats_tier_add(op->tier->stats, async_sent, 1);
        op_finish(op);
        return true;
    }
    if (op_retry(op))
        return true;
    stats_tier_add(op->tier->stats, async_failed, 1);
    log_debug("async %s to tier %s failed: %s", mc_cmd_name(op->cmd), op->tier->name,
              ev == BACKEND_FAIL ? reason : rsp->line);
    op_finish(op);
    return true;
}

/* Drops bytes that will not be sent and counts them under `field`. */
static void async_drop(struct policy_tier *t, struct evbuffer *bytes,
                       enum stats_tier_field field)
{
    evbuffer_drain(bytes, evbuffer_get_length(bytes));
    stats_add(&t->stats->f[field], 1);
}

void policy_async_send(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                       enum mc_cmd cmd, struct evbuffer *bytes,
                       const char *key, size_t klen)
{
    if (pp->closing) {
        async_drop(t, bytes, STATS_TIER_async_failed);
        return;
    }
    if (t->async_pending[s] >= pp->async_limit) {
        async_drop(t, bytes, STATS_TIER_async_dropped);
        return;
    }
    struct policy_async_op *op = op_get(pp->cache);
    if (op == NULL) {
        async_drop(t, bytes, STATS_TIER_async_failed);
        return;
    }
    op->pp = pp;
    pp->inflight++;
    op->tier = t;
    op->server = s;
    op->cmd = cmd;
    if (cmd == MC_CMD_DELETE && klen <= MC_KEY_MAX) {
        memcpy(op->key, key, klen);
        op->klen = (uint8_t)klen;
    }
    t->async_pending[s]++;
    stats_tier_add(t->stats, async_pending, 1);
    backend_send(t->servers[s], cmd, bytes, async_cb, op);
}

/* The server of key in t, or UINT32_MAX after counting an async failure. */
static uint32_t async_pick(struct policy_tier *t, const char *key, size_t klen)
{
    uint32_t s = router_pick(&t->router, key, klen);
    if (s == UINT32_MAX)
        stats_tier_add(t->stats, async_failed, 1);
    return s;
}

/* Sends what was composed into pp->scratch (rc 0) to server s of t; a
 * failed compose (rc -1) is counted as an async failure. */
static void async_send_composed(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                                enum mc_cmd cmd, int rc, const char *key, size_t klen)
{
    if (rc != 0)
        async_drop(t, pp->scratch, STATS_TIER_async_failed);
    else
        policy_async_send(pp, t, s, cmd, pp->scratch, key, klen);
}

void policy_async_store_tier(struct policy_pool *pp, struct policy_tier *t,
                             enum mc_cmd cmd, const char *key, size_t klen,
                             uint32_t flags, int64_t exptime,
                             struct evbuffer *data)
{
    uint32_t s = async_pick(t, key, klen);
    if (s == UINT32_MAX)
        return;
    int rc = mc_compose_storage(pp->scratch, cmd, key, klen, flags, exptime,
                                evbuffer_get_length(data));
    if (rc == 0)
        rc = mc_compose_block(pp->scratch, data, true);
    async_send_composed(pp, t, s, cmd, rc, key, klen);
}

void policy_async_delete_tier(struct policy_pool *pp, struct policy_tier *t,
                              const char *key, size_t klen)
{
    uint32_t s = async_pick(t, key, klen);
    if (s != UINT32_MAX)
        async_send_composed(pp, t, s, MC_CMD_DELETE,
                            mc_compose_delete(pp->scratch, key, klen), key, klen);
}

void policy_async_fanout_key(struct policy_pool *pp, enum mc_cmd cmd,
                             const char *key, size_t klen, int64_t exptime)
{
    for (uint32_t i = 1; i < pp->ntiers; i++) {
        struct policy_tier *t = &pp->tiers[i];
        if (cmd == MC_CMD_DELETE) {
            policy_async_delete_tier(pp, t, key, klen);
            continue;
        }
        uint32_t s = async_pick(t, key, klen);
        if (s != UINT32_MAX)
            async_send_composed(pp, t, s, cmd,
                                mc_compose_touch(pp->scratch, key, klen, exptime), key, klen);
    }
}

void policy_async_cancel(struct policy_pool *pp)
{
    struct policy_async_op *op;
    while ((op = TAILQ_FIRST(&pp->retrying)) != NULL) {
        TAILQ_REMOVE(&pp->retrying, op, link);
        stats_tier_add(op->tier->stats, async_failed, 1);
        op_finish(op);
    }
}
