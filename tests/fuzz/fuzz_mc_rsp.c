/* fuzz_mc_rsp: libFuzzer harness for backend response framing
 * (mc_rsp_read). The input is a byte stream from a backend. It is fed
 * whole, a byte at a time, in chunks drawn from the input and cut after
 * every '\r'; each way must give the same sequence of results (status,
 * type and fields, the VALUE data) and leave the same bytes unread. Each
 * result is also checked against the contract in proto_mc.h, and each
 * VALUE composed for a client (mc_compose_value) frames back into the
 * same unit. Stops at MC_FATAL, as the backend connection does (it
 * resets). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "fuzz_split.h"

static const struct mc_limits fuzz_limits = {
    .max_line = 512, .max_value = 1024, .read_chunk = 16384,
};

static void check_rsp(const struct mc_rsp *rsp, enum mc_status st)
{
    FUZZ_CHECK(st == MC_OK || st == MC_FATAL);
    if (st != MC_OK)
        return;
    FUZZ_CHECK(rsp->type < MC_RSP_COUNT);
    FUZZ_CHECK(rsp->line != NULL && rsp->line[rsp->line_len] == '\0');
    FUZZ_CHECK(rsp->line_len <= fuzz_limits.max_line);
    if (rsp->type != MC_RSP_VALUE)
        return;
    FUZZ_CHECK(rsp->key.len > 0 && rsp->key.len <= MC_KEY_MAX);
    FUZZ_CHECK((size_t)rsp->key.off + rsp->key.len <= rsp->line_len);
    FUZZ_CHECK(rsp->vlen <= fuzz_limits.max_value);
    FUZZ_CHECK(rsp->data != NULL && evbuffer_get_length(rsp->data) == rsp->vlen);
}

static void log_rsp(struct evbuffer *log, const struct mc_rsp *rsp, enum mc_status st)
{
    fuzz_log_u64(log, st);
    if (st != MC_OK)
        return;
    fuzz_log_u64(log, rsp->type);
    fuzz_log_bytes(log, rsp->line, rsp->line_len);
    fuzz_log_u64(log, ((uint64_t)rsp->key.off << 32) | rsp->key.len);
    fuzz_log_u64(log, rsp->flags);
    fuzz_log_u64(log, rsp->vlen);
    fuzz_log_u64(log, rsp->cas);
    fuzz_log_u64(log, rsp->has_cas);
    fuzz_log_u64(log, rsp->number);
    if (rsp->type == MC_RSP_VALUE)
        fuzz_log_buffer(log, rsp->data);
}

/* A VALUE unit as a client gets it (mc_compose_value, which moves the
 * data out of rsp) frames back into the same unit. */
static void check_value_roundtrip(struct mc_rsp *rsp)
{
    struct evbuffer *out = evbuffer_new(), *data = evbuffer_new();
    struct mc_rsp back;

    FUZZ_CHECK(out != NULL && data != NULL);
    fuzz_log_buffer(data, rsp->data);     /* a copy, with its length first */
    FUZZ_CHECK(mc_compose_value(out, rsp) == 0);
    mc_rsp_init(&back);
    FUZZ_CHECK(mc_rsp_read(out, &back, &fuzz_limits) == MC_OK);
    FUZZ_CHECK(evbuffer_get_length(out) == 0);
    FUZZ_CHECK(back.type == MC_RSP_VALUE && back.flags == rsp->flags);
    FUZZ_CHECK(back.vlen == rsp->vlen && back.cas == rsp->cas && back.has_cas == rsp->has_cas);
    FUZZ_CHECK(back.key.len == rsp->key.len &&
               memcmp(back.line + back.key.off, rsp->line + rsp->key.off, back.key.len) == 0);
    fuzz_log_buffer(out, back.data);      /* the data as framed back */
    FUZZ_CHECK(evbuffer_get_length(out) == evbuffer_get_length(data));
    FUZZ_CHECK(memcmp(evbuffer_pullup(out, -1), evbuffer_pullup(data, -1),
                      evbuffer_get_length(data)) == 0);
    mc_rsp_deinit(&back);
    evbuffer_free(data);
    evbuffer_free(out);
}

/* Frames every whole unit in `in`. Returns true after MC_FATAL. */
static bool drain_responses(struct evbuffer *in, struct mc_rsp *rsp, struct evbuffer *log)
{
    for (;;) {
        size_t before = evbuffer_get_length(in);
        enum mc_status st = mc_rsp_read(in, rsp, &fuzz_limits);

        if (st == MC_AGAIN) {
            FUZZ_CHECK(evbuffer_get_length(in) == before);
            return false;
        }
        FUZZ_CHECK(evbuffer_get_length(in) <= before);
        check_rsp(rsp, st);
        log_rsp(log, rsp, st);
        if (st == MC_OK && rsp->type == MC_RSP_VALUE)
            check_value_roundtrip(rsp);
        mc_rsp_reset(rsp);
        if (st == MC_FATAL)
            return true;
    }
}

static void run(const uint8_t *d, size_t n, enum fuzz_split how, struct evbuffer *log)
{
    struct evbuffer *in = evbuffer_new();
    struct fuzz_cutter cut;
    struct mc_rsp rsp;
    bool fatal = false;

    FUZZ_CHECK(in != NULL);
    mc_rsp_init(&rsp);
    fuzz_cutter_init(&cut, how, d, n);
    for (size_t pos = 0; pos < n && !fatal;) {
        size_t k = fuzz_cutter_next(&cut, d, pos, n);
        FUZZ_CHECK(evbuffer_add(in, d + pos, k) == 0);
        pos += k;
        fatal = drain_responses(in, &rsp, log);
    }
    if (!fatal)
        fuzz_log_u64(log, evbuffer_get_length(in));
    mc_rsp_deinit(&rsp);
    evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    fuzz_compare_splits(d, n, run, "mc_rsp_read");
    return 0;
}
