/* fuzz_redis_rsp: libFuzzer harness for RESP reply framing
 * (redis_rsp_read). The input is a backend's byte stream. It is fed
 * whole, a byte at a time, in chunks drawn from the input and cut after
 * every '\r'; each way must give the same sequence of results (type,
 * nil, integer, count, the reply's bytes, the top-level element spans)
 * and leave the same bytes unread. Each reply is checked against the
 * contract in proto_redis.h; the elements of an array, copied out with
 * redis_compose_element after a new header, frame back into an array of
 * the same elements, and taken in order with redis_compose_take_element
 * they are the reply's bytes after its head. Stops at REDIS_FATAL, as
 * the backend connection does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_redis.h"
#include "fuzz_split.h"

static const struct redis_limits fuzz_limits = {
    .max_bulk = 256, .max_args = 16, .max_request = 1024,
    .max_reply = 1024, .max_depth = 4,
};

static void check_rsp(const struct redis_rsp *rsp)
{
    size_t len = evbuffer_get_length(rsp->data), next;

    FUZZ_CHECK(len >= 3 && len <= fuzz_limits.max_reply);
    FUZZ_CHECK(rsp->scan_off == 0 && rsp->depth == 0);
    FUZZ_CHECK(rsp->nil == (rsp->count == -1));
    if (rsp->type == REDIS_RSP_BULK && !rsp->nil)
        FUZZ_CHECK((size_t)rsp->count + 5 <= len);
    if (rsp->type != REDIS_RSP_ARRAY || rsp->count <= 0) {
        FUZZ_CHECK(rsp->nelems == 0);
        return;
    }
    FUZZ_CHECK(rsp->nelems == rsp->count);
    /* the elements tile the reply after its head, in order */
    next = rsp->elems[0].off;
    for (int64_t i = 0; i < rsp->count; i++) {
        FUZZ_CHECK(rsp->elems[i].off == next && rsp->elems[i].len >= 3);
        next += rsp->elems[i].len;
    }
    FUZZ_CHECK(next == len);
}

static void log_rsp(struct evbuffer *log, const struct redis_rsp *rsp)
{
    fuzz_log_u64(log, (uint64_t)rsp->type);
    fuzz_log_u64(log, rsp->nil);
    fuzz_log_u64(log, (uint64_t)rsp->integer);
    fuzz_log_u64(log, (uint64_t)rsp->count);
    fuzz_log_buffer(log, rsp->data);
    for (uint32_t i = 0; i < rsp->nelems; i++) {
        fuzz_log_u64(log, rsp->elems[i].off);
        fuzz_log_u64(log, rsp->elems[i].len);
    }
}

/* A new array of rsp's elements, last first, frames back into an array
 * whose element i has the bytes of rsp's element count-1-i. */
static void check_elements_roundtrip(const struct redis_rsp *rsp)
{
    struct evbuffer *out = evbuffer_new();
    struct redis_rsp back;
    const char *a, *b;
    uint32_t n = (uint32_t)rsp->count;

    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(redis_compose_array_header(out, n) == 0);
    for (uint32_t i = n; i-- > 0;)
        FUZZ_CHECK(redis_compose_element(out, rsp, i) == 0);
    FUZZ_CHECK(redis_compose_element(out, rsp, n) == -1);
    redis_rsp_init(&back);
    back.want_elems = true;
    FUZZ_CHECK(redis_rsp_read(out, &back, &fuzz_limits) == REDIS_OK);
    FUZZ_CHECK(evbuffer_get_length(out) == 0);
    FUZZ_CHECK(back.type == REDIS_RSP_ARRAY && back.count == rsp->count);
    a = (const char *)evbuffer_pullup(back.data, -1);
    b = (const char *)evbuffer_pullup(rsp->data, -1);
    for (uint32_t i = 0; i < n; i++) {
        FUZZ_CHECK(back.elems[i].len == rsp->elems[n - 1 - i].len);
        FUZZ_CHECK(memcmp(a + back.elems[i].off, b + rsp->elems[n - 1 - i].off,
                          back.elems[i].len) == 0);
    }
    redis_rsp_deinit(&back);
    evbuffer_free(out);
}

/* Taking every element in order (redis_compose_take_element) gives the
 * reply's bytes after its head, and leaves rsp->data empty. */
static void check_elements_taken(struct redis_rsp *rsp)
{
    struct evbuffer *out = evbuffer_new(), *copy = evbuffer_new();
    size_t head = rsp->elems[0].off, len = evbuffer_get_length(rsp->data);

    FUZZ_CHECK(out != NULL && copy != NULL);
    FUZZ_CHECK(evbuffer_add(copy, evbuffer_pullup(rsp->data, -1), len) == 0);
    for (uint32_t i = 0; i < rsp->nelems; i++)
        FUZZ_CHECK(redis_compose_take_element(out, rsp, i) == 0);
    FUZZ_CHECK(redis_compose_take_element(out, rsp, 0) == -1);
    FUZZ_CHECK(evbuffer_get_length(rsp->data) == 0);
    FUZZ_CHECK(evbuffer_get_length(out) == len - head);
    FUZZ_CHECK(memcmp(evbuffer_pullup(out, -1),
                      (const char *)evbuffer_pullup(copy, -1) + head, len - head) == 0);
    evbuffer_free(out);
    evbuffer_free(copy);
}

/* Frames every whole reply in `in`. Returns true after REDIS_FATAL. */
static bool drain_replies(struct evbuffer *in, struct redis_rsp *rsp, struct evbuffer *log)
{
    for (;;) {
        size_t before = evbuffer_get_length(in);
        enum redis_status st = redis_rsp_read(in, rsp, &fuzz_limits);

        if (st == REDIS_AGAIN) {
            FUZZ_CHECK(evbuffer_get_length(in) == before);
            return false;
        }
        FUZZ_CHECK(st == REDIS_OK || st == REDIS_FATAL);
        fuzz_log_u64(log, st);
        if (st == REDIS_FATAL)
            return true;
        FUZZ_CHECK(evbuffer_get_length(in) == before - evbuffer_get_length(rsp->data));
        check_rsp(rsp);
        log_rsp(log, rsp);
        if (rsp->type == REDIS_RSP_ARRAY && rsp->count > 0) {
            check_elements_roundtrip(rsp);
            check_elements_taken(rsp);
        }
    }
}

static void run(const uint8_t *d, size_t n, enum fuzz_split how, struct evbuffer *log)
{
    struct evbuffer *in = evbuffer_new();
    struct fuzz_cutter cut;
    struct redis_rsp rsp;
    bool fatal = false;

    FUZZ_CHECK(in != NULL);
    redis_rsp_init(&rsp);
    rsp.want_elems = true;
    fuzz_cutter_init(&cut, how, d, n);
    for (size_t pos = 0; pos < n && !fatal;) {
        size_t k = fuzz_cutter_next(&cut, d, pos, n);
        FUZZ_CHECK(evbuffer_add(in, d + pos, k) == 0);
        pos += k;
        fatal = drain_replies(in, &rsp, log);
    }
    if (!fatal)
        fuzz_log_u64(log, evbuffer_get_length(in));
    redis_rsp_deinit(&rsp);
    evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    fuzz_compare_splits(d, n, run, "redis_rsp_read");
    return 0;
}
