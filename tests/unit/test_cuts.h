/* test_cuts: feeds a byte stream to an incremental framer in one read, in
 * two reads cut at every point, and a byte per read, and checks every way
 * logs the same results. The framer is given as a drain function that
 * frames all it can from the input into a log. Include after <cmocka.h>
 * and test_sbuf.h. */
#ifndef STRATA_TEST_CUTS_H
#define STRATA_TEST_CUTS_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

/* A string literal as (pointer, length), NULs inside included. */
#define S(lit) lit, sizeof(lit) - 1

struct test_framer {
    void *(*create)(void);              /* a fresh request or reply */
    void  (*destroy)(void *obj);
    /* Frames every whole unit in `in` into the log; returns true once
     * the stream can no longer be framed. Must consume nothing when it
     * stops for more bytes. */
    bool  (*drain)(struct evbuffer *in, void *obj, struct sbuf *log);
};

/* The log of reading s[0..n) cut at cuts[0..ncut) (ascending). */
static inline void
test_cuts_run(const struct test_framer *fr, const char *s, size_t n,
              const size_t *cuts, size_t ncut, struct sbuf *log)
{
    struct evbuffer *in = evbuffer_new();
    void *obj = fr->create();
    size_t pos = 0;
    bool fatal = false;

    assert_non_null(in);
    for (size_t c = 0; c <= ncut && !fatal; c++) {
        size_t to = c < ncut ? cuts[c] : n;

        evbuffer_add(in, s + pos, to - pos);
        pos = to;
        fatal = fr->drain(in, obj, log);
    }
    if (!fatal)
        sbuf_printf(log, "left %zu\n", evbuffer_get_length(in));
    fr->destroy(obj);
    evbuffer_free(in);
}

static inline void
test_cuts_assert_same(const struct test_framer *fr, const char *s, size_t n,
                      const size_t *cuts, size_t ncut, const struct sbuf *whole)
{
    struct sbuf log = { 0 };

    test_cuts_run(fr, s, n, cuts, ncut, &log);
    if (log.len != whole->len || memcmp(log.p, whole->p, log.len) != 0)
        fail_msg("cut at %zu of %zu:\n%s\nwhole:\n%s", ncut ? cuts[0] : 0, n,
                 log.p, whole->p);
    free(log.p);
}

/* s[0..n) logs the same whole, cut in two anywhere, and a byte per read. */
static inline void
test_cuts_everywhere(const struct test_framer *fr, const char *s, size_t n)
{
    size_t *bytes = malloc((n + 1) * sizeof(size_t));
    struct sbuf whole = { 0 };

    assert_non_null(bytes);
    test_cuts_run(fr, s, n, NULL, 0, &whole);
    for (size_t k = 1; k < n; k++) {
        test_cuts_assert_same(fr, s, n, &k, 1, &whole);
        bytes[k - 1] = k;
    }
    test_cuts_assert_same(fr, s, n, bytes, n - 1, &whole);
    free(bytes);
    free(whole.p);
}

#endif
