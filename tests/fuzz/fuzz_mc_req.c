/* fuzz_mc_req: libFuzzer harness for client request framing (mc_req_read).
 * The input is a byte stream from a client. It is fed whole, a byte at a
 * time, in chunks drawn from the input and cut after every '\r'; each way
 * must give the same sequence of results (status, error, every parsed
 * field, the data block) and leave the same bytes unread. Each result is
 * also checked against the contract in proto_mc.h, and every request
 * framed is composed again as a backend gets it (mc_req_compose_line and
 * its data block) and framed once more: it must give the same request,
 * less noreply (not for version, quit, verbosity and stats, which the
 * proxy answers itself), and one server's share of a multiget frames
 * back into a get of exactly those keys. Stops at MC_FATAL, as the client
 * does (it replies and closes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "fuzz_split.h"

/* Small limits, so that long lines and oversized blocks are reached. */
static const struct mc_limits fuzz_limits = {
    .max_line = 512, .max_value = 1024, .read_chunk = 16384,
};

/* The contract of one non-AGAIN result. */
static void check_req(const struct mc_req *req, enum mc_status st, const char *err)
{
    FUZZ_CHECK(st == MC_OK || st == MC_ERROR || st == MC_FATAL || st == MC_UNKNOWN);
    if (st == MC_ERROR || st == MC_FATAL)
        FUZZ_CHECK(err != NULL);
    if (st != MC_OK)
        return;
    FUZZ_CHECK(req->cmd < MC_CMD_COUNT);
    FUZZ_CHECK(req->line != NULL && req->line[req->line_len] == '\0');
    FUZZ_CHECK(req->line_len <= fuzz_limits.max_line);
    for (uint32_t i = 0; i < req->nkeys; i++) {
        FUZZ_CHECK(req->keys[i].len > 0 && req->keys[i].len <= MC_KEY_MAX);
        FUZZ_CHECK((size_t)req->keys[i].off + req->keys[i].len <= req->line_len);
    }
    FUZZ_CHECK((size_t)req->arg.off + req->arg.len <= req->line_len);
    switch (mc_cmd_kind(req->cmd)) {
    case MC_KIND_RETRIEVAL:   /* "gat 10": no key, answered END by the proxy */
        FUZZ_CHECK(req->nkeys >= 1 || req->cmd == MC_CMD_GAT || req->cmd == MC_CMD_GATS);
        break;
    case MC_KIND_STORAGE:
        FUZZ_CHECK(req->nkeys == 1 && req->vlen <= fuzz_limits.max_value);
        FUZZ_CHECK(req->data != NULL && evbuffer_get_length(req->data) == req->vlen);
        break;
    case MC_KIND_KEYED:
        FUZZ_CHECK(req->nkeys == 1);
        break;
    default:
        break;
    }
}

static bool same_token(const struct mc_req *a, struct mc_token ta,
                       const struct mc_req *b, struct mc_token tb)
{
    return ta.len == tb.len && memcmp(a->line + ta.off, b->line + tb.off, ta.len) == 0;
}

static bool same_data(struct evbuffer *a, struct evbuffer *b)
{
    size_t n = a != NULL ? evbuffer_get_length(a) : 0;

    if (n != (b != NULL ? evbuffer_get_length(b) : 0))
        return false;
    return n == 0 || memcmp(evbuffer_pullup(a, -1), evbuffer_pullup(b, -1), n) == 0;
}

/* What a backend would be sent for `req` frames back into the same
 * request (noreply is the proxy's and is not sent). */
static void check_roundtrip(struct mc_req *req)
{
    struct mc_limits lim = fuzz_limits;
    struct evbuffer *out = evbuffer_new();
    struct mc_req back;
    const char *err = NULL;

    lim.max_line += 128;    /* numbers are re-written in their shortest form */
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(mc_req_compose_line(out, req, NULL, 0) == 0);
    if (mc_cmd_kind(req->cmd) == MC_KIND_STORAGE)
        FUZZ_CHECK(mc_compose_block(out, req->data, true) == 0);
    mc_req_init(&back);
    size_t n = evbuffer_get_length(out);
    char *sent = malloc(n + 1);
    FUZZ_CHECK(sent != NULL && evbuffer_copyout(out, sent, n) == (ev_ssize_t)n);
    enum mc_status st = mc_req_read(out, &back, &lim, &err);
    if (st != MC_OK)
        fprintf(stderr, "request line: \"%.*s\"\nsent as: \"%.*s\" -> %d %s\n",
                (int)req->line_len, req->line, (int)n, sent, (int)st, err ? err : "");
    free(sent);
    FUZZ_CHECK(st == MC_OK);
    FUZZ_CHECK(evbuffer_get_length(out) == 0);
    FUZZ_CHECK(back.cmd == req->cmd && back.nkeys == req->nkeys);
    for (uint32_t i = 0; i < req->nkeys; i++)
        FUZZ_CHECK(same_token(&back, back.keys[i], req, req->keys[i]));
    FUZZ_CHECK(back.flags == req->flags && back.exptime == req->exptime);
    FUZZ_CHECK(back.vlen == req->vlen && back.cas == req->cas);
    FUZZ_CHECK(back.delta == req->delta && !back.noreply);
    FUZZ_CHECK(same_token(&back, back.arg, req, req->arg));
    FUZZ_CHECK(same_data(back.data, req->data));
    mc_req_deinit(&back);
    evbuffer_free(out);
}

/* One server's share of a multiget (every other key, as the router may
 * split it) frames back into a request for exactly those keys. */
static void check_split_get(const struct mc_req *req)
{
    struct evbuffer *out = evbuffer_new();
    uint32_t idx[MC_KEY_MAX], n = 0;
    struct mc_limits lim = fuzz_limits;
    struct mc_req back;
    const char *err = NULL;

    FUZZ_CHECK(out != NULL);
    for (uint32_t i = 1; i < req->nkeys && n < MC_KEY_MAX; i += 2)
        idx[n++] = i;
    lim.max_line += 128;
    FUZZ_CHECK(mc_req_compose_line(out, req, idx, n) == 0);
    mc_req_init(&back);
    FUZZ_CHECK(mc_req_read(out, &back, &lim, &err) == MC_OK);
    FUZZ_CHECK(back.cmd == req->cmd && back.nkeys == n && back.exptime == req->exptime);
    for (uint32_t i = 0; i < n; i++)
        FUZZ_CHECK(same_token(&back, back.keys[i], req, req->keys[idx[i]]));
    mc_req_deinit(&back);
    evbuffer_free(out);
}

static void log_req(struct evbuffer *log, const struct mc_req *req,
                    enum mc_status st, const char *err)
{
    fuzz_log_u64(log, st);
    fuzz_log_str(log, st == MC_OK ? NULL : err);
    if (st != MC_OK)
        return;
    fuzz_log_u64(log, req->cmd);
    fuzz_log_bytes(log, req->line, req->line_len);
    fuzz_log_u64(log, req->nkeys);
    for (uint32_t i = 0; i < req->nkeys; i++)
        fuzz_log_u64(log, ((uint64_t)req->keys[i].off << 32) | req->keys[i].len);
    fuzz_log_u64(log, req->flags);
    fuzz_log_u64(log, (uint64_t)req->exptime);
    fuzz_log_u64(log, req->vlen);
    fuzz_log_u64(log, req->cas);
    fuzz_log_u64(log, req->delta);
    fuzz_log_u64(log, req->noreply);
    fuzz_log_u64(log, ((uint64_t)req->arg.off << 32) | req->arg.len);
    if (mc_cmd_kind(req->cmd) == MC_KIND_STORAGE)
        fuzz_log_buffer(log, req->data);
}

/* Frames every whole request in `in`. Returns true after MC_FATAL. */
static bool drain_requests(struct evbuffer *in, struct mc_req *req, struct evbuffer *log)
{
    for (;;) {
        size_t before = evbuffer_get_length(in);
        const char *err = NULL;
        enum mc_status st = mc_req_read(in, req, &fuzz_limits, &err);

        if (st == MC_AGAIN) {
            /* Nothing consumed, unless an oversized block is being dropped. */
            FUZZ_CHECK(req->swallow > 0 || evbuffer_get_length(in) == before);
            return false;
        }
        FUZZ_CHECK(evbuffer_get_length(in) <= before);
        check_req(req, st, err);
        /* Commands the proxy answers itself are never sent on. */
        /* Only what reaches a backend is composed: not what the proxy
         * answers itself (its commands, a "gat 10" with no key). */
        if (st == MC_OK && mc_cmd_kind(req->cmd) != MC_KIND_PROXY &&
            !(mc_cmd_kind(req->cmd) == MC_KIND_RETRIEVAL && req->nkeys == 0))
            check_roundtrip(req);
        if (st == MC_OK && mc_cmd_kind(req->cmd) == MC_KIND_RETRIEVAL && req->nkeys >= 2)
            check_split_get(req);
        log_req(log, req, st, err);
        mc_req_reset(req);
        if (st == MC_FATAL)
            return true;
    }
}

static void run(const uint8_t *d, size_t n, enum fuzz_split how, struct evbuffer *log)
{
    struct evbuffer *in = evbuffer_new();
    struct fuzz_cutter cut;
    struct mc_req req;
    bool fatal = false;

    FUZZ_CHECK(in != NULL);
    mc_req_init(&req);
    fuzz_cutter_init(&cut, how, d, n);
    for (size_t pos = 0; pos < n && !fatal;) {
        size_t k = fuzz_cutter_next(&cut, d, pos, n);
        FUZZ_CHECK(evbuffer_add(in, d + pos, k) == 0);
        pos += k;
        fatal = drain_requests(in, &req, log);
    }
    if (!fatal)
        fuzz_log_u64(log, evbuffer_get_length(in));
    mc_req_deinit(&req);
    evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    fuzz_compare_splits(d, n, run, "mc_req_read");
    return 0;
}
