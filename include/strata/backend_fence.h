/* backend_fence: the marks that close each batch of requests written to a
 * backend, and the replies held until the mark's answer comes back.
 *
 *   written:   req req req FENCE | req req FENCE | ...
 *   replies:   rep rep rep ANSWER  rep rep ANSWER
 *              └─ held ─┘   │
 *                           └─ the answer due in its place releases the
 *                              held replies, in order; anything else
 *                              there (or an answer where a reply is due)
 *                              resets the connection
 *
 * On a memcached server the fence is the meta no-op "mn" (answer "MN",
 * which fits no command). On a Redis server it is "ECHO <token>:<seq>"
 * with a random token per connection and the fence's sequence number, so
 * no stored value can pass for a fence and no fence for another one.
 * This file has no sockets and no backend state: the token, the bytes,
 * the match, and the array of held replies. backend.c places the fences
 * (conn.h: on_flush) and completes the requests. */
#ifndef STRATA_BACKEND_FENCE_H
#define STRATA_BACKEND_FENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "strata/proto_mc.h"
#include "strata/proto_redis.h"

struct evbuffer;

/* Most requests one fence closes: a longer write gets a fence after
 * every this many, so the replies of its first requests are not held
 * until the server has answered all of it, and fewer replies are held
 * at once (docs/benchmarks.md, issue 14). */
#define BACKEND_FENCE_BATCH_MAX 64

/* Hex digits of a connection's token (128 random bits). */
#define BACKEND_FENCE_TOKEN_LEN 32

/* The memcached fence. */
#define BACKEND_FENCE_MN     "mn\r\n"
#define BACKEND_FENCE_MN_LEN (sizeof(BACKEND_FENCE_MN) - 1)

/* How a Redis reply stands to the fence that is due. */
enum backend_fence_match {
    BACKEND_FENCE_NONE,    /* not this connection's fence answer */
    BACKEND_FENCE_DUE,     /* exactly the answer to the fence due */
    BACKEND_FENCE_OTHER,   /* the answer to another fence of this
                              connection (an earlier or later one) */
};

/* Fills token[0..BACKEND_FENCE_TOKEN_LEN) with random hex digits and a
 * NUL: from getrandom, else /dev/urandom, else (never seen) the clock,
 * the pid and an address, mixed. */
void backend_fence_token(char token[BACKEND_FENCE_TOKEN_LEN + 1]);

/* Appends the Redis fence "ECHO <token>:<seq>" as a RESP command to
 * out. 0, or -1 when out cannot grow. */
int backend_fence_compose_redis(struct evbuffer *out, const char *token, uint64_t seq);

/* How the whole reply rsp stands to the fence `seq` of the connection
 * with `token`: looks at the bytes only for a bulk of a fence's length,
 * so it costs a compare or two on any other reply. */
enum backend_fence_match backend_fence_match_redis(const struct redis_rsp *rsp,
                                                   const char *token, uint64_t seq);

/* Replies held until their batch's fence is answered, oldest first: the
 * last unit of each memcached reply (its VALUEs went on as they came),
 * or each whole Redis reply. A pushed reply is swapped in, not copied:
 * the caller's struct gets an empty one back. */
struct backend_held {
    struct mc_rsp    *mc;
    struct redis_rsp *redis;
    uint32_t          n;      /* held now */
    uint32_t          cap;    /* slots initialised in each array used */
};

void backend_held_init(struct backend_held *h);
/* Frees every slot. */
void backend_held_deinit(struct backend_held *h);
/* Forgets what is held (slots and their buffers kept for reuse). */
void backend_held_reset(struct backend_held *h);
/* Holds *rsp (swapped into the next slot; *rsp is left reset). 0, or
 * -1 when out of memory (nothing held then, *rsp unchanged). */
int backend_held_push_mc(struct backend_held *h, struct mc_rsp *rsp);
int backend_held_push_redis(struct backend_held *h, struct redis_rsp *rsp);

#endif
