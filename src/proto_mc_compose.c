/* proto_mc_compose: every memcached text-protocol unit the proxy writes:
 * the request lines backends receive (a client's request re-composed, one
 * server's share of a multiget, write-back, fan-out, invalidation) and the
 * VALUE blocks clients receive.
 *
 * A line is written straight into space reserved in the output buffer:
 * one contiguous extent, no printf, no intermediate copy. Every function
 * returns 0, or -1 when its arguments cannot make a valid unit or the
 * buffer cannot grow; a line is then not appended at all. */

#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "proto_mc_int.h"

/* Longest line apart from keys and req->arg: the longest command word,
 * five numbers of at most 20 digits with their spaces, "\r\n". */
#define MC_COMPOSE_FIXED 128

/* ---- writing into reserved space ---- */

static char *
mc_put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *
mc_put_digits(char *p, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return mc_put(p, tmp + i, sizeof(tmp) - i);
}

/* " <v>" in decimal. */
static char *
mc_put_u64(char *p, uint64_t v)
{
    *p++ = ' ';
    return mc_put_digits(p, v);
}

static char *
mc_put_i64(char *p, int64_t v)
{
    *p++ = ' ';
    if (v < 0)
        *p++ = '-';
    /* Negating in uint64_t is defined even for INT64_MIN. */
    return mc_put_digits(p, v < 0 ? -(uint64_t)v : (uint64_t)v);
}

/* " <key>" */
static char *
mc_put_key(char *p, const char *key, size_t klen)
{
    *p++ = ' ';
    return mc_put(p, key, klen);
}

static char *
mc_put_token(char *p, const struct mc_req *req, struct mc_token t)
{
    return mc_put_key(p, req->line + t.off, t.len);
}

static char *
mc_put_word(char *p, enum mc_cmd cmd)
{
    const char *w = mc_cmd_name(cmd);
    return mc_put(p, w, strlen(w));
}

/* Space for a line of at most `size` bytes: its start, or NULL. */
static char *
mc_reserve(struct evbuffer *out, size_t size, struct evbuffer_iovec *v)
{
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, v, 1) < 1)
        return NULL;
    return v->iov_base;
}

/* Ends the line at `end` with "\r\n" and appends it. */
static int
mc_commit(struct evbuffer *out, struct evbuffer_iovec *v, char *end)
{
    end = mc_put(end, "\r\n", 2);
    v->iov_len = (size_t)(end - (char *)v->iov_base);
    return evbuffer_commit_space(out, v, 1) == 0 ? 0 : -1;
}

static bool
mc_key_ok(const char *key, size_t klen)
{
    return key != NULL && klen > 0 && klen <= MC_KEY_MAX;
}

/* ---- one line per shape ---- */

static char *
mc_put_retrieval(char *p, enum mc_cmd cmd, const struct mc_req *req,
                 const uint32_t *key_idx, uint32_t n)
{
    p = mc_put_word(p, cmd);
    if (cmd == MC_CMD_GAT || cmd == MC_CMD_GATS)
        p = mc_put_i64(p, req->exptime);
    for (uint32_t i = 0; i < n; i++)
        p = mc_put_token(p, req, req->keys[key_idx ? key_idx[i] : i]);
    return p;
}

static char *
mc_put_storage(char *p, enum mc_cmd cmd, const char *key, size_t klen,
               uint32_t flags, int64_t exptime, uint64_t vlen)
{
    p = mc_put_word(p, cmd);
    p = mc_put_key(p, key, klen);
    p = mc_put_u64(p, flags);
    p = mc_put_i64(p, exptime);
    return mc_put_u64(p, vlen);
}

/* The legacy delete time is dropped: it can only have been 0. */
static char *
mc_put_keyed(char *p, const struct mc_req *req)
{
    p = mc_put_word(p, req->cmd);
    p = mc_put_token(p, req, req->keys[0]);
    if (req->cmd == MC_CMD_INCR || req->cmd == MC_CMD_DECR)
        p = mc_put_u64(p, req->delta);
    else if (req->cmd == MC_CMD_TOUCH)
        p = mc_put_i64(p, req->exptime);
    return p;
}

/* True when the keys req->keys[key_idx[i]] (or [i]), i < n, exist; adds
 * to *size the bytes they take. */
static bool
mc_keys_size(const struct mc_req *req, const uint32_t *key_idx, uint32_t n,
             size_t *size)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = key_idx ? key_idx[i] : i;
        if (k >= req->nkeys)
            return false;
        *size += 1 + req->keys[k].len;
    }
    return true;
}

/* ---- public composers ---- */

int
mc_compose_get(struct evbuffer *out, enum mc_cmd cmd, const struct mc_req *req,
               const uint32_t *key_idx, uint32_t n)
{
    struct evbuffer_iovec v;
    size_t size = MC_COMPOSE_FIXED;
    char *p;

    if (mc_cmd_kind(cmd) != MC_KIND_RETRIEVAL || n == 0 ||
        !mc_keys_size(req, key_idx, n, &size))
        return -1;
    if ((p = mc_reserve(out, size, &v)) == NULL)
        return -1;
    return mc_commit(out, &v, mc_put_retrieval(p, cmd, req, key_idx, n));
}

int
mc_compose_storage(struct evbuffer *out, enum mc_cmd cmd, const char *key,
                   size_t klen, uint32_t flags, int64_t exptime, size_t vlen)
{
    struct evbuffer_iovec v;
    char *p;

    if (mc_cmd_kind(cmd) != MC_KIND_STORAGE || cmd == MC_CMD_CAS ||
        !mc_key_ok(key, klen))
        return -1;
    if ((p = mc_reserve(out, MC_COMPOSE_FIXED + klen, &v)) == NULL)
        return -1;
    return mc_commit(out, &v, mc_put_storage(p, cmd, key, klen, flags, exptime, vlen));
}

int
mc_compose_delete(struct evbuffer *out, const char *key, size_t klen)
{
    struct evbuffer_iovec v;
    char *p;

    if (!mc_key_ok(key, klen) || (p = mc_reserve(out, MC_COMPOSE_FIXED + klen, &v)) == NULL)
        return -1;
    p = mc_put_word(p, MC_CMD_DELETE);
    return mc_commit(out, &v, mc_put_key(p, key, klen));
}

int
mc_compose_touch(struct evbuffer *out, const char *key, size_t klen, int64_t exptime)
{
    struct evbuffer_iovec v;
    char *p;

    if (!mc_key_ok(key, klen) || (p = mc_reserve(out, MC_COMPOSE_FIXED + klen, &v)) == NULL)
        return -1;
    p = mc_put_word(p, MC_CMD_TOUCH);
    p = mc_put_key(p, key, klen);
    return mc_commit(out, &v, mc_put_i64(p, exptime));
}

int
mc_compose_block(struct evbuffer *out, struct evbuffer *data, bool keep)
{
    size_t len = evbuffer_get_length(data);

    if (len > 0 && keep && evbuffer_add_buffer_reference(out, data) != 0) {
        /* data holds references itself: fall back to a copy. */
        unsigned char *p = evbuffer_pullup(data, (ev_ssize_t)len);
        if (p == NULL || evbuffer_add(out, p, len) != 0)
            return -1;
    } else if (len > 0 && !keep && evbuffer_add_buffer(out, data) != 0) {
        return -1;
    }
    return evbuffer_add(out, "\r\n", 2) == 0 ? 0 : -1;
}

int
mc_compose_value(struct evbuffer *out, struct mc_rsp *rsp)
{
    struct evbuffer_iovec v;
    char *p;

    if (rsp->type != MC_RSP_VALUE || rsp->data == NULL)
        return -1;
    if ((p = mc_reserve(out, rsp->line_len + 2, &v)) == NULL)
        return -1;
    if (mc_commit(out, &v, mc_put(p, rsp->line, rsp->line_len)) != 0)
        return -1;
    return mc_compose_block(out, rsp->data, false);
}

int
mc_compose_reply_line(struct evbuffer *out, const char *text)
{
    struct evbuffer_iovec v;
    size_t len = strlen(text);
    char *p;

    if ((p = mc_reserve(out, len + 2, &v)) == NULL)
        return -1;
    return mc_commit(out, &v, mc_put(p, text, len));
}

/* The line of a request other than a retrieval as a backend gets it. */
static char *
mc_put_req(char *p, const struct mc_req *req)
{
    /* keys is NULL for a request without keys: index it only when there
     * is one (&keys[0] on NULL is undefined). */
    switch (mc_cmd_kind(req->cmd)) {
    case MC_KIND_STORAGE:
        p = mc_put_storage(p, req->cmd, req->line + req->keys[0].off, req->keys[0].len,
                           req->flags, req->exptime, req->vlen);
        return req->cmd == MC_CMD_CAS ? mc_put_u64(p, req->cas) : p;
    case MC_KIND_KEYED:
        return mc_put_keyed(p, req);
    default: /* version, quit, verbosity, stats, flush_all */
        p = mc_put_word(p, req->cmd);
        return req->arg.len > 0 ? mc_put_token(p, req, req->arg) : p;
    }
}

int
mc_req_compose_line(struct evbuffer *out, const struct mc_req *req,
                    const uint32_t *key_idx, uint32_t nkey_idx)
{
    struct evbuffer_iovec v;
    size_t size = MC_COMPOSE_FIXED + req->arg.len;
    enum mc_cmd_kind kind = mc_cmd_kind(req->cmd);
    char *p;

    if ((unsigned)req->cmd >= MC_CMD_COUNT)
        return -1;
    if (kind == MC_KIND_RETRIEVAL)
        return key_idx == NULL ? mc_compose_get(out, req->cmd, req, NULL, req->nkeys)
                               : mc_compose_get(out, req->cmd, req, key_idx, nkey_idx);
    if (kind != MC_KIND_PROXY && kind != MC_KIND_BROADCAST && req->nkeys == 0)
        return -1;
    if (!mc_keys_size(req, NULL, req->nkeys, &size))
        return -1;
    if ((p = mc_reserve(out, size, &v)) == NULL)
        return -1;
    return mc_commit(out, &v, mc_put_req(p, req));
}
