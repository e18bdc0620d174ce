/* Unit tests of proto_mc requests: line parsing, composing backend lines,
 * and framing requests from a byte stream however it is split. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/proto_mc.h"

static const struct mc_limits lim = { .max_line = 600, .max_value = 1024 };

#define E_FORMAT   "bad command line format"
#define E_KEY_LONG "key too long"
#define E_KEY_CTRL "key contains control characters"
#define E_FLAGS    "invalid flags argument"
#define E_EXPTIME  "invalid exptime argument"
#define E_CAS      "invalid cas argument"
#define E_DELTA    "invalid numeric delta argument"
#define E_LARGE    "value too large"
#define E_CHUNK    "bad data chunk"
#define E_LINE     "line too long"

/* A key of 250 and one of 251 bytes, built once per test that needs one. */
static char *
long_key(size_t n)
{
    char *k = malloc(n + 1);

    assert_non_null(k);
    memset(k, 'k', n);
    k[n] = '\0';
    return k;
}

/* ---- string builder for expected/actual outputs ----------------------- */

#include "test_line.h"
#include "test_sbuf.h"

/* ---- fixtures and helpers --------------------------------------------- */

static int
req_setup(void **state)
{
    struct mc_req *req = malloc(sizeof(*req));

    if (req == NULL)
        return -1;
    mc_req_init(req);
    *state = req;
    return 0;
}

static int
req_teardown(void **state)
{
    mc_req_deinit(*state);
    free(*state);
    return 0;
}

/* Puts `line` into req->line (as framing would) and parses it. */
static enum mc_status
parse(struct mc_req *req, const char *line, const char **err)
{
    return test_req_parse(req, line, &lim, err);
}

static void
assert_tok(const struct mc_req *req, struct mc_token t, const char *s)
{
    assert_int_equal(t.len, strlen(s));
    assert_memory_equal(req->line + t.off, s, t.len);
}

static void
assert_parse_ok(struct mc_req *req, const char *line, enum mc_cmd cmd)
{
    const char *err;

    assert_int_equal(parse(req, line, &err), MC_OK);
    assert_null(err);
    assert_int_equal(req->cmd, cmd);
}

/* ---- command table ----------------------------------------------------- */

static void
test_cmd_names(void **state)
{
    (void)state;
    assert_string_equal(mc_cmd_name(MC_CMD_GET), "get");
    assert_string_equal(mc_cmd_name(MC_CMD_GATS), "gats");
    assert_string_equal(mc_cmd_name(MC_CMD_PREPEND), "prepend");
    assert_string_equal(mc_cmd_name(MC_CMD_FLUSH_ALL), "flush_all");
    assert_string_equal(mc_cmd_name(MC_CMD_COUNT), "unknown");
    assert_int_equal(mc_cmd_kind(MC_CMD_GAT), MC_KIND_RETRIEVAL);
    assert_int_equal(mc_cmd_kind(MC_CMD_CAS), MC_KIND_STORAGE);
    assert_int_equal(mc_cmd_kind(MC_CMD_TOUCH), MC_KIND_KEYED);
    assert_int_equal(mc_cmd_kind(MC_CMD_STATS), MC_KIND_PROXY);
    assert_int_equal(mc_cmd_kind(MC_CMD_FLUSH_ALL), MC_KIND_BROADCAST);
}

/* ---- parsing each command --------------------------------------------- */

static void
test_parse_get(void **state)
{
    struct mc_req *req = *state;

    assert_parse_ok(req, "get foo", MC_CMD_GET);
    assert_int_equal(req->nkeys, 1);
    assert_tok(req, req->keys[0], "foo");
    assert_false(req->noreply);

    assert_parse_ok(req, "gets foo", MC_CMD_GETS);
    assert_int_equal(req->nkeys, 1);
    assert_tok(req, req->keys[0], "foo");

    /* "noreply" is just a key to get */
    assert_parse_ok(req, "get noreply", MC_CMD_GET);
    assert_tok(req, req->keys[0], "noreply");
    assert_false(req->noreply);
}

static void
test_parse_get_multi(void **state)
{
    struct mc_req *req = *state;

    assert_parse_ok(req, "  get   a  bb\x80\xff ccc   ", MC_CMD_GET);
    assert_int_equal(req->nkeys, 3);
    assert_tok(req, req->keys[0], "a");
    assert_tok(req, req->keys[1], "bb\x80\xff");
    assert_tok(req, req->keys[2], "ccc");
}

static void
test_parse_gat(void **state)
{
    struct mc_req *req = *state;

    assert_parse_ok(req, "gat 300 a b", MC_CMD_GAT);
    assert_int_equal(req->exptime, 300);
    assert_int_equal(req->nkeys, 2);
    assert_tok(req, req->keys[0], "a");
    assert_tok(req, req->keys[1], "b");

    assert_parse_ok(req, "gats -1 k", MC_CMD_GATS);
    assert_int_equal(req->exptime, -1);
    assert_int_equal(req->nkeys, 1);
    assert_tok(req, req->keys[0], "k");
}

static void
test_parse_storage(void **state)
{
    static const struct {
        const char *line;
        enum mc_cmd cmd;
    } cases[] = {
        { "set k 1 2 3", MC_CMD_SET },
        { "add k 1 2 3", MC_CMD_ADD },
        { "replace k 1 2 3", MC_CMD_REPLACE },
        { "append k 1 2 3", MC_CMD_APPEND },
        { "prepend k 1 2 3", MC_CMD_PREPEND },
    };
    struct mc_req *req = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_parse_ok(req, cases[i].line, cases[i].cmd);
        assert_int_equal(req->nkeys, 1);
        assert_tok(req, req->keys[0], "k");
        assert_int_equal(req->flags, 1);
        assert_int_equal(req->exptime, 2);
        assert_int_equal(req->vlen, 3);
        assert_false(req->noreply);
    }
    assert_parse_ok(req, "set key 4294967295 -2147483648 1024 noreply",
                    MC_CMD_SET);
    assert_int_equal(req->flags, UINT32_MAX);
    assert_int_equal(req->exptime, INT32_MIN);
    assert_int_equal(req->vlen, 1024);
    assert_true(req->noreply);
}

static void
test_parse_cas(void **state)
{
    struct mc_req *req = *state;

    assert_parse_ok(req, "cas k 7 0 5 18446744073709551615", MC_CMD_CAS);
    assert_tok(req, req->keys[0], "k");
    assert_int_equal(req->flags, 7);
    assert_int_equal(req->vlen, 5);
    assert_true(req->cas == UINT64_MAX);
    assert_false(req->noreply);
}

static void
test_parse_keyed(void **state)
{
    struct mc_req *req = *state;

    assert_parse_ok(req, "delete k", MC_CMD_DELETE);
    assert_tok(req, req->keys[0], "k");
    assert_int_equal(req->nkeys, 1);
    assert_parse_ok(req, "delete k 0", MC_CMD_DELETE);
    assert_tok(req, req->keys[0], "k");

    assert_parse_ok(req, "incr k 18446744073709551615", MC_CMD_INCR);
    assert_tok(req, req->keys[0], "k");
    assert_true(req->delta == UINT64_MAX);
    assert_parse_ok(req, "decr k 5", MC_CMD_DECR);
    assert_int_equal(req->delta, 5);

    assert_parse_ok(req, "touch k 2147483647", MC_CMD_TOUCH);
    assert_tok(req, req->keys[0], "k");
    assert_int_equal(req->exptime, INT32_MAX);
}

static void
test_parse_proxy(void **state)
{
    struct mc_req *req = *state;

    assert_parse_ok(req, "version", MC_CMD_VERSION);
    assert_int_equal(req->nkeys, 0);
    assert_parse_ok(req, "quit", MC_CMD_QUIT);
    /* gat with an exptime and no key: the proxy answers END */
    assert_parse_ok(req, "gat 10", MC_CMD_GAT);
    assert_int_equal(req->nkeys, 0);
    assert_parse_ok(req, "gats 10  ", MC_CMD_GATS);
    assert_int_equal(req->nkeys, 0);

    assert_parse_ok(req, "verbosity 3", MC_CMD_VERBOSITY);
    assert_tok(req, req->arg, "3");
    /* a second word other than noreply is ignored, as memcached does */
    assert_parse_ok(req, "verbosity 1 2", MC_CMD_VERBOSITY);
    assert_false(req->noreply);
    assert_parse_ok(req, "verbosity 1 norepl", MC_CMD_VERBOSITY);

    assert_parse_ok(req, "stats", MC_CMD_STATS);
    assert_int_equal(req->arg.len, 0);
    assert_parse_ok(req, "stats  detail   on  ", MC_CMD_STATS);
    assert_tok(req, req->arg, "detail   on");

    assert_parse_ok(req, "flush_all", MC_CMD_FLUSH_ALL);
    assert_int_equal(req->arg.len, 0);
    assert_parse_ok(req, "flush_all 60", MC_CMD_FLUSH_ALL);
    assert_tok(req, req->arg, "60");
    assert_int_equal(req->exptime, 60);
}

/* Every command that takes noreply, with it. */
static void
test_parse_noreply(void **state)
{
    static const struct {
        const char *line;
        enum mc_cmd cmd;
    } cases[] = {
        { "set k 0 0 1 noreply", MC_CMD_SET },
        { "add k 0 0 1 noreply", MC_CMD_ADD },
        { "replace k 0 0 1 noreply", MC_CMD_REPLACE },
        { "append k 0 0 1 noreply", MC_CMD_APPEND },
        { "prepend k 0 0 1 noreply", MC_CMD_PREPEND },
        { "cas k 0 0 1 9 noreply", MC_CMD_CAS },
        { "delete k noreply", MC_CMD_DELETE },
        { "delete k 0 noreply", MC_CMD_DELETE },
        { "incr k 1 noreply", MC_CMD_INCR },
        { "decr k 1 noreply", MC_CMD_DECR },
        { "touch k 1 noreply", MC_CMD_TOUCH },
        { "verbosity 1 noreply", MC_CMD_VERBOSITY },
        { "flush_all noreply", MC_CMD_FLUSH_ALL },
        { "flush_all 10 noreply", MC_CMD_FLUSH_ALL },
    };
    struct mc_req *req = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_parse_ok(req, cases[i].line, cases[i].cmd);
        assert_true(req->noreply);
        if (req->nkeys > 0)
            assert_tok(req, req->keys[0], "k");
    }
    assert_parse_ok(req, "cas k 0 0 1 9 noreply", MC_CMD_CAS);
    assert_int_equal(req->cas, 9);
    assert_parse_ok(req, "flush_all 10 noreply", MC_CMD_FLUSH_ALL);
    assert_tok(req, req->arg, "10");
}

static void
test_parse_unknown(void **state)
{
    static const char *lines[] = {
        "", "   ", "GET k", "foo bar", "gett k", "ge", "set\tk 0 0 1",
    };
    struct mc_req *req = *state;
    const char *err;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        assert_int_equal(parse(req, lines[i], &err), MC_UNKNOWN);
        assert_int_equal(req->cmd, MC_CMD_COUNT);
    }
}

static void
test_parse_errors(void **state)
{
    static const struct {
        const char    *line;
        enum mc_status st;
        const char    *err;
    } cases[] = {
        { "get", MC_UNKNOWN, NULL },
        { "gets  ", MC_UNKNOWN, NULL },
        { "gat", MC_UNKNOWN, NULL },
        { "gat abc k", MC_ERROR, E_EXPTIME },
        { "gats 2147483648 k", MC_ERROR, E_EXPTIME },
        { "gat -2147483649 k", MC_ERROR, E_EXPTIME },
        { "get a\tb", MC_ERROR, E_KEY_CTRL },
        { "get ok a\x7f", MC_ERROR, E_KEY_CTRL },
        { "get a\x01", MC_ERROR, E_KEY_CTRL },
        { "get a\r", MC_ERROR, E_KEY_CTRL },
        { "set", MC_FATAL, E_FORMAT },
        { "set k", MC_FATAL, E_FORMAT },
        { "set k 0 0", MC_FATAL, E_FORMAT },
        { "set k 0 0 x", MC_FATAL, E_FORMAT },
        { "set k 0 0 -1", MC_FATAL, E_FORMAT },
        { "set k 0 0 +1", MC_FATAL, E_FORMAT },
        { "set k 0 0 noreply", MC_FATAL, E_FORMAT },
        { "set k 0 0 4294967296", MC_FATAL, E_LARGE },
        { "cas k 0 0 99999999999999999999999", MC_FATAL, E_FORMAT },
        { "set k 0 0 1025", MC_ERROR, E_LARGE },
        { "set k x 0 1", MC_ERROR, E_FLAGS },
        { "set k -1 0 1", MC_ERROR, E_FLAGS },
        { "add k 4294967296 0 1", MC_ERROR, E_FLAGS },
        { "set k 0 x 1", MC_ERROR, E_EXPTIME },
        { "replace k 0 1x 1", MC_ERROR, E_EXPTIME },
        { "set k\x7f 0 0 1", MC_ERROR, E_KEY_CTRL },
        { "set k 0 0 1 norepl", MC_ERROR, E_FORMAT },
        { "set k 0 0 1 noreply x", MC_UNKNOWN, NULL },
        { "append k 0 0 1 x y", MC_UNKNOWN, NULL },
        { "prepend k 0 0 1 a b c d e f g h i", MC_UNKNOWN, NULL },
        { "cas k 0 0 1", MC_ERROR, E_FORMAT },
        { "cas k 0 0 1 noreply", MC_ERROR, E_FORMAT },
        { "cas k 0 0 1 x", MC_ERROR, E_CAS },
        { "cas k 0 0 1 -1", MC_ERROR, E_CAS },
        { "cas k 0 0 1 2 norepl", MC_ERROR, E_FORMAT },
        { "delete", MC_UNKNOWN, NULL },
        { "delete k 1", MC_ERROR, E_FORMAT },
        { "delete k x", MC_ERROR, E_FORMAT },
        { "delete k noreplyy", MC_ERROR, E_FORMAT },
        { "delete k 0 norepl", MC_ERROR, E_FORMAT },
        { "delete k 0 noreply x", MC_UNKNOWN, NULL },
        { "delete a\x02", MC_ERROR, E_KEY_CTRL },
        { "incr", MC_UNKNOWN, NULL },
        { "incr k", MC_UNKNOWN, NULL },
        { "incr k -1", MC_ERROR, E_DELTA },
        { "incr k abc", MC_ERROR, E_DELTA },
        { "decr k 18446744073709551616", MC_ERROR, E_DELTA },
        { "incr k 1 norepl", MC_ERROR, E_FORMAT },
        { "decr k 1 2 3", MC_UNKNOWN, NULL },
        { "touch k", MC_UNKNOWN, NULL },
        { "touch k abc", MC_ERROR, E_EXPTIME },
        { "touch k 1 noreply x", MC_UNKNOWN, NULL },
        { "version x", MC_UNKNOWN, NULL },      /* memcached < 1.6 */
        { "version noreply", MC_UNKNOWN, NULL },
        { "quit now", MC_UNKNOWN, NULL },
        { "verbosity", MC_UNKNOWN, NULL },
        { "verbosity x", MC_ERROR, E_FORMAT },
        { "verbosity foo bar my", MC_UNKNOWN, NULL },
        { "verbosity 1 noreply x", MC_UNKNOWN, NULL },
        { "verbosity noreply", MC_ERROR, E_FORMAT }, /* unwritten */
        { "incr k noreply", MC_ERROR, E_FORMAT },    /* unwritten */
        { "incr noreply", MC_UNKNOWN, NULL },
        { "incr k 1 2 noreply", MC_UNKNOWN, NULL },
        { "set k 0 0 1 x noreply", MC_UNKNOWN, NULL },
        { "delete k x noreply", MC_ERROR, E_FORMAT },
        { "flush_all x", MC_ERROR, E_EXPTIME },
        { "flush_all 1 x", MC_ERROR, E_FORMAT },
        { "flush_all 1 2 3", MC_UNKNOWN, NULL },
    };
    struct mc_req *req = *state;
    const char *err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum mc_status st = parse(req, cases[i].line, &err);
        bool reason_ok = cases[i].err == NULL ||
                         (err != NULL && strcmp(err, cases[i].err) == 0);
        if (st != cases[i].st || !reason_ok)
            fail_msg("\"%s\": got %d \"%s\", want %d \"%s\"", cases[i].line,
                     st, err ? err : "(null)", cases[i].st,
                     cases[i].err ? cases[i].err : "(none)");
    }
}

static void
test_parse_key_length(void **state)
{
    struct mc_req *req = *state;
    char *k250 = long_key(250), *k251 = long_key(251);
    char line[600];
    const char *err;

    snprintf(line, sizeof(line), "get a %s", k250);
    assert_parse_ok(req, line, MC_CMD_GET);
    assert_tok(req, req->keys[1], k250);

    snprintf(line, sizeof(line), "get a %s", k251);
    assert_int_equal(parse(req, line, &err), MC_ERROR);
    assert_string_equal(err, E_KEY_LONG);

    snprintf(line, sizeof(line), "set %s 0 0 5 noreply", k251);
    assert_int_equal(parse(req, line, &err), MC_ERROR);
    assert_string_equal(err, E_KEY_LONG);
    assert_int_equal(req->vlen, 5);   /* framing can drop the block */
    assert_true(req->noreply);        /* the caller can tell */

    snprintf(line, sizeof(line), "add %s 0 0 1025", k251);
    assert_int_equal(parse(req, line, &err), MC_ERROR);
    assert_string_equal(err, E_LARGE);  /* first: the block is dropped */

    snprintf(line, sizeof(line), "touch %s 1", k251);
    assert_int_equal(parse(req, line, &err), MC_ERROR);
    assert_string_equal(err, E_KEY_LONG);
    free(k250);
    free(k251);
}

/* The keys array grows once and is reused: no allocation in steady state. */
static void
test_parse_keys_reused(void **state)
{
    struct mc_req *req = *state;
    struct sbuf line = { 0 };
    struct mc_token *keys;
    uint32_t cap;

    sbuf_printf(&line, "get");
    for (int i = 0; i < 100; i++)
        sbuf_printf(&line, " key%d", i);
    assert_parse_ok(req, line.p, MC_CMD_GET);
    assert_int_equal(req->nkeys, 100);
    assert_tok(req, req->keys[99], "key99");
    keys = req->keys;
    cap = req->keys_cap;
    assert_true(cap >= 100);
    for (int round = 0; round < 3; round++) {
        assert_parse_ok(req, line.p, MC_CMD_GET);
        assert_parse_ok(req, "get x", MC_CMD_GET);
        assert_int_equal(req->nkeys, 1);
    }
    assert_ptr_equal(req->keys, keys);
    assert_int_equal(req->keys_cap, cap);
    free(line.p);
}

/* ---- composing backend lines ------------------------------------------ */

static void
assert_compose(struct mc_req *req, const char *line, const uint32_t *idx,
               uint32_t n, const char *want)
{
    struct evbuffer *out = evbuffer_new();
    const char *err;
    size_t len;

    assert_non_null(out);
    assert_int_equal(parse(req, line, &err), MC_OK);
    assert_int_equal(mc_req_compose_line(out, req, idx, n), 0);
    len = evbuffer_get_length(out);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(evbuffer_pullup(out, -1), want, len);
    evbuffer_free(out);
}

static void
test_compose_retrieval(void **state)
{
    static const uint32_t odd[] = { 1, 3 }, last[] = { 3 };
    struct mc_req *req = *state;

    assert_compose(req, "get  a b", NULL, 0, "get a b\r\n");
    assert_compose(req, "gets a", NULL, 0, "gets a\r\n");
    assert_compose(req, "get a b c d", odd, 2, "get b d\r\n");
    assert_compose(req, "gets a b c d", last, 1, "gets d\r\n");
    assert_compose(req, "gat 60 a b c d", odd, 2, "gat 60 b d\r\n");
    assert_compose(req, "gats -5 a b", NULL, 0, "gats -5 a b\r\n");
}

static void
test_compose_storage(void **state)
{
    struct mc_req *req = *state;

    assert_compose(req, "set k 1 2 3", NULL, 0, "set k 1 2 3\r\n");
    assert_compose(req, "add k 0 0 0 noreply", NULL, 0, "add k 0 0 0\r\n");
    assert_compose(req, "replace  k 4294967295 -1 10", NULL, 0,
                   "replace k 4294967295 -1 10\r\n");
    assert_compose(req, "append k 1 2 3 noreply", NULL, 0,
                   "append k 1 2 3\r\n");
    assert_compose(req, "prepend k 1 2 3", NULL, 0, "prepend k 1 2 3\r\n");
    assert_compose(req, "cas k 1 2 3 18446744073709551615 noreply", NULL, 0,
                   "cas k 1 2 3 18446744073709551615\r\n");
}

static void
test_compose_other(void **state)
{
    struct mc_req *req = *state;

    assert_compose(req, "delete k", NULL, 0, "delete k\r\n");
    assert_compose(req, "delete k 0 noreply", NULL, 0, "delete k\r\n");
    assert_compose(req, "incr k 7 noreply", NULL, 0, "incr k 7\r\n");
    assert_compose(req, "decr k 18446744073709551615", NULL, 0,
                   "decr k 18446744073709551615\r\n");
    assert_compose(req, "touch k -2147483648 noreply", NULL, 0,
                   "touch k -2147483648\r\n");
    assert_compose(req, "version", NULL, 0, "version\r\n");
    assert_compose(req, "quit", NULL, 0, "quit\r\n");
    assert_compose(req, "verbosity 1 noreply", NULL, 0, "verbosity 1\r\n");
    assert_compose(req, "stats", NULL, 0, "stats\r\n");
    assert_compose(req, "stats slabs", NULL, 0, "stats slabs\r\n");
    assert_compose(req, "flush_all", NULL, 0, "flush_all\r\n");
    assert_compose(req, "flush_all noreply", NULL, 0, "flush_all\r\n");
    assert_compose(req, "flush_all 30 noreply", NULL, 0, "flush_all 30\r\n");
}

static void
test_compose_bad_selection(void **state)
{
    static const uint32_t bad[] = { 0, 2 };
    struct mc_req *req = *state;
    struct evbuffer *out = evbuffer_new();
    const char *err;

    assert_int_equal(parse(req, "get a b", &err), MC_OK);
    assert_int_equal(mc_req_compose_line(out, req, bad, 2), -1);
    assert_int_equal(mc_req_compose_line(out, req, bad, 0), -1);
    assert_int_equal(evbuffer_get_length(out), 0);
    mc_req_reset(req);
    assert_int_equal(mc_req_compose_line(out, req, NULL, 0), -1);
    evbuffer_free(out);
}

/* ---- framing ---------------------------------------------------------- */

/* Describes one mc_req_read result on one line of `sig`. */
static void
describe(struct sbuf *sig, enum mc_status st, const struct mc_req *req,
         const char *err)
{
    static const char *names[] = { "OK", "AGAIN", "ERROR", "FATAL",
                                   "UNKNOWN" };

    sbuf_printf(sig, "%s", names[st]);
    if (st == MC_ERROR || st == MC_FATAL)
        sbuf_printf(sig, " (%s)", err);
    if (st != MC_OK) {
        sbuf_add(sig, "\n", 1);
        return;
    }
    sbuf_printf(sig, " %s", mc_cmd_name(req->cmd));
    for (uint32_t i = 0; i < req->nkeys; i++)
        sbuf_printf(sig, " %.*s", (int)req->keys[i].len,
                    req->line + req->keys[i].off);
    if (mc_cmd_kind(req->cmd) == MC_KIND_STORAGE) {
        size_t n = evbuffer_get_length(req->data);
        sbuf_printf(sig, " f=%u e=%lld c=%llu [", req->flags,
                    (long long)req->exptime, (unsigned long long)req->cas);
        sbuf_add_escaped(sig, (char *)evbuffer_pullup(req->data, -1), n);
        sbuf_add(sig, "]", 1);
        assert_int_equal(n, req->vlen);
    }
    if (req->cmd == MC_CMD_INCR || req->cmd == MC_CMD_DECR)
        sbuf_printf(sig, " d=%llu", (unsigned long long)req->delta);
    if (req->arg.len > 0)
        sbuf_printf(sig, " arg=%.*s", (int)req->arg.len,
                    req->line + req->arg.off);
    sbuf_printf(sig, "%s\n", req->noreply ? " noreply" : "");
}

/* Reads requests from `in` until it needs more bytes. False after FATAL. */
static bool
drain_requests(struct evbuffer *in, struct mc_req *req, struct sbuf *sig)
{
    for (;;) {
        const char *err = NULL;
        enum mc_status st = mc_req_read(in, req, &lim, &err);
        if (st == MC_AGAIN)
            return true;
        describe(sig, st, req, err);
        if (st == MC_FATAL)
            return false;
    }
}

/* Feeds `s` in pieces cut at cuts[0..ncuts) (ascending) and returns the
 * description of all that was read; caller frees. */
static char *
feed(const char *s, size_t len, const size_t *cuts, size_t ncuts)
{
    struct evbuffer *in = evbuffer_new();
    struct mc_req req;
    struct sbuf sig = { 0 };
    size_t from = 0;

    mc_req_init(&req);
    sbuf_add(&sig, "", 0);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        evbuffer_add(in, s + from, to - from);
        from = to;
        if (!drain_requests(in, &req, &sig))
            break;
    }
    if (from == len && strstr(sig.p, "FATAL") == NULL)
        assert_int_equal(evbuffer_get_length(in), 0);
    mc_req_deinit(&req);
    evbuffer_free(in);
    return sig.p;
}

/* Builds the pipelined stream used by the split tests. */
static void
build_stream(struct sbuf *s)
{
    char *k251 = long_key(251);
    char big[2000];

    memset(big, 'v', sizeof(big));
    sbuf_printf(s, "get a b  c\r\n");
    sbuf_printf(s, "set k1 5 0 7\r\nab\r\ncd\r\r\n");    /* \r\n inside */
    sbuf_printf(s, "gets k2\n");                          /* bare \n */
    sbuf_printf(s, "cas k3 1 2 4 99 noreply\r\n\r\n\r\n\r\n");
    sbuf_printf(s, "delete k4 0\r\n");
    sbuf_printf(s, "bogus command\r\n");
    sbuf_printf(s, "incr k5 18446744073709551615\r\n");
    sbuf_printf(s, "set k6 0 0 3\r\nabcde\r\n");          /* bad chunk */
    sbuf_printf(s, "set %s 0 0 2\r\nxy\r\n", k251);       /* swallowed */
    sbuf_printf(s, "set big 0 0 2000 noreply\r\n");       /* swallowed */
    sbuf_add(s, big, sizeof(big));
    sbuf_printf(s, "\r\n");
    sbuf_printf(s, "touch k7 -1 noreply\n");
    sbuf_printf(s, "append k8 0 0 0\r\n\r\n");            /* empty value */
    sbuf_printf(s, "stats items\r\n");
    sbuf_printf(s, "decr k9 x\r\n");
    sbuf_printf(s, "version\r\n");
    free(k251);
}

static const char stream_sig[] =
    "OK get a b c\n"
    "OK set k1 f=5 e=0 c=0 [ab\\r\\ncd\\r]\n"
    "OK gets k2\n"
    "OK cas k3 f=1 e=2 c=99 [\\r\\n\\r\\n] noreply\n"
    "OK delete k4\n"
    "UNKNOWN\n"
    "OK incr k5 d=18446744073709551615\n"
    "ERROR (bad data chunk)\n"
    "UNKNOWN\n"                               /* the "\r\n" after "abcde" */
    "ERROR (key too long)\n"
    "ERROR (value too large)\n"
    "OK touch k7 noreply\n"
    "OK append k8 f=0 e=0 c=0 []\n"
    "OK stats arg=items\n"
    "ERROR (invalid numeric delta argument)\n"
    "OK version\n";

static void
test_frame_whole(void **state)
{
    struct sbuf s = { 0 };
    char *sig;

    (void)state;
    build_stream(&s);
    sig = feed(s.p, s.len, NULL, 0);
    assert_string_equal(sig, stream_sig);
    free(sig);
    free(s.p);
}

static void
test_frame_every_split(void **state)
{
    struct sbuf s = { 0 };

    (void)state;
    build_stream(&s);
    for (size_t cut = 1; cut < s.len; cut++) {
        char *sig = feed(s.p, s.len, &cut, 1);
        if (strcmp(sig, stream_sig) != 0)
            fail_msg("split at %zu:\n%s", cut, sig);
        free(sig);
    }
    free(s.p);
}

static void
test_frame_byte_at_a_time(void **state)
{
    struct sbuf s = { 0 };
    size_t *cuts;
    char *sig;

    (void)state;
    build_stream(&s);
    cuts = malloc(s.len * sizeof(*cuts));
    assert_non_null(cuts);
    for (size_t i = 0; i + 1 < s.len; i++)
        cuts[i] = i + 1;
    sig = feed(s.p, s.len, cuts, s.len - 1);
    assert_string_equal(sig, stream_sig);
    free(sig);
    free(cuts);
    free(s.p);
}

/* Until the whole request is there, nothing is consumed. */
static void
test_frame_again_keeps_input(void **state)
{
    static const char part[] = "set k 0 0 5\r\nabcde\r";
    struct mc_req *req = *state;
    struct evbuffer *in = evbuffer_new();
    const char *err;

    for (size_t n = 0; n < sizeof(part) - 1; n++) {
        evbuffer_add(in, part + n, 1);
        assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
        assert_int_equal(evbuffer_get_length(in), n + 1);
    }
    evbuffer_add(in, "\nget x\n", 7);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    assert_int_equal(req->cmd, MC_CMD_SET);
    assert_int_equal(evbuffer_get_length(req->data), 5);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    assert_int_equal(req->cmd, MC_CMD_GET);
    assert_int_equal(evbuffer_get_length(req->data), 5); /* not touched */
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    evbuffer_free(in);
}

/* An oversized value is dropped as it arrives, never held: the input
 * never grows beyond one feed; the error comes when the last byte is gone
 * and the next request parses. */
static void
test_frame_swallow_large(void **state)
{
    struct mc_req *req = *state;
    struct evbuffer *in = evbuffer_new();
    char chunk[100];
    const char *err = NULL;

    memset(chunk, 'z', sizeof(chunk));
    evbuffer_add_printf(in, "set big 0 0 100000 noreply\r\n");
    evbuffer_add(in, chunk, 10);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    assert_int_equal(evbuffer_get_length(in), 0);
    for (size_t sent = 10; sent < 100000; sent += sizeof(chunk)) {
        size_t n = 100000 - sent < sizeof(chunk) ? 100000 - sent
                                                 : sizeof(chunk);
        evbuffer_add(in, chunk, n);
        assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
        assert_int_equal(evbuffer_get_length(in), 0);
    }
    evbuffer_add(in, "\r", 1);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    evbuffer_add(in, "\nget after\r\n", 12);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_ERROR);
    assert_string_equal(err, E_LARGE);
    assert_int_equal(req->cmd, MC_CMD_SET);
    assert_true(req->noreply);
    assert_int_equal(req->swallow, 0);
    assert_int_equal(evbuffer_get_length(in), 11);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    assert_int_equal(req->cmd, MC_CMD_GET);
    assert_tok(req, req->keys[0], "after");
    evbuffer_free(in);
}

/* "value too large" wins over other faults, so the block is dropped, not
 * waited for; a recycled req does not carry the drop into another stream. */
static void
test_frame_swallow_reset(void **state)
{
    struct mc_req *req = *state;
    struct evbuffer *in = evbuffer_new();
    char *k251 = long_key(251);
    const char *err = NULL;

    evbuffer_add_printf(in, "set %s x y 5000\r\nabc", k251);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    assert_int_equal(evbuffer_get_length(in), 0);
    assert_int_equal(req->swallow, 5002 - 3);
    mc_req_reset(req);
    assert_int_equal(req->swallow, 0);
    evbuffer_add_printf(in, "get x\r\n");
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    assert_int_equal(req->cmd, MC_CMD_GET);

    evbuffer_add_printf(in, "set %s x y 5000\r\n", k251);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    free(k251);
    evbuffer_free(in);
}

/* A bad storage request of acceptable size waits for its block like a
 * good one, then is consumed whole; so does one with too many words
 * (MC_UNKNOWN): its block is data, never a command line. A noreply line
 * with a bad count is fatal and says it was noreply. */
static void
test_frame_error_waits_block(void **state)
{
    struct mc_req *req = *state;
    struct evbuffer *in = evbuffer_new();
    const char *err = NULL;

    evbuffer_add_printf(in, "set k x 0 3\r\nab");
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    assert_int_equal(evbuffer_get_length(in), 15);
    evbuffer_add_printf(in, "c\r\nget y\r\n");
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_ERROR);
    assert_string_equal(err, E_FLAGS);
    assert_int_equal(evbuffer_get_length(in), 7);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    assert_int_equal(req->cmd, MC_CMD_GET);
    evbuffer_add_printf(in, "set k 0 0 3 extra noreply\r\nget\r\nget y\r\n");
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_UNKNOWN);
    assert_int_equal(evbuffer_get_length(in), 7);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    evbuffer_add_printf(in, "set k 0 0 abc noreply\r\nx\r\n");
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_FATAL);
    assert_true(req->noreply);
    evbuffer_free(in);
}

static void
test_frame_line_too_long(void **state)
{
    struct mc_req *req = *state;
    struct evbuffer *in = evbuffer_new();
    char line[1000];
    const char *err = NULL;

    /* "stats xxx...": exactly max_line bytes is fine, with "\r" pending */
    memset(line, 'x', sizeof(line));
    memcpy(line, "stats ", 6);
    evbuffer_add(in, line, lim.max_line);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    evbuffer_add(in, "\r", 1);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_AGAIN);
    evbuffer_add(in, "\n", 1);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_OK);
    assert_int_equal(req->arg.len, lim.max_line - 6);

    /* one byte more, no end yet */
    evbuffer_add(in, line, lim.max_line + 1);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_FATAL);
    assert_string_equal(err, E_LINE);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* one byte more and "\r": the same, whatever follows */
    evbuffer_add(in, line, lim.max_line + 1);
    evbuffer_add(in, "\r", 1);
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_FATAL);
    evbuffer_drain(in, evbuffer_get_length(in));

    /* whole but too long */
    evbuffer_add(in, line, lim.max_line + 1);
    evbuffer_add(in, "\r\nget a\r\n", 9);
    err = NULL;
    assert_int_equal(mc_req_read(in, req, &lim, &err), MC_FATAL);
    assert_string_equal(err, E_LINE);
    evbuffer_free(in);
}

/* A storage line whose byte count cannot be read loses the framing. */
static void
test_frame_bad_count_fatal(void **state)
{
    static const char *lines[] = {
        "set k 0 0 abc\r\nhello\r\n", "set k 0 0\r\nhello\r\n",
        "add k 0 0 -5\r\nhello\r\n", "cas k\r\n",
    };
    struct mc_req *req = *state;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct evbuffer *in = evbuffer_new();
        const char *err = NULL;
        evbuffer_add(in, lines[i], strlen(lines[i]));
        assert_int_equal(mc_req_read(in, req, &lim, &err), MC_FATAL);
        assert_string_equal(err, E_FORMAT);
        evbuffer_free(in);
    }
}

static void
test_frame_bare_newlines(void **state)
{
    static const char s[] = "get a\nset b 1 0 2\nxy\r\n\ndelete c\n";
    char *sig;

    (void)state;
    sig = feed(s, sizeof(s) - 1, NULL, 0);
    assert_string_equal(sig, "OK get a\n"
                             "OK set b f=1 e=0 c=0 [xy]\n"
                             "UNKNOWN\n"
                             "OK delete c\n");
    free(sig);
}

#define REQ_TEST(f) cmocka_unit_test_setup_teardown(f, req_setup, req_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        REQ_TEST(test_cmd_names),
        REQ_TEST(test_parse_get),
        REQ_TEST(test_parse_get_multi),
        REQ_TEST(test_parse_gat),
        REQ_TEST(test_parse_storage),
        REQ_TEST(test_parse_cas),
        REQ_TEST(test_parse_keyed),
        REQ_TEST(test_parse_proxy),
        REQ_TEST(test_parse_noreply),
        REQ_TEST(test_parse_unknown),
        REQ_TEST(test_parse_errors),
        REQ_TEST(test_parse_key_length),
        REQ_TEST(test_parse_keys_reused),
        REQ_TEST(test_compose_retrieval),
        REQ_TEST(test_compose_storage),
        REQ_TEST(test_compose_other),
        REQ_TEST(test_compose_bad_selection),
        REQ_TEST(test_frame_whole),
        REQ_TEST(test_frame_every_split),
        REQ_TEST(test_frame_byte_at_a_time),
        REQ_TEST(test_frame_again_keeps_input),
        REQ_TEST(test_frame_swallow_large),
        REQ_TEST(test_frame_swallow_reset),
        REQ_TEST(test_frame_error_waits_block),
        REQ_TEST(test_frame_line_too_long),
        REQ_TEST(test_frame_bad_count_fatal),
        REQ_TEST(test_frame_bare_newlines),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
