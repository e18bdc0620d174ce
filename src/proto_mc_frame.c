/* proto_mc_frame: cuts client requests and backend responses out of the
 * byte stream. A unit is a line, and for storage requests and VALUE
 * responses a data block; the line is copied out to be parsed, the block
 * is moved (evbuffer_remove_buffer: chains change hands, no pullup).
 *
 *   in: | line \r\n | data block | \r\n | line \r\n | ...
 *         |            |                  |
 *         copyout      remove_buffer      next call
 *         -> ->line    -> ->data
 *
 * Nothing is drained until a whole unit is there, so MC_AGAIN leaves the
 * input as it was and the next call starts over (re-parsing one short
 * line is cheaper than keeping state that must match the buffer). The one
 * exception is the data block of a request refused as too large: it is
 * dropped as it arrives (req->swallow), so it is never held in memory. */

#include <stdlib.h>

#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "proto_mc_int.h"

/* With no line end yet, the line is at least what has arrived, less a
 * final '\r' that may be the first half of "\r\n". MC_FATAL as soon as
 * that is over max_line, so the result does not depend on how the bytes
 * were split across reads. */
static enum mc_status
mc_frame_partial(struct evbuffer *in, size_t max_line)
{
    size_t n = evbuffer_get_length(in);
    struct evbuffer_ptr at;
    char last;

    if (n <= max_line)
        return MC_AGAIN;
    if (n > max_line + 1)
        return MC_FATAL;
    if (evbuffer_ptr_set(in, &at, n - 1, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(in, &at, &last, 1) != 1)
        return MC_FATAL;
    return last == '\r' ? MC_AGAIN : MC_FATAL;
}

/* Finds the first line of `in` ("\r\n" or a bare "\n" ends it): MC_OK with
 * *len (without its end) and *eol_len, MC_AGAIN, or MC_FATAL for a line
 * longer than max_line. */
static enum mc_status
mc_frame_find_line(struct evbuffer *in, size_t max_line, size_t *len,
                   size_t *eol_len)
{
    struct evbuffer_ptr eol;

    eol = evbuffer_search_eol(in, NULL, eol_len, EVBUFFER_EOL_CRLF);
    if (eol.pos < 0)
        return mc_frame_partial(in, max_line);
    *len = (size_t)eol.pos;
    return *len > max_line ? MC_FATAL : MC_OK;
}

/* Copies the first len bytes of `in` into *line, NUL-ended, growing it as
 * needed (the memory is kept for the next line). Returns 0 or -1. */
static int
mc_frame_copy_line(struct evbuffer *in, size_t len, char **line,
                   size_t *cap, size_t *line_len)
{
    if (len + 1 > *cap) {
        size_t n = *cap ? *cap : 128;
        char *p;

        while (n < len + 1)
            n *= 2;
        if ((p = realloc(*line, n)) == NULL)
            return -1;
        *line = p;
        *cap = n;
    }
    if (len > 0 && evbuffer_copyout(in, *line, len) != (ev_ssize_t)len)
        return -1;
    (*line)[len] = '\0';
    *line_len = len;
    return 0;
}

/* Makes *data an empty buffer, created on first use. Returns 0 or -1. */
static int
mc_frame_data_ready(struct evbuffer **data)
{
    if (*data == NULL)
        *data = evbuffer_new();
    else
        evbuffer_drain(*data, evbuffer_get_length(*data));
    return *data != NULL ? 0 : -1;
}

/* Drains the head line, moves the vlen-byte block into `data` and drains
 * the two bytes after it; the caller checked that all of it is there.
 * Returns 1 when those two bytes were "\r\n", 0 when not, -1 on error. */
static int
mc_frame_take_block(struct evbuffer *in, size_t head, struct evbuffer *data,
                    uint32_t vlen)
{
    char end[2];
    int n;

    evbuffer_drain(in, head);
    n = evbuffer_remove_buffer(in, data, vlen);
    if (n < 0 || (size_t)n != vlen)
        return -1;
    if (evbuffer_remove(in, end, 2) != 2)
        return -1;
    return end[0] == '\r' && end[1] == '\n';
}

/* ---- requests ---------------------------------------------------------- */

static enum mc_status
mc_req_fatal(const char **err, const char *why)
{
    *err = why;
    return MC_FATAL;
}

/* Drops what has arrived of an oversized data block. MC_AGAIN while some
 * is still to come, MC_ERROR once it is all gone. */
static enum mc_status
mc_req_swallow(struct evbuffer *in, struct mc_req *req, const char **err)
{
    size_t n = evbuffer_get_length(in);

    if (n > req->swallow)
        n = (size_t)req->swallow;
    evbuffer_drain(in, n);
    req->swallow -= n;
    if (req->swallow > 0)
        return MC_AGAIN;
    *err = MC_ERR_TOO_LARGE;
    return MC_ERROR;
}

/* Storage command whose line parsed to st (MC_OK, or MC_ERROR with a block
 * of acceptable size): takes line and block once both are there. head is
 * the length of the line with its end. */
static enum mc_status
mc_req_read_block(struct evbuffer *in, struct mc_req *req, size_t head,
                  enum mc_status st, const char **err)
{
    size_t whole = head + (size_t)req->vlen + 2;
    int rc;

    if (evbuffer_get_length(in) < whole)
        return MC_AGAIN;
    if (st != MC_OK) {
        evbuffer_drain(in, whole);
        return st;
    }
    if (mc_frame_data_ready(&req->data) != 0)
        return mc_req_fatal(err, MC_ERR_NOMEM);
    rc = mc_frame_take_block(in, head, req->data, req->vlen);
    if (rc < 0)
        return mc_req_fatal(err, MC_ERR_NOMEM);
    if (rc == 0) {
        evbuffer_drain(req->data, evbuffer_get_length(req->data));
        *err = MC_ERR_CHUNK;
        return MC_ERROR;
    }
    return MC_OK;
}

/* Routes a parsed line: lines without data are consumed at once; storage
 * lines, rejected ones too (their block is data, never commands), wait
 * for their block, or start dropping it when it is too big to hold
 * (mc_req_parse reports that before any other fault). */
static enum mc_status
mc_req_take(struct evbuffer *in, struct mc_req *req, size_t head,
            enum mc_status st, const struct mc_limits *lim, const char **err)
{
    if (mc_cmd_kind(req->cmd) != MC_KIND_STORAGE) {
        evbuffer_drain(in, head);
        return st;
    }
    if (st == MC_ERROR && req->vlen > lim->max_value) {
        evbuffer_drain(in, head);
        req->swallow = (uint64_t)req->vlen + 2;
        return mc_req_swallow(in, req, err);
    }
    return mc_req_read_block(in, req, head, st, err);
}

enum mc_status
mc_req_read(struct evbuffer *in, struct mc_req *req,
            const struct mc_limits *lim, const char **err)
{
    size_t len, eol_len;
    enum mc_status st;

    if (req->swallow > 0)
        return mc_req_swallow(in, req, err);
    st = mc_frame_find_line(in, lim->max_line, &len, &eol_len);
    if (st != MC_OK)
        return st == MC_FATAL ? mc_req_fatal(err, MC_ERR_LINE_LONG) : st;
    if (mc_frame_copy_line(in, len, &req->line, &req->line_cap,
                           &req->line_len) != 0)
        return mc_req_fatal(err, MC_ERR_NOMEM);
    st = mc_req_parse(req, lim, err);
    if (st == MC_FATAL)
        return st;
    return mc_req_take(in, req, len + eol_len, st, lim, err);
}

/* ---- responses --------------------------------------------------------- */

enum mc_status
mc_rsp_read(struct evbuffer *in, struct mc_rsp *rsp,
            const struct mc_limits *lim)
{
    size_t len, eol_len, head;
    enum mc_status st;

    st = mc_frame_find_line(in, lim->max_line, &len, &eol_len);
    if (st != MC_OK)
        return st;
    if (mc_frame_copy_line(in, len, &rsp->line, &rsp->line_cap,
                           &rsp->line_len) != 0)
        return MC_FATAL;
    if (mc_rsp_parse(rsp, lim) != MC_OK)
        return MC_FATAL;
    head = len + eol_len;
    if (rsp->type != MC_RSP_VALUE) {
        evbuffer_drain(in, head);
        return MC_OK;
    }
    if (evbuffer_get_length(in) < head + (size_t)rsp->vlen + 2)
        return MC_AGAIN;
    if (mc_frame_data_ready(&rsp->data) != 0 ||
        mc_frame_take_block(in, head, rsp->data, rsp->vlen) != 1)
        return MC_FATAL;
    return MC_OK;
}
