/* msg: lifecycle of client requests, recycled per worker so the request
 * path does not allocate once warm; what a request may hold as its reply
 * arrives (client_max_pending, max_memory). */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/msg.h"
#include "strata/stats.h"
#include "strata/util.h"

#define MSG_CACHE_MAX 4096

void msg_cache_init(struct msg_cache *mc)
{
    memset(mc, 0, sizeof(*mc));
    TAILQ_INIT(&mc->free);
}

/* Counts n more (or fewer) bytes in the worker's buffered bytes. */
static void msg_acct_add(const struct msg_cache *mc, int64_t n)
{
    if (mc->acct != NULL && n != 0)
        __atomic_store_n(mc->acct, __atomic_load_n(mc->acct, __ATOMIC_RELAXED) + n,
                         __ATOMIC_RELAXED);
}

static void msg_destroy(struct msg *msg)
{
    mc_req_deinit(&msg->req);
    redis_req_deinit(&msg->redis);
    if (msg->reply != NULL)
        evbuffer_free(msg->reply);
    free(msg);
}

/* Takes the first cached msg off the list (its kept bytes leave the
 * count). */
static struct msg *msg_uncache(struct msg_cache *mc)
{
    struct msg *msg = TAILQ_FIRST(&mc->free);
    if (msg == NULL)
        return NULL;
    TAILQ_REMOVE(&mc->free, msg, link);
    mc->nfree--;
    msg_acct_add(mc, -(int64_t)msg->kept);
    msg->kept = 0;
    return msg;
}

void msg_cache_deinit(struct msg_cache *mc)
{
    struct msg *msg;
    while ((msg = msg_uncache(mc)) != NULL)
        msg_destroy(msg);
}

uint32_t msg_cache_shrink(struct msg_cache *mc, uint32_t keep)
{
    uint32_t want = mc->busy_peak > keep ? mc->busy_peak : keep;
    uint32_t freed = 0;
    while (mc->nfree > want) {
        msg_destroy(msg_uncache(mc));
        freed++;
    }
    mc->busy_peak = mc->busy;
    return freed;
}

struct msg *msg_get(struct msg_cache *mc)
{
    struct msg *msg = msg_uncache(mc);
    if (msg == NULL) {
        msg = calloc(1, sizeof(*msg));
        if (msg == NULL)
            return NULL;
        mc_req_init(&msg->req);
        redis_req_init(&msg->redis);
        msg->reply = evbuffer_new();
        msg->cache = mc;
        if (msg->reply == NULL) {
            free(msg);
            return NULL;
        }
    }
    mc->taken++;
    if (++mc->busy > mc->busy_peak)
        mc->busy_peak = mc->busy;
    return msg;
}

void msg_account(struct msg *msg, ssize_t n)
{
    msg->gathered += (size_t)n;
    msg_acct_add(msg->cache, n);
    if (msg->budget != NULL)
        msg->budget->gathered += (size_t)n;
}

void msg_charge(struct msg *msg, ssize_t n)
{
    if (msg->budget != NULL)
        msg->budget->gathered += (size_t)n;
}

bool msg_memory_ok(const struct msg_cache *mc, size_t more)
{
    if (mc->max_memory == NULL || mc->acct == NULL)
        return true;
    int64_t limit = (int64_t)__atomic_load_n(mc->max_memory, __ATOMIC_RELAXED);
    int64_t sum = __atomic_load_n(mc->acct, __ATOMIC_RELAXED) + (int64_t)more;
    if (limit == 0 || sum < limit / (int64_t)mc->nworkers)
        return true;
    sum = (int64_t)more;
    for (uint32_t i = 0; i < mc->nworkers; i++)
        sum += __atomic_load_n(&mc->workers[i]->buffered, __ATOMIC_RELAXED);
    return sum < limit;
}

enum msg_admit msg_admit(const struct msg *msg, size_t n)
{
    const struct msg_cache *mc = msg->cache;
    if (!msg_memory_ok(mc, n))
        return MSG_ADMIT_MEMORY;
    const struct msg_budget *b = msg->budget;
    if (b == NULL)
        return MSG_ADMIT_OK;   /* its client has gone: dropped when done */
    size_t limit = MSG_BUDGET_SLACK * __atomic_load_n(b->limit, __ATOMIC_RELAXED);
    size_t out = evbuffer_get_length(b->out);
    if (out + b->held + b->gathered + n <= limit)
        return MSG_ADMIT_OK;
    if (TAILQ_FIRST(b->queue) == msg && out <= limit)
        return MSG_ADMIT_OK;   /* the head, with room ahead of it */
    return MSG_ADMIT_CLIENT;
}

void msg_put(struct msg *msg)
{
    struct msg_cache *mc = msg->cache;
    mc->busy--;
    msg->client = NULL;
    msg_account(msg, -(ssize_t)msg->gathered);
    msg->budget = NULL;
    msg->done = false;
    mc_req_reset(&msg->req);
    redis_req_reset(&msg->redis);
    evbuffer_drain(msg->reply, evbuffer_get_length(msg->reply));
    if (mc->nfree >= MSG_CACHE_MAX) {
        msg_destroy(msg);
        return;
    }
    msg->kept = sizeof(*msg) + mc_req_shrink(&msg->req, MSG_KEEP_BYTES) +
                redis_req_shrink(&msg->redis, MSG_KEEP_BYTES);
    msg_acct_add(mc, (int64_t)msg->kept);
    TAILQ_INSERT_HEAD(&mc->free, msg, link);
    mc->nfree++;
}
