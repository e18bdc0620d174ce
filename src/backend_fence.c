/* backend_fence: fence tokens, bytes and matching, and the replies held
 * behind a fence (see backend_fence.h for the picture). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "strata/backend_fence.h"

/* "<token>:<seq>": the token, a colon, at most 20 digits. */
#define FENCE_TEXT_MAX (BACKEND_FENCE_TOKEN_LEN + 1 + 20)

/* n random bytes into buf: getrandom, else /dev/urandom. 0, or -1. */
static int fence_random(unsigned char *buf, size_t n)
{
    if (getrandom(buf, n, GRND_NONBLOCK) == (ssize_t)n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got == (ssize_t)n ? 0 : -1;
}

/* The last resort: not unguessable, but different per connection. */
static void fence_weak_random(unsigned char *buf, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                 ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)buf;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
}

void backend_fence_token(char token[BACKEND_FENCE_TOKEN_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[BACKEND_FENCE_TOKEN_LEN / 2];
    if (fence_random(raw, sizeof(raw)) != 0)
        fence_weak_random(raw, sizeof(raw));
    for (size_t i = 0; i < sizeof(raw); i++) {
        token[2 * i] = hex[raw[i] >> 4];
        token[2 * i + 1] = hex[raw[i] & 15];
    }
    token[BACKEND_FENCE_TOKEN_LEN] = '\0';
}

/* "<token>:<seq>" into text; its length. */
static size_t fence_text(char text[FENCE_TEXT_MAX + 1], const char *token, uint64_t seq)
{
    int n = snprintf(text, FENCE_TEXT_MAX + 1, "%.*s:%llu", BACKEND_FENCE_TOKEN_LEN,
                     token, (unsigned long long)seq);
    return n > 0 ? (size_t)n : 0;
}

int backend_fence_compose_redis(struct evbuffer *out, const char *token, uint64_t seq)
{
    char text[FENCE_TEXT_MAX + 1];
    size_t len = fence_text(text, token, seq);
    return evbuffer_add_printf(out, "*2\r\n$4\r\nECHO\r\n$%zu\r\n%s\r\n", len, text) < 0
           ? -1 : 0;
}

enum backend_fence_match backend_fence_match_redis(const struct redis_rsp *rsp,
                                                   const char *token, uint64_t seq)
{
    if (rsp->type != REDIS_RSP_BULK || rsp->nil || rsp->data == NULL ||
        rsp->count <= BACKEND_FENCE_TOKEN_LEN || rsp->count > FENCE_TEXT_MAX)
        return BACKEND_FENCE_NONE;
    /* the reply is "$<len>\r\n<text>\r\n": its text starts after the
     * header, whose length the bulk's length gives */
    char head[32];
    int hlen = snprintf(head, sizeof(head), "$%lld\r\n", (long long)rsp->count);
    char got[32 + FENCE_TEXT_MAX + 2];
    size_t want = (size_t)hlen + (size_t)rsp->count;
    if (evbuffer_copyout(rsp->data, got, want) != (ev_ssize_t)want ||
        memcmp(got + hlen, token, BACKEND_FENCE_TOKEN_LEN) != 0 ||
        got[hlen + BACKEND_FENCE_TOKEN_LEN] != ':')
        return BACKEND_FENCE_NONE;
    char text[FENCE_TEXT_MAX + 1];
    size_t len = fence_text(text, token, seq);
    if (len == (size_t)rsp->count && memcmp(got + hlen, text, len) == 0)
        return BACKEND_FENCE_DUE;
    return BACKEND_FENCE_OTHER;
}

void backend_held_init(struct backend_held *h)
{
    memset(h, 0, sizeof(*h));
}

void backend_held_deinit(struct backend_held *h)
{
    for (uint32_t i = 0; i < h->cap; i++) {
        if (h->mc != NULL)
            mc_rsp_deinit(&h->mc[i]);
        if (h->redis != NULL)
            redis_rsp_deinit(&h->redis[i]);
    }
    free(h->mc);
    free(h->redis);
    backend_held_init(h);
}

void backend_held_reset(struct backend_held *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->mc != NULL)
            mc_rsp_reset(&h->mc[i]);
        if (h->redis != NULL)
            redis_rsp_reset(&h->redis[i]);
    }
    h->n = 0;
}

/* Room for one more memcached unit: the slots double. 0, or -1. */
static int held_grow_mc(struct backend_held *h)
{
    if (h->n < h->cap)
        return 0;
    uint32_t cap = h->cap == 0 ? 8 : h->cap * 2;
    struct mc_rsp *p = realloc(h->mc, (size_t)cap * sizeof(*p));
    if (p == NULL)
        return -1;
    for (uint32_t i = h->cap; i < cap; i++)
        mc_rsp_init(&p[i]);
    h->mc = p;
    h->cap = cap;
    return 0;
}

/* The same for Redis replies. */
static int held_grow_redis(struct backend_held *h)
{
    if (h->n < h->cap)
        return 0;
    uint32_t cap = h->cap == 0 ? 8 : h->cap * 2;
    struct redis_rsp *p = realloc(h->redis, (size_t)cap * sizeof(*p));
    if (p == NULL)
        return -1;
    for (uint32_t i = h->cap; i < cap; i++)
        redis_rsp_init(&p[i]);
    h->redis = p;
    h->cap = cap;
    return 0;
}

int backend_held_push_mc(struct backend_held *h, struct mc_rsp *rsp)
{
    if (h->redis != NULL || held_grow_mc(h) != 0)
        return -1;
    struct mc_rsp t = h->mc[h->n];
    h->mc[h->n++] = *rsp;
    *rsp = t;
    return 0;
}

int backend_held_push_redis(struct backend_held *h, struct redis_rsp *rsp)
{
    if (h->mc != NULL || held_grow_redis(h) != 0)
        return -1;
    struct redis_rsp t = h->redis[h->n];
    h->redis[h->n++] = *rsp;
    *rsp = t;
    return 0;
}
