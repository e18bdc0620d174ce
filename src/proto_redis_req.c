/* proto_redis_req: frames client requests, multibulk arrays of bulk
 * strings, out of the byte stream into struct redis_req, and checks each
 * against the command table (arity, key positions).
 *
 *   in: | *N\r\n | $len\r\n payload\r\n | ... N bulks ... | next request
 *         head     bulk: recorded in args as it completes
 *         ^ scan_off moves past each whole part; nothing is drained
 *
 * A request arriving in many reads is scanned once: the count, the bulks
 * found so far and the offset reached are kept in req, and only the part
 * in progress is looked at again; within one call the bulks are found
 * with a cursor that moves forward over the input's chains (so a call
 * costs one walk to where it stopped plus the bytes it frames), and a
 * bulk whose end has not arrived costs no walk at all. Lengths are checked against the limits
 * as soon as their head is read, before the bytes they announce arrive.
 * Once the last bulk is there the request is removed from the input into
 * req->buf in one piece. */

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_redis.h"
#include "proto_redis_int.h"

/* ---- heads, shared with the reply framer ------------------------------ */

/* Copies up to n bytes of `in` from off into buf; returns how many. */
static size_t
redis_frame_copy(struct evbuffer *in, size_t off, char *buf, size_t n)
{
    size_t len = evbuffer_get_length(in);
    struct evbuffer_ptr at;
    ev_ssize_t got;

    if (off >= len)
        return 0;
    if (n > len - off)
        n = len - off;
    if (evbuffer_ptr_set(in, &at, off, EVBUFFER_PTR_SET) != 0)
        return 0;
    got = evbuffer_copyout_from(in, &at, buf, n);
    return got > 0 ? (size_t)got : 0;
}

bool
redis_frame_byte(struct evbuffer *in, size_t off, char *c)
{
    return redis_frame_copy(in, off, c, 1) == 1;
}

int
redis_frame_crlf(struct evbuffer *in, size_t off)
{
    char b[2];
    size_t got = redis_frame_copy(in, off, b, 2);

    /* a wrong first byte is wrong whatever follows (nutcracker closes
     * as soon as it sees it) */
    if (got >= 1 && b[0] != '\r')
        return 0;
    if (got < 2)
        return -1;
    return b[1] == '\n';
}

/* The number of the head in s[0..n) (s[0] is its type byte); see
 * redis_frame_number. At most 19 digits, so the value fits in uint64_t
 * before it is checked against INT64_MAX. */
static enum redis_status
redis_parse_number(const char *s, size_t n, int64_t *val, size_t *hlen)
{
    bool neg = n > 1 && s[1] == '-';
    size_t first = 1 + neg, i;
    uint64_t v = 0;

    for (i = first; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (i > first && s[first] == '0')
            return REDIS_FATAL;                 /* a leading zero */
        if (i - first == 19)
            return REDIS_FATAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == n)
        return REDIS_AGAIN;     /* i <= 21 < REDIS_HEAD_MAX: not cut short */
    if (s[i] != '\r' || i == first || v > INT64_MAX || (neg && v == 0))
        return REDIS_FATAL;
    if (i + 1 == n)
        return REDIS_AGAIN;
    if (s[i + 1] != '\n')
        return REDIS_FATAL;
    *val = neg ? -(int64_t)v : (int64_t)v;
    *hlen = i + 2;
    return REDIS_OK;
}

enum redis_status
redis_frame_number(struct evbuffer *in, size_t off, int64_t *val, size_t *hlen)
{
    char s[REDIS_HEAD_MAX];
    size_t n = redis_frame_copy(in, off, s, sizeof(s));

    return n == 0 ? REDIS_AGAIN : redis_parse_number(s, n, val, hlen);
}

/* ---- lifecycle --------------------------------------------------------- */

void
redis_req_init(struct redis_req *req)
{
    memset(req, 0, sizeof(*req));
}

void
redis_req_reset(struct redis_req *req)
{
    req->cmd = NULL;
    req->len = 0;
    if (req->buf != NULL)
        req->buf[0] = '\0';
    req->nargs = 0;
    req->key_first = 0;
    req->key_step = 0;
    req->nkeys = 0;
    req->scan_off = 0;
    req->scan_nargs = 0;
    req->want = 0;
}

size_t
redis_req_shrink(struct redis_req *req, size_t keep)
{
    if (req->cap > keep) {
        free(req->buf);
        req->buf = NULL;
        req->cap = 0;
        req->len = 0;
    }
    if (req->args_cap * sizeof(*req->args) > keep) {
        free(req->args);
        req->args = NULL;
        req->args_cap = 0;
        req->nargs = 0;
    }
    return req->cap + req->args_cap * sizeof(*req->args);
}

void
redis_req_deinit(struct redis_req *req)
{
    free(req->buf);
    free(req->args);
    redis_req_init(req);
}

/* ---- framing ----------------------------------------------------------- */

/* A forward cursor over the input for one redis_req_read call: the
 * bulks of a request are found by moving on from the last position, not
 * by walking the input's chains from its start for each one (which made
 * a request of many arguments over many chains quadratic). The input is
 * not changed during a call, so the position stays valid within it. */
struct redis_req_scan {
    struct evbuffer    *in;
    size_t              len;   /* evbuffer_get_length(in) */
    struct evbuffer_ptr at;
    bool                set;
};

/* Copies up to n bytes of the input from off into buf; returns how many. */
static size_t
redis_req_copy(struct redis_req_scan *sc, size_t off, char *buf, size_t n)
{
    ev_ssize_t got;
    int rc;

    if (off >= sc->len)
        return 0;
    if (n > sc->len - off)
        n = sc->len - off;
    if (!sc->set || off < (size_t)sc->at.pos)
        rc = evbuffer_ptr_set(sc->in, &sc->at, off, EVBUFFER_PTR_SET);
    else
        rc = evbuffer_ptr_set(sc->in, &sc->at, off - (size_t)sc->at.pos, EVBUFFER_PTR_ADD);
    sc->set = rc == 0;
    if (rc != 0)
        return 0;
    got = evbuffer_copyout_from(sc->in, &sc->at, buf, n);
    return got > 0 ? (size_t)got : 0;
}

/* The head number at off (see redis_frame_number), through the cursor. */
static enum redis_status
redis_req_number(struct redis_req_scan *sc, size_t off, int64_t *val, size_t *hlen)
{
    char s[REDIS_HEAD_MAX];
    size_t n = redis_req_copy(sc, off, s, sizeof(s));

    return n == 0 ? REDIS_AGAIN : redis_parse_number(s, n, val, hlen);
}

/* Whether the two bytes at off are "\r\n" (see redis_frame_crlf),
 * through the cursor; -1 at once when they have not arrived. */
static int
redis_req_crlf(struct redis_req_scan *sc, size_t off)
{
    char b[2];
    size_t got;

    if (off >= sc->len)
        return -1;
    got = redis_req_copy(sc, off, b, 2);
    if (got >= 1 && b[0] != '\r')
        return 0;
    if (got < 2)
        return -1;
    return b[1] == '\n';
}

static enum redis_status
redis_req_fatal(const char **err, const char *why)
{
    *err = why;
    return REDIS_FATAL;
}

/* Offsets are 32 bits and evbuffer moves count in int: a request is
 * never allowed past INT32_MAX bytes, whatever the limit says. */
static size_t
redis_req_max(const struct redis_limits *lim)
{
    return lim->max_request < INT32_MAX ? lim->max_request : INT32_MAX;
}

/* Appends the argument (off, len) to req->args. Returns 0 or -1. */
static int
redis_req_add_arg(struct redis_req *req, size_t off, size_t len)
{
    if (req->nargs == req->args_cap) {
        uint32_t n = req->args_cap ? req->args_cap * 2 : 8;
        struct redis_token *p;

        if (n > req->scan_nargs)
            n = req->scan_nargs;
        if ((p = realloc(req->args, n * sizeof(*p))) == NULL)
            return -1;
        req->args = p;
        req->args_cap = n;
    }
    req->args[req->nargs].off = (uint32_t)off;
    req->args[req->nargs].len = (uint32_t)len;
    req->nargs++;
    return 0;
}

/* "*<n>\r\n" at the start of `in`: n arguments, 1..max_args, whose least
 * size fits max_request. REDIS_OK sets scan_nargs and scan_off. */
static enum redis_status
redis_req_head(struct redis_req_scan *sc, struct redis_req *req,
               const struct redis_limits *lim, const char **err)
{
    enum redis_status st;
    size_t hlen;
    int64_t n;
    char c;

    if (redis_req_copy(sc, 0, &c, 1) != 1)
        return REDIS_AGAIN;
    if (c != '*')
        return redis_req_fatal(err, REDIS_ERR_INLINE);
    st = redis_req_number(sc, 0, &n, &hlen);
    if (st != REDIS_OK)
        return st == REDIS_FATAL ? redis_req_fatal(err, REDIS_ERR_MULTIBULK) : st;
    /* nutcracker closes on "*0" too; Redis would ignore it and "*-1" */
    if (n <= 0)
        return redis_req_fatal(err, REDIS_ERR_MULTIBULK);
    if ((uint64_t)n > lim->max_args)
        return redis_req_fatal(err, REDIS_ERR_TOO_MANY);
    if (hlen + (size_t)n * REDIS_BULK_MIN > redis_req_max(lim))
        return redis_req_fatal(err, REDIS_ERR_TOO_LARGE);
    req->scan_nargs = (uint32_t)n;
    req->scan_off = hlen;
    req->want = hlen + (size_t)n * REDIS_BULK_MIN;
    return REDIS_OK;
}

/* "$<len>\r\n<payload>\r\n" at scan_off. REDIS_OK once all of it has
 * arrived: recorded in args, scan_off past it. The bulks still to come
 * are counted at their least size, so an oversized request is refused
 * as early as its lengths say so. */
static enum redis_status
redis_req_bulk(struct redis_req_scan *sc, struct redis_req *req,
               const struct redis_limits *lim, const char **err)
{
    size_t off = req->scan_off, hlen, end, rest;
    enum redis_status st;
    int64_t n;
    char c;

    if (redis_req_copy(sc, off, &c, 1) != 1)
        return REDIS_AGAIN;
    if (c != '$')
        return redis_req_fatal(err, REDIS_ERR_BULK_HEAD);
    st = redis_req_number(sc, off, &n, &hlen);
    if (st != REDIS_OK)
        return st == REDIS_FATAL ? redis_req_fatal(err, REDIS_ERR_BULK) : st;
    if (n < 0)
        return redis_req_fatal(err, REDIS_ERR_BULK);
    rest = (size_t)(req->scan_nargs - req->nargs - 1) * REDIS_BULK_MIN;
    if ((uint64_t)n > lim->max_bulk ||
        off + hlen + (size_t)n + 2 + rest > redis_req_max(lim))
        return redis_req_fatal(err, REDIS_ERR_TOO_LARGE);
    end = off + hlen + (size_t)n + 2;
    req->want = end + rest;
    switch (redis_req_crlf(sc, end - 2)) {
    case -1:
        return REDIS_AGAIN;
    case 0:
        return redis_req_fatal(err, REDIS_ERR_BULK_END);
    default:
        break;
    }
    if (redis_req_add_arg(req, off + hlen, (size_t)n) != 0)
        return redis_req_fatal(err, REDIS_ERR_NOMEM);
    req->scan_off = end;
    return REDIS_OK;
}

/* Moves the framed request (scan_off bytes) from `in` into req->buf,
 * NUL-ended, and clears the framing progress. Returns 0 or -1. */
static int
redis_req_take(struct evbuffer *in, struct redis_req *req)
{
    size_t len = req->scan_off;

    if (len + 1 > req->cap) {
        size_t n = req->cap ? req->cap : 256;
        char *p;

        while (n < len + 1)
            n *= 2;
        if ((p = realloc(req->buf, n)) == NULL)
            return -1;
        req->buf = p;
        req->cap = n;
    }
    if (evbuffer_remove(in, req->buf, len) != (int)len)
        return -1;
    req->buf[len] = '\0';
    req->len = len;
    req->scan_off = 0;
    req->scan_nargs = 0;
    req->want = 0;
    return 0;
}

/* ---- checking against the command table -------------------------------- */

static enum redis_status
redis_req_error(struct redis_req *req, const char **err, const char *why)
{
    req->key_first = 0;
    req->key_step = 0;
    req->nkeys = 0;
    *err = why;
    return REDIS_ERROR;
}

static bool
redis_req_arity_ok(int32_t arity, uint32_t nargs)
{
    if (arity >= 0)
        return nargs == (uint32_t)arity;
    return nargs >= (uint32_t)-arity;
}

/* EVAL script numkeys key... arg...: numkeys a decimal >= 1 (nutcracker
 * routes by the first key, so a script without keys cannot be routed),
 * and that many keys present. */
static enum redis_status
redis_req_eval_keys(struct redis_req *req, const char **err)
{
    struct redis_token t = req->args[2];
    uint64_t n = 0;

    if (t.len == 0 || t.len > 10)
        return redis_req_error(req, err, REDIS_ERR_NUMKEYS);
    for (uint32_t i = 0; i < t.len; i++) {
        uint64_t d = (uint64_t)(req->buf[t.off + i] - '0');
        if (d > 9)
            return redis_req_error(req, err, REDIS_ERR_NUMKEYS);
        n = n * 10 + d;
    }
    if (n == 0)
        return redis_req_error(req, err, REDIS_ERR_NUMKEYS);
    if (n > req->nargs - 3)
        return redis_req_error(req, err, REDIS_ERR_ARITY);
    req->key_first = 3;
    req->nkeys = (uint32_t)n;
    return REDIS_OK;
}

/* Sets key_first, key_step and nkeys by the command's kind; the arity
 * was checked, so every kind with keys has at least one. */
static enum redis_status
redis_req_keys(struct redis_req *req, const char **err)
{
    req->key_first = 1;
    req->key_step = 1;
    switch (req->cmd->kind) {
    case REDIS_KIND_KEY:
        req->nkeys = 1;
        return REDIS_OK;
    case REDIS_KIND_MULTI:
        req->nkeys = req->nargs - 1;
        return REDIS_OK;
    case REDIS_KIND_PAIRS:
        if ((req->nargs - 1) % 2 != 0)
            return redis_req_error(req, err, REDIS_ERR_ARITY);
        req->key_step = 2;
        req->nkeys = (req->nargs - 1) / 2;
        return REDIS_OK;
    case REDIS_KIND_EVAL:
        return redis_req_eval_keys(req, err);
    default:
        req->key_first = 0;
        req->key_step = 0;
        req->nkeys = 0;
        return REDIS_OK;
    }
}

static enum redis_status
redis_req_check(struct redis_req *req, const char **err)
{
    struct redis_token name = req->args[0];

    req->cmd = redis_cmd_lookup(req->buf + name.off, name.len);
    if (req->cmd == NULL)
        return redis_req_error(req, err, REDIS_ERR_UNSUPPORTED);
    if (!redis_req_arity_ok(req->cmd->arity, req->nargs))
        return redis_req_error(req, err, REDIS_ERR_ARITY);
    return redis_req_keys(req, err);
}

enum redis_status
redis_req_read(struct evbuffer *in, struct redis_req *req,
               const struct redis_limits *lim, const char **err)
{
    struct redis_req_scan sc = { .in = in, .len = evbuffer_get_length(in) };
    enum redis_status st;

    if (req->scan_nargs == 0) {
        redis_req_reset(req);       /* a new request: forget the last one */
        st = redis_req_head(&sc, req, lim, err);
        if (st != REDIS_OK)
            return st;
    }
    while (req->nargs < req->scan_nargs) {
        st = redis_req_bulk(&sc, req, lim, err);
        if (st != REDIS_OK)
            return st;
    }
    if (redis_req_take(in, req) != 0)
        return redis_req_fatal(err, REDIS_ERR_NOMEM);
    return redis_req_check(req, err);
}
