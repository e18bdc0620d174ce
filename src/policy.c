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

/* A server of the pool a reload replaces that can serve server i of the
 * tier being built, keeping its connections: not yet claimed by another
 * slot, same address and connection settings. NULL if none. */
static struct backend_server *donor_server(const struct policy_pool *donor,
                                           const struct conf_pool *pool,
                                           const struct conf_tier *conf, uint32_t i)
{
    for (uint32_t t = 0; donor != NULL && t < donor->ntiers; t++) {
        const struct policy_tier *dt = &donor->tiers[t];
        for (uint32_t j = 0; j < dt->nservers; j++) {
            struct backend_server *s = dt->servers[j];
            if (!s->claimed && backend_server_reusable(s, &conf->servers[i], conf, pool->redis,
                                                       pool->redis_auth, pool->redis_db))
                return s;
        }
    }
    return NULL;
}

static int tier_init(struct policy_tier *t, const struct conf_tier *conf,
                     const char *name, const struct conf_pool *pool,
                     struct backend_worker *bw, const struct mc_limits *limits,
                     struct stats_pool *stats, uint32_t first_stat, uint64_t seed,
                     const struct policy_pool *donor, char *err, size_t errlen)
{
    t->conf = conf;
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->nservers = conf->nservers;
    t->servers = util_xcalloc(conf->nservers, sizeof(*t->servers));
    t->async_pending = util_xcalloc(conf->nservers, sizeof(*t->async_pending));
    for (uint32_t i = 0; i < conf->nservers; i++) {
        struct stats_server *ss = &stats->servers[first_stat + i];
        struct backend_server *s = donor_server(donor, pool, conf, i);
        if (s != NULL) {
            backend_server_retain(s);
            backend_server_adopt(s, &conf->servers[i], conf, stats, ss, &t->eject_epoch);
        } else {
            s = backend_server_new(&conf->servers[i], conf, bw, limits, stats, ss,
                                   &t->eject_epoch, err, errlen);
            if (s == NULL)
                return -1;
        }
        s->claimed = true;
        backend_server_set_label(s, pool->name, name);
        t->servers[i] = s;
        if (pool->redis)   /* (again for an adopted one: the new conf's strings) */
            backend_server_set_redis(s, pool->redis_auth, pool->redis_db, limits->redis);
        if (pool->preconnect)
            backend_server_connect(s);
    }
    /* an adopted server may be ejected: the first request rebuilds */
    t->built_epoch = t->eject_epoch - 1;
    return router_init(&t->router, conf, seed);
}

static void tier_deinit(struct policy_tier *t)
{
    for (uint32_t i = 0; t->servers != NULL && i < t->nservers; i++) {
        if (t->servers[i] == NULL)
            continue;
        t->servers[i]->claimed = false;
        backend_server_release(t->servers[i]);
    }
    free(t->servers);
    free(t->async_pending);
    router_deinit(&t->router);
}

int policy_pool_init(struct policy_pool *pp, const struct conf_pool *conf,
                     struct backend_worker *bw, const struct mc_limits *limits,
                     struct stats_pool *stats, struct policy_cache *cache,
                     uint32_t async_limit, uint64_t seed, const struct policy_pool *donor,
                     char *err, size_t errlen)
{
    memset(pp, 0, sizeof(*pp));
    pp->conf = conf;
    if (conf->redis && limits->redis == NULL) {
        snprintf(err, errlen, "pool %s: internal: no limits for Redis", conf->name);
        return -1;
    }
    pp->base = bw->loop->base;
    pp->cache = cache;
    pp->stats = stats;
    pp->async_limit = async_limit;
    pp->max_reply = conf->redis ? limits->redis->max_reply : limits->max_reply;
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
    pp->slaves = &pp->tiers[next + conf->nl1 + conf->nreplicas];
    pp->nslaves = conf->nslaves;
    uint32_t first_stat = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++) {
        char name[24];
        stats_tier_name(conf, i, name, sizeof(name));
        const struct conf_tier *ct = stats_pool_tier(conf, i);
        pp->tiers[i].stats = &stats->tiers[i];
        if (tier_init(&pp->tiers[i], ct, name, conf, bw, limits, stats,
                      first_stat, seed + i, donor, err, errlen) != 0) {
            pp->ntiers = i + 1;   /* what deinit has to free */
            return -1;
        }
        first_stat += ct->nservers;
    }
    for (uint32_t i = 0; i < pp->ntiers; i++)
        for (uint32_t j = 0; j < pp->tiers[i].nservers; j++)
            pp->tiers[i].servers[j]->claimed = false;
    if (conf->redis) {
        bw->redis_pending = policy_redis_pending;
        bw->redis_admit = policy_redis_admit;
    }
    return conf->redis ? policy_redis_init(pp, err, errlen) : 0;
}

void policy_pool_deinit(struct policy_pool *pp)
{
    pp->closing = true;
    policy_async_cancel(pp);
    for (uint32_t i = 0; pp->tiers != NULL && i < pp->ntiers; i++)
        tier_deinit(&pp->tiers[i]);
    free(pp->shard_map);
    pp->shard_map = NULL;
    free(pp->tiers);
    pp->tiers = NULL;
    if (pp->scratch != NULL)
        evbuffer_free(pp->scratch);
    pp->scratch = NULL;
}

/* ---- request records ---- */

void policy_cache_init(struct policy_cache *pc)
{
    memset(pc, 0, sizeof(*pc));
    TAILQ_INIT(&pc->reqs);
    TAILQ_INIT(&pc->ops);
}

/* Counts n more (or fewer) bytes kept by free records. */
static void cache_kept_add(struct policy_cache *pc, int64_t n)
{
    if (pc->acct != NULL && n != 0)
        __atomic_store_n(pc->acct, __atomic_load_n(pc->acct, __ATOMIC_RELAXED) + n,
                         __ATOMIC_RELAXED);
}

/* Frees the slots and their array. */
static void req_free_slots(struct policy_req *r)
{
    for (uint32_t i = 0; i < r->slots_cap; i++)
        if (r->slots[i] != NULL)
            evbuffer_free(r->slots[i]);
    free(r->slots);
    r->slots = NULL;
    r->slots_cap = 0;
}

/* Frees r with its arrays and slots. */
static void req_destroy(struct policy_req *r)
{
    req_free_slots(r);
    free(r->frags);
    free(r->key_idx);
    free(r->kstate);
    free(r);
}

/* An evbuffer's own size, as kept by an empty slot (an estimate: the
 * struct is libevent's). */
#define POLICY_SLOT_BYTES 128

/* Frees each array of r over MSG_KEEP_BYTES (a long multiget's), so a
 * record kept for reuse keeps little. Returns the bytes it still keeps. */
static size_t req_shrink(struct policy_req *r)
{
    if ((size_t)r->slots_cap * (sizeof(*r->slots) + POLICY_SLOT_BYTES) > MSG_KEEP_BYTES)
        req_free_slots(r);
    if ((size_t)r->key_idx_cap * sizeof(*r->key_idx) > MSG_KEEP_BYTES) {
        free(r->key_idx);
        r->key_idx = NULL;
        r->key_idx_cap = 0;
    }
    if ((size_t)r->frags_cap * sizeof(*r->frags) > MSG_KEEP_BYTES) {
        free(r->frags);
        r->frags = NULL;
        r->frags_cap = 0;
    }
    if (r->kstate_cap > MSG_KEEP_BYTES) {
        free(r->kstate);
        r->kstate = NULL;
        r->kstate_cap = 0;
    }
    return sizeof(*r) + (size_t)r->slots_cap * (sizeof(*r->slots) + POLICY_SLOT_BYTES) +
           (size_t)r->key_idx_cap * sizeof(*r->key_idx) +
           (size_t)r->frags_cap * sizeof(*r->frags) + r->kstate_cap;
}

/* Takes the first free record off the list (its kept bytes leave the
 * count). */
static struct policy_req *req_uncache(struct policy_cache *pc)
{
    struct policy_req *r = TAILQ_FIRST(&pc->reqs);
    if (r == NULL)
        return NULL;
    TAILQ_REMOVE(&pc->reqs, r, link);
    pc->nreqs--;
    cache_kept_add(pc, -(int64_t)r->kept);
    r->kept = 0;
    return r;
}

void policy_cache_deinit(struct policy_cache *pc)
{
    struct policy_req *r;
    while ((r = req_uncache(pc)) != NULL)
        req_destroy(r);
    policy_async_cache_deinit(pc);
}

uint32_t policy_cache_shrink(struct policy_cache *pc, uint32_t keep)
{
    uint32_t want = pc->busy_peak > keep ? pc->busy_peak : keep;
    uint32_t freed = 0;
    while (pc->nreqs > want) {
        req_destroy(req_uncache(pc));
        freed++;
    }
    pc->busy_peak = pc->busy;
    return freed + policy_async_cache_shrink(pc, keep);
}

struct policy_req *policy_req_get(struct policy_cache *pc)
{
    struct policy_req *r = req_uncache(pc);
    if (r == NULL && (r = calloc(1, sizeof(*r))) != NULL)
        r->cache = pc;
    if (r != NULL && ++pc->busy > pc->busy_peak)
        pc->busy_peak = pc->busy;
    return r;
}

/* Forgets r's request, emptying the slots it used, and keeps r for reuse
 * (or frees it when the cache is full). */
static void req_put(struct policy_req *r)
{
    struct policy_cache *pc = r->cache;
    uint32_t nkeys = policy_req_nkeys(r);
    uint32_t n = nkeys < r->slots_cap ? nkeys : r->slots_cap;
    for (uint32_t k = 0; k < n; k++)
        if (r->slots[k] != NULL)
            evbuffer_drain(r->slots[k], evbuffer_get_length(r->slots[k]));
    r->msg = NULL;
    r->done = NULL;
    r->pool = NULL;
    r->nfrags = 0;
    r->pending = 0;
    r->gathered = 0;
    r->sum = 0;
    r->failed = false;
    r->error[0] = '\0';
    pc->busy--;
    if (pc->nreqs >= POLICY_CACHE_MAX) {
        req_destroy(r);
        return;
    }
    r->kept = req_shrink(r);
    cache_kept_add(pc, (int64_t)r->kept);
    TAILQ_INSERT_HEAD(&pc->reqs, r, link);
    pc->nreqs++;
}

void policy_req_finish(struct policy_req *r)
{
    struct msg *msg = r->msg;
    policy_done_cb done = r->done;
    r->pool->inflight--;
    req_put(r);
    done(msg);
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
        struct backend_server *s = t->servers[i];
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

void policy_req_fail(struct policy_req *r, const char *fmt, const char *reason)
{
    if (r->failed)
        return;
    r->failed = true;
    snprintf(r->error, sizeof(r->error), fmt, reason);
}

/* Frees what r gathered: its reply so far and every slot. */
static void req_drop_gathered(struct policy_req *r)
{
    struct evbuffer *reply = r->msg->reply;
    evbuffer_drain(reply, evbuffer_get_length(reply));
    uint32_t nkeys = policy_req_nkeys(r);
    uint32_t n = nkeys < r->slots_cap ? nkeys : r->slots_cap;
    for (uint32_t k = 0; k < n; k++)
        if (r->slots[k] != NULL)
            evbuffer_drain(r->slots[k], evbuffer_get_length(r->slots[k]));
    msg_account(r->msg, -(ssize_t)r->gathered);
    r->gathered = 0;
}

bool policy_reply_admit(struct policy_req *r, const struct mc_rsp *rsp)
{
    /* line, block, two CRLFs */
    return policy_reply_admit_bytes(r, (size_t)rsp->vlen + rsp->line_len + 4);
}

/* Fails r for a reply that may not be held (the text per protocol and
 * cause), counts it and frees what it gathered; later units are dropped
 * as they arrive (r->failed). */
static void reply_refuse(struct policy_req *r, enum msg_admit why)
{
    bool redis = r->pool->conf->redis;
    if (why == MSG_ADMIT_MEMORY) {
        stats_limit_add(r->pool->stats, out_of_memory, 1);
        policy_req_fail(r, "%s", redis ? "ERR out of memory" : POLICY_ERR_NOMEM);
    } else if (why == MSG_ADMIT_CLIENT) {
        stats_limit_add(r->pool->stats, reply_over_budget, 1);
        policy_req_fail(r, "%s", redis ? POLICY_ERR_BUDGET_REDIS : POLICY_ERR_BUDGET);
    } else {
        stats_limit_add(r->pool->stats, reply_too_large, 1);
        policy_req_fail(r, "%s", redis ? "ERR reply too large" : POLICY_ERR_TOO_LARGE);
    }
    req_drop_gathered(r);
}

bool policy_reply_admit_bytes(struct policy_req *r, size_t unit)
{
    size_t limit = r->pool->max_reply;
    enum msg_admit why = MSG_ADMIT_TOO_LARGE;
    if (limit == 0 || r->gathered + unit <= limit)
        why = msg_admit(r->msg, unit);
    if (why == MSG_ADMIT_OK) {
        r->gathered += unit;
        msg_account(r->msg, (ssize_t)unit);
        return true;
    }
    reply_refuse(r, why);
    return false;
}

bool policy_reply_check_bytes(struct policy_req *r, size_t unit)
{
    size_t limit = r->pool->max_reply;
    enum msg_admit why = MSG_ADMIT_TOO_LARGE;
    if (limit == 0 || r->gathered + unit <= limit)
        why = msg_admit(r->msg, unit);
    if (why == MSG_ADMIT_OK)
        return true;
    reply_refuse(r, why);
    return false;
}

void policy_reply_hold(struct policy_req *r, size_t unit)
{
    r->gathered += unit;
    msg_account(r->msg, (ssize_t)unit);
}

void policy_reply_line(struct policy_req *r, const char *line)
{
    struct evbuffer *reply = r->msg->reply;
    evbuffer_drain(reply, evbuffer_get_length(reply));
    if (mc_compose_reply_line(reply, line) != 0)
        log_error("out of memory writing a reply: %s", line);
    policy_req_finish(r);
}

void *policy_grow(void *p, uint32_t *cap, uint32_t need, size_t size)
{
    if (need == 0)
        need = 1;
    if (need <= *cap)
        return p;
    uint32_t n = *cap > 0 ? *cap : 4;
    while (n < need)
        n *= 2;
    void *grown = realloc(p, (size_t)n * size);
    if (grown == NULL)
        return NULL;
    memset((char *)grown + (size_t)*cap * size, 0, (size_t)(n - *cap) * size);
    *cap = n;
    return grown;
}

int policy_frags_reserve(struct policy_req *r, uint32_t n)
{
    struct policy_frag *f = policy_grow(r->frags, &r->frags_cap, n, sizeof(*f));
    if (f == NULL)
        return -1;
    r->frags = f;
    memset(f, 0, (size_t)n * sizeof(*f));
    return 0;
}

int policy_slots_reserve(struct policy_req *r)
{
    struct evbuffer **sl = policy_grow(r->slots, &r->slots_cap, policy_req_nkeys(r),
                                       sizeof(*sl));
    if (sl == NULL)
        return -1;
    r->slots = sl;
    return 0;
}

struct evbuffer *policy_slot(struct policy_req *r, uint32_t k)
{
    if (r->slots[k] == NULL)
        r->slots[k] = evbuffer_new();
    return r->slots[k];
}

bool policy_frag_match_key(struct policy_frag *f, const struct mc_rsp *rsp,
                           uint32_t *key)
{
    const struct policy_req *r = f->req;
    const struct mc_req *req = &r->msg->req;
    const char *k = rsp->line + rsp->key.off;
    for (; f->cursor < f->count; f->cursor++) {
        uint32_t idx = r->key_idx[f->first + f->cursor];
        const struct mc_token *t = &req->keys[idx];
        if (t->len == rsp->key.len && memcmp(req->line + t->off, k, t->len) == 0) {
            *key = idx;
            f->cursor++;
            return true;
        }
    }
    return false;
}

/* Routes the wanted keys: srv[k] is the server of key k in t, UINT32_MAX
 * for a key not wanted or not routable; counts keys per frag. */
static void group_route(struct policy_tier *t, struct policy_req *r, uint32_t *srv,
                        bool (*want)(const struct policy_req *, uint32_t),
                        void (*unrouted)(struct policy_req *, uint32_t))
{
    uint32_t nkeys = policy_req_nkeys(r);
    for (uint32_t k = 0; k < nkeys; k++) {
        srv[k] = UINT32_MAX;
        if (want != NULL && !want(r, k))
            continue;
        size_t len;
        const char *key = policy_req_key(r, k, &len);
        srv[k] = router_pick(&t->router, key, len);
        if (srv[k] == UINT32_MAX)
            unrouted(r, k);
        else
            r->frags[srv[k]].count++;
    }
}

int policy_group_keys(struct policy_pool *pp, struct policy_tier *t, struct policy_req *r,
                      bool (*want)(const struct policy_req *, uint32_t),
                      void (*unrouted)(struct policy_req *, uint32_t))
{
    uint32_t n = policy_req_nkeys(r);
    uint32_t *idx = policy_grow(r->key_idx, &r->key_idx_cap, 2 * n, sizeof(uint32_t));
    if (idx == NULL || policy_frags_reserve(r, t->nservers) != 0)
        return -1;
    r->key_idx = idx;
    uint32_t *srv = idx + n;
    group_route(t, r, srv, want, unrouted);
    uint32_t next = 0, used = 0;
    for (uint32_t s = 0; s < t->nservers; s++) {
        r->frags[s].first = next;
        next += r->frags[s].count;
        used += r->frags[s].count > 0;
    }
    for (uint32_t k = 0; k < n; k++) {
        if (srv[k] == UINT32_MAX)
            continue;
        struct policy_frag *f = &r->frags[srv[k]];
        idx[f->first + f->cursor++] = k;
    }
    for (uint32_t s = 0; s < t->nservers; s++)
        r->frags[s] = (struct policy_frag){ .req = r, .pool = pp, .tier = t,
                                            .first = r->frags[s].first,
                                            .count = r->frags[s].count };
    return (int)used;
}

/* ---- plain pools: retrieval (get, gets, gat, gats) ---- */

/* A VALUE of one frag: false when its key is not the frag's next one
 * (the backend then fails the frag); else stored, unless r failed. */
static bool retrieval_value(struct policy_frag *f, struct mc_rsp *rsp)
{
    struct policy_req *r = f->req;
    uint32_t key;
    if (!policy_frag_match_key(f, rsp, &key))
        return false;
    if (r->failed || !policy_reply_admit(r, rsp))
        return true;
    struct evbuffer *out = f->direct ? r->msg->reply : policy_slot(r, key);
    if (out == NULL || mc_compose_value(out, rsp) != 0)
        policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    r->hits++;
    return true;
}

/* All frags are in: the values in key order then END, or the error. */
static void retrieval_finish(struct policy_req *r)
{
    struct evbuffer *reply = r->msg->reply;
    bool split = r->nfrags > 1;
    for (uint32_t k = 0; split && !r->failed && k < r->msg->req.nkeys; k++)
        if (r->slots[k] != NULL && evbuffer_add_buffer(reply, r->slots[k]) != 0)
            policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    if (!r->failed && mc_compose_reply_line(reply, "END") != 0)
        policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    if (r->failed) {
        policy_reply_line(r, r->error);
        return;
    }
    policy_count_reads(r->pool, r->hits, r->msg->req.nkeys - r->hits);
    policy_req_finish(r);
}

static bool retrieval_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                         const char *reason)
{
    struct policy_frag *f = arg;
    struct policy_req *r = f->req;
    if (ev == BACKEND_VALUE)
        return retrieval_value(f, rsp);
    if (ev == BACKEND_FAIL) {
        stats_pool_add(f->pool->stats, forward_error, 1);
        policy_req_fail(r, "SERVER_ERROR %s", reason);
    } else if (rsp->type != MC_RSP_END) {
        policy_req_fail(r, "%s", rsp->line);   /* the server's own error line */
    }
    if (--r->pending == 0)
        retrieval_finish(r);
    return true;
}

static void unrouted_fail(struct policy_req *r, uint32_t k)
{
    (void)k;
    policy_req_fail(r, "%s", "SERVER_ERROR no server available");
}

/* Sends each used frag its share of the keys; a frag whose request cannot
 * be composed fails the whole request. r->pending counts the frags sent. */
static void retrieval_send(struct policy_pool *pp, struct policy_tier *t,
                           struct policy_req *r)
{
    const struct mc_req *req = &r->msg->req;
    r->pending = 0;
    for (uint32_t s = 0; s < t->nservers; s++) {
        struct policy_frag *f = &r->frags[s];
        if (f->count == 0)
            continue;
        f->direct = r->nfrags == 1;
        if (mc_compose_get(pp->scratch, req->cmd, req, r->key_idx + f->first,
                           f->count) != 0) {
            policy_req_fail(r, "%s", POLICY_ERR_COMPOSE);
            continue;
        }
        r->pending++;
        backend_send(t->servers[s], req->cmd, pp->scratch, retrieval_cb, f);
    }
}

/* Reads the request's keys from one tier: twemproxy's multiget. */
static void dispatch_retrieval(struct policy_pool *pp, struct policy_tier *t,
                               struct policy_req *r)
{
    int used = policy_group_keys(pp, t, r, NULL, unrouted_fail);
    if (used < 0 || (used > 1 && policy_slots_reserve(r) != 0))
        policy_req_fail(r, "%s", POLICY_ERR_NOMEM);
    if (r->failed) {
        stats_pool_add(pp->stats, forward_error, 1);
        policy_reply_line(r, r->error);
        return;
    }
    r->nfrags = (uint32_t)used;
    if (used > 1)
        stats_pool_add(pp->stats, fragments, used);
    retrieval_send(pp, t, r);
    if (r->pending == 0)   /* nothing could be sent */
        retrieval_finish(r);
}

/* ---- plain pools: one key, one-line reply ---- */

bool policy_single_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                      const char *reason)
{
    struct policy_frag *f = arg;
    struct policy_req *r = f->req;
    r->pending = 0;
    if (ev == BACKEND_FAIL) {
        stats_pool_add(f->pool->stats, forward_error, 1);
        policy_req_fail(r, "SERVER_ERROR %s", reason);
        policy_reply_line(r, r->error);
        return true;
    }
    if (mc_compose_reply_line(r->msg->reply, rsp->line) != 0) {
        policy_reply_line(r, POLICY_ERR_NOMEM);
        return true;
    }
    if (f->pool->conf->tiered)
        policy_write_after_master(f->pool, r, rsp);
    policy_req_finish(r);
    return true;
}

uint32_t policy_pick_or_fail(struct policy_pool *pp, struct policy_tier *t,
                             struct policy_req *r)
{
    const struct mc_req *req = &r->msg->req;
    uint32_t s = router_pick(&t->router, req->line + req->keys[0].off, req->keys[0].len);
    if (s == UINT32_MAX) {
        stats_pool_add(pp->stats, forward_error, 1);
        policy_reply_line(r, "SERVER_ERROR no server available");
    }
    return s;
}

/* The request as a backend gets it, data block included, into out. */
static int compose_keyed(struct evbuffer *out, struct mc_req *req, bool keep_value)
{
    if (mc_req_compose_line(out, req, NULL, 0) != 0)
        return -1;
    if (mc_cmd_kind(req->cmd) != MC_KIND_STORAGE)
        return 0;
    return mc_compose_block(out, req->data, keep_value);
}

int policy_send_keyed(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                      struct policy_req *r, backend_cb cb, bool keep_value)
{
    if (policy_frags_reserve(r, 1) != 0) {
        policy_reply_line(r, POLICY_ERR_NOMEM);
        return -1;
    }
    if (compose_keyed(pp->scratch, &r->msg->req, keep_value) != 0) {
        evbuffer_drain(pp->scratch, evbuffer_get_length(pp->scratch));
        policy_reply_line(r, POLICY_ERR_COMPOSE);
        return -1;
    }
    r->frags[0] = (struct policy_frag){ .req = r, .pool = pp, .tier = t };
    r->nfrags = 1;
    r->pending = 1;
    backend_send(t->servers[s], r->msg->req.cmd, pp->scratch, cb, &r->frags[0]);
    return 0;
}

static void dispatch_single(struct policy_pool *pp, struct policy_req *r)
{
    uint32_t s = policy_pick_or_fail(pp, pp->master, r);
    if (s != UINT32_MAX)
        policy_send_keyed(pp, pp->master, s, r, policy_single_cb, false);
}

/* ---- flush_all: every server of every tier ---- */

static void broadcast_finish(struct policy_req *r)
{
    policy_reply_line(r, r->failed ? r->error : "OK");
}

static bool broadcast_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                         const char *reason)
{
    struct policy_frag *f = arg;
    struct policy_req *r = f->req;
    if (ev == BACKEND_FAIL)
        policy_req_fail(r, "SERVER_ERROR %s", reason);
    else if (rsp->type != MC_RSP_OK)
        policy_req_fail(r, "%s", rsp->line);
    if (--r->pending == 0)
        broadcast_finish(r);
    return true;
}

static uint32_t pool_server_count(const struct policy_pool *pp)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++)
        total += pp->tiers[i].nservers;
    return total;
}

static void dispatch_broadcast(struct policy_pool *pp, struct policy_req *r)
{
    if (!pp->conf->allow_flush) {
        policy_reply_line(r, "SERVER_ERROR flush_all is disabled for this pool "
                              "(set allow_flush: true)");
        return;
    }
    uint32_t total = pool_server_count(pp), f = 0;
    if (policy_frags_reserve(r, total) != 0) {
        policy_reply_line(r, POLICY_ERR_NOMEM);
        return;
    }
    r->nfrags = total;
    r->pending = 0;
    for (uint32_t i = 0; i < pp->ntiers; i++) {
        struct policy_tier *t = &pp->tiers[i];
        for (uint32_t s = 0; s < t->nservers; s++, f++) {
            r->frags[f] = (struct policy_frag){ .req = r, .pool = pp, .tier = t };
            if (mc_req_compose_line(pp->scratch, &r->msg->req, NULL, 0) != 0) {
                policy_req_fail(r, "%s", POLICY_ERR_COMPOSE);
                continue;
            }
            r->pending++;
            backend_send(t->servers[s], r->msg->req.cmd, pp->scratch, broadcast_cb,
                         &r->frags[f]);
        }
    }
    if (r->pending == 0)
        broadcast_finish(r);
}

static void dispatch_req(struct policy_pool *pp, struct policy_req *r)
{
    bool tiered = pp->conf->tiered;
    switch (mc_cmd_kind(r->msg->req.cmd)) {
    case MC_KIND_RETRIEVAL:
        if (tiered)
            policy_tiered_read(pp, r);
        else
            dispatch_retrieval(pp, pp->master, r);
        break;
    case MC_KIND_STORAGE:
    case MC_KIND_KEYED:
        if (tiered)
            policy_tiered_write(pp, r);
        else
            dispatch_single(pp, r);
        break;
    case MC_KIND_BROADCAST:
        dispatch_broadcast(pp, r);
        break;
    case MC_KIND_PROXY:
        policy_reply_line(r, "SERVER_ERROR internal: proxy command reached the policy");
        break;
    }
}

/* The stats slot of msg's command (STATS_CMD_SLOTS): memcached by enum,
 * Redis by its place in the command table. */
static uint32_t policy_cmd_slot(const struct policy_pool *pp, const struct msg *msg)
{
    size_t n;
    size_t slot = pp->conf->redis ? (size_t)(msg->redis.cmd - redis_cmd_table(&n))
                                  : (size_t)msg->req.cmd;
    return slot < STATS_CMD_SLOTS ? (uint32_t)slot : STATS_CMD_SLOTS - 1;
}

void policy_dispatch(struct policy_pool *pp, struct msg *msg, policy_done_cb done)
{
    struct policy_req *r = policy_req_get(pp->cache);
    if (r == NULL) {
        evbuffer_drain(msg->reply, evbuffer_get_length(msg->reply));
        int rc = pp->conf->redis ? redis_compose_error(msg->reply, "ERR out of memory")
                                 : mc_compose_reply_line(msg->reply, POLICY_ERR_NOMEM);
        if (rc != 0)
            log_error("out of memory: a request gets an empty reply");
        done(msg);
        return;
    }
    r->msg = msg;
    r->done = done;
    r->pool = pp;
    r->hits = 0;
    pp->inflight++;
    stats_add(&pp->stats->cmds[policy_cmd_slot(pp, msg)], 1);
    for (uint32_t i = 0; i < pp->ntiers; i++)
        policy_tier_refresh(&pp->tiers[i]);
    if (pp->conf->redis)
        policy_redis_dispatch(pp, r);
    else
        dispatch_req(pp, r);
}

void policy_read_tier(struct policy_pool *pp, struct policy_tier *t, struct policy_req *r)
{
    dispatch_retrieval(pp, t, r);
}
