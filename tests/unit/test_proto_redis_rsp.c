/* Unit tests of proto_redis replies: framing of every reply type, nested
 * arrays and their top-level elements, garbage and limits, results that
 * do not depend on how the stream is split, work linear in the reply
 * (position lookups counted through -Wl,--wrap=evbuffer_ptr_set), the
 * element array given back after a big reply, and replies against their
 * command (redis_rsp_fits). */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/proto_redis.h"

#include "test_ptr_count.h"
#include "test_sbuf.h"
#include "test_cuts.h"

static const struct redis_limits lim = {
    .max_bulk = 1024, .max_args = 64, .max_request = 4096,
    .max_reply = 4096, .max_depth = 4,
};


struct fixture {
    struct redis_rsp  rsp;
    struct evbuffer  *in;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL || (f->in = evbuffer_new()) == NULL)
        return -1;
    redis_rsp_init(&f->rsp);
    f->rsp.want_elems = true;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    redis_rsp_deinit(&f->rsp);
    evbuffer_free(f->in);
    free(f);
    return 0;
}

static enum redis_status
read_rsp(struct fixture *f, const char *s, size_t n, const struct redis_limits *l)
{
    evbuffer_drain(f->in, evbuffer_get_length(f->in));
    evbuffer_add(f->in, s, n);
    redis_rsp_reset(&f->rsp);
    return redis_rsp_read(f->in, &f->rsp, l);
}

/* The reply's bytes are exactly s[0..n). */
static void
assert_data(const struct redis_rsp *rsp, const char *s, size_t n)
{
    assert_non_null(rsp->data);
    assert_int_equal(evbuffer_get_length(rsp->data), n);
    assert_memory_equal(evbuffer_pullup(rsp->data, -1), s, n);
}

static void
assert_elem(const struct redis_rsp *rsp, uint32_t i, const char *s)
{
    size_t n = strlen(s);
    const char *p = (const char *)evbuffer_pullup(rsp->data, -1);

    assert_true((int64_t)i < rsp->count);
    assert_true(i < rsp->nelems);
    assert_int_equal(rsp->elems[i].len, n);
    assert_memory_equal(p + rsp->elems[i].off, s, n);
}

/* ---- every type ---------------------------------------------------------- */

static void
test_scalars(void **state)
{
    static const struct {
        const char         *s;
        size_t              n;
        enum redis_rsp_type type;
        bool                nil;
        int64_t             integer;
        int64_t             count;
    } cases[] = {
        { S("+OK\r\n"), REDIS_RSP_STATUS, false, 0, 0 },
        { S("+\r\n"), REDIS_RSP_STATUS, false, 0, 0 },
        { S("-ERR unknown command 'x'\r\n"), REDIS_RSP_ERROR, false, 0, 0 },
        { S(":0\r\n"), REDIS_RSP_INTEGER, false, 0, 0 },
        { S(":-42\r\n"), REDIS_RSP_INTEGER, false, -42, 0 },
        { S(":9223372036854775807\r\n"), REDIS_RSP_INTEGER, false, INT64_MAX, 0 },
        { S(":-9223372036854775807\r\n"), REDIS_RSP_INTEGER, false, -INT64_MAX, 0 },
        { S("$3\r\nfoo\r\n"), REDIS_RSP_BULK, false, 0, 3 },
        { S("$0\r\n\r\n"), REDIS_RSP_BULK, false, 0, 0 },
        { S("$-1\r\n"), REDIS_RSP_BULK, true, 0, -1 },
        { S("$6\r\n\r\n\r\n\r\n\r\n"), REDIS_RSP_BULK, false, 0, 6 },
        { S("*0\r\n"), REDIS_RSP_ARRAY, false, 0, 0 },
        { S("*-1\r\n"), REDIS_RSP_ARRAY, true, 0, -1 },
    };
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (read_rsp(f, cases[i].s, cases[i].n, &lim) != REDIS_OK)
            fail_msg("case %zu not framed", i);
        assert_int_equal(f->rsp.type, cases[i].type);
        assert_int_equal(f->rsp.nil, cases[i].nil);
        assert_true(f->rsp.integer == cases[i].integer);
        assert_true(f->rsp.count == cases[i].count);
        assert_data(&f->rsp, cases[i].s, cases[i].n);
        assert_int_equal(evbuffer_get_length(f->in), 0);
    }
}

static void
test_array_elements(void **state)
{
    static const char r[] = "*5\r\n$3\r\nfoo\r\n$-1\r\n:7\r\n-ERR x\r\n+OK\r\n";
    struct fixture *f = *state;

    assert_int_equal(read_rsp(f, S(r), &lim), REDIS_OK);
    assert_int_equal(f->rsp.type, REDIS_RSP_ARRAY);
    assert_int_equal(f->rsp.count, 5);
    assert_false(f->rsp.nil);
    assert_data(&f->rsp, S(r));
    assert_elem(&f->rsp, 0, "$3\r\nfoo\r\n");
    assert_elem(&f->rsp, 1, "$-1\r\n");
    assert_elem(&f->rsp, 2, ":7\r\n");
    assert_elem(&f->rsp, 3, "-ERR x\r\n");
    assert_elem(&f->rsp, 4, "+OK\r\n");
}

static void
test_nested_arrays(void **state)
{
    static const char r[] = "*4\r\n*2\r\n*1\r\n:1\r\n*0\r\n$1\r\na\r\n*-1\r\n"
                            "*2\r\n$1\r\nb\r\n*1\r\n+x\r\n";
    struct fixture *f = *state;

    assert_int_equal(read_rsp(f, S(r), &lim), REDIS_OK);
    assert_int_equal(f->rsp.count, 4);
    assert_int_equal(f->rsp.depth, 0);
    assert_elem(&f->rsp, 0, "*2\r\n*1\r\n:1\r\n*0\r\n");
    assert_elem(&f->rsp, 1, "$1\r\na\r\n");
    assert_elem(&f->rsp, 2, "*-1\r\n");
    assert_elem(&f->rsp, 3, "*2\r\n$1\r\nb\r\n*1\r\n+x\r\n");
}

static void
test_pipelined(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(read_rsp(f, S("*1\r\n:1\r\n+OK\r\n$2\r\nab\r\n:"), &lim), REDIS_OK);
    assert_int_equal(f->rsp.type, REDIS_RSP_ARRAY);
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
    assert_int_equal(f->rsp.type, REDIS_RSP_STATUS);
    assert_data(&f->rsp, S("+OK\r\n"));
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
    assert_int_equal(f->rsp.type, REDIS_RSP_BULK);
    assert_int_equal(f->rsp.count, 2);
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_AGAIN);
    assert_int_equal(evbuffer_get_length(f->in), 1);
}

/* AGAIN consumes nothing; the bytes already examined are not looked at
 * again (scan_off is past all of them, mid-unit too). */
static void
test_progress_kept(void **state)
{
    static const char r[] = "*2\r\n*2\r\n:1\r\n:2\r\n$3\r\nabc\r\n";
    struct fixture *f = *state;

    assert_int_equal(read_rsp(f, r, 14, &lim), REDIS_AGAIN);
    assert_int_equal(evbuffer_get_length(f->in), 14);
    assert_int_equal(f->rsp.depth, 2);
    assert_int_equal(f->rsp.scan_off, 14);
    evbuffer_add(f->in, r + 14, 6);
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_AGAIN);
    assert_int_equal(f->rsp.depth, 1);
    assert_int_equal(f->rsp.scan_off, 20);
    evbuffer_add(f->in, r + 20, sizeof(r) - 1 - 20);
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
    assert_elem(&f->rsp, 0, "*2\r\n:1\r\n:2\r\n");
    assert_elem(&f->rsp, 1, "$3\r\nabc\r\n");
}

/* ---- garbage and limits -------------------------------------------------- */

static void
test_fatal(void **state)
{
    static const struct {
        const char *s;
        size_t      n;
    } cases[] = {
        { S("OK\r\n") }, { S("\r\n") }, { S("x") }, { S("*1\r\n!\r\n") },
        { S("+O\nK\r\n") }, { S("+O\rK\r\n") }, { S("+OK\n") }, { S("-ERR\r\r\n") },
        { S(":\r\n") }, { S(":-\r\n") }, { S(":12a\r\n") }, { S(":-0\r\n") },
        { S(":01\r\n") }, { S(": 1\r\n") }, { S(":1 \r\n") }, { S(":+1\r\n") },
        { S(":9223372036854775808\r\n") }, { S(":-9223372036854775808\r\n") },
        { S(":12345678901234567890\r\n") }, { S(":1\r\r") }, { S(":1\n") },
        { S("$-2\r\n") }, { S("$3\r\nfooXY") }, { S("$3\r\nfoo\n\r") },
        { S("$0\r\nx\r\n") }, { S("*-2\r\n") }, { S("*1\r\n$1\r\nab\r\n") },
    };
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (read_rsp(f, cases[i].s, cases[i].n, &lim) != REDIS_FATAL)
            fail_msg("case %zu (%s) not fatal", i, cases[i].s);
}

static void
test_depth(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(read_rsp(f, S("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"), &lim), REDIS_OK);
    assert_int_equal(read_rsp(f, S("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"), &lim), REDIS_FATAL);
    /* empty and nil arrays open no level */
    assert_int_equal(read_rsp(f, S("*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n"), &lim), REDIS_OK);
    assert_int_equal(read_rsp(f, S("*1\r\n*1\r\n*1\r\n*1\r\n*-1\r\n"), &lim), REDIS_OK);
}

/* max_reply is enforced from the lengths, before the bytes arrive. */
static void
test_max_reply(void **state)
{
    struct redis_limits l = lim;
    struct fixture *f = *state;
    char line[64];

    l.max_reply = 11;
    assert_int_equal(read_rsp(f, S("$5\r\nhello\r\n"), &l), REDIS_OK);
    assert_int_equal(read_rsp(f, S("$6\r\n"), &l), REDIS_FATAL);
    assert_int_equal(read_rsp(f, S("$4096\r\n"), &lim), REDIS_FATAL);
    assert_int_equal(read_rsp(f, S("*2\r\n$1\r\na\r\n"), &l), REDIS_AGAIN);
    assert_int_equal(read_rsp(f, S("*3\r\n"), &l), REDIS_FATAL);
    assert_int_equal(read_rsp(f, S("*1000000000\r\n"), &lim), REDIS_FATAL);
    assert_int_equal(read_rsp(f, S("+123456789\r\n"), &l), REDIS_FATAL);
    assert_int_equal(read_rsp(f, S("+12345678\r\n"), &l), REDIS_OK);
    /* a line with no end yet is refused once it cannot fit */
    assert_int_equal(read_rsp(f, S("+1234567890"), &l), REDIS_FATAL);
    assert_int_equal(read_rsp(f, S("+12345678\r"), &l), REDIS_AGAIN);
    memset(line, 'x', sizeof(line));
    line[0] = '-';
    assert_int_equal(read_rsp(f, line, sizeof(line), &l), REDIS_FATAL);
}

/* ---- the same results however the stream is cut ---------------------- */

static bool
drain_log(struct evbuffer *in, void *obj, struct sbuf *log)
{
    struct redis_rsp *rsp = obj;

    for (;;) {
        size_t before = evbuffer_get_length(in);
        enum redis_status st = redis_rsp_read(in, rsp, &lim);

        if (st == REDIS_AGAIN) {
            assert_int_equal(evbuffer_get_length(in), before);
            return false;
        }
        if (st == REDIS_FATAL) {
            sbuf_add(log, "fatal\n", 6);
            return true;
        }
        sbuf_printf(log, "%c nil=%d int=%lld count=%lld ", (char)rsp->type, rsp->nil,
                    (long long)rsp->integer, (long long)rsp->count);
        sbuf_add_escaped(log, (const char *)evbuffer_pullup(rsp->data, -1),
                         evbuffer_get_length(rsp->data));
        if (rsp->type == REDIS_RSP_ARRAY && rsp->count > 0)
            assert_int_equal(rsp->nelems, rsp->count);
        for (uint32_t i = 0; i < rsp->nelems; i++)
            sbuf_printf(log, " [%zu+%zu]", rsp->elems[i].off, rsp->elems[i].len);
        sbuf_add(log, "\n", 1);
    }
}

static void *
rsp_create(void)
{
    struct redis_rsp *rsp = malloc(sizeof(*rsp));

    assert_non_null(rsp);
    redis_rsp_init(rsp);
    rsp->want_elems = true;
    return rsp;
}

static void
rsp_destroy(void *obj)
{
    redis_rsp_deinit(obj);
    free(obj);
}

static void
test_split_everywhere(void **state)
{
    static const struct test_framer framer = { rsp_create, rsp_destroy, drain_log };
    static const struct {
        const char *s;
        size_t      n;
    } streams[] = {
        { S("+OK\r\n-ERR wrong\r\n:-12\r\n$5\r\nhe\r\nl\r\n$-1\r\n*0\r\n*-1\r\n") },
        { S("*3\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n$0\r\n\r\n+x\r\n:1") },
        { S("*2\r\n$3\r\nfoo\r\n$-1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n") },
        { S("+OK\r\n+O\rK\r\n") },
        { S(":1\r\n$5000\r\n") },
        { S("*1\r\n:12a\r\n") },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++)
        test_cuts_everywhere(&framer, streams[i].s, streams[i].n);
}

/* ---- big replies --------------------------------------------------------- */

#define BIG_ELEMS  1000000
#define BIG_PIECE  65536

/* "*<n>\r\n" then n one-byte bulks: the reply of LRANGE over a list of
 * one-byte elements. Returns its length; *out is malloc'd. */
static size_t
big_reply(uint32_t n, char **out)
{
    size_t len = 0, cap = 32 + (size_t)n * 7;
    char *p = malloc(cap);

    assert_non_null(p);
    len = (size_t)snprintf(p, cap, "*%u\r\n", n);
    for (uint32_t i = 0; i < n; i++) {
        memcpy(p + len, "$1\r\nx\r\n", 7);
        p[len + 4] = (char)('a' + i % 26);
        len += 7;
    }
    *out = p;
    return len;
}

/* Feeds r[0..n) in BIG_PIECE pieces, each its own chain as a read makes
 * it, calling redis_rsp_read after each. Returns the calls made; the
 * last one is REDIS_OK. */
static unsigned long
feed_pieces(struct fixture *f, const char *r, size_t n,
            const struct redis_limits *l)
{
    unsigned long calls = 0;

    for (size_t off = 0; off < n; off += BIG_PIECE) {
        size_t k = n - off < BIG_PIECE ? n - off : BIG_PIECE;
        struct evbuffer *piece = evbuffer_new();
        enum redis_status st;

        assert_non_null(piece);
        assert_int_equal(evbuffer_add(piece, r + off, k), 0);
        assert_int_equal(evbuffer_add_buffer(f->in, piece), 0);
        evbuffer_free(piece);
        st = redis_rsp_read(f->in, &f->rsp, l);
        calls++;
        assert_int_equal(st, off + k == n ? REDIS_OK : REDIS_AGAIN);
    }
    return calls;
}

/* A reply of a million elements arriving in 64 KB reads: one position
 * lookup per call (not one per element, which made a 28 MB reply
 * quadratic), every byte there, no element recorded unless wanted. */
static void
test_big_reply_linear(void **state)
{
    struct redis_limits l = lim;
    struct fixture *f = *state;
    unsigned long calls;
    char *r;
    size_t n = big_reply(BIG_ELEMS, &r);

    l.max_reply = n;
    f->rsp.want_elems = false;
    redis_rsp_reset(&f->rsp);
    ptr_lookups = 0;
    calls = feed_pieces(f, r, n, &l);
    assert_true(calls > 100);
    if (ptr_lookups > calls)
        fail_msg("%lu position lookups for %lu calls", ptr_lookups, calls);
    assert_int_equal(f->rsp.type, REDIS_RSP_ARRAY);
    assert_int_equal(f->rsp.count, BIG_ELEMS);
    assert_int_equal(f->rsp.nelems, 0);
    assert_null(f->rsp.elems);
    assert_int_equal(evbuffer_get_length(f->in), 0);
    assert_data(&f->rsp, r, n);
    free(r);
}

/* The same reply with its elements wanted: all recorded, and the array
 * given back by reset (a small one is kept). */
static void
test_big_reply_elems_shrink(void **state)
{
    struct redis_limits l = lim;
    struct fixture *f = *state;
    char *r;
    size_t n = big_reply(BIG_ELEMS, &r);

    l.max_reply = n;
    redis_rsp_reset(&f->rsp);
    feed_pieces(f, r, n, &l);
    assert_int_equal(f->rsp.nelems, BIG_ELEMS);
    assert_true(f->rsp.elems_cap >= BIG_ELEMS);
    assert_elem(&f->rsp, BIG_ELEMS - 1, "$1\r\nn\r\n");
    redis_rsp_reset(&f->rsp);
    assert_null(f->rsp.elems);
    assert_int_equal(f->rsp.elems_cap, 0);
    assert_true(f->rsp.want_elems);
    free(r);
    assert_int_equal(read_rsp(f, S("*2\r\n:1\r\n:2\r\n"), &lim), REDIS_OK);
    redis_rsp_reset(&f->rsp);
    assert_non_null(f->rsp.elems);
    assert_true(f->rsp.elems_cap <= REDIS_RSP_ELEMS_KEEP);
}

/* ---- replies against their command --------------------------------------- */

static void
test_fits(void **state)
{
    /* columns: get mget(2 keys) del mset ping eval */
    static const char *const cmds[] = { "get", "mget", "del", "mset", "ping", "eval" };
    static const struct {
        const char *s;
        size_t      n;
        const char *fits;
    } cases[] = {
        { S("-ERR x\r\n"), "xxxxxx" },
        { S("+OK\r\n"), "x..x.x" },
        { S(":3\r\n"), "x.x..x" },
        { S("$1\r\na\r\n"), "x....x" },
        { S("$-1\r\n"), "x....x" },
        { S("*2\r\n$1\r\na\r\n$-1\r\n"), "xx...x" },
        { S("*1\r\n$1\r\na\r\n"), "x....x" },
        { S("*-1\r\n"), "x....x" },
    };
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(read_rsp(f, cases[i].s, cases[i].n, &lim), REDIS_OK);
        for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
            const struct redis_cmd *cmd = redis_cmd_lookup(cmds[c], strlen(cmds[c]));
            bool want = cases[i].fits[c] == 'x';

            if (redis_rsp_fits(cmd, 2, &f->rsp) != want)
                fail_msg("%s to %s: want %s", cases[i].s, cmds[c], want ? "fits" : "not");
        }
        assert_false(redis_rsp_fits(NULL, 2, &f->rsp));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_array_elements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_arrays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_progress_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_reply, setup, teardown),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test_setup_teardown(test_big_reply_linear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_reply_elems_shrink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fits, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
