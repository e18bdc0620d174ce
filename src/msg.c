/* msg: lifecycle of client requests, recycled per worker so the request
 * path does not allocate once warm. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/msg.h"
#include "strata/util.h"

#define MSG_CACHE_MAX 4096

void msg_cache_init(struct msg_cache *mc)
{
    TAILQ_INIT(&mc->free);
    mc->nfree = 0;
    mc->busy = 0;
    mc->acct = NULL;
}

static void msg_destroy(struct msg *msg)
{
    mc_req_deinit(&msg->req);
    redis_req_deinit(&msg->redis);
    if (msg->reply != NULL)
        evbuffer_free(msg->reply);
    free(msg);
}

void msg_cache_deinit(struct msg_cache *mc)
{
    struct msg *msg;
    while ((msg = TAILQ_FIRST(&mc->free)) != NULL) {
        TAILQ_REMOVE(&mc->free, msg, link);
        msg_destroy(msg);
    }
    mc->nfree = 0;
}

struct msg *msg_get(struct msg_cache *mc)
{
    struct msg *msg = TAILQ_FIRST(&mc->free);
    if (msg != NULL) {
        TAILQ_REMOVE(&mc->free, msg, link);
        mc->nfree--;
    } else {
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
    mc->busy++;
    return msg;
}

void msg_account(struct msg *msg, ssize_t n)
{
    msg->gathered += (size_t)n;
    if (msg->cache->acct != NULL)
        __atomic_store_n(msg->cache->acct,
                         __atomic_load_n(msg->cache->acct, __ATOMIC_RELAXED) + n,
                         __ATOMIC_RELAXED);
    if (msg->budget != NULL)
        *msg->budget += (size_t)n;
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
    TAILQ_INSERT_HEAD(&mc->free, msg, link);
    mc->nfree++;
}
