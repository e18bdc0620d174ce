/* proto_redis_compose: every RESP unit the proxy writes: one server's
 * share of a split request, commands of its own, the replies it answers
 * or merges itself, and elements copied out of a backend's array reply.
 * Every function appends to `out` and returns 0, or -1 when its
 * arguments cannot make a valid unit or the buffer cannot grow. */

#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_redis.h"
#include "proto_redis_int.h"

/* "<type><n>\r\n", written without printf. */
static int
redis_put_head(struct evbuffer *out, char type, int64_t n)
{
    char s[REDIS_HEAD_MAX + 1];
    size_t i = sizeof(s);
    uint64_t v = n < 0 ? -(uint64_t)n : (uint64_t)n;

    s[--i] = '\n';
    s[--i] = '\r';
    do {
        s[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (n < 0)
        s[--i] = '-';
    s[--i] = type;
    return evbuffer_add(out, s + i, sizeof(s) - i);
}

static int
redis_put_bulk(struct evbuffer *out, const char *p, size_t n)
{
    if (redis_put_head(out, '$', (int64_t)n) != 0)
        return -1;
    if (n > 0 && evbuffer_add(out, p, n) != 0)
        return -1;
    return evbuffer_add(out, "\r\n", 2);
}

static int
redis_put_arg(struct evbuffer *out, const struct redis_req *req, uint32_t i)
{
    return redis_put_bulk(out, req->buf + req->args[i].off, req->args[i].len);
}

/* "<type><text>\r\n"; a text that would end the line early is refused. */
static int
redis_put_line(struct evbuffer *out, char type, const char *text)
{
    size_t n = strlen(text);

    if (memchr(text, '\r', n) != NULL || memchr(text, '\n', n) != NULL)
        return -1;
    if (evbuffer_add(out, &type, 1) != 0 || evbuffer_add(out, text, n) != 0)
        return -1;
    return evbuffer_add(out, "\r\n", 2);
}

int
redis_compose_split(struct evbuffer *out, const struct redis_req *req,
                    const uint32_t *key_idx, uint32_t n)
{
    uint32_t per;

    if (req->cmd == NULL || n == 0 || req->nargs == 0 ||
        req->cmd->kind == REDIS_KIND_EVAL || req->cmd->kind == REDIS_KIND_PROXY)
        return -1;
    per = req->cmd->kind == REDIS_KIND_PAIRS ? 2 : 1;
    for (uint32_t i = 0; i < n; i++)
        if (key_idx[i] >= req->nkeys)
            return -1;
    if (redis_put_head(out, '*', 1 + (int64_t)n * per) != 0 ||
        redis_put_arg(out, req, 0) != 0)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t a = req->key_first + key_idx[i] * req->key_step;

        for (uint32_t j = 0; j < per; j++)
            if (redis_put_arg(out, req, a + j) != 0)
                return -1;
    }
    return 0;
}

int
redis_compose_command(struct evbuffer *out, uint32_t argc,
                      const char *const *argv, const size_t *argvlen)
{
    if (argc == 0 || redis_put_head(out, '*', argc) != 0)
        return -1;
    for (uint32_t i = 0; i < argc; i++)
        if (redis_put_bulk(out, argv[i], argvlen[i]) != 0)
            return -1;
    return 0;
}

int
redis_compose_error(struct evbuffer *out, const char *text)
{
    return redis_put_line(out, REDIS_RSP_ERROR, text);
}

int
redis_compose_status(struct evbuffer *out, const char *text)
{
    return redis_put_line(out, REDIS_RSP_STATUS, text);
}

int
redis_compose_integer(struct evbuffer *out, int64_t n)
{
    return redis_put_head(out, REDIS_RSP_INTEGER, n);
}

int
redis_compose_array_header(struct evbuffer *out, uint32_t n)
{
    return redis_put_head(out, REDIS_RSP_ARRAY, n);
}

int
redis_compose_bulk(struct evbuffer *out, const char *p, size_t n)
{
    return redis_put_bulk(out, p, n);
}

int
redis_compose_bulk_buffer(struct evbuffer *out, struct evbuffer *text)
{
    size_t n = evbuffer_get_length(text);

    if (redis_put_head(out, REDIS_RSP_BULK, (int64_t)n) != 0 ||
        evbuffer_add_buffer(out, text) != 0)
        return -1;
    return evbuffer_add(out, "\r\n", 2);
}

int
redis_compose_nil(struct evbuffer *out)
{
    return redis_put_head(out, REDIS_RSP_BULK, -1);
}

int
redis_compose_element(struct evbuffer *out, const struct redis_rsp *rsp,
                      uint32_t i)
{
    struct evbuffer_ptr at;
    size_t off, len;

    if (rsp->type != REDIS_RSP_ARRAY || rsp->nil || rsp->data == NULL ||
        i >= rsp->nelems)
        return -1;
    off = rsp->elems[i].off;
    len = rsp->elems[i].len;
    while (len > 0) {
        struct evbuffer_iovec v[8];
        int k;

        if (evbuffer_ptr_set(rsp->data, &at, off, EVBUFFER_PTR_SET) != 0)
            return -1;
        k = evbuffer_peek(rsp->data, (ev_ssize_t)len, &at, v, 8);
        if (k <= 0)
            return -1;
        for (int j = 0; j < k && j < 8 && len > 0; j++) {
            size_t m = v[j].iov_len < len ? v[j].iov_len : len;

            if (evbuffer_add(out, v[j].iov_base, m) != 0)
                return -1;
            off += m;
            len -= m;
        }
    }
    return 0;
}

int
redis_compose_take_element(struct evbuffer *out, struct redis_rsp *rsp,
                           uint32_t i)
{
    size_t len, front, end;

    if (rsp->type != REDIS_RSP_ARRAY || rsp->nil || rsp->data == NULL ||
        i >= rsp->nelems)
        return -1;
    /* the elements tile the reply up to its end: what is left of data
     * starts at `front` */
    end = rsp->elems[rsp->nelems - 1].off + rsp->elems[rsp->nelems - 1].len;
    len = evbuffer_get_length(rsp->data);
    front = end - len;
    if (len > end || rsp->elems[i].off < front)
        return -1;
    if (evbuffer_drain(rsp->data, rsp->elems[i].off - front) != 0)
        return -1;
    len = rsp->elems[i].len;
    return evbuffer_remove_buffer(rsp->data, out, len) == (int)len ? 0 : -1;
}
