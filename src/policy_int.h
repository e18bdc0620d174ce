/* Internal to the policy files: the request record, fragments, shared
 * helpers, and the entry points of the tiered read/write paths and the
 * async fan-out. */
#ifndef STRATA_POLICY_INT_H
#define STRATA_POLICY_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "strata/msg.h"
#include "strata/policy.h"

struct evbuffer;

/* What the policy keeps about one msg while it is in the policy. Taken
 * from the worker's policy_cache at dispatch and returned to it just
 * before the done callback runs; the arrays keep their capacity. */
struct policy_req {
    TAILQ_ENTRY(policy_req) link;   /* in cache->reqs while free */
    struct policy_cache *cache;     /* where it returns */
    struct msg          *msg;       /* the client's request and reply */
    policy_done_cb       done;      /* called once the reply is whole */
    struct policy_pool  *pool;
    struct policy_frag  *frags;     /* one per server a step touches */
    uint32_t             nfrags;
    uint32_t             frags_cap;
    uint32_t            *key_idx;   /* keys grouped per server (2 * nkeys) */
    uint32_t             key_idx_cap;
    struct evbuffer    **slots;     /* split multiget: VALUE block per key */
    uint32_t             slots_cap;
    uint8_t             *kstate;    /* tiered reads: what each key found */
    uint32_t             kstate_cap;
    uint8_t              stage;     /* tiered reads: the tier being read */
    uint32_t             l1;        /* tiered reads: the L1 chosen */
    uint32_t             pending;   /* backend requests still out */
    size_t               gathered;  /* bytes of VALUE units held for the reply */
    int64_t              sum;       /* Redis: integers of split parts added */
    uint32_t             hits;      /* plain memcached reads: values found */
    bool                 failed;    /* the reply is `error` */
    char                 error[160]; /* the error line, without "\r\n" */
    size_t               kept;      /* while free: bytes it keeps (counted) */
};

/* The part of a request that went to one server in one step. */
struct policy_frag {
    struct policy_req  *req;
    struct policy_pool *pool;
    struct policy_tier *tier;
    uint32_t            first;   /* range of req->key_idx for this server */
    uint32_t            count;
    uint32_t            cursor;  /* next key of the range a VALUE may match */
    bool                direct;  /* values go straight into msg->reply */
};

/* Counts keys a read asked for that were found (hit) or not. */
static inline void policy_count_reads(struct policy_pool *pp, uint32_t hits, uint32_t misses)
{
    stats_add(&pp->stats->reads[STATS_READ_HIT], hits);
    stats_add(&pp->stats->reads[STATS_READ_MISS], misses);
}

#define POLICY_ERR_NOMEM    "SERVER_ERROR out of memory"
#define POLICY_ERR_COMPOSE  "SERVER_ERROR cannot compose the backend request"
#define POLICY_ERR_TOO_LARGE "SERVER_ERROR reply too large"
/* A reply that would take its client past client_max_pending. */
#define POLICY_ERR_BUDGET       "SERVER_ERROR out of memory: client not reading its replies"
#define POLICY_ERR_BUDGET_REDIS "ERR out of memory: client not reading its replies"

/* The keys of r's request (memcached or Redis): how many, and key k. */
static inline uint32_t policy_req_nkeys(const struct policy_req *r)
{
    return r->pool->conf->redis ? r->msg->redis.nkeys : r->msg->req.nkeys;
}

static inline const char *policy_req_key(const struct policy_req *r, uint32_t k,
                                         size_t *len)
{
    if (r->pool->conf->redis) {
        const struct redis_req *req = &r->msg->redis;
        const struct redis_token *t = &req->args[req->key_first + k * req->key_step];
        *len = t->len;
        return req->buf + t->off;
    }
    const struct mc_req *req = &r->msg->req;
    *len = req->keys[k].len;
    return req->line + req->keys[k].off;
}

/* Request records (policy.c). */
struct policy_req *policy_req_get(struct policy_cache *pc);
/* Returns r to its cache, then calls done(msg): r is gone afterwards. */
void policy_req_finish(struct policy_req *r);
/* Records the first failure: the reply will be this error line. */
void policy_req_fail(struct policy_req *r, const char *fmt, const char *reason);
/* Replaces the reply with the one line `line` (an error, or flush_all's
 * OK; "\r\n" is added) and finishes r. */
void policy_reply_line(struct policy_req *r, const char *line);

/* Accounts a VALUE unit about to be held for r's reply (its data block
 * and line), as it arrives. True when it may be held: within
 * max_reply_size for r, and within max_memory and the client's
 * client_max_pending (msg_admit). Else false: r fails with "SERVER_ERROR
 * reply too large" (reply_too_large), "SERVER_ERROR out of memory"
 * (out_of_memory) or POLICY_ERR_BUDGET (reply_over_budget), Redis's
 * "-ERR ..." alike; the bytes already gathered are freed at once, and
 * later units are to be dropped (r->failed). Only replies to reads go
 * through it: a write's reply is held whatever it costs (the write has
 * happened), with policy_reply_hold. */
bool policy_reply_admit(struct policy_req *r, const struct mc_rsp *rsp);
/* The same for `unit` bytes of any reply. */
bool policy_reply_admit_bytes(struct policy_req *r, size_t unit);
/* The same judgement, charging nothing: true, or false with r failed and
 * the refusal counted (a reply held elsewhere until it is delivered). */
bool policy_reply_check_bytes(struct policy_req *r, size_t unit);
/* Counts `unit` bytes held for r's reply without any check. */
void policy_reply_hold(struct policy_req *r, size_t unit);

/* realloc for the record's arrays: grows p (of *cap elements of `size`
 * bytes) to hold `need`, zeroing the new part. Returns the array, or NULL
 * when out of memory (p and *cap are then unchanged). */
void *policy_grow(void *p, uint32_t *cap, uint32_t need, size_t size);
/* n zeroed frags in r->frags. 0, or -1 when out of memory. */
int policy_frags_reserve(struct policy_req *r, uint32_t n);
/* Room for a slot per key of r's request. 0, or -1 when out of memory. */
int policy_slots_reserve(struct policy_req *r);
/* The slot of key k, created empty when needed; NULL when out of memory. */
struct evbuffer *policy_slot(struct policy_req *r, uint32_t k);
void policy_tier_refresh(struct policy_tier *t);
/* Whether a VALUE's key is one the frag asked for, at or after its
 * cursor (keys come back in the order asked, each once, misses skipped):
 * true with *key its index in the request, and the cursor moves past it;
 * false for a key not asked, out of order or repeated. */
bool policy_frag_match_key(struct policy_frag *f, const struct mc_rsp *rsp,
                           uint32_t *key);
/* Groups the chosen keys per server of tier t into r->key_idx / r->frags.
 * `want(r, k)` selects keys; keys with no live server are reported through
 * unrouted(r, k). Returns the frags used, or -1 when out of memory. */
int policy_group_keys(struct policy_pool *pp, struct policy_tier *t, struct policy_req *r,
                      bool (*want)(const struct policy_req *, uint32_t),
                      void (*unrouted)(struct policy_req *, uint32_t));

/* The server of the request's (single) key in tier t; UINT32_MAX after
 * replying "SERVER_ERROR no server available" when the tier has no live
 * server. */
uint32_t policy_pick_or_fail(struct policy_pool *pp, struct policy_tier *t,
                             struct policy_req *r);
/* Sends the one-key request to server s of t as the client wrote it (less
 * noreply); cb gets r->frags[0]. keep_value shares the data block instead
 * of moving it, so it can still be fanned out afterwards. When the request
 * cannot be composed it is answered with SERVER_ERROR (r finished) and -1
 * is returned. */
int policy_send_keyed(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                      struct policy_req *r, backend_cb cb, bool keep_value);
/* The callback of a one-key request to master: master's line is the
 * reply; in a tiered pool the fan-out that depends on it follows. */
bool policy_single_cb(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                      const char *reason);
/* Tiered pools: what the other tiers get once master has answered. */
void policy_write_after_master(struct policy_pool *pp, struct policy_req *r,
                               const struct mc_rsp *rsp);
/* A plain read of the request's keys from one tier (policy.c). */
void policy_read_tier(struct policy_pool *pp, struct policy_tier *t, struct policy_req *r);

/* Redis pools (policy_redis.c): the slave tiers' shard map, and the plan
 * of one request. */
int policy_redis_init(struct policy_pool *pp, char *err, size_t errlen);
/* The backend's redis_pending hook: a part's reply bytes still being
 * framed count against its client (msg_charge). */
void policy_redis_pending(void *arg, ssize_t n);
/* Fenced Redis connections: whether a read's whole reply of n bytes may
 * be held for frag `arg` (max_reply_size, max_memory and its client's
 * budget, as policy_reply_admit_bytes judges, without charging); a
 * refusal is counted and fails the request. A write's reply is always
 * held. */
bool policy_redis_admit(void *arg, size_t n);
void policy_redis_dispatch(struct policy_pool *pp, struct policy_req *r);

/* Tiered pools (policy_read.c, policy_write.c). */
void policy_tiered_read(struct policy_pool *pp, struct policy_req *r);
void policy_tiered_write(struct policy_pool *pp, struct policy_req *r);

/* Asynchronous writes (policy_async.c): bytes (moved) to server s of tier
 * t, bounded per server, counted, deletes retried with backoff. `key` is
 * needed only for deletes (to resend them). */
void policy_async_send(struct policy_pool *pp, struct policy_tier *t, uint32_t s,
                       enum mc_cmd cmd, struct evbuffer *bytes,
                       const char *key, size_t klen);
/* Sends a storage command for key to tier t (not master), by reference to
 * `data` (kept intact). cmd is MC_CMD_SET or MC_CMD_ADD (write-back). */
void policy_async_store_tier(struct policy_pool *pp, struct policy_tier *t,
                             enum mc_cmd cmd, const char *key, size_t klen,
                             uint32_t flags, int64_t exptime,
                             struct evbuffer *data);
/* "delete key" to tier t, asynchronously, retried. */
void policy_async_delete_tier(struct policy_pool *pp, struct policy_tier *t,
                              const char *key, size_t klen);
/* Drops the deletes waiting for a retry (shutdown). */
void policy_async_cancel(struct policy_pool *pp);
/* delete or touch of key to every tier but master. */
void policy_async_fanout_key(struct policy_pool *pp, enum mc_cmd cmd,
                             const char *key, size_t klen, int64_t exptime);
/* Frees the async records a cache keeps. */
void policy_async_cache_deinit(struct policy_cache *pc);
/* Frees the async records beyond `keep`; returns how many. */
uint32_t policy_async_cache_shrink(struct policy_cache *pc, uint32_t keep);

#endif
