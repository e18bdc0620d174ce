/* proto_redis_rsp: frames backend replies, one whole top-level reply at a
 * time, into struct redis_rsp, and says whether a reply can answer the
 * request it is matched with.
 *
 *   in: | *2\r\n | $3\r\nfoo\r\n | *1\r\n | :1\r\n | next reply
 *         head     element 0       element 1 (nested)
 *         pending: [2] -> [1] -> [1][1] -> done
 *
 * A reply is a tree of units (a scalar, or an array head followed by its
 * elements). Each whole unit moves scan_off past it; rsp->pending holds,
 * per open array, how many elements are still to come. So a reply that
 * arrives in many reads is scanned once, and nothing is drained until
 * the whole reply is there; then its bytes move into rsp->data as chains
 * (evbuffer_remove_buffer, no copy). */

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_redis.h"
#include "proto_redis_int.h"

/* ---- lifecycle --------------------------------------------------------- */

/* Forgets the reply's fields (not its bytes, not the progress). */
static void
redis_rsp_clear(struct redis_rsp *rsp)
{
    rsp->type = 0;
    rsp->nil = false;
    rsp->integer = 0;
    rsp->count = 0;
}

void
redis_rsp_init(struct redis_rsp *rsp)
{
    memset(rsp, 0, sizeof(*rsp));
}

void
redis_rsp_reset(struct redis_rsp *rsp)
{
    redis_rsp_clear(rsp);
    rsp->scan_off = 0;
    rsp->depth = 0;
    if (rsp->data != NULL)
        evbuffer_drain(rsp->data, evbuffer_get_length(rsp->data));
}

void
redis_rsp_deinit(struct redis_rsp *rsp)
{
    if (rsp->data != NULL)
        evbuffer_free(rsp->data);
    free(rsp->elems);
    free(rsp->pending);
    redis_rsp_init(rsp);
}

/* ---- units ------------------------------------------------------------- */

/* Replies are moved with evbuffer calls that count in int. */
static size_t
redis_rsp_max(const struct redis_limits *lim)
{
    return lim->max_reply < INT32_MAX ? lim->max_reply : INT32_MAX;
}

/* A '+' or '-' line at off: REDIS_OK with *end past its "\r\n". A '\r'
 * or '\n' anywhere else in the line is REDIS_FATAL, decided as soon as
 * the byte after a '\r' is known. */
static enum redis_status
redis_rsp_line(struct evbuffer *in, size_t off, size_t max, size_t *end)
{
    size_t avail = evbuffer_get_length(in);
    struct evbuffer_ptr from, lf, cr;

    if (off + 1 >= avail)
        return off + 1 >= max ? REDIS_FATAL : REDIS_AGAIN;
    if (evbuffer_ptr_set(in, &from, off + 1, EVBUFFER_PTR_SET) != 0)
        return REDIS_FATAL;
    lf = evbuffer_search(in, "\n", 1, &from);
    cr = evbuffer_search_range(in, "\r", 1, &from, lf.pos >= 0 ? &lf : NULL);
    if (lf.pos < 0) {
        if (cr.pos >= 0 && (size_t)cr.pos + 1 < avail)
            return REDIS_FATAL;         /* '\r' followed by another byte */
        return avail >= max ? REDIS_FATAL : REDIS_AGAIN;
    }
    if (cr.pos < 0 || cr.pos + 1 != lf.pos)
        return REDIS_FATAL;
    *end = (size_t)lf.pos + 1;
    return *end > max ? REDIS_FATAL : REDIS_OK;
}

/* The number head at off (':', '$' or '*'): REDIS_OK with *val and *end
 * past the head. */
static enum redis_status
redis_rsp_head(struct evbuffer *in, size_t off, int64_t *val, size_t *end)
{
    size_t hlen;
    enum redis_status st = redis_frame_number(in, off, val, &hlen);

    if (st == REDIS_OK)
        *end = off + hlen;
    return st;
}

/* A bulk whose head (length n, ending at *end) was read: a nil, or the
 * payload and its "\r\n", known to fit max before they arrive. */
static enum redis_status
redis_rsp_payload(struct evbuffer *in, int64_t n, size_t max, size_t *end)
{
    if (n < -1)
        return REDIS_FATAL;
    if (n == -1)
        return REDIS_OK;
    if ((uint64_t)n > max || *end + (size_t)n + 2 > max)
        return REDIS_FATAL;
    *end += (size_t)n + 2;
    switch (redis_frame_crlf(in, *end - 2)) {
    case -1:
        return REDIS_AGAIN;
    case 0:
        return REDIS_FATAL;
    default:
        return REDIS_OK;
    }
}

/* Grows an array of `size`-byte items to hold at least `need`. */
static int
redis_rsp_grow(void **p, uint32_t *cap, uint32_t need, size_t size)
{
    uint32_t n = *cap ? *cap : 8;
    void *q;

    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    if ((q = realloc(*p, (size_t)n * size)) == NULL)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* An array head of n > 0 elements, ending at `end`: opens a level. Its
 * elements need REDIS_ELEM_MIN bytes each, so a count the reply cannot
 * hold is refused before they arrive. */
static enum redis_status
redis_rsp_open(struct redis_rsp *rsp, int64_t n, size_t end,
               const struct redis_limits *lim)
{
    size_t max = redis_rsp_max(lim);

    if ((uint64_t)n > max / REDIS_ELEM_MIN ||
        end + (size_t)n * REDIS_ELEM_MIN > max || rsp->depth >= lim->max_depth)
        return REDIS_FATAL;
    if (redis_rsp_grow((void **)&rsp->pending, &rsp->pending_cap,
                       rsp->depth + 1, sizeof(*rsp->pending)) != 0)
        return REDIS_FATAL;
    rsp->pending[rsp->depth++] = n;
    rsp->scan_off = end;
    return REDIS_OK;
}

/* A value that ends at `end` is whole: a top-level element records its
 * length, and every array it was the last element of is closed too. */
static void
redis_rsp_close(struct redis_rsp *rsp, size_t end)
{
    rsp->scan_off = end;
    while (rsp->depth > 0) {
        int64_t *left = &rsp->pending[rsp->depth - 1];

        if (rsp->depth == 1) {
            size_t i = (size_t)(rsp->count - *left);
            rsp->elems[i].len = end - rsp->elems[i].off;
        }
        if (--*left > 0)
            return;
        rsp->depth--;
    }
}

/* A value starts at off. At the top it gives the reply its type; in the
 * top-level array it starts element i (its offset recorded). */
static int
redis_rsp_begin(struct redis_rsp *rsp, size_t off, char type)
{
    uint32_t i;

    if (rsp->depth == 0) {
        rsp->type = (enum redis_rsp_type)type;
        return 0;
    }
    if (rsp->depth > 1)
        return 0;
    i = (uint32_t)(rsp->count - rsp->pending[0]);
    if (redis_rsp_grow((void **)&rsp->elems, &rsp->elems_cap, i + 1,
                       sizeof(*rsp->elems)) != 0)
        return -1;
    rsp->elems[i].off = off;
    rsp->elems[i].len = 0;
    return 0;
}

/* Fills the top-level fields from a number unit's head. */
static void
redis_rsp_top(struct redis_rsp *rsp, char type, int64_t n)
{
    if (type == REDIS_RSP_INTEGER) {
        rsp->integer = n;
        return;
    }
    rsp->nil = n == -1;
    rsp->count = n;
}

/* Frames the unit at scan_off: a scalar (then closed) or an array head
 * (then opened, unless empty or nil). */
static enum redis_status
redis_rsp_unit(struct evbuffer *in, struct redis_rsp *rsp,
               const struct redis_limits *lim)
{
    size_t off = rsp->scan_off, max = redis_rsp_max(lim), end;
    enum redis_status st;
    int64_t n = 0;
    char c;

    if (!redis_frame_byte(in, off, &c))
        return REDIS_AGAIN;
    if (c == '+' || c == '-')
        st = redis_rsp_line(in, off, max, &end);
    else if (c == ':' || c == '$' || c == '*')
        st = redis_rsp_head(in, off, &n, &end);
    else
        return REDIS_FATAL;
    if (st == REDIS_OK && c == '$')
        st = redis_rsp_payload(in, n, max, &end);
    if (st == REDIS_OK && (end > max || (c == '*' && n < -1)))
        st = REDIS_FATAL;
    if (st != REDIS_OK)
        return st;
    if (redis_rsp_begin(rsp, off, c) != 0)
        return REDIS_FATAL;
    if (rsp->depth == 0 && c != '+' && c != '-')
        redis_rsp_top(rsp, c, n);
    if (c == '*' && n > 0)
        return redis_rsp_open(rsp, n, end, lim);
    redis_rsp_close(rsp, end);
    return REDIS_OK;
}

/* Moves the framed reply (scan_off bytes) into rsp->data. */
static enum redis_status
redis_rsp_take(struct evbuffer *in, struct redis_rsp *rsp)
{
    size_t len = rsp->scan_off;

    if (rsp->data == NULL && (rsp->data = evbuffer_new()) == NULL)
        return REDIS_FATAL;
    evbuffer_drain(rsp->data, evbuffer_get_length(rsp->data));
    if (evbuffer_remove_buffer(in, rsp->data, len) != (int)len)
        return REDIS_FATAL;
    rsp->scan_off = 0;
    return REDIS_OK;
}

enum redis_status
redis_rsp_read(struct evbuffer *in, struct redis_rsp *rsp,
               const struct redis_limits *lim)
{
    enum redis_status st;

    if (rsp->scan_off == 0 && rsp->depth == 0)
        redis_rsp_clear(rsp);       /* a new reply */
    do {
        st = redis_rsp_unit(in, rsp, lim);
    } while (st == REDIS_OK && rsp->depth > 0);
    return st == REDIS_OK ? redis_rsp_take(in, rsp) : st;
}

/* ---- replies against their request -------------------------------------- */

bool
redis_rsp_fits(const struct redis_cmd *cmd, uint32_t nkeys,
               const struct redis_rsp *rsp)
{
    if (cmd == NULL)
        return false;
    if (rsp->type == REDIS_RSP_ERROR)
        return true;
    if (cmd->kind == REDIS_KIND_PROXY)
        return false;
    switch (cmd->merge) {
    case REDIS_MERGE_ARRAY:
        return rsp->type == REDIS_RSP_ARRAY && !rsp->nil &&
               rsp->count == (int64_t)nkeys;
    case REDIS_MERGE_SUM:
        return rsp->type == REDIS_RSP_INTEGER;
    case REDIS_MERGE_OK:
        return rsp->type == REDIS_RSP_STATUS;
    default:
        return true;
    }
}
