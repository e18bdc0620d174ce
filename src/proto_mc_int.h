/* proto_mc_int: helpers shared by the request and response parsers of the
 * memcached text protocol (tokens and strict decimal numbers). Internal to
 * src/proto_mc_*.c; not part of the public API. */
#ifndef STRATA_PROTO_MC_INT_H
#define STRATA_PROTO_MC_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "strata/proto_mc.h"

/* Reasons sent after "CLIENT_ERROR " (static strings, one place). */
#define MC_ERR_FORMAT      "bad command line format"
#define MC_ERR_KEY_LONG    "key too long"
#define MC_ERR_KEY_CTRL    "key contains control characters"
#define MC_ERR_FLAGS       "invalid flags argument"
#define MC_ERR_EXPTIME     "invalid exptime argument"
#define MC_ERR_CAS         "invalid cas argument"
#define MC_ERR_DELTA       "invalid numeric delta argument"
#define MC_ERR_TOO_LARGE   "value too large"
#define MC_ERR_CHUNK       "bad data chunk"
#define MC_ERR_LINE_LONG   "line too long"
#define MC_ERR_NOMEM       "out of memory"

/* Walks the space-separated tokens of one line. memcached splits on ' '
 * only, so a tab stays inside its token (and then fails the key check). */
struct mc_cursor {
    const char *s;               /* the line */
    uint32_t    len;             /* its length */
    uint32_t    pos;             /* next byte to look at */
};

/* Stores the next token in *t and returns true, or false at the end. */
static inline bool
mc_cursor_next(struct mc_cursor *c, struct mc_token *t)
{
    while (c->pos < c->len && c->s[c->pos] == ' ')
        c->pos++;
    if (c->pos == c->len)
        return false;
    t->off = c->pos;
    while (c->pos < c->len && c->s[c->pos] != ' ')
        c->pos++;
    t->len = c->pos - t->off;
    return true;
}

static inline bool
mc_token_is(const char *line, struct mc_token t, const char *word, uint32_t n)
{
    return t.len == n && memcmp(line + t.off, word, n) == 0;
}

/* Strict unsigned decimal: one or more digits, nothing else (no sign, no
 * spaces, unlike strtoull). False on overflow of uint64_t. */
static inline bool
mc_parse_u64(const char *s, uint32_t len, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 20)
        return false;
    for (uint32_t i = 0; i < len; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static inline bool
mc_parse_u32(const char *s, uint32_t len, uint32_t *out)
{
    uint64_t v;

    if (!mc_parse_u64(s, len, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* An exptime as memcached takes it: a signed 32-bit decimal (negative
 * means already expired). */
static inline bool
mc_parse_exptime(const char *s, uint32_t len, int64_t *out)
{
    bool neg = len > 0 && s[0] == '-';
    uint64_t v;

    if (!mc_parse_u64(s + neg, len - neg, &v))
        return false;
    if (v > (neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX))
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

#endif
