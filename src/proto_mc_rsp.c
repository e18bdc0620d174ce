/* proto_mc_rsp: parses the lines a memcached backend answers with into
 * struct mc_rsp. The parser is a pure function of the line; libevent
 * appears only in the lifecycle of rsp->data. Framing is in
 * proto_mc_frame.c. */

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "proto_mc_int.h"

static const struct {
    const char *word;
    uint32_t    len;
} mc_rsp_words[MC_RSP_COUNT] = {
#define MC_RSP_ROW(e, s) [MC_RSP_##e] = { s, sizeof(s) - 1 },
    MC_RSP_LIST(MC_RSP_ROW)
#undef MC_RSP_ROW
};

static void
mc_rsp_clear(struct mc_rsp *rsp)
{
    rsp->type = MC_RSP_COUNT;
    rsp->key.off = 0;
    rsp->key.len = 0;
    rsp->flags = 0;
    rsp->vlen = 0;
    rsp->cas = 0;
    rsp->has_cas = false;
    rsp->number = 0;
}

void
mc_rsp_init(struct mc_rsp *rsp)
{
    memset(rsp, 0, sizeof(*rsp));
    rsp->type = MC_RSP_COUNT;
}

void
mc_rsp_reset(struct mc_rsp *rsp)
{
    mc_rsp_clear(rsp);
    rsp->line_len = 0;
    if (rsp->line != NULL)
        rsp->line[0] = '\0';
    if (rsp->data != NULL)
        evbuffer_drain(rsp->data, evbuffer_get_length(rsp->data));
}

void
mc_rsp_deinit(struct mc_rsp *rsp)
{
    free(rsp->line);
    if (rsp->data != NULL)
        evbuffer_free(rsp->data);
    mc_rsp_init(rsp);
}

/* VALUE <key> <flags> <bytes> [<cas unique>]. A block over max_value is
 * refused: it bounds what one backend unit may make us hold. */
static enum mc_status
mc_rsp_parse_value(struct mc_rsp *rsp, struct mc_cursor *cur,
                   const struct mc_limits *lim)
{
    const char *l = rsp->line;
    struct mc_token t[5];
    uint32_t n = 0;

    while (n < 5 && mc_cursor_next(cur, &t[n]))
        n++;
    if (n < 3 || n > 4 || t[0].len > MC_KEY_MAX)
        return MC_ERROR;
    rsp->key = t[0];
    if (!mc_parse_u32(l + t[1].off, t[1].len, &rsp->flags) ||
        !mc_parse_u32(l + t[2].off, t[2].len, &rsp->vlen) ||
        rsp->vlen > lim->max_value)
        return MC_ERROR;
    if (n == 4 && !mc_parse_u64(l + t[3].off, t[3].len, &rsp->cas))
        return MC_ERROR;
    rsp->has_cas = n == 4;
    return MC_OK;
}

static bool
mc_rsp_lookup(const char *line, uint32_t len, enum mc_rsp_type *type)
{
    for (unsigned i = 0; i < MC_RSP_COUNT; i++) {
        if (mc_rsp_words[i].len == len &&
            memcmp(line, mc_rsp_words[i].word, len) == 0) {
            *type = (enum mc_rsp_type)i;
            return true;
        }
    }
    return false;
}

enum mc_status
mc_rsp_parse(struct mc_rsp *rsp, const struct mc_limits *lim)
{
    struct mc_cursor cur = { rsp->line, (uint32_t)rsp->line_len, 0 };
    const char *sp;

    mc_rsp_clear(rsp);
    if (rsp->line_len == 0 || rsp->line_len > UINT32_MAX)
        return MC_ERROR;
    if (mc_parse_u64(rsp->line, cur.len, &rsp->number)) {
        rsp->type = MC_RSP_NUMBER;
        return MC_OK;
    }
    sp = memchr(rsp->line, ' ', cur.len);
    cur.pos = sp != NULL ? (uint32_t)(sp - rsp->line) : cur.len;
    /* The empty word of NUMBER never matches: cur.pos > 0 here. */
    if (cur.pos == 0 || !mc_rsp_lookup(rsp->line, cur.pos, &rsp->type))
        return MC_ERROR;
    switch (rsp->type) {
    case MC_RSP_VALUE:
        return mc_rsp_parse_value(rsp, &cur, lim);
    case MC_RSP_VERSION:
    case MC_RSP_ERROR:
    case MC_RSP_CLIENT_ERROR:
    case MC_RSP_SERVER_ERROR:
        return MC_OK; /* free text may follow */
    default:
        return cur.pos == cur.len ? MC_OK : MC_ERROR;
    }
}

/* The one-line replies a command may get besides the error lines. */
static bool
mc_rsp_fits_line(enum mc_cmd cmd, enum mc_rsp_type type)
{
    switch (cmd) {
    case MC_CMD_GET: case MC_CMD_GETS: case MC_CMD_GAT: case MC_CMD_GATS:
        return type == MC_RSP_END;
    case MC_CMD_SET: case MC_CMD_ADD: case MC_CMD_REPLACE:
    case MC_CMD_APPEND: case MC_CMD_PREPEND: case MC_CMD_CAS:
        return type == MC_RSP_STORED || type == MC_RSP_NOT_STORED ||
               type == MC_RSP_EXISTS || type == MC_RSP_NOT_FOUND;
    case MC_CMD_DELETE:
        return type == MC_RSP_DELETED || type == MC_RSP_NOT_FOUND;
    case MC_CMD_INCR: case MC_CMD_DECR:
        return type == MC_RSP_NUMBER || type == MC_RSP_NOT_FOUND;
    case MC_CMD_TOUCH:
        return type == MC_RSP_TOUCHED || type == MC_RSP_NOT_FOUND;
    case MC_CMD_FLUSH_ALL:
    case MC_CMD_VERBOSITY:
        return type == MC_RSP_OK;
    case MC_CMD_VERSION:
        return type == MC_RSP_VERSION;
    default:
        return false;
    }
}

bool
mc_rsp_fits(enum mc_cmd cmd, const struct mc_rsp *rsp)
{
    switch (rsp->type) {
    case MC_RSP_ERROR:
    case MC_RSP_CLIENT_ERROR:
    case MC_RSP_SERVER_ERROR:
        return cmd < MC_CMD_COUNT;
    case MC_RSP_VALUE:
        if (mc_cmd_kind(cmd) != MC_KIND_RETRIEVAL)
            return false;
        return rsp->has_cas == (cmd == MC_CMD_GETS || cmd == MC_CMD_GATS);
    default:
        return rsp->type < MC_RSP_COUNT && mc_rsp_fits_line(cmd, rsp->type);
    }
}
