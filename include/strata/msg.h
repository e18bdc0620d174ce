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
struct stats_worker;

struct msg_cache;
struct msg_budget;

struct msg {
    TAILQ_ENTRY(msg)     link;
    struct msg_cache    *cache;    /* where it returns when released */
    struct client       *client;   /* NULL once the client has gone */
    struct mc_req        req;      /* owns line, keys and data */
    struct redis_req     redis;    /* the request instead, in a Redis pool */
    struct evbuffer     *reply;    /* the reply as the client will get it */
    bool                 done;     /* reply complete */
    size_t               gathered; /* reply bytes the policy holds for it */
    struct msg_budget   *budget;   /* its client's, or NULL (gone, done) */
    uint32_t             units;    /* replies' worth its client expects
                                      (one per key of a retrieval) */
    size_t               req_bytes; /* the request's own bytes (line and
                                      data block, or RESP) */
    size_t               kept;     /* while cached: bytes its buffers keep
                                      (counted in the cache's acct) */
    int64_t              parsed_ns; /* framed (metrics_now_ns): the pool's latency */
};

TAILQ_HEAD(msg_list, msg);

/* What one client may hold in reply bytes (client_max_pending), kept by
 * the client and read by msg_admit as reply bytes arrive. */
struct msg_budget {
    size_t                 gathered; /* sum of `gathered` of its msgs in
                                        flight, and Redis reply bytes still
                                        being framed (msg_charge) */
    size_t                 held;     /* replies of done msgs behind the head */
    const struct evbuffer *out;      /* its output: replies not yet written */
    const struct msg_list *queue;    /* its msgs in request order */
    const size_t          *limit;    /* client_max_pending (live: reload) */
};

/* Freed msgs kept for reuse: one cache per worker. A cached msg keeps
 * buffers of at most MSG_KEEP_BYTES each; the cache holds at most
 * MSG_CACHE_MAX msgs and shrinks (msg_cache_shrink) when the worker has
 * been quiet. */
struct msg_cache {
    struct msg_list free;
    uint32_t        nfree;
    uint32_t        busy;      /* taken and not yet released */
    uint32_t        busy_peak; /* most busy at once since the last shrink */
    uint64_t        taken;     /* msg_get calls, ever (the worker's sweep
                                  tells a quiet spell by it) */
    int64_t        *acct;      /* the worker's buffered bytes, or NULL */
    /* max_memory, for msg_memory_ok: the process's limit (0: none; set
     * on reload, so read atomically) and every worker's counters */
    const size_t   *max_memory;
    struct stats_worker *const *workers;
    uint32_t        nworkers;
};

/* Buffers a cached msg (or policy record) may keep for reuse. */
#define MSG_KEEP_BYTES 8192

void msg_cache_init(struct msg_cache *mc);
void msg_cache_deinit(struct msg_cache *mc);
/* Frees cached msgs beyond the most that were busy at once since the
 * last call (at least `keep`). Returns how many were freed. */
uint32_t msg_cache_shrink(struct msg_cache *mc, uint32_t keep);
/* A clean msg (from the cache or new); NULL only when out of memory. */
struct msg *msg_get(struct msg_cache *mc);
/* The policy holds n more (or, negative, fewer) reply bytes for msg:
 * counted in msg->gathered, in the client's budget while it has one, and
 * in the cache's acct (the worker's buffered bytes). */
void msg_account(struct msg *msg, ssize_t n);

/* n more (or fewer) bytes of msg's reply wait elsewhere (a Redis reply
 * being framed in its backend connection's input, already in the
 * worker's buffered bytes): counted in its client's budget only, while
 * it has one. */
void msg_charge(struct msg *msg, ssize_t n);

/* Whether the process may hold `more` bytes: the worker's buffered
 * bytes plus `more` stay under max_memory. A worker under its share
 * (max_memory / nworkers) answers from its own counter; one over it sums
 * every worker's (relaxed loads), so a busy worker may use what idle
 * ones leave while the sum stays bounded. True when no limit is set. */
bool msg_memory_ok(const struct msg_cache *mc, size_t more);

enum msg_admit {
    MSG_ADMIT_OK,       /* hold them */
    MSG_ADMIT_CLIENT,   /* over the client's client_max_pending */
    MSG_ADMIT_MEMORY,   /* over max_memory */
    MSG_ADMIT_TOO_LARGE, /* over max_reply_size (the policy's own check) */
};

/* How far past client_max_pending a client's held reply bytes may go as
 * replies arrive: admission keeps the expected replies within
 * client_max_pending, this margin absorbs replies somewhat larger than
 * expected and out-of-order completion for a client that reads. */
#define MSG_BUDGET_SLACK 2

/* Whether n more reply bytes may be held for msg, as they arrive:
 * within max_memory, and within its client's hard bound — output
 * waiting, done replies behind the head and values gathered for
 * requests in flight, with these n, at most MSG_BUDGET_SLACK x
 * client_max_pending. The client's head request may pass it (up to
 * max_reply_size, checked by the policy) while the output ahead of it
 * is within it: it is the reply the client waits for, and it alone.
 * Changes nothing. */
enum msg_admit msg_admit(const struct msg *msg, size_t n);
/* Returns msg to its cache, forgetting its request and reply; buffers
 * over MSG_KEEP_BYTES are freed. */
void msg_put(struct msg *msg);

#endif
