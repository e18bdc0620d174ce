/* fuzz_redis_req: libFuzzer harness for RESP request framing
 * (redis_req_read). The input is a client's byte stream. It is fed whole,
 * a byte at a time, in chunks drawn from the input and cut after every
 * '\r'; each way must give the same sequence of results (status, error,
 * command, the request's bytes, every argument, the keys) and leave the
 * same bytes unread. Each result is checked against the contract in
 * proto_redis.h, and every request framed is composed again
 * (redis_compose_command from its arguments; for split commands one
 * server's share, every other key, with redis_compose_split) and framed
 * once more into the same command and keys. Stops at REDIS_FATAL, as the
 * client does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_redis.h"
#include "fuzz_split.h"

/* Small limits, so that the refusals are reached by short inputs. */
static const struct redis_limits fuzz_limits = {
    .max_bulk = 256, .max_args = 16, .max_request = 1024,
    .max_reply = 1024, .max_depth = 4,
};

static const struct redis_token *key_arg(const struct redis_req *req, uint32_t i)
{
    return &req->args[req->key_first + i * req->key_step];
}

/* The contract of one non-AGAIN result. */
static void check_req(const struct redis_req *req, enum redis_status st, const char *err)
{
    FUZZ_CHECK(st == REDIS_OK || st == REDIS_ERROR || st == REDIS_FATAL);
    if (st != REDIS_OK)
        FUZZ_CHECK(err != NULL);
    if (st == REDIS_FATAL)
        return;
    FUZZ_CHECK(req->buf != NULL && req->buf[req->len] == '\0');
    FUZZ_CHECK(req->len <= fuzz_limits.max_request);
    FUZZ_CHECK(req->nargs >= 1 && req->nargs <= fuzz_limits.max_args);
    FUZZ_CHECK(req->scan_off == 0 && req->scan_nargs == 0);
    for (uint32_t i = 0; i < req->nargs; i++) {
        FUZZ_CHECK(req->args[i].len <= fuzz_limits.max_bulk);
        FUZZ_CHECK((size_t)req->args[i].off + req->args[i].len + 2 <= req->len);
        FUZZ_CHECK(memcmp(req->buf + req->args[i].off + req->args[i].len, "\r\n", 2) == 0);
    }
    if (st == REDIS_ERROR) {
        FUZZ_CHECK(req->nkeys == 0);
        return;
    }
    FUZZ_CHECK(req->cmd != NULL);
    FUZZ_CHECK(req->nkeys == 0 || req->key_first +
               (uint64_t)(req->nkeys - 1) * req->key_step < req->nargs);
    FUZZ_CHECK((req->nkeys == 0) == (req->cmd->kind == REDIS_KIND_PROXY));
    if (req->cmd->kind == REDIS_KIND_PAIRS)
        FUZZ_CHECK(req->key_first + 2 * req->nkeys == req->nargs);
}

static void log_req(struct evbuffer *log, const struct redis_req *req,
                    enum redis_status st, const char *err)
{
    fuzz_log_u64(log, st);
    fuzz_log_str(log, st != REDIS_OK ? err : NULL);
    if (st == REDIS_FATAL)
        return;
    fuzz_log_str(log, req->cmd != NULL ? req->cmd->name : NULL);
    fuzz_log_bytes(log, req->buf, req->len);
    fuzz_log_u64(log, req->nargs);
    for (uint32_t i = 0; i < req->nargs; i++)
        fuzz_log_u64(log, ((uint64_t)req->args[i].off << 32) | req->args[i].len);
    fuzz_log_u64(log, req->key_first);
    fuzz_log_u64(log, req->key_step);
    fuzz_log_u64(log, req->nkeys);
}

/* `out` frames into one request with the same command as `req`, whose
 * keys are req's keys idx[0..n) (idx NULL: all of them, in order). */
static void check_frames_back(struct evbuffer *out, const struct redis_req *req,
                              const uint32_t *idx, uint32_t n)
{
    struct redis_req back;
    const char *err = NULL;

    redis_req_init(&back);
    FUZZ_CHECK(redis_req_read(out, &back, &fuzz_limits, &err) == REDIS_OK);
    FUZZ_CHECK(evbuffer_get_length(out) == 0);
    FUZZ_CHECK(back.cmd == req->cmd && back.nkeys == n);
    for (uint32_t i = 0; i < n; i++) {
        const struct redis_token *a = key_arg(&back, i);
        const struct redis_token *b = key_arg(req, idx != NULL ? idx[i] : i);

        FUZZ_CHECK(a->len == b->len);
        FUZZ_CHECK(memcmp(back.buf + a->off, req->buf + b->off, a->len) == 0);
    }
    redis_req_deinit(&back);
}

/* The request composed from its arguments is the same request, and one
 * server's share of a split command (every other key) is a request for
 * exactly those keys. */
static void check_roundtrip(const struct redis_req *req)
{
    struct evbuffer *out = evbuffer_new();
    const char **argv = malloc(req->nargs * sizeof(*argv));
    size_t *argvlen = malloc(req->nargs * sizeof(*argvlen));
    uint32_t *idx = malloc(req->nkeys * sizeof(*idx) + 1), n = 0;

    FUZZ_CHECK(out != NULL && argv != NULL && argvlen != NULL && idx != NULL);
    for (uint32_t i = 0; i < req->nargs; i++) {
        argv[i] = req->buf + req->args[i].off;
        argvlen[i] = req->args[i].len;
    }
    FUZZ_CHECK(redis_compose_command(out, req->nargs, argv, argvlen) == 0);
    FUZZ_CHECK(evbuffer_get_length(out) == req->len);
    FUZZ_CHECK(memcmp(evbuffer_pullup(out, -1), req->buf, req->len) == 0);
    check_frames_back(out, req, NULL, req->nkeys);
    if (req->cmd->kind == REDIS_KIND_MULTI || req->cmd->kind == REDIS_KIND_PAIRS) {
        for (uint32_t i = req->nkeys - 1; i < req->nkeys; i -= 2)
            idx[n++] = i;       /* backwards, every other key, the last first */
        FUZZ_CHECK(redis_compose_split(out, req, idx, n) == 0);
        check_frames_back(out, req, idx, n);
    }
    free(idx);
    free(argvlen);
    free(argv);
    evbuffer_free(out);
}

/* Frames every whole request in `in`. Returns true after REDIS_FATAL. */
static bool drain_requests(struct evbuffer *in, struct redis_req *req, struct evbuffer *log)
{
    for (;;) {
        size_t before = evbuffer_get_length(in);
        const char *err = NULL;
        enum redis_status st = redis_req_read(in, req, &fuzz_limits, &err);

        if (st == REDIS_AGAIN) {
            FUZZ_CHECK(evbuffer_get_length(in) == before);
            return false;
        }
        FUZZ_CHECK(st == REDIS_FATAL || evbuffer_get_length(in) == before - req->len);
        check_req(req, st, err);
        log_req(log, req, st, err);
        if (st == REDIS_OK)
            check_roundtrip(req);
        if (st == REDIS_FATAL)
            return true;
    }
}

static void run(const uint8_t *d, size_t n, enum fuzz_split how, struct evbuffer *log)
{
    struct evbuffer *in = evbuffer_new();
    struct fuzz_cutter cut;
    struct redis_req req;
    bool fatal = false;

    FUZZ_CHECK(in != NULL);
    redis_req_init(&req);
    fuzz_cutter_init(&cut, how, d, n);
    for (size_t pos = 0; pos < n && !fatal;) {
        size_t k = fuzz_cutter_next(&cut, d, pos, n);
        FUZZ_CHECK(evbuffer_add(in, d + pos, k) == 0);
        pos += k;
        fatal = drain_requests(in, &req, log);
    }
    if (!fatal)
        fuzz_log_u64(log, evbuffer_get_length(in));
    redis_req_deinit(&req);
    evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    fuzz_compare_splits(d, n, run, "redis_req_read");
    return 0;
}
