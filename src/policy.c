/* policy: request → backend requests → reply, for plain (single-tier)
 * pools, as twemproxy routes them.
 *
 *   msg ──► route each key ──► group keys per server ──► one frag per server
 *   frag replies ──► VALUE blocks in key order (slots when split) ──► reply
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/log.h"
#include "strata/policy.h"
#include "strata/util.h"

/* The part of a msg that went to one server. */
struct policy_frag {
    struct msg         *msg;
    struct policy_pool *pool;
    uint32_t            first;   /* range of msg->key_idx for this server */
    uint32_t            count;
    uint32_t            cursor;  /* next key of the range a VALUE may match */
    bool                direct;  /* values go straight into msg->reply */
};

static int tier_init(struct policy_tier *t, const struct conf_tier *conf,
                     const struct conf_pool *pool, struct event_base *base,
                     const struct mc_limits *limits, struct stats_pool *stats,
                     uint32_t first_stat, uint64_t seed, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->conf = conf;
    t->nservers = conf->nservers;
    t->servers = util_xcalloc(conf->nservers, sizeof(*t->servers));
    for (uint32_t i = 0; i < conf->nservers; i++) {
        struct backend_server *s = &t->servers[i];
        if (backend_server_init(s, &conf->servers[i], conf, base, limits, stats,
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
    router_deinit(&t->router);
}

int policy_pool_init(struct policy_pool *pp, const struct conf_pool *conf,
                     struct event_base *base, const struct mc_limits *limits,
                     struct stats_pool *stats, uint64_t seed,
                     char *err, size_t errlen)
{
    memset(pp, 0, sizeof(*pp));
    pp->conf = conf;
    pp->stats = stats;
    pp->scratch = evbuffer_new();
    if (pp->scratch == NULL)
        return -1;
    return tier_init(&pp->master, &conf->master, conf, base, limits, stats, 0,
                     seed, err, errlen);
}

void policy_pool_deinit(struct policy_pool *pp)
{
    tier_deinit(&pp->master);
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
    msg->slots = NULL;
    msg->frags = NULL;
    msg->key_idx = NULL;
    msg->slots_cap = msg->frags_cap = msg->key_idx_cap = 0;
}

/* Puts ejected servers out of the ring and returning ones back in. */
static void tier_refresh(struct policy_tier *t)
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

static void msg_fail(struct msg *msg, const char *fmt, const char *reason)
{
    if (msg->failed)
        return;
    msg->failed = true;
    snprintf(msg->error, sizeof(msg->error), fmt, reason);
}

/* Ends a msg at once with an error line. */
static void msg_reply_error(struct msg *msg, const char *line)
{
    evbuffer_drain(msg->reply, evbuffer_get_length(msg->reply));
    evbuffer_add_printf(msg->reply, "%s\r\n", line);
    msg_complete(msg);
}

static void *grow(void *p, uint32_t *cap, uint32_t need, size_t size)
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

static void frags_reserve(struct msg *msg, uint32_t n)
{
    msg->frags = grow(msg->frags, &msg->frags_cap, n, sizeof(*msg->frags));
    memset(msg->frags, 0, (size_t)n * sizeof(*msg->frags));
}

/* ---- retrieval: get, gets, gat, gats ---- */

static bool frag_match_key(struct policy_frag *f, const struct mc_rsp *rsp,
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

static void value_append(struct evbuffer *out, struct mc_rsp *rsp)
{
    evbuffer_add(out, rsp->line, rsp->line_len);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_add_buffer(out, rsp->data);
    evbuffer_add(out, "\r\n", 2);
}

static void retrieval_value(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct msg *msg = f->msg;
    uint32_t key;
    if (!frag_match_key(f, rsp, &key)) {
        msg_fail(msg, "SERVER_ERROR %s", "backend returned a key it was not asked for");
        return;
    }
    if (f->direct) {
        value_append(msg->reply, rsp);
        return;
    }
    if (msg->slots[key] == NULL)
        msg->slots[key] = evbuffer_new();
    value_append(msg->slots[key], rsp);
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
        msg_fail(msg, "SERVER_ERROR %s", reason);
    } else if (rsp->type != MC_RSP_END) {
        msg_fail(msg, "%s", rsp->line);   /* the server's own error line */
    }
    if (--msg->pending == 0)
        retrieval_finish(msg);
}

/* Groups the keys of msg per server (a counting sort into msg->key_idx)
 * and fills one frag per server used. Returns false if a key has no
 * live server. */
static bool retrieval_group(struct policy_pool *pp, struct policy_tier *t,
                            struct msg *msg, uint32_t *srv)
{
    const struct mc_req *req = &msg->req;
    frags_reserve(msg, t->nservers);
    for (uint32_t k = 0; k < req->nkeys; k++) {
        srv[k] = router_pick(&t->router, req->line + req->keys[k].off, req->keys[k].len);
        if (srv[k] == UINT32_MAX)
            return false;
        msg->frags[srv[k]].count++;
    }
    uint32_t next = 0;
    for (uint32_t s = 0; s < t->nservers; s++) {
        msg->frags[s].first = next;
        next += msg->frags[s].count;
    }
    for (uint32_t k = 0; k < req->nkeys; k++) {
        struct policy_frag *f = &msg->frags[srv[k]];
        msg->key_idx[f->first + f->cursor++] = k;
    }
    for (uint32_t s = 0; s < t->nservers; s++) {
        msg->frags[s].cursor = 0;
        msg->frags[s].msg = msg;
        msg->frags[s].pool = pp;
    }
    return true;
}

static void dispatch_retrieval(struct policy_pool *pp, struct msg *msg,
                               struct evbuffer *scratch)
{
    struct policy_tier *t = &pp->master;
    uint32_t n = msg->req.nkeys;
    msg->key_idx = grow(msg->key_idx, &msg->key_idx_cap, 2 * n, sizeof(uint32_t));
    if (!retrieval_group(pp, t, msg, msg->key_idx + n)) {
        stats_pool_add(pp->stats, forward_error, 1);
        msg_reply_error(msg, "SERVER_ERROR no server available");
        return;
    }
    uint32_t used = 0;
    for (uint32_t s = 0; s < t->nservers; s++)
        used += msg->frags[s].count > 0;
    msg->nfrags = used;
    if (used > 1) {
        msg->slots = grow(msg->slots, &msg->slots_cap, n, sizeof(*msg->slots));
        stats_pool_add(pp->stats, fragments, used);
    }
    msg->pending = used;
    for (uint32_t s = 0; s < t->nservers; s++) {
        struct policy_frag *f = &msg->frags[s];
        if (f->count == 0)
            continue;
        f->direct = used == 1;
        mc_req_compose_line(scratch, &msg->req, msg->key_idx + f->first, f->count);
        backend_send(&t->servers[s], msg->req.cmd, scratch, retrieval_cb, f);
    }
}

/* ---- one key, one-line reply: storage, delete, incr, decr, touch ---- */

static void single_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
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
    }
    msg->pending = 0;
    msg_complete(msg);
}

static void dispatch_single(struct policy_pool *pp, struct msg *msg,
                            struct evbuffer *scratch)
{
    struct policy_tier *t = &pp->master;
    const struct mc_token *key = &msg->req.keys[0];
    uint32_t s = router_pick(&t->router, msg->req.line + key->off, key->len);
    if (s == UINT32_MAX) {
        stats_pool_add(pp->stats, forward_error, 1);
        msg_reply_error(msg, "SERVER_ERROR no server available");
        return;
    }
    frags_reserve(msg, 1);
    msg->frags[0] = (struct policy_frag){ .msg = msg, .pool = pp };
    msg->nfrags = 1;
    msg->pending = 1;
    mc_req_compose_line(scratch, &msg->req, NULL, 0);
    if (mc_cmd_kind(msg->req.cmd) == MC_KIND_STORAGE) {
        evbuffer_add_buffer(scratch, msg->req.data);
        evbuffer_add(scratch, "\r\n", 2);
    }
    backend_send(&t->servers[s], msg->req.cmd, scratch, single_cb, &msg->frags[0]);
}

/* ---- flush_all: every server of the pool ---- */

static void broadcast_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                         const char *reason)
{
    struct policy_frag *f = arg;
    struct msg *msg = f->msg;
    if (ev == BACKEND_FAIL)
        msg_fail(msg, "SERVER_ERROR %s", reason);
    else if (rsp->type != MC_RSP_OK)
        msg_fail(msg, "%s", rsp->line);
    if (--msg->pending > 0)
        return;
    evbuffer_add_printf(msg->reply, "%s\r\n", msg->failed ? msg->error : "OK");
    msg_complete(msg);
}

static void dispatch_broadcast(struct policy_pool *pp, struct msg *msg,
                               struct evbuffer *scratch)
{
    struct policy_tier *t = &pp->master;
    if (!pp->conf->allow_flush) {
        msg_reply_error(msg, "SERVER_ERROR flush_all is disabled for this pool "
                             "(set allow_flush: true)");
        return;
    }
    frags_reserve(msg, t->nservers);
    msg->nfrags = t->nservers;
    msg->pending = t->nservers;
    for (uint32_t s = 0; s < t->nservers; s++) {
        msg->frags[s] = (struct policy_frag){ .msg = msg, .pool = pp };
        mc_req_compose_line(scratch, &msg->req, NULL, 0);
        backend_send(&t->servers[s], msg->req.cmd, scratch, broadcast_cb, &msg->frags[s]);
    }
}

void policy_dispatch(struct policy_pool *pp, struct msg *msg)
{
    struct evbuffer *scratch = pp->scratch;
    msg->failed = false;
    msg->nfrags = 0;
    tier_refresh(&pp->master);
    switch (mc_cmd_kind(msg->req.cmd)) {
    case MC_KIND_RETRIEVAL:
        dispatch_retrieval(pp, msg, scratch);
        break;
    case MC_KIND_STORAGE:
    case MC_KIND_KEYED:
        dispatch_single(pp, msg, scratch);
        break;
    case MC_KIND_BROADCAST:
        dispatch_broadcast(pp, msg, scratch);
        break;
    case MC_KIND_PROXY:
        msg_reply_error(msg, "SERVER_ERROR internal: proxy command reached the policy");
        break;
    }
}
