/* Unit tests of proto_redis composing: the exact bytes of every unit, and
 * round trips: what is composed frames back (redis_req_read,
 * redis_rsp_read) into what was meant. */

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

static const struct redis_limits lim = {
    .max_bulk = 1024, .max_args = 64, .max_request = 4096,
    .max_reply = 4096, .max_depth = 8,
};

#define S(lit) lit, sizeof(lit) - 1   /* as in test_cuts.h */

struct fixture {
    struct redis_req  req;
    struct redis_req  back;
    struct redis_rsp  rsp;
    struct evbuffer  *in;
    struct evbuffer  *out;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL || (f->in = evbuffer_new()) == NULL || (f->out = evbuffer_new()) == NULL)
        return -1;
    redis_req_init(&f->req);
    redis_req_init(&f->back);
    redis_rsp_init(&f->rsp);
    f->rsp.want_elems = true;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    redis_req_deinit(&f->req);
    redis_req_deinit(&f->back);
    redis_rsp_deinit(&f->rsp);
    evbuffer_free(f->in);
    evbuffer_free(f->out);
    free(f);
    return 0;
}

static void
assert_out(struct fixture *f, const char *s, size_t n)
{
    assert_int_equal(evbuffer_get_length(f->out), n);
    assert_memory_equal(evbuffer_pullup(f->out, -1), s, n);
}

/* Frames the request s[0..n) into f->req. */
static void
frame_req(struct fixture *f, const char *s, size_t n)
{
    const char *err = NULL;

    evbuffer_add(f->in, s, n);
    assert_int_equal(redis_req_read(f->in, &f->req, &lim, &err), REDIS_OK);
}

/* Frames f->out back as a request into f->back; it must take all of it. */
static void
frame_back(struct fixture *f)
{
    const char *err = NULL;

    assert_int_equal(redis_req_read(f->out, &f->back, &lim, &err), REDIS_OK);
    assert_int_equal(evbuffer_get_length(f->out), 0);
}

static void
assert_back_key(const struct redis_req *r, uint32_t i, const char *key)
{
    const struct redis_token *t = &r->args[r->key_first + i * r->key_step];

    assert_true(i < r->nkeys);
    assert_int_equal(t->len, strlen(key));
    assert_memory_equal(r->buf + t->off, key, t->len);
}

/* ---- requests ---------------------------------------------------------- */

static void
test_split_multi(void **state)
{
    static const uint32_t idx[] = { 3, 1 };
    struct fixture *f = *state;

    frame_req(f, S("*5\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbb\r\n$0\r\n\r\n$1\r\nd\r\n"));
    assert_int_equal(redis_compose_split(f->out, &f->req, idx, 2), 0);
    assert_out(f, S("*3\r\n$4\r\nMGET\r\n$1\r\nd\r\n$2\r\nbb\r\n"));
    frame_back(f);
    assert_ptr_equal(f->back.cmd, f->req.cmd);
    assert_int_equal(f->back.nkeys, 2);
    assert_back_key(&f->back, 0, "d");
    assert_back_key(&f->back, 1, "bb");
}

static void
test_split_pairs(void **state)
{
    static const uint32_t idx[] = { 2, 0 };
    struct fixture *f = *state;

    frame_req(f, S("*7\r\n$4\r\nmset\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
                   "$1\r\nc\r\n$4\r\n3\r\n3\r\n"));
    assert_int_equal(redis_compose_split(f->out, &f->req, idx, 2), 0);
    assert_out(f, S("*5\r\n$4\r\nmset\r\n$1\r\nc\r\n$4\r\n3\r\n3\r\n$1\r\na\r\n$1\r\n1\r\n"));
    frame_back(f);
    assert_int_equal(f->back.nkeys, 2);
    assert_back_key(&f->back, 0, "c");
    assert_back_key(&f->back, 1, "a");
    assert_int_equal(f->back.args[4].len, 1);
    assert_memory_equal(f->back.buf + f->back.args[4].off, "1", 1);
}

static void
test_split_refused(void **state)
{
    static const uint32_t bad[] = { 0, 2 };
    static const uint32_t zero[] = { 0 };
    struct fixture *f = *state;

    frame_req(f, S("*3\r\n$3\r\ndel\r\n$1\r\na\r\n$1\r\nb\r\n"));
    assert_int_equal(redis_compose_split(f->out, &f->req, bad, 2), -1);
    assert_int_equal(redis_compose_split(f->out, &f->req, zero, 0), -1);
    assert_int_equal(evbuffer_get_length(f->out), 0);
    frame_req(f, S("*4\r\n$4\r\neval\r\n$1\r\ns\r\n$1\r\n1\r\n$1\r\nk\r\n"));
    assert_int_equal(redis_compose_split(f->out, &f->req, zero, 1), -1);
    frame_req(f, S("*1\r\n$4\r\nping\r\n"));
    assert_int_equal(redis_compose_split(f->out, &f->req, zero, 1), -1);
    assert_int_equal(evbuffer_get_length(f->out), 0);
    /* a single-key command is its own share */
    frame_req(f, S("*2\r\n$3\r\nget\r\n$1\r\nk\r\n"));
    assert_int_equal(redis_compose_split(f->out, &f->req, zero, 1), 0);
    assert_out(f, S("*2\r\n$3\r\nget\r\n$1\r\nk\r\n"));
}

static void
test_command(void **state)
{
    static const char *const argv[] = { "SET", "k\r\n", "" };
    static const size_t len[] = { 3, 3, 0 };
    struct fixture *f = *state;

    assert_int_equal(redis_compose_command(f->out, 3, argv, len), 0);
    assert_out(f, S("*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n"));
    frame_back(f);
    assert_string_equal(f->back.cmd->name, "set");
    assert_back_key(&f->back, 0, "k\r\n");
    assert_int_equal(redis_compose_command(f->out, 0, argv, len), -1);
}

/* ---- replies ----------------------------------------------------------- */

/* f->out frames back as one whole reply of this type. */
static void
rsp_back(struct fixture *f, enum redis_rsp_type type)
{
    redis_rsp_reset(&f->rsp);
    assert_int_equal(redis_rsp_read(f->out, &f->rsp, &lim), REDIS_OK);
    assert_int_equal(evbuffer_get_length(f->out), 0);
    assert_int_equal(f->rsp.type, type);
}

static void
test_lines(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(redis_compose_error(f->out, "ERR no server available"), 0);
    assert_out(f, S("-ERR no server available\r\n"));
    rsp_back(f, REDIS_RSP_ERROR);
    assert_int_equal(redis_compose_status(f->out, "OK"), 0);
    assert_out(f, S("+OK\r\n"));
    rsp_back(f, REDIS_RSP_STATUS);
    assert_int_equal(redis_compose_error(f->out, "ERR a\r\nb"), -1);
    assert_int_equal(redis_compose_status(f->out, "a\nb"), -1);
    assert_int_equal(evbuffer_get_length(f->out), 0);
}

static void
test_numbers(void **state)
{
    static const int64_t values[] = { 0, 1, -1, 42, INT64_MAX, -INT64_MAX };
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        assert_int_equal(redis_compose_integer(f->out, values[i]), 0);
        rsp_back(f, REDIS_RSP_INTEGER);
        assert_true(f->rsp.integer == values[i]);
    }
    assert_int_equal(redis_compose_integer(f->out, INT64_MIN), 0);
    assert_out(f, S(":-9223372036854775808\r\n"));
    evbuffer_drain(f->out, evbuffer_get_length(f->out));
    assert_int_equal(redis_compose_array_header(f->out, 0), 0);
    assert_out(f, S("*0\r\n"));
    rsp_back(f, REDIS_RSP_ARRAY);
    assert_int_equal(redis_compose_array_header(f->out, UINT32_MAX), 0);
    assert_out(f, S("*4294967295\r\n"));
}

/* Elements of two array replies merged into one, as a split MGET is. */
static void
test_elements_merge(void **state)
{
    static const char a[] = "*2\r\n$2\r\nv1\r\n*2\r\n$-1\r\n:3\r\n";
    static const char b[] = "*1\r\n$4\r\nv\r\n3\r\n";
    struct redis_rsp ra, rb;
    struct fixture *f = *state;

    redis_rsp_init(&ra);
    redis_rsp_init(&rb);
    ra.want_elems = rb.want_elems = true;
    evbuffer_add(f->in, S(a));
    evbuffer_add(f->in, S(b));
    assert_int_equal(redis_rsp_read(f->in, &ra, &lim), REDIS_OK);
    assert_int_equal(redis_rsp_read(f->in, &rb, &lim), REDIS_OK);
    assert_int_equal(redis_compose_array_header(f->out, 3), 0);
    assert_int_equal(redis_compose_element(f->out, &ra, 1), 0);
    assert_int_equal(redis_compose_element(f->out, &rb, 0), 0);
    assert_int_equal(redis_compose_element(f->out, &ra, 0), 0);
    assert_out(f, S("*3\r\n*2\r\n$-1\r\n:3\r\n$4\r\nv\r\n3\r\n$2\r\nv1\r\n"));
    rsp_back(f, REDIS_RSP_ARRAY);
    assert_int_equal(f->rsp.count, 3);
    assert_int_equal(redis_compose_element(f->out, &ra, 2), -1);
    redis_rsp_deinit(&ra);
    redis_rsp_deinit(&rb);
}

static void
test_element_refused(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(redis_compose_element(f->out, &f->rsp, 0), -1);   /* nothing read */
    evbuffer_add(f->in, S("$1\r\na\r\n*-1\r\n*0\r\n"));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
        assert_int_equal(redis_compose_element(f->out, &f->rsp, 0), -1);
    }
    assert_int_equal(evbuffer_get_length(f->out), 0);
}

/* An element big enough to span several chains is copied whole. */
static void
test_element_chains(void **state)
{
    struct fixture *f = *state;
    char v[1000];

    memset(v, 'z', sizeof(v));
    evbuffer_add(f->in, S("*2\r\n:1\r\n$1000\r\n"));
    for (size_t i = 0; i < sizeof(v); i += 100) {
        struct evbuffer *piece = evbuffer_new();     /* separate chains */
        evbuffer_add(piece, v + i, 100);
        evbuffer_add_buffer(f->in, piece);
        evbuffer_free(piece);
    }
    evbuffer_add(f->in, S("\r\n"));
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
    assert_int_equal(redis_compose_element(f->out, &f->rsp, 1), 0);
    assert_int_equal(evbuffer_get_length(f->out), 1000 + 9);
    rsp_back(f, REDIS_RSP_BULK);
    assert_int_equal(f->rsp.count, 1000);
}

/* Elements taken in order move to their slots; the bytes before one
 * (the head, an element passed over) are dropped; an element passed is
 * refused; so are elements that were not recorded. */
static void
test_take_elements(void **state)
{
    static const char r[] = "*4\r\n$2\r\nv1\r\n*2\r\n$-1\r\n:3\r\n+x\r\n$0\r\n\r\n";
    struct fixture *f = *state;

    evbuffer_add(f->in, S(r));
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
    assert_int_equal(redis_compose_take_element(f->out, &f->rsp, 1), 0);
    assert_out(f, S("*2\r\n$-1\r\n:3\r\n"));
    evbuffer_drain(f->out, evbuffer_get_length(f->out));
    assert_int_equal(redis_compose_take_element(f->out, &f->rsp, 0), -1);
    assert_int_equal(redis_compose_take_element(f->out, &f->rsp, 3), 0);
    assert_out(f, S("$0\r\n\r\n"));
    assert_int_equal(evbuffer_get_length(f->rsp.data), 0);
    assert_int_equal(redis_compose_take_element(f->out, &f->rsp, 4), -1);
    /* not recorded */
    evbuffer_drain(f->out, evbuffer_get_length(f->out));
    f->rsp.want_elems = false;
    redis_rsp_reset(&f->rsp);
    evbuffer_add(f->in, S(r));
    assert_int_equal(redis_rsp_read(f->in, &f->rsp, &lim), REDIS_OK);
    assert_int_equal(f->rsp.nelems, 0);
    assert_int_equal(redis_compose_take_element(f->out, &f->rsp, 0), -1);
    assert_int_equal(redis_compose_element(f->out, &f->rsp, 0), -1);
    assert_int_equal(evbuffer_get_length(f->out), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_multi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_elements_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_element_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_element_chains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_elements, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
