/* proto_redis_rsp: frames backend replies, one whole top-level reply at a
 * time, into struct redis_rsp, and says whether a reply can answer the
 * request it is matched with.
 *
 *   in: | *2\r\n | $3\r\nfoo\r\n | *1\r\n | :1\r\n | next reply
 *         head     element 0       element 1 (nested)
 *         pending: [2] -> [1] -> [1][1] -> done
 *                          scan_off ──►│ new bytes │
 *
 * A byte-level state machine (rsp->scan) walks the chains of the input
 * with evbuffer_peek from scan_off, where the last call stopped: each
 * byte is examined once (a bulk's payload is only counted past), and a
 * call costs one position lookup plus the new bytes, so a reply that
 * arrives in many reads is framed in time linear in its size.
 * rsp->pending holds, per open array, how many elements are still to
 * come. Nothing is drained until the whole reply is there; then its
 * bytes move into rsp->data as chains (evbuffer_remove_buffer, no copy).
 * Top-level elements are recorded only when the caller asks
 * (want_elems). Every verdict is taken on the byte that decides it, so
 * it never depends on how the stream was split. */

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_redis.h"
#include "proto_redis_int.h"

/* What the next byte of the reply must be. */
enum redis_rsp_state {
    REDIS_SCAN_TYPE,      /* a unit's type byte */
    REDIS_SCAN_LINE,      /* '+'/'-' text, up to '\r' */
    REDIS_SCAN_LINE_LF,   /* the '\n' after the text's '\r' */
    REDIS_SCAN_NUM,       /* a head's number: '-', digits, '\r' */
    REDIS_SCAN_NUM_LF,    /* the '\n' ending a head */
    REDIS_SCAN_BULK,      /* payload bytes, skipped */
    REDIS_SCAN_BULK_CR,   /* the "\r\n" after a payload */
    REDIS_SCAN_BULK_LF,
};

/* Chains looked at per evbuffer_peek. */
#define REDIS_RSP_IOV 16

/* ---- lifecycle --------------------------------------------------------- */

/* Forgets the reply's fields (not its bytes, not the progress). */
static void
redis_rsp_clear(struct redis_rsp *rsp)
{
    rsp->type = 0;
    rsp->nil = false;
    rsp->integer = 0;
    rsp->count = 0;
    rsp->nelems = 0;
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
    memset(&rsp->scan, 0, sizeof(rsp->scan));
    if (rsp->data != NULL)
        evbuffer_drain(rsp->data, evbuffer_get_length(rsp->data));
    if (rsp->elems_cap > REDIS_RSP_ELEMS_KEEP) {
        free(rsp->elems);
        rsp->elems = NULL;
        rsp->elems_cap = 0;
    }
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

/* ---- arrays and their elements ----------------------------------------- */

/* Replies are moved with evbuffer calls that count in int. */
static size_t
redis_rsp_max(const struct redis_limits *lim)
{
    return lim->max_reply < INT32_MAX ? lim->max_reply : INT32_MAX;
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

/* An array head of n > 0 elements, ending at scan_off: opens a level.
 * Its elements need REDIS_ELEM_MIN bytes each, so a count the reply
 * cannot hold is refused before they arrive. */
static enum redis_status
redis_rsp_open(struct redis_rsp *rsp, int64_t n, const struct redis_limits *lim)
{
    size_t max = redis_rsp_max(lim);

    if ((uint64_t)n > max / REDIS_ELEM_MIN ||
        rsp->scan_off + (size_t)n * REDIS_ELEM_MIN > max ||
        rsp->depth >= lim->max_depth)
        return REDIS_FATAL;
    if (redis_rsp_grow((void **)&rsp->pending, &rsp->pending_cap,
                       rsp->depth + 1, sizeof(*rsp->pending)) != 0)
        return REDIS_FATAL;
    rsp->pending[rsp->depth++] = n;
    rsp->scan.state = REDIS_SCAN_TYPE;
    return REDIS_AGAIN;
}

/* A value that ends at scan_off is whole: a recorded top-level element
 * gets its length, and every array it was the last element of is closed
 * too. REDIS_OK when that closes the reply, else REDIS_AGAIN. */
static enum redis_status
redis_rsp_close(struct redis_rsp *rsp)
{
    rsp->scan.state = REDIS_SCAN_TYPE;
    while (rsp->depth > 0) {
        int64_t *left = &rsp->pending[rsp->depth - 1];

        if (rsp->depth == 1 && rsp->scan.elems_on) {
            uint32_t i = rsp->nelems - 1;
            rsp->elems[i].len = rsp->scan_off - rsp->elems[i].off;
        }
        if (--*left > 0)
            return REDIS_AGAIN;
        rsp->depth--;
    }
    return REDIS_OK;
}

/* A value starts at unit_off. At the top it gives the reply its type;
 * in the top-level array, when elements are wanted, it starts the next
 * one (its offset recorded). */
static int
redis_rsp_begin(struct redis_rsp *rsp, char type)
{
    uint32_t i = rsp->nelems;

    if (rsp->depth == 0) {
        rsp->type = (enum redis_rsp_type)type;
        return 0;
    }
    if (rsp->depth > 1 || !rsp->scan.elems_on)
        return 0;
    if (redis_rsp_grow((void **)&rsp->elems, &rsp->elems_cap, i + 1,
                       sizeof(*rsp->elems)) != 0)
        return -1;
    rsp->elems[i].off = rsp->scan.unit_off;
    rsp->elems[i].len = 0;
    rsp->nelems = i + 1;
    return 0;
}

/* ---- one byte (or span) at a time --------------------------------------- */

/* A unit's first byte, at scan_off. */
static enum redis_status
redis_rsp_on_type(struct redis_rsp *rsp, char c, size_t max)
{
    struct redis_rsp_scan *sc = &rsp->scan;

    if (c == '+' || c == '-')
        sc->state = REDIS_SCAN_LINE;
    else if (c == ':' || c == '$' || c == '*')
        sc->state = REDIS_SCAN_NUM;
    else
        return REDIS_FATAL;
    sc->unit = c;
    sc->unit_off = rsp->scan_off++;
    sc->neg = sc->zero = false;
    sc->ndigits = 0;
    sc->num = 0;
    if (redis_rsp_begin(rsp, c) != 0)
        return REDIS_FATAL;
    /* a line not ended yet ends at least one byte further */
    return sc->state == REDIS_SCAN_LINE && rsp->scan_off >= max
           ? REDIS_FATAL : REDIS_AGAIN;
}

/* Text of a '+'/'-' line in p[0..n): the span up to its '\r' is taken
 * at once (*k bytes); a '\n' before the '\r' is REDIS_FATAL, and so is
 * a line that cannot end within max. */
static enum redis_status
redis_rsp_on_line(struct redis_rsp *rsp, const char *p, size_t n, size_t max,
                  size_t *k)
{
    size_t i = 0;

    while (i < n && p[i] != '\r' && p[i] != '\n')
        i++;
    if (i == 0) {
        if (*p == '\n')
            return REDIS_FATAL;
        rsp->scan.state = REDIS_SCAN_LINE_LF;
        i = 1;
    }
    *k = i;
    rsp->scan_off += i;
    return rsp->scan_off >= max ? REDIS_FATAL : REDIS_AGAIN;
}

/* A byte of a head's number: an optional '-', then digits without a
 * leading zero (but "0"), at most 19, then '\r' (the value fitting
 * int64_t, and no "-0"). */
static enum redis_status
redis_rsp_on_digit(struct redis_rsp *rsp, char c)
{
    struct redis_rsp_scan *sc = &rsp->scan;

    rsp->scan_off++;
    if (c >= '0' && c <= '9') {
        if (sc->zero || sc->ndigits == 19)
            return REDIS_FATAL;
        sc->zero = sc->ndigits == 0 && c == '0';
        sc->num = sc->num * 10 + (uint64_t)(c - '0');
        sc->ndigits++;
        return REDIS_AGAIN;
    }
    if (c == '-' && sc->ndigits == 0 && !sc->neg) {
        sc->neg = true;
        return REDIS_AGAIN;
    }
    if (c != '\r' || sc->ndigits == 0 || sc->num > INT64_MAX ||
        (sc->neg && sc->num == 0))
        return REDIS_FATAL;
    sc->state = REDIS_SCAN_NUM_LF;
    return REDIS_AGAIN;
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

/* A bulk head of length n, ending at scan_off: a nil, or the payload and
 * its "\r\n", known to fit max before they arrive. */
static enum redis_status
redis_rsp_bulk(struct redis_rsp *rsp, int64_t n, size_t max)
{
    if (n == -1)
        return redis_rsp_close(rsp);
    if ((uint64_t)n > max || rsp->scan_off + (size_t)n + 2 > max)
        return REDIS_FATAL;
    rsp->scan.skip = (size_t)n;
    rsp->scan.state = n > 0 ? REDIS_SCAN_BULK : REDIS_SCAN_BULK_CR;
    return REDIS_AGAIN;
}

/* The '\n' that ends a head: the unit is an integer (whole), a bulk (its
 * payload follows) or an array (opened unless empty or nil). */
static enum redis_status
redis_rsp_on_head_end(struct redis_rsp *rsp, char c,
                      const struct redis_limits *lim)
{
    const struct redis_rsp_scan *sc = &rsp->scan;
    int64_t n = sc->neg ? -(int64_t)sc->num : (int64_t)sc->num;

    rsp->scan_off++;
    if (c != '\n' || rsp->scan_off > redis_rsp_max(lim) ||
        (sc->unit != ':' && n < -1))
        return REDIS_FATAL;
    if (rsp->depth == 0)
        redis_rsp_top(rsp, sc->unit, n);
    if (sc->unit == '$')
        return redis_rsp_bulk(rsp, n, redis_rsp_max(lim));
    if (sc->unit == '*' && n > 0)
        return redis_rsp_open(rsp, n, lim);
    return redis_rsp_close(rsp);
}

/* Payload bytes in a span of n: passed over without being looked at. */
static enum redis_status
redis_rsp_on_payload(struct redis_rsp *rsp, size_t n, size_t *k)
{
    struct redis_rsp_scan *sc = &rsp->scan;

    *k = n < sc->skip ? n : sc->skip;
    sc->skip -= *k;
    rsp->scan_off += *k;
    if (sc->skip == 0)
        sc->state = REDIS_SCAN_BULK_CR;
    return REDIS_AGAIN;
}

/* The byte c must be `want`: then the state moves to `next`, or the
 * value is whole when `next` is REDIS_SCAN_TYPE. */
static enum redis_status
redis_rsp_on_byte(struct redis_rsp *rsp, char c, char want,
                  enum redis_rsp_state next, size_t max)
{
    rsp->scan_off++;
    if (c != want || rsp->scan_off > max)
        return REDIS_FATAL;
    if (next == REDIS_SCAN_TYPE)
        return redis_rsp_close(rsp);
    rsp->scan.state = next;
    return REDIS_AGAIN;
}

/* The length of a bulk head "$<digits>\r\n" whole at the start of
 * p[0..n): at most 18 digits, no sign, no leading zero; 0 when it is not
 * one of those (the byte machine then decides). */
static size_t
redis_rsp_bulk_head(const char *p, size_t n, size_t *len)
{
    size_t i = 1, v = 0;

    while (i < n && i < 19 && p[i] >= '0' && p[i] <= '9')
        v = v * 10 + (size_t)(p[i++] - '0');
    if (i == 1 || (p[1] == '0' && i > 2) || i + 1 >= n ||
        p[i] != '\r' || p[i + 1] != '\n')
        return 0;
    *len = v;
    return i + 2;
}

/* A whole well-formed bulk at the start of p[0..n), within the limits,
 * taken in one step (*k bytes): what the byte machine would do with the
 * same bytes, only faster. Returns -1, having taken nothing, for
 * anything else (a unit cut by the span's end, a nil, a bad or
 * oversized one): the byte machine takes it then. */
static int
redis_rsp_fast_bulk(struct redis_rsp *rsp, const char *p, size_t n,
                    size_t max, size_t *k)
{
    size_t len, h = *p == '$' ? redis_rsp_bulk_head(p, n, &len) : 0;

    if (h == 0 || len > n - h || n - h - len < 2 || p[h + len] != '\r' ||
        p[h + len + 1] != '\n' || rsp->scan_off + h + len + 2 > max)
        return -1;
    rsp->scan.unit_off = rsp->scan_off;
    if (redis_rsp_begin(rsp, '$') != 0)
        return -1;
    if (rsp->depth == 0)
        redis_rsp_top(rsp, '$', (int64_t)len);
    *k = h + len + 2;
    rsp->scan_off += *k;
    return 0;
}

/* One step over p[0..n) (n > 0): *k bytes taken (one, a span of line
 * text or payload, or a whole bulk). REDIS_OK when the reply is whole. */
static enum redis_status
redis_rsp_step(struct redis_rsp *rsp, const char *p, size_t n,
               const struct redis_limits *lim, size_t *k)
{
    size_t max = redis_rsp_max(lim);

    *k = 1;
    switch ((enum redis_rsp_state)rsp->scan.state) {
    case REDIS_SCAN_TYPE:
        if (redis_rsp_fast_bulk(rsp, p, n, max, k) == 0)
            return redis_rsp_close(rsp);
        return redis_rsp_on_type(rsp, *p, max);
    case REDIS_SCAN_LINE:
        return redis_rsp_on_line(rsp, p, n, max, k);
    case REDIS_SCAN_LINE_LF:
        return redis_rsp_on_byte(rsp, *p, '\n', REDIS_SCAN_TYPE, max);
    case REDIS_SCAN_NUM:
        return redis_rsp_on_digit(rsp, *p);
    case REDIS_SCAN_NUM_LF:
        return redis_rsp_on_head_end(rsp, *p, lim);
    case REDIS_SCAN_BULK:
        return redis_rsp_on_payload(rsp, n, k);
    case REDIS_SCAN_BULK_CR:
        return redis_rsp_on_byte(rsp, *p, '\r', REDIS_SCAN_BULK_LF, max);
    case REDIS_SCAN_BULK_LF:
        return redis_rsp_on_byte(rsp, *p, '\n', REDIS_SCAN_TYPE, max);
    }
    return REDIS_FATAL;
}

/* Runs the machine over one contiguous span p[0..n): REDIS_AGAIN when it
 * took all of it with the reply still open; else where it stopped. */
static enum redis_status
redis_rsp_span(struct redis_rsp *rsp, const char *p, size_t n,
               const struct redis_limits *lim)
{
    enum redis_status st = REDIS_AGAIN;
    size_t i = 0, k;

    while (i < n && st == REDIS_AGAIN) {
        st = redis_rsp_step(rsp, p + i, n - i, lim, &k);
        i += k;
    }
    return st;
}

/* Runs the machine over up to REDIS_RSP_IOV chains from *at; moves *at
 * past them. REDIS_AGAIN when every byte from *at to the end was taken
 * or more chains are left (*more). */
static enum redis_status
redis_rsp_chains(struct evbuffer *in, struct redis_rsp *rsp,
                 struct evbuffer_ptr *at, const struct redis_limits *lim,
                 bool *more)
{
    struct evbuffer_iovec v[REDIS_RSP_IOV];
    size_t left = evbuffer_get_length(in) - rsp->scan_off, took = 0;
    int n = evbuffer_peek(in, (ev_ssize_t)left, at, v, REDIS_RSP_IOV);

    if (n <= 0)
        return REDIS_FATAL;
    *more = n > REDIS_RSP_IOV;
    for (int j = 0; j < n && j < REDIS_RSP_IOV; j++) {
        enum redis_status st = redis_rsp_span(rsp, v[j].iov_base, v[j].iov_len, lim);

        if (st != REDIS_AGAIN)
            return st;
        took += v[j].iov_len;
    }
    if (*more && evbuffer_ptr_set(in, at, took, EVBUFFER_PTR_ADD) != 0)
        return REDIS_FATAL;
    return REDIS_AGAIN;
}

/* Examines the bytes of `in` from scan_off on: one position lookup, then
 * the chains in order. */
static enum redis_status
redis_rsp_scan_input(struct evbuffer *in, struct redis_rsp *rsp,
                     const struct redis_limits *lim)
{
    struct evbuffer_ptr at;
    enum redis_status st;
    bool more = true;

    if (rsp->scan_off >= evbuffer_get_length(in))
        return REDIS_AGAIN;
    if (evbuffer_ptr_set(in, &at, rsp->scan_off, EVBUFFER_PTR_SET) != 0)
        return REDIS_FATAL;
    do {
        st = redis_rsp_chains(in, rsp, &at, lim, &more);
    } while (st == REDIS_AGAIN && more);
    return st;
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

    if (rsp->scan_off == 0) {       /* a new reply */
        redis_rsp_clear(rsp);
        rsp->scan.elems_on = rsp->want_elems;
    }
    st = redis_rsp_scan_input(in, rsp, lim);
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
