/* proto_mc_req: parses memcached text-protocol request lines into struct
 * mc_req. The parser is a pure function of the line; libevent appears only
 * in the lifecycle of req->data. Framing is in proto_mc_frame.c, composing
 * in proto_mc_compose.c. */

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "proto_mc_int.h"

static const struct {
    const char       *name;
    uint32_t          len;
    enum mc_cmd_kind  kind;
} mc_cmds[MC_CMD_COUNT] = {
#define MC_CMD_ROW(e, s, k) [MC_CMD_##e] = { s, sizeof(s) - 1, MC_KIND_##k },
    MC_CMD_LIST(MC_CMD_ROW)
#undef MC_CMD_ROW
};

/* The most arguments a fixed-arity command takes: cas key flags exptime
 * bytes unique noreply. More are counted but not kept. */
#define MC_ARGS_MAX 8

struct mc_args {
    struct mc_token tok[MC_ARGS_MAX]; /* the first MC_ARGS_MAX arguments */
    struct mc_token last;             /* the last argument, wherever it is */
    uint32_t        n;                /* arguments seen */
};

const char *
mc_cmd_name(enum mc_cmd cmd)
{
    return (unsigned)cmd < MC_CMD_COUNT ? mc_cmds[cmd].name : "unknown";
}

/* An out-of-range command is reported as PROXY: nothing to route. */
enum mc_cmd_kind
mc_cmd_kind(enum mc_cmd cmd)
{
    return (unsigned)cmd < MC_CMD_COUNT ? mc_cmds[cmd].kind : MC_KIND_PROXY;
}

/* Forgets the parsed fields; line, keys and data keep their memory. */
static void
mc_req_clear(struct mc_req *req)
{
    req->cmd = MC_CMD_COUNT;
    req->nkeys = 0;
    req->flags = 0;
    req->exptime = 0;
    req->vlen = 0;
    req->cas = 0;
    req->delta = 0;
    req->noreply = false;
    req->arg.off = 0;
    req->arg.len = 0;
}

void
mc_req_init(struct mc_req *req)
{
    memset(req, 0, sizeof(*req));
    req->cmd = MC_CMD_COUNT;
}

/* Also forgets an oversized block being dropped: a recycled req must not
 * carry one stream's progress into another. */
void
mc_req_reset(struct mc_req *req)
{
    mc_req_clear(req);
    req->swallow = 0;
    req->line_len = 0;
    if (req->line != NULL)
        req->line[0] = '\0';
    if (req->data != NULL)
        evbuffer_drain(req->data, evbuffer_get_length(req->data));
}

size_t
mc_req_shrink(struct mc_req *req, size_t keep)
{
    if (req->line_cap > keep) {
        free(req->line);
        req->line = NULL;
        req->line_cap = 0;
        req->line_len = 0;
    }
    if (req->keys_cap * sizeof(*req->keys) > keep) {
        free(req->keys);
        req->keys = NULL;
        req->keys_cap = 0;
        req->nkeys = 0;
    }
    return req->line_cap + req->keys_cap * sizeof(*req->keys);
}

void
mc_req_deinit(struct mc_req *req)
{
    free(req->line);
    free(req->keys);
    if (req->data != NULL)
        evbuffer_free(req->data);
    mc_req_init(req);
}

static enum mc_status
mc_fail(const char **err, const char *why)
{
    *err = why;
    return MC_ERROR;
}

/* NULL when the key is acceptable, else the reason. Bytes >= 0x80 pass:
 * memcached's text protocol takes UTF-8 keys. */
static const char *
mc_key_check(const char *key, uint32_t len)
{
    if (len > MC_KEY_MAX)
        return MC_ERR_KEY_LONG;
    for (uint32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= 0x20 || c == 0x7f)
            return MC_ERR_KEY_CTRL;
    }
    return NULL;
}

/* Checks the key at `t` and appends it to req->keys, growing the array
 * (kept across resets, so steady state allocates nothing). */
static enum mc_status
mc_req_add_key(struct mc_req *req, struct mc_token t, const char **err)
{
    const char *why = mc_key_check(req->line + t.off, t.len);

    if (why != NULL)
        return mc_fail(err, why);
    if (req->nkeys == req->keys_cap) {
        uint32_t cap = req->keys_cap ? req->keys_cap * 2 : 8;
        struct mc_token *keys = realloc(req->keys, cap * sizeof(*keys));
        if (keys == NULL) {
            *err = MC_ERR_NOMEM;
            return MC_FATAL;
        }
        req->keys = keys;
        req->keys_cap = cap;
    }
    req->keys[req->nkeys++] = t;
    return MC_OK;
}

static void
mc_args_collect(struct mc_cursor *cur, struct mc_args *a)
{
    struct mc_token t;

    a->n = 0;
    while (mc_cursor_next(cur, &t)) {
        if (a->n < MC_ARGS_MAX)
            a->tok[a->n] = t;
        a->last = t;
        a->n++;
    }
}

/* Takes a final "noreply" off the arguments and notes it in req. It is
 * noted even when the line turns out bad, so the caller can tell. As in
 * memcached, a lone "noreply" after delete is the key, not the flag. */
static void
mc_args_noreply(struct mc_req *req, struct mc_args *a)
{
    if (req->cmd == MC_CMD_DELETE && a->n < 2)
        return;
    if (a->n > 0 && mc_token_is(req->line, a->last, "noreply", 7)) {
        req->noreply = true;
        a->n--;
    }
}

/* Checks that min..max arguments remain once noreply was taken. As
 * memcached, a line whose words (noreply counted) are more than the
 * command has room for, or too few for a command without a data block,
 * is MC_UNKNOWN: "ERROR", written even under noreply. Otherwise a count
 * out of range is an MC_ERROR (one word too many where noreply could
 * stand is most likely a misspelt noreply), which a noreply client
 * counts and does not write. */
static enum mc_status
mc_args_arity(const struct mc_req *req, const struct mc_args *a,
              uint32_t min, uint32_t max, const char **err)
{
    uint32_t words = a->n + req->noreply;
    bool block = mc_cmd_kind(req->cmd) == MC_KIND_STORAGE;

    if (a->n >= min && a->n <= max)
        return MC_OK;
    if (words > max + 1 || (words < min && !block))
        return MC_UNKNOWN;
    return mc_fail(err, MC_ERR_FORMAT);
}

static enum mc_status
mc_parse_exptime_arg(struct mc_req *req, struct mc_token t, const char **err)
{
    if (!mc_parse_exptime(req->line + t.off, t.len, &req->exptime))
        return mc_fail(err, MC_ERR_EXPTIME);
    return MC_OK;
}

/* get|gets <key>+, gat|gats <exptime> <key>*. As memcached: no argument
 * at all is MC_UNKNOWN ("ERROR"); gat with an exptime and no key is
 * MC_OK with nkeys 0, answered "END" by the proxy. */
static enum mc_status
mc_parse_retrieval(struct mc_req *req, struct mc_cursor *cur,
                   const char **err)
{
    bool touch = req->cmd == MC_CMD_GAT || req->cmd == MC_CMD_GATS;
    struct mc_token t;
    enum mc_status st;

    if (!mc_cursor_next(cur, &t))
        return MC_UNKNOWN;
    if (touch) {
        if (mc_parse_exptime_arg(req, t, err) != MC_OK)
            return MC_ERROR;
        if (!mc_cursor_next(cur, &t))
            return MC_OK;
    }
    do {
        st = mc_req_add_key(req, t, err);
        if (st != MC_OK)
            return st;
    } while (mc_cursor_next(cur, &t));
    return MC_OK;
}

/* The byte count (4th argument) frames the data block that follows: if
 * it is missing or no number, the stream is lost (MC_FATAL). A count
 * beyond 32 bits is not worth swallowing either. */
static enum mc_status
mc_parse_vlen(struct mc_req *req, const struct mc_args *a, const char **err)
{
    uint64_t v;

    if (a->n < 4 || !mc_parse_u64(req->line + a->tok[3].off, a->tok[3].len,
                                  &v)) {
        *err = MC_ERR_FORMAT;
        return MC_FATAL;
    }
    if (v > UINT32_MAX) {
        *err = MC_ERR_TOO_LARGE;
        return MC_FATAL;
    }
    req->vlen = (uint32_t)v;
    return MC_OK;
}

/* key flags exptime bytes [unique], arity already checked. */
static enum mc_status
mc_parse_storage_fields(struct mc_req *req, const struct mc_args *a,
                        const char **err)
{
    const char *l = req->line;
    enum mc_status st = mc_req_add_key(req, a->tok[0], err);

    if (st != MC_OK)
        return st;
    if (!mc_parse_u32(l + a->tok[1].off, a->tok[1].len, &req->flags))
        return mc_fail(err, MC_ERR_FLAGS);
    if (mc_parse_exptime_arg(req, a->tok[2], err) != MC_OK)
        return MC_ERROR;
    if (req->cmd == MC_CMD_CAS &&
        !mc_parse_u64(l + a->tok[4].off, a->tok[4].len, &req->cas))
        return mc_fail(err, MC_ERR_CAS);
    return MC_OK;
}

/* set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]
 * cas <key> <flags> <exptime> <bytes> <unique> [noreply]
 * req->vlen is set first, so framing can drop the block of any MC_ERROR;
 * "value too large" comes before other faults, so framing knows from it
 * alone that the block must be dropped, not waited for. */
static enum mc_status
mc_parse_storage(struct mc_req *req, struct mc_cursor *cur,
                 const struct mc_limits *lim, const char **err)
{
    uint32_t nfixed = req->cmd == MC_CMD_CAS ? 5 : 4;
    struct mc_args a;
    enum mc_status st;

    mc_args_collect(cur, &a);
    mc_args_noreply(req, &a);   /* first: a fatal line is noreply too */
    st = mc_parse_vlen(req, &a, err);
    if (st != MC_OK)
        return st;
    if (req->vlen > lim->max_value)
        return mc_fail(err, MC_ERR_TOO_LARGE);
    st = mc_args_arity(req, &a, nfixed, nfixed, err);
    if (st == MC_OK)
        st = mc_parse_storage_fields(req, &a, err);
    return st;
}

/* delete <key> [0] [noreply]: memcached still takes a legacy time of 0. */
static enum mc_status
mc_parse_delete_time(struct mc_req *req, const struct mc_args *a,
                     const char **err)
{
    uint64_t t;

    if (a->n == 2 &&
        !(mc_parse_u64(req->line + a->tok[1].off, a->tok[1].len, &t) &&
          t == 0))
        return mc_fail(err, MC_ERR_FORMAT);
    return MC_OK;
}

/* delete <key> [0], incr|decr <key> <delta>, touch <key> <exptime>;
 * each with [noreply]. */
static enum mc_status
mc_parse_keyed(struct mc_req *req, struct mc_cursor *cur, const char **err)
{
    uint32_t min = req->cmd == MC_CMD_DELETE ? 1 : 2;
    struct mc_args a;
    enum mc_status st;
    struct mc_token t;

    mc_args_collect(cur, &a);
    mc_args_noreply(req, &a);
    st = mc_args_arity(req, &a, min, 2, err);
    if (st == MC_OK)
        st = mc_req_add_key(req, a.tok[0], err);
    if (st != MC_OK)
        return st;
    t = a.tok[1];
    switch (req->cmd) {
    case MC_CMD_DELETE:
        return mc_parse_delete_time(req, &a, err);
    case MC_CMD_TOUCH:
        return mc_parse_exptime_arg(req, t, err);
    default:
        if (!mc_parse_u64(req->line + t.off, t.len, &req->delta))
            return mc_fail(err, MC_ERR_DELTA);
        return MC_OK;
    }
}

/* stats takes any arguments ("stats slabs", "stats detail on"); arg spans
 * them all, for the proxy to interpret. */
static enum mc_status
mc_parse_stats(struct mc_req *req, struct mc_cursor *cur)
{
    struct mc_token t;

    if (!mc_cursor_next(cur, &t))
        return MC_OK;
    req->arg = t;
    while (mc_cursor_next(cur, &t))
        req->arg.len = t.off + t.len - req->arg.off;
    return MC_OK;
}

/* verbosity <level> [noreply|word], as memcached reads it: no argument
 * or more than two is "ERROR"; a second word other than noreply is
 * ignored; a level that is no number is a CLIENT_ERROR (unwritten under
 * noreply, like the OK). */
static enum mc_status
mc_parse_verbosity(struct mc_req *req, struct mc_args *a, const char **err)
{
    uint32_t level;

    if (a->n == 0 || a->n > 2)
        return MC_UNKNOWN;
    req->noreply = mc_token_is(req->line, a->last, "noreply", 7);
    req->arg = a->tok[0];
    if (!mc_parse_u32(req->line + req->arg.off, req->arg.len, &level))
        return mc_fail(err, MC_ERR_FORMAT);
    return MC_OK;
}

/* flush_all [delay] [noreply]; the delay is kept in arg and exptime. */
static enum mc_status
mc_parse_flush_all(struct mc_req *req, struct mc_args *a, const char **err)
{
    enum mc_status st;

    mc_args_noreply(req, a);
    st = mc_args_arity(req, a, 0, 1, err);
    if (st != MC_OK || a->n == 0)
        return st;
    req->arg = a->tok[0];
    return mc_parse_exptime_arg(req, req->arg, err);
}

/* Commands the proxy answers or broadcasts. version and quit with any
 * argument are "ERROR", as memcached before 1.6 answers: memcached 1.6
 * ignores the arguments, but memccapable demands the error of a server
 * that announces a version below 1.6, as the proxy does. */
static enum mc_status
mc_parse_other(struct mc_req *req, struct mc_cursor *cur, const char **err)
{
    struct mc_args a;

    if (req->cmd == MC_CMD_STATS)
        return mc_parse_stats(req, cur);
    mc_args_collect(cur, &a);
    switch (req->cmd) {
    case MC_CMD_VERBOSITY:
        return mc_parse_verbosity(req, &a, err);
    case MC_CMD_FLUSH_ALL:
        return mc_parse_flush_all(req, &a, err);
    default: /* version, quit */
        return a.n == 0 ? MC_OK : MC_UNKNOWN;
    }
}

/* Command words are case-sensitive, as in memcached ("GET" is unknown). */
static bool
mc_cmd_lookup(const char *line, struct mc_token t, enum mc_cmd *cmd)
{
    for (unsigned i = 0; i < MC_CMD_COUNT; i++) {
        if (mc_token_is(line, t, mc_cmds[i].name, mc_cmds[i].len)) {
            *cmd = (enum mc_cmd)i;
            return true;
        }
    }
    return false;
}

enum mc_status
mc_req_parse(struct mc_req *req, const struct mc_limits *lim,
             const char **err)
{
    struct mc_cursor cur = { req->line, (uint32_t)req->line_len, 0 };
    struct mc_token word;

    mc_req_clear(req);
    if (req->line_len > UINT32_MAX) {
        *err = MC_ERR_LINE_LONG;
        return MC_FATAL;
    }
    if (!mc_cursor_next(&cur, &word) ||
        !mc_cmd_lookup(req->line, word, &req->cmd))
        return MC_UNKNOWN;
    switch (mc_cmds[req->cmd].kind) {
    case MC_KIND_RETRIEVAL:
        return mc_parse_retrieval(req, &cur, err);
    case MC_KIND_STORAGE:
        return mc_parse_storage(req, &cur, lim, err);
    case MC_KIND_KEYED:
        return mc_parse_keyed(req, &cur, err);
    default:
        return mc_parse_other(req, &cur, err);
    }
}
