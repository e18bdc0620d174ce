/* msg: one client request from parse to reply. The client owns the queue
 * of msgs (in request order); the policy fills msg->reply and calls the
 * done callback the client gave it when the reply is whole. A msg outlives
 * its client while backend requests for it are still out. */
#ifndef STRATA_MSG_H
#define STRATA_MSG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "strata/proto_mc.h"
#include "strata/proto_redis.h"

struct client;
struct evbuffer;

struct msg_cache;

struct msg {
    TAILQ_ENTRY(msg)     link;
    struct msg_cache    *cache;    /* where it returns when released */
    struct client       *client;   /* NULL once the client has gone */
    struct mc_req        req;      /* owns line, keys and data */
    struct redis_req     redis;    /* the request instead, in a Redis pool */
    struct evbuffer     *reply;    /* the reply as the client will get it */
    bool                 done;     /* reply complete */
    size_t               gathered; /* reply bytes the policy holds for it */
    size_t              *budget;   /* the client's sum of `gathered`, or NULL */
    int64_t              parsed_ns; /* framed (metrics_now_ns): the pool's latency */
};

TAILQ_HEAD(msg_list, msg);

/* Freed msgs kept for reuse, with their buffers' capacity: one per worker. */
struct msg_cache {
    struct msg_list free;
    uint32_t        nfree;
    uint32_t        busy;      /* taken and not yet released */
    int64_t        *acct;      /* the worker's buffered bytes, or NULL */
};

void msg_cache_init(struct msg_cache *mc);
void msg_cache_deinit(struct msg_cache *mc);
/* A clean msg (from the cache or new); NULL only when out of memory. */
struct msg *msg_get(struct msg_cache *mc);
/* The policy holds n more (or, negative, fewer) reply bytes for msg:
 * counted in msg->gathered, in the client's budget while it has one, and
 * in the cache's acct (the worker's buffered bytes). */
void msg_account(struct msg *msg, ssize_t n);
/* Returns msg to its cache, forgetting its request and reply. */
void msg_put(struct msg *msg);

#endif
