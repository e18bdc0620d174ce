/* Unit tests of proto_redis requests: the command table and its lookup,
 * framing of multibulk requests however the stream is split, key
 * positions per kind, every refusal and the limits. */

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
    .max_reply = 4096, .max_depth = 8,
};

struct fixture {
    struct redis_req  req;
    struct evbuffer  *in;
    const char       *err;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL || (f->in = evbuffer_new()) == NULL)
        return -1;
    redis_req_init(&f->req);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    redis_req_deinit(&f->req);
    evbuffer_free(f->in);
    free(f);
    return 0;
}

/* Replaces the input with s[0..n) and reads one request. */
static enum redis_status
read_req(struct fixture *f, const char *s, size_t n, const struct redis_limits *l)
{
    evbuffer_drain(f->in, evbuffer_get_length(f->in));
    evbuffer_add(f->in, s, n);
    redis_req_reset(&f->req);
    f->err = NULL;
    return redis_req_read(f->in, &f->req, l, &f->err);
}

static void
assert_arg(const struct redis_req *req, uint32_t i, const char *want, size_t n)
{
    assert_true(i < req->nargs);
    assert_int_equal(req->args[i].len, n);
    assert_memory_equal(req->buf + req->args[i].off, want, n);
}

static void
assert_key(const struct redis_req *req, uint32_t i, const char *want)
{
    assert_true(i < req->nkeys);
    assert_arg(req, req->key_first + i * req->key_step, want, strlen(want));
}

/* ---- the command table ------------------------------------------------- */

static void
test_table_sorted_and_sound(void **state)
{
    size_t n;
    const struct redis_cmd *t = redis_cmd_table(&n);

    (void)state;
    assert_true(n > 100);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(t[i - 1].name, t[i].name) >= 0)
            fail_msg("%s is out of order", t[i].name);
        /* a command with a key takes at least the name and the key */
        if (t[i].kind != REDIS_KIND_PROXY && t[i].arity > 0 && t[i].arity < 2)
            fail_msg("%s has no room for a key", t[i].name);
        if (t[i].kind != REDIS_KIND_PROXY && t[i].arity < 0 && t[i].arity > -2)
            fail_msg("%s has no room for a key", t[i].name);
        assert_int_equal(t[i].merge != REDIS_MERGE_NONE,
                         t[i].kind == REDIS_KIND_MULTI || t[i].kind == REDIS_KIND_PAIRS);
    }
}

/* Every name found in lower, upper and alternating case, as itself. */
static void
test_lookup_every_entry(void **state)
{
    size_t n;
    const struct redis_cmd *t = redis_cmd_table(&n);
    char name[64];

    (void)state;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(t[i].name);

        for (int mode = 0; mode < 3; mode++) {
            for (size_t j = 0; j < len; j++) {
                bool up = mode == 1 || (mode == 2 && j % 2 == 0);
                char c = t[i].name[j];
                name[j] = up && c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
            }
            if (redis_cmd_lookup(name, len) != &t[i])
                fail_msg("%.*s not found", (int)len, name);
        }
    }
}

static void
test_lookup_misses(void **state)
{
    static const char *const names[] = {
        "", "g", "ge", "gett", "keys", "flushall", "multi", "exec", "select",
        "infos", "rename", "bitop", "msetnx", "randomkey", "scan", "subscribe",
        "getx", "aaaa", "zzzz", "georadiusbymemberx", "a", "zzzzzz",
    };
    char longname[200];

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (redis_cmd_lookup(names[i], strlen(names[i])) != NULL)
            fail_msg("%s found", names[i]);
    assert_null(redis_cmd_lookup("get\0", 4));
    assert_null(redis_cmd_lookup("get", 2));
    memset(longname, 'a', sizeof(longname));
    assert_null(redis_cmd_lookup(longname, sizeof(longname)));
    assert_non_null(redis_cmd_lookup("GET", 3));
}

static void
test_table_entries(void **state)
{
    static const struct {
        const char         *name;
        enum redis_cmd_kind kind;
        enum redis_merge    merge;
        bool                readonly;
        int32_t             arity;
    } want[] = {
        { "get", REDIS_KIND_KEY, REDIS_MERGE_NONE, true, 2 },
        { "set", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, -2 },
        { "mget", REDIS_KIND_MULTI, REDIS_MERGE_ARRAY, true, -2 },
        { "del", REDIS_KIND_MULTI, REDIS_MERGE_SUM, false, -2 },
        { "unlink", REDIS_KIND_MULTI, REDIS_MERGE_SUM, false, -2 },
        { "exists", REDIS_KIND_KEY, REDIS_MERGE_NONE, true, -2 },   /* not split */
        { "touch", REDIS_KIND_MULTI, REDIS_MERGE_SUM, false, -2 },
        { "mset", REDIS_KIND_PAIRS, REDIS_MERGE_OK, false, -3 },
        { "eval", REDIS_KIND_EVAL, REDIS_MERGE_NONE, false, -3 },
        { "evalsha", REDIS_KIND_EVAL, REDIS_MERGE_NONE, false, -3 },
        { "ping", REDIS_KIND_PROXY, REDIS_MERGE_NONE, false, 1 },
        { "quit", REDIS_KIND_PROXY, REDIS_MERGE_NONE, false, -1 },
        { "auth", REDIS_KIND_PROXY, REDIS_MERGE_NONE, false, 2 },
        { "getdel", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, 2 },
        { "expire", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, 3 },
        { "smove", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, 4 },
        { "sunionstore", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, -2 },
        { "rpoplpush", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, 3 },
        { "zrange", REDIS_KIND_KEY, REDIS_MERGE_NONE, true, -2 },
        { "hgetall", REDIS_KIND_KEY, REDIS_MERGE_NONE, true, 2 },
        { "linsert", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, 5 },
        { "incr", REDIS_KIND_KEY, REDIS_MERGE_NONE, false, 2 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct redis_cmd *c = redis_cmd_lookup(want[i].name, strlen(want[i].name));

        if (c == NULL)
            fail_msg("%s missing", want[i].name);
        assert_string_equal(c->name, want[i].name);
        assert_int_equal(c->kind, want[i].kind);
        assert_int_equal(c->merge, want[i].merge);
        assert_int_equal(c->readonly, want[i].readonly);
        assert_int_equal(c->arity, want[i].arity);
    }
}

/* ---- framing ------------------------------------------------------------ */

static void
test_read_get(void **state)
{
    struct fixture *f = *state;
    static const char r[] = "*2\r\n$3\r\ngEt\r\n$3\r\nfoo\r\n";

    assert_int_equal(read_req(f, S(r), &lim), REDIS_OK);
    assert_string_equal(f->req.cmd->name, "get");
    assert_int_equal(f->req.nargs, 2);
    assert_int_equal(f->req.len, sizeof(r) - 1);
    assert_string_equal(f->req.buf, r);
    assert_arg(&f->req, 0, S("gEt"));
    assert_int_equal(f->req.nkeys, 1);
    assert_key(&f->req, 0, "foo");
    assert_int_equal(f->req.scan_off, 0);
    assert_int_equal(f->req.scan_nargs, 0);
    assert_int_equal(evbuffer_get_length(f->in), 0);
}

static void
test_read_binary_payload(void **state)
{
    struct fixture *f = *state;
    static const char r[] = "*3\r\n$3\r\nSET\r\n$4\r\nk\r\nk\r\n$5\r\n\0\r\n*1\r\n";

    assert_int_equal(read_req(f, S(r), &lim), REDIS_OK);
    assert_key(&f->req, 0, "k\r\nk");
    assert_arg(&f->req, 2, "\0\r\n*1", 5);
    assert_int_equal(f->req.buf[f->req.len], '\0');
}

static void
test_read_empty_arg(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(read_req(f, S("*3\r\n$3\r\nset\r\n$0\r\n\r\n$0\r\n\r\n"), &lim),
                     REDIS_OK);
    assert_int_equal(f->req.nkeys, 1);
    assert_key(&f->req, 0, "");
}

static void
test_read_pipelined(void **state)
{
    struct fixture *f = *state;
    static const char r[] = "*2\r\n$4\r\nincr\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n*2\r\n";

    assert_int_equal(read_req(f, S(r), &lim), REDIS_OK);
    assert_string_equal(f->req.cmd->name, "incr");
    assert_int_equal(redis_req_read(f->in, &f->req, &lim, &f->err), REDIS_OK);
    assert_string_equal(f->req.cmd->name, "ping");
    assert_int_equal(f->req.nkeys, 0);
    assert_int_equal(f->req.nargs, 1);
    assert_string_equal(f->req.buf, "*1\r\n$4\r\nPING\r\n");
    assert_int_equal(redis_req_read(f->in, &f->req, &lim, &f->err), REDIS_AGAIN);
    assert_int_equal(evbuffer_get_length(f->in), 4);
}

static void
test_keys_per_kind(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(read_req(f, S("*4\r\n$4\r\nmget\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"),
                              &lim), REDIS_OK);
    assert_int_equal(f->req.nkeys, 3);
    assert_int_equal(f->req.key_first, 1);
    assert_int_equal(f->req.key_step, 1);
    assert_key(&f->req, 2, "c");

    assert_int_equal(read_req(f, S("*5\r\n$4\r\nmset\r\n$1\r\na\r\n$1\r\n1\r\n"
                                   "$1\r\nb\r\n$1\r\n2\r\n"), &lim), REDIS_OK);
    assert_int_equal(f->req.nkeys, 2);
    assert_int_equal(f->req.key_step, 2);
    assert_key(&f->req, 0, "a");
    assert_key(&f->req, 1, "b");

    assert_int_equal(read_req(f, S("*6\r\n$4\r\neval\r\n$6\r\nreturn\r\n$1\r\n2\r\n"
                                   "$2\r\nk1\r\n$2\r\nk2\r\n$1\r\nx\r\n"), &lim), REDIS_OK);
    assert_int_equal(f->req.nkeys, 2);
    assert_int_equal(f->req.key_first, 3);
    assert_int_equal(f->req.key_step, 1);
    assert_key(&f->req, 0, "k1");
    assert_key(&f->req, 1, "k2");

    assert_int_equal(read_req(f, S("*4\r\n$5\r\nsmove\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nm\r\n"), &lim),
                     REDIS_OK);
    assert_int_equal(f->req.nkeys, 1);
    assert_key(&f->req, 0, "a");

    assert_int_equal(read_req(f, S("*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"), &lim), REDIS_OK);
    assert_int_equal(f->req.cmd->kind, REDIS_KIND_PROXY);
    assert_int_equal(f->req.nkeys, 0);
}

/* REDIS_ERROR: the whole request is consumed, the next one is intact. */
static void
test_errors_consume_request(void **state)
{
    static const struct {
        const char *req;
        size_t      len;
        const char *err;
        bool        known;
    } cases[] = {
        { S("*2\r\n$4\r\nkeys\r\n$1\r\n*\r\n"), "unsupported command", false },
        { S("*1\r\n$0\r\n\r\n"), "unsupported command", false },
        { S("*1\r\n$3\r\nget\r\n"), "wrong number of arguments", true },
        { S("*3\r\n$3\r\nget\r\n$1\r\na\r\n$1\r\nb\r\n"), "wrong number of arguments", true },
        { S("*1\r\n$4\r\nmget\r\n"), "wrong number of arguments", true },
        { S("*1\r\n$3\r\nset\r\n"), "wrong number of arguments", true },
        { S("*2\r\n$4\r\nping\r\n$1\r\nx\r\n"), "wrong number of arguments", true },
        { S("*4\r\n$4\r\nmset\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n"),
          "wrong number of arguments", true },
        { S("*4\r\n$4\r\neval\r\n$1\r\ns\r\n$1\r\n0\r\n$1\r\nk\r\n"), "invalid numkeys", true },
        { S("*4\r\n$4\r\neval\r\n$1\r\ns\r\n$2\r\n-1\r\n$1\r\nk\r\n"), "invalid numkeys", true },
        { S("*4\r\n$4\r\neval\r\n$1\r\ns\r\n$1\r\nx\r\n$1\r\nk\r\n"), "invalid numkeys", true },
        { S("*3\r\n$4\r\neval\r\n$1\r\ns\r\n$0\r\n\r\n"), "invalid numkeys", true },
        { S("*4\r\n$7\r\nevalsha\r\n$1\r\ns\r\n$11\r\n99999999999\r\n$1\r\nk\r\n"),
          "invalid numkeys", true },
        { S("*4\r\n$4\r\neval\r\n$1\r\ns\r\n$1\r\n2\r\n$1\r\nk\r\n"),
          "wrong number of arguments", true },
        { S("*3\r\n$4\r\neval\r\n$1\r\ns\r\n$1\r\n1\r\n"), "wrong number of arguments", true },
    };
    static const char next[] = "*1\r\n$4\r\nping\r\n";
    struct fixture *f = *state;
    struct sbuf s = { 0 };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s.len = 0;
        sbuf_add(&s, cases[i].req, cases[i].len);
        sbuf_add(&s, S(next));
        if (read_req(f, s.p, s.len, &lim) != REDIS_ERROR)
            fail_msg("case %zu not an error", i);
        assert_string_equal(f->err, cases[i].err);
        assert_int_equal(f->req.cmd != NULL, cases[i].known);
        assert_int_equal(f->req.nkeys, 0);
        assert_int_equal(f->req.len, cases[i].len);
        assert_int_equal(evbuffer_get_length(f->in), sizeof(next) - 1);
        assert_int_equal(redis_req_read(f->in, &f->req, &lim, &f->err), REDIS_OK);
        assert_string_equal(f->req.cmd->name, "ping");
    }
    free(s.p);
}

/* REDIS_FATAL: the stream cannot be framed; the reason is given. */
static void
test_fatal(void **state)
{
    static const struct {
        const char *req;
        size_t      len;
        const char *err;
    } cases[] = {
        { S("GET foo\r\n"), "inline commands are not supported" },
        { S("\r\n"), "inline commands are not supported" },
        { S("*0\r\n"), "invalid multibulk length" },
        { S("*-1\r\n"), "invalid multibulk length" },
        { S("*-0\r\n"), "invalid multibulk length" },
        { S("*01\r\n"), "invalid multibulk length" },
        { S("*\r\n"), "invalid multibulk length" },
        { S("*1x"), "invalid multibulk length" },
        { S("*1\rx"), "invalid multibulk length" },
        { S("*1\n"), "invalid multibulk length" },
        { S("*99999999999999999999\r\n"), "invalid multibulk length" },
        { S("*12345678901234567890123"), "invalid multibulk length" },
        { S("*1\r\n:3\r\n"), "expected '$'" },
        { S("*1\r\n+get\r\n"), "expected '$'" },
        { S("*1\r\n$-1\r\n"), "invalid bulk length" },
        { S("*1\r\n$x\r\n"), "invalid bulk length" },
        { S("*1\r\n$\r\n"), "invalid bulk length" },
        { S("*1\r\n$03\r\nget\r\n"), "invalid bulk length" },
        { S("*1\r\n$9223372036854775808\r\n"), "invalid bulk length" },
        { S("*1\r\n$3\r\ngetXY"), "missing CRLF after bulk" },
        { S("*1\r\n$3\r\nget\n\r"), "missing CRLF after bulk" },
        { S("*2\r\n$3\r\nget\r\n$1\r\nab\r\n"), "missing CRLF after bulk" },
    };
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (read_req(f, cases[i].req, cases[i].len, &lim) != REDIS_FATAL)
            fail_msg("case %zu not fatal", i);
        assert_string_equal(f->err, cases[i].err);
    }
}

/* Limits are enforced from the heads, before what they announce. */
static void
test_limits(void **state)
{
    struct redis_limits l = lim;
    struct fixture *f = *state;
    char big[1100];
    struct sbuf s = { 0 };

    l.max_args = 3;
    assert_int_equal(read_req(f, S("*4\r\n"), &l), REDIS_FATAL);
    assert_string_equal(f->err, "too many arguments");
    assert_int_equal(read_req(f, S("*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n"), &l),
                     REDIS_OK);

    assert_int_equal(read_req(f, S("*2\r\n$3\r\nget\r\n$1025\r\n"), &lim), REDIS_FATAL);
    assert_string_equal(f->err, "request too large");
    memset(big, 'v', sizeof(big));
    sbuf_printf(&s, "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1024\r\n");
    sbuf_add(&s, big, 1024);
    sbuf_add(&s, S("\r\n"));
    assert_int_equal(read_req(f, s.p, s.len, &lim), REDIS_OK);

    /* max_request: exactly the request's size is fine, one byte less not */
    l = lim;
    l.max_request = s.len;
    assert_int_equal(read_req(f, s.p, s.len, &l), REDIS_OK);
    l.max_request = s.len - 1;
    assert_int_equal(read_req(f, s.p, 30, &l), REDIS_FATAL);
    assert_string_equal(f->err, "request too large");
    /* the bulks still announced count too: 10 args cannot fit 50 bytes */
    l.max_request = 50;
    assert_int_equal(read_req(f, S("*10\r\n"), &l), REDIS_FATAL);
    assert_string_equal(f->err, "request too large");
    assert_int_equal(read_req(f, S("*3\r\n$3\r\nset\r\n$30\r\n"), &l), REDIS_FATAL);
    free(s.p);
}

/* AGAIN consumes nothing and keeps the bulks already framed. */
static void
test_progress_kept(void **state)
{
    static const char r[] = "*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    struct fixture *f = *state;

    assert_int_equal(read_req(f, r, 20, &lim), REDIS_AGAIN);
    assert_int_equal(evbuffer_get_length(f->in), 20);
    assert_int_equal(f->req.scan_nargs, 3);
    assert_int_equal(f->req.nargs, 1);
    assert_int_equal(f->req.scan_off, 13);
    evbuffer_add(f->in, r + 20, 10);
    assert_int_equal(redis_req_read(f->in, &f->req, &lim, &f->err), REDIS_AGAIN);
    assert_int_equal(f->req.nargs, 2);
    assert_int_equal(f->req.scan_off, 22);
    evbuffer_add(f->in, r + 30, sizeof(r) - 1 - 30);
    assert_int_equal(redis_req_read(f->in, &f->req, &lim, &f->err), REDIS_OK);
    assert_arg(&f->req, 2, S("value"));
    assert_int_equal(evbuffer_get_length(f->in), 0);
}

/* ---- the same results however the stream is cut ---------------------- */

/* Reads every request from `in` into the log, until AGAIN or FATAL.
 * Returns true after FATAL. */
static bool
drain_log(struct evbuffer *in, void *obj, struct sbuf *log)
{
    struct redis_req *req = obj;

    for (;;) {
        const char *err = NULL;
        size_t before = evbuffer_get_length(in);
        enum redis_status st = redis_req_read(in, req, &lim, &err);

        if (st == REDIS_AGAIN) {
            assert_int_equal(evbuffer_get_length(in), before);
            return false;
        }
        sbuf_printf(log, "%d %s %s len=%zu keys=%u/%u/%u:", (int)st,
                    err ? err : "-", req->cmd ? req->cmd->name : "-", req->len,
                    req->key_first, req->key_step, req->nkeys);
        for (uint32_t i = 0; st != REDIS_FATAL && i < req->nargs; i++) {
            sbuf_add(log, " ", 1);
            sbuf_add_escaped(log, req->buf + req->args[i].off, req->args[i].len);
        }
        sbuf_add(log, "\n", 1);
        if (st == REDIS_FATAL)
            return true;
    }
}

static void *
req_create(void)
{
    struct redis_req *req = malloc(sizeof(*req));

    assert_non_null(req);
    redis_req_init(req);
    return req;
}

static void
req_destroy(void *obj)
{
    redis_req_deinit(obj);
    free(obj);
}

static void
test_split_everywhere(void **state)
{
    static const struct test_framer framer = { req_create, req_destroy, drain_log };
    static const struct {
        const char *s;
        size_t      n;
    } streams[] = {
        { S("*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n") },
        { S("*3\r\n$3\r\nset\r\n$4\r\nk\r\nk\r\n$12\r\nvalue\r\n\r\n\r\nxx\r\n"
            "*4\r\n$4\r\nmget\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n*1\r\n$4\r\nping\r\n") },
        { S("*2\r\n$4\r\nkeys\r\n$1\r\n*\r\n*1\r\n$3\r\nget\r\n*2\r\n$3\r\nget\r\n$1\r\nz\r\n") },
        { S("*5\r\n$4\r\neval\r\n$3\r\nlua\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n*2\r\n$3\r\ngetXY") },
        { S("*2\r\n$3\r\nget\r\n$1\r\na\r\n*1\r\n$-1\r\n") },
        { S("*1\r\n$4\r\nquit\r\nGET x\r\n") },
        { S("*2\r\n$3\r\nget\r\n$2000\r\n") },
        { S("*2\r\n$3\r\nget\r\n$1\r\na\r\n*2\r\n$3\r\nget\r\n$1\r\nb") },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++)
        test_cuts_everywhere(&framer, streams[i].s, streams[i].n);
}

/* MGET of 50,000 keys arriving in 4 KB pieces (as many chains): each
 * call walks from the input's start once at most, and a bulk whose end
 * has not arrived costs no walk, so framing is linear in the request. */
static void
test_many_args_linear(void **state)
{
    struct fixture *f = *state;
    const struct redis_limits big = {
        .max_bulk = 1024, .max_args = 100000, .max_request = 8u << 20,
        .max_reply = 4096, .max_depth = 8,
    };
    enum { NKEYS = 50000 };
    size_t cap = 32 + (size_t)NKEYS * 16, len = 0, calls = 0;
    char *req = malloc(cap);
    enum redis_status st = REDIS_AGAIN;

    assert_non_null(req);
    len += (size_t)snprintf(req + len, cap - len, "*%d\r\n$4\r\nMGET\r\n", NKEYS + 1);
    for (int i = 0; i < NKEYS; i++)
        len += (size_t)snprintf(req + len, cap - len, "$6\r\nk%05d\r\n", i);
    ptr_lookups = 0;
    for (size_t off = 0; off < len && st == REDIS_AGAIN; off += 4096, calls++) {
        size_t n = len - off < 4096 ? len - off : 4096;
        evbuffer_add(f->in, req + off, n);
        st = redis_req_read(f->in, &f->req, &big, &f->err);
    }
    assert_int_equal(st, REDIS_OK);
    assert_int_equal(f->req.nargs, NKEYS + 1);
    assert_int_equal(f->req.nkeys, NKEYS);
    assert_arg(&f->req, NKEYS, "k49999", 6);
    assert_true(ptr_lookups <= calls);
    free(req);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_sorted_and_sound),
        cmocka_unit_test(test_lookup_every_entry),
        cmocka_unit_test(test_lookup_misses),
        cmocka_unit_test(test_table_entries),
        cmocka_unit_test_setup_teardown(test_read_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_binary_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_empty_arg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_per_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_consume_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_progress_kept, setup, teardown),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test_setup_teardown(test_many_args_linear, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
