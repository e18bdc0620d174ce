/* policy: request → backend requests → reply. This file holds the pool
 * set-up, the helpers shared by every path, and the plain (single-tier)
 * paths, which route as twemproxy does.
 *
 *   msg ──► route each key ──► group keys per server ──► one frag per server
 *   frag replies ──► VALUE blocks in key order (slots when split) ──► reply
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "policy_int.h"
#include "strata/conn.h"
#include "strata/log.h"
#include "strata/util.h"

/* ---- set-up ---- */

static int tier_init(struct policy_tier *t, const struct conf_tier *conf,
                     const char *name, const struct conf_pool *pool,
                     struct backend_worker *bw, const struct mc_limits *limits,
                     struct stats_pool *stats, uint32_t first_stat, uint64_t seed,
                     char *err, size_t errlen)
{
    t->conf = conf;
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->nservers = conf->nservers;
    t->servers = util_xcalloc(conf->nservers, sizeof(*t->servers));
    t->async_pending = util_xcalloc(conf->nservers, sizeof(*t->async_pending));
    for (uint32_t i = 0; i < conf->nservers; i++) {
        struct backend_server *s = &t->servers[i];
        if (backend_server_init(s, &conf->servers[i], conf, bw, limits, stats,
                                &stats->servers[first_stat + i], &t->eject_epoch,
                                err, errlen) != 0)
            return -1;
        if (pool->preconnect)
            backend_server_connect(s);
    }
    return router_init(&t->router, conf, seed);
}

static void tier_deinit(struct policy_tier *t)
{
    for (uint32_t i = 0; i < t->nservers; i++)
        if (t->servers[i].conns != NULL)
            backend_server_deinit(&t->servers[i]);
    free(t->servers);
    free(t->async_pending);
    router_deinit(&t->router);
}

static void tier_name(const struct policy_pool *pp, uint32_t i, char *out, size_t len)
{
    if (i == 0)
        snprintf(out, len, "master");
    else if (pp->slave != NULL && i == 1)
        snprintf(out, len, "slave");
    else if (i < 1 + (pp->slave != NULL) + pp->conf->nl1)
        snprintf(out, len, "l1[%u]", i - 1 - (pp->slave != NULL));
    else
        snprintf(out, len, "replicas[%u]", i - 1 - (pp->slave != NULL) - pp->conf->nl1);
}

int policy_pool_init(struct policy_pool *pp, const struct conf_pool *conf,
                     struct backend_worker *bw, const struct mc_limits *limits,
                     struct stats_pool *stats, uint32_t async_limit,
                     uint64_t seed, char *err, size_t errlen)
{
    memset(pp, 0, sizeof(*pp));
    pp->conf = conf;
    pp->base = bw->loop->base;
    pp->stats = stats;
    pp->async_limit = async_limit;
    pp->rng = seed | 1;
    TAILQ_INIT(&pp->retrying);
    pp->scratch = evbuffer_new();
    if (pp->scratch == NULL)
        return -1;
    pp->ntiers = stats_pool_tier_count(conf);
    pp->tiers = util_xcalloc(pp->ntiers, sizeof(*pp->tiers));
    pp->master = &pp->tiers[0];
    uint32_t next = 1;
    if (conf->slave != NULL)
        pp->slave = &pp->tiers[next++];
    pp->l1 = &pp->tiers[next];
    pp->nl1 = conf->nl1;
    pp->replicas = &pp->tiers[next + conf->nl1];
    pp->nreplicas = conf->nreplicas;
    uint32_t first_stat = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++) {
        char name[24];
        tier_name(pp, i, name, sizeof(name));
        const struct conf_tier *ct = stats_pool_tier(conf, i);
        pp->tiers[i].stats = &stats->tiers[i];
        if (tier_init(&pp->tiers[i], ct, name, conf, bw, limits, stats,
                      first_stat, seed + i, err, errlen) != 0)
            return -1;
        first_stat += ct->nservers;
    }
    return 0;
}

void policy_pool_deinit(struct policy_pool *pp)
{
    pp->closing = true;
    policy_async_cancel(pp);
    for (uint32_t i = 0; pp->tiers != NULL && i < pp->ntiers; i++)
        tier_deinit(&pp->tiers[i]);
    free(pp->tiers);
    pp->tiers = NULL;
    if (pp->scratch != NULL)
        evbuffer_free(pp->scratch);
    pp->scratch = NULL;
}

void policy_msg_deinit(struct msg *msg)
{
    for (uint32_t i = 0; i < msg->slots_cap; i++)
        if (msg->slots[i] != NULL)
            evbuffer_free(msg->slots[i]);
    free(msg->slots);
    free(msg->frags);
    free(msg->key_idx);
    free(msg->kstate);
    msg->slots = NULL;
    msg->frags = NULL;
    msg->key_idx = NULL;
    msg->kstate = NULL;
    msg->slots_cap = msg->frags_cap = msg->key_idx_cap = msg->kstate_cap = 0;
}

/* ---- helpers shared by every path ---- */

void policy_tier_refresh(struct policy_tier *t)
{
    if (t->built_epoch == t->eject_epoch && t->next_rebuild_ms == 0)
        return;
    int64_t now = util_now_ms();
    if (t->built_epoch == t->eject_epoch && now < t->next_rebuild_ms)
        return;
    int64_t next = 0;
    bool changed = false;
    for (uint32_t i = 0; i < t->nservers; i++) {
        struct backend_server *s = &t->servers[i];
        bool live = backend_server_live(s, now);
        changed |= router_set_live(&t->router, i, live);
        if (!live && (next == 0 || s->ejected_until_ms < next))
            next = s->ejected_until_ms;
    }
    if (changed)
        router_rebuild(&t->router);
    t->built_epoch = t->eject_epoch;
    t->next_rebuild_ms = next;
}

void policy_msg_fail(struct msg *msg, const char *fmt, const char *reason)
{
    if (msg->failed)
        return;
    msg->failed = true;
    snprintf(msg->error, sizeof(msg->error), fmt, reason);
}

void policy_reply_error(struct msg *msg, const char *line)
{
    evbuffer_drain(msg->reply, evbuffer_get_length(msg->reply));
    evbuffer_add_printf(msg->reply, "%s\r\n", line);
    msg_complete(msg);
}

void *policy_grow(void *p, uint32_t *cap, uint32_t need, size_t size)
{
    if (need <= *cap)
        return p;
    uint32_t n = *cap > 0 ? *cap : 4;
    while (n < need)
        n *= 2;
    p = realloc(p, (size_t)n * size);
    if (p == NULL)
        abort();
    memset((char *)p + (size_t)*cap * size, 0, (size_t)(n - *cap) * size);
    *cap = n;
    return p;
}

void policy_frags_reserve(struct msg *msg, uint32_t n)
{
    msg->frags = policy_grow(msg->frags, &msg->frags_cap, n, sizeof(*msg->frags));
    memset(msg->frags, 0, (size_t)n * sizeof(*msg->frags));
}

bool policy_frag_match_key(struct policy_frag *f, const struct mc_rsp *rsp,
                           uint32_t *key)
{
    const struct mc_req *req = &f->msg->req;
    const char *k = rsp->line + rsp->key.off;
    for (; f->cursor < f->count; f->cursor++) {
        uint32_t idx = f->msg->key_idx[f->first + f->cursor];
        const struct mc_token *t = &req->keys[idx];
        if (t->len == rsp->key.len && memcmp(req->line + t->off, k, t->len) == 0) {
            *key = idx;
            f->cursor++;
            return true;
        }
    }
    return false;
}

void policy_value_append(struct evbuffer *out, struct mc_rsp *rsp)
{
    evbuffer_add(out, rsp->line, rsp->line_len);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_add_buffer(out, rsp->data);
    evbuffer_add(out, "\r\n", 2);
}

void policy_share(struct evbuffer *out, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0 || evbuffer_add_buffer_reference(out, in) == 0)
        return;
    /* in holds references itself: fall back to a copy. */
    unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)len);
    if (p != NULL)
        evbuffer_add(out, p, len);
}

uint32_t policy_group_keys(struct policy_pool *pp, struct policy_tier *t,
                           struct msg *msg, bool (*want)(const struct msg *, uint32_t),
                           void (*unrouted)(struct msg *, uint32_t))
{
    const struct mc_req *req = &msg->req;
    uint32_t n = req->nkeys;
    msg->key_idx = policy_grow(msg->key_idx, &msg->key_idx_cap, 2 * n, sizeof(uint32_t));
    uint32_t *srv = msg->key_idx + n;
    policy_frags_reserve(msg, t->nservers);
    for (uint32_t k = 0; k < n; k++) {
        srv[k] = UINT32_MAX;
        if (want != NULL && !want(msg, k))
            continue;
        srv[k] = router_pick(&t->router, req->line + req->keys[k].off, req->keys[k].len);
        if (srv[k] == UINT32_MAX)
            unrouted(msg, k);
        else
            msg->frags[srv[k]].count++;
    }
    uint32_t next = 0, used = 0;
    for (uint32_t s = 0; s < t->nservers; s++) {
        msg->frags[s].first = next;
        next += msg->frags[s].count;
        used += msg->frags[s].count > 0;
    }
    for (uint32_t k = 0; k < n; k++) {
        if (srv[k] == UINT32_MAX)
            continue;
        struct policy_frag *f = &msg->frags[srv[k]];
        msg->key_idx[f->first + f->cursor++] = k;
    }
    for (uint32_t s = 0; s < t->nservers; s++) {
        msg->frags[s].cursor = 0;
        msg->frags[s].msg = msg;
        msg->frags[s].pool = pp;
        msg->frags[s].tier = t;
    }
    return used;
}

/* ---- plain pools: retrieval (get, gets, gat, gats) ---- */

static void retrieval_value(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct msg *msg = f->msg;
    uint32_t key;
    if (!policy_frag_match_key(f, rsp, &key)) {
        policy_msg_fail(msg, "SERVER_ERROR %s", "backend returned a key it was not asked for");
        return;
    }
    if (f->direct) {
        policy_value_append(msg->reply, rsp);
        return;
    }
    if (msg->slots[key] == NULL)
        msg->slots[key] = evbuffer_new();
    policy_value_append(msg->slots[key], rsp);
}

static void retrieval_finish(struct msg *msg)
{
    bool split = msg->nfrags > 1;
    if (msg->failed) {
        evbuffer_drain(msg->reply, evbuffer_get_length(msg->reply));
        evbuffer_add_printf(msg->reply, "%s\r\n", msg->error);
    }
    for (uint32_t k = 0; split && k < msg->req.nkeys; k++) {
        if (msg->slots[k] == NULL)
            continue;
        if (msg->failed)
            evbuffer_drain(msg->slots[k], evbuffer_get_length(msg->slots[k]));
        else
            evbuffer_add_buffer(msg->reply, msg->slots[k]);
    }
    if (!msg->failed)
        evbuffer_add(msg->reply, "END\r\n", 5);
    msg_complete(msg);
}

static void retrieval_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                         const char *reason)
{
    struct policy_frag *f = arg;
    struct msg *msg = f->msg;
    if (ev == BACKEND_VALUE) {
        if (!msg->failed)
            retrieval_value(f, rsp);
        return;
    }
    if (ev == BACKEND_FAIL) {
        stats_pool_add(f->pool->stats, forward_error, 1);
        policy_msg_fail(msg, "SERVER_ERROR %s", reason);
    } else if (rsp->type != MC_RSP_END) {
        policy_msg_fail(msg, "%s", rsp->line);   /* the server's own error line */
    }
    if (--msg->pending == 0)
        retrieval_finish(msg);
}

static void unrouted_fail(struct msg *msg, uint32_t k)
{
    (void)k;
    policy_msg_fail(msg, "%s", "SERVER_ERROR no server available");
}

/* Reads msg's keys from one tier: twemproxy's multiget. */
static void dispatch_retrieval(struct policy_pool *pp, struct policy_tier *t,
                               struct msg *msg)
{
    uint32_t used = policy_group_keys(pp, t, msg, NULL, unrouted_fail);
    if (msg->failed) {
        stats_pool_add(pp->stats, forward_error, 1);
        policy_reply_error(msg, msg->error);
        return;
    }
    uint32_t n = msg->req.nkeys;
    msg->nfrags = used;
    if (used > 1) {
        msg->slots = policy_grow(msg->slots, &msg->slots_cap, n, sizeof(*msg->slots));
        stats_pool_add(pp->stats, fragments, used);
    }
    msg->pending = used;
    for (uint32_t s = 0; s < t->nservers; s++) {
        struct policy_frag *f = &msg->frags[s];
        if (f->count == 0)
            continue;
        f->direct = used == 1;
        mc_req_compose_line(pp->scratch, &msg->req, msg->key_idx + f->first, f->count);
        backend_send(&t->servers[s], msg->req.cmd, pp->scratch, retrieval_cb, f);
    }
}

/* ---- plain pools: one key, one-line reply ---- */

void policy_single_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                      const char *reason)
{
    struct policy_frag *f = arg;
    struct msg *msg = f->msg;
    if (ev == BACKEND_FAIL) {
        stats_pool_add(f->pool->stats, forward_error, 1);
        evbuffer_add_printf(msg->reply, "SERVER_ERROR %s\r\n", reason);
    } else {
        evbuffer_add(msg->reply, rsp->line, rsp->line_len);
        evbuffer_add(msg->reply, "\r\n", 2);
        if (f->pool->conf->tiered)
            policy_write_after_master(f->pool, msg, rsp);
    }
    msg->pending = 0;
    msg_complete(msg);
}

uint32_t policy_pick_or_fail(struct policy_pool *pp, struct policy_tier *t,
                             struct msg *msg)
{
    const struct mc_token *key = &msg->req.keys[0];
    uint32_t s = router_pick(&t->router, msg->req.line + key->off, key->len);
    if (s == UINT32_MAX) {
        stats_pool_add(pp->stats, forward_error, 1);
        policy_reply_error(msg, "SERVER_ERROR no server available");
    }
    return s;
}

void policy_send_keyed(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                       struct msg *msg, backend_cb cb, bool keep_value)
{
    policy_frags_reserve(msg, 1);
    msg->frags[0] = (struct policy_frag){ .msg = msg, .pool = pp, .tier = t };
    msg->nfrags = 1;
    msg->pending = 1;
    mc_req_compose_line(pp->scratch, &msg->req, NULL, 0);
    if (mc_cmd_kind(msg->req.cmd) == MC_KIND_STORAGE) {
        if (keep_value)
            policy_share(pp->scratch, msg->req.data);
        else
            evbuffer_add_buffer(pp->scratch, msg->req.data);
        evbuffer_add(pp->scratch, "\r\n", 2);
    }
    backend_send(&t->servers[s], msg->req.cmd, pp->scratch, cb, &msg->frags[0]);
}

static void dispatch_single(struct policy_pool *pp, struct msg *msg)
{
    uint32_t s = policy_pick_or_fail(pp, pp->master, msg);
    if (s != UINT32_MAX)
        policy_send_keyed(pp, pp->master, s, msg, policy_single_cb, false);
}

/* ---- flush_all: every server of every tier ---- */

static void broadcast_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                         const char *reason)
{
    struct policy_frag *f = arg;
    struct msg *msg = f->msg;
    if (ev == BACKEND_FAIL)
        policy_msg_fail(msg, "SERVER_ERROR %s", reason);
    else if (rsp->type != MC_RSP_OK)
        policy_msg_fail(msg, "%s", rsp->line);
    if (--msg->pending > 0)
        return;
    evbuffer_add_printf(msg->reply, "%s\r\n", msg->failed ? msg->error : "OK");
    msg_complete(msg);
}

static void dispatch_broadcast(struct policy_pool *pp, struct msg *msg)
{
    if (!pp->conf->allow_flush) {
        policy_reply_error(msg, "SERVER_ERROR flush_all is disabled for this pool "
                                "(set allow_flush: true)");
        return;
    }
    uint32_t total = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++)
        total += pp->tiers[i].nservers;
    policy_frags_reserve(msg, total);
    msg->nfrags = total;
    msg->pending = total;
    uint32_t f = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++) {
        struct policy_tier *t = &pp->tiers[i];
        for (uint32_t s = 0; s < t->nservers; s++, f++) {
            msg->frags[f] = (struct policy_frag){ .msg = msg, .pool = pp, .tier = t };
            mc_req_compose_line(pp->scratch, &msg->req, NULL, 0);
            backend_send(&t->servers[s], msg->req.cmd, pp->scratch, broadcast_cb,
                         &msg->frags[f]);
        }
    }
}

void policy_dispatch(struct policy_pool *pp, struct msg *msg)
{
    msg->failed = false;
    msg->nfrags = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++)
        policy_tier_refresh(&pp->tiers[i]);
    enum mc_cmd_kind kind = mc_cmd_kind(msg->req.cmd);
    bool tiered = pp->conf->tiered;
    switch (kind) {
    case MC_KIND_RETRIEVAL:
        if (tiered)
            policy_tiered_read(pp, msg);
        else
            dispatch_retrieval(pp, pp->master, msg);
        break;
    case MC_KIND_STORAGE:
    case MC_KIND_KEYED:
        if (tiered)
            policy_tiered_write(pp, msg);
        else
            dispatch_single(pp, msg);
        break;
    case MC_KIND_BROADCAST:
        dispatch_broadcast(pp, msg);
        break;
    case MC_KIND_PROXY:
        policy_reply_error(msg, "SERVER_ERROR internal: proxy command reached the policy");
        break;
    }
}

void policy_read_tier(struct policy_pool *pp, struct policy_tier *t, struct msg *msg)
{
    dispatch_retrieval(pp, t, msg);
}
