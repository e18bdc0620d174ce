/* policy: turns a parsed request into backend requests on a pool's tiers
 * and assembles the reply.
 *
 * A plain pool (servers: only) behaves as twemproxy: each key goes to one
 * server; a multi-key get is split per server and merged in key order.
 * A tiered pool follows the Master-Slave-L1 table of docs/policies.md:
 * reads L1 → master → slave with write-back, writes to master with an
 * asynchronous, bounded fan-out to the other tiers. */
#ifndef STRATA_POLICY_H
#define STRATA_POLICY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "strata/backend.h"
#include "strata/conf.h"
#include "strata/router.h"
#include "strata/stats.h"

struct event_base;
struct msg;

/* Called exactly once per dispatched msg, when msg->reply holds the whole
 * reply; may run before policy_dispatch returns (errors found before any
 * backend is asked). */
typedef void (*policy_done_cb)(struct msg *msg);

struct policy_req;
struct policy_async_op;
TAILQ_HEAD(policy_req_list, policy_req);
TAILQ_HEAD(policy_async_list, policy_async_op);

/* One per worker, shared by its pools: the records of requests in the
 * policy and of asynchronous writes, kept for reuse (with the capacity of
 * their arrays) so the request path does not allocate once warm. At most
 * POLICY_CACHE_MAX of each are kept; the rest are freed. */
struct policy_cache {
    struct policy_req_list   reqs;    /* free request records */
    uint32_t                 nreqs;
    uint32_t                 busy;    /* request records in use */
    uint32_t                 busy_peak; /* most in use since the last shrink */
    struct policy_async_list ops;     /* free async write records */
    uint32_t                 nops;
    int64_t                 *acct;    /* the worker's buffered bytes, or NULL:
                                         what the free records keep counts */
};

#define POLICY_CACHE_MAX 1024

void policy_cache_init(struct policy_cache *pc);
/* Frees free records beyond the most in use at once since the last call
 * (at least `keep`), and async records beyond `keep`. Returns how many
 * were freed. */
uint32_t policy_cache_shrink(struct policy_cache *pc, uint32_t keep);
/* Frees the records kept. Records in use return to the cache when their
 * request ends, so deinit the pools that use it first. */
void policy_cache_deinit(struct policy_cache *pc);

/* One tier of a pool in one worker: routing plus server connections. */
struct policy_tier {
    const struct conf_tier *conf;
    char                    name[24];       /* "master", "l1[0]", ... */
    struct router           router;
    struct backend_server **servers;        /* shared across a reload */
    uint32_t                nservers;
    uint32_t               *async_pending;  /* per server: queued async writes */
    uint32_t                eject_epoch;    /* bumped by backend on eject */
    uint32_t                built_epoch;
    int64_t                 next_rebuild_ms; /* an ejected server's return */
    struct stats_tier      *stats;
};

struct policy_pool {
    const struct conf_pool *conf;
    struct event_base      *base;
    struct policy_cache    *cache;      /* the worker's, for reqs and async ops */
    struct stats_pool      *stats;
    struct evbuffer        *scratch;    /* a request's bytes before sending */
    uint32_t                async_limit; /* per destination server */
    size_t                  max_reply;  /* bytes one retrieval may gather; 0: any */
    uint64_t                rng;        /* xorshift: choice of L1 */
    struct policy_tier     *tiers;      /* master, slave, l1s, replicas */
    uint32_t                ntiers;
    struct policy_tier     *master;     /* == &tiers[0] */
    struct policy_tier     *slave;      /* NULL if none */
    struct policy_tier     *l1;
    uint32_t                nl1;
    struct policy_tier     *replicas;
    uint32_t                nreplicas;
    struct policy_tier     *slaves;     /* Redis: replicas of master's shards */
    uint32_t                nslaves;
    uint32_t               *shard_map;  /* [k * master->nservers + m]: master
                                           server m's copy in slaves[k] */
    struct policy_async_list retrying;  /* deletes waiting to be resent */
    bool                    closing;    /* shutting down: no more retries */
    uint32_t                inflight;   /* requests and async writes not ended:
                                           a pool a reload replaced is freed
                                           once this is 0 */
    TAILQ_ENTRY(policy_pool) retired_link; /* in the worker's retired list */
};

/* donor: the pool a reload replaces, or NULL: its servers whose address
 * and connection settings are unchanged are shared, connections kept. */
int policy_pool_init(struct policy_pool *pp, const struct conf_pool *conf,
                     struct backend_worker *bw, const struct mc_limits *limits,
                     struct stats_pool *stats, struct policy_cache *cache,
                     uint32_t async_limit, uint64_t seed, const struct policy_pool *donor,
                     char *err, size_t errlen);
/* Fails every request in flight (their done callbacks run) and frees the
 * pool's connections. */
void policy_pool_deinit(struct policy_pool *pp);

/* Sends the backend requests of msg (a parsed request that is not the
 * proxy's own) and, once msg->reply is whole, calls done(msg): later, or
 * before this returns when no backend is asked (no server available,
 * flush_all disabled, out of memory). */
void policy_dispatch(struct policy_pool *pp, struct msg *msg, policy_done_cb done);

#endif
