/* Unit tests for proto_mc_compose: the exact bytes of every unit the proxy
 * writes (mc_req_compose_line itself is tested in test_proto_mc_req.c),
 * and the refusals that leave the buffer as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/proto_mc.h"
#include "test_line.h"

static const struct mc_limits limits = { .max_line = 2048, .max_value = 1 << 20,
                                         .read_chunk = 16384 };

/* Asserts that out holds exactly `want`, then empties it. */
static void
assert_bytes(struct evbuffer *out, const char *want)
{
    size_t len = evbuffer_get_length(out);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(evbuffer_pullup(out, -1), want, len);
    evbuffer_drain(out, len);
}

static int
setup(void **state)
{
    *state = evbuffer_new();
    return *state == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    evbuffer_free(*state);
    return 0;
}

static void
parse_line(struct mc_req *req, const char *line)
{
    const char *err;
    assert_int_equal(test_req_parse(req, line, &limits, &err), MC_OK);
}

static void
test_compose_get(void **state)
{
    static const uint32_t odd[] = { 1, 3 }, bad[] = { 4 };
    struct evbuffer *out = *state;
    struct mc_req req;

    mc_req_init(&req);
    parse_line(&req, "get a bb c dd");
    assert_int_equal(mc_compose_get(out, MC_CMD_GET, &req, NULL, 4), 0);
    assert_bytes(out, "get a bb c dd\r\n");
    assert_int_equal(mc_compose_get(out, MC_CMD_GETS, &req, odd, 2), 0);
    assert_bytes(out, "gets bb dd\r\n");
    assert_int_equal(mc_compose_get(out, MC_CMD_GET, &req, NULL, 0), -1);
    assert_int_equal(mc_compose_get(out, MC_CMD_GET, &req, bad, 1), -1);
    assert_int_equal(mc_compose_get(out, MC_CMD_SET, &req, NULL, 1), -1);
    assert_int_equal(evbuffer_get_length(out), 0);
    parse_line(&req, "gat -1 k1 k2");
    assert_int_equal(mc_compose_get(out, MC_CMD_GAT, &req, odd, 1), 0);
    assert_bytes(out, "gat -1 k2\r\n");
    mc_req_deinit(&req);
}

static void
test_compose_storage(void **state)
{
    struct evbuffer *out = *state;

    assert_int_equal(mc_compose_storage(out, MC_CMD_SET, "key", 3, 0, 0, 0), 0);
    assert_bytes(out, "set key 0 0 0\r\n");
    assert_int_equal(mc_compose_storage(out, MC_CMD_ADD, "k", 1, 4294967295u, 60, 5), 0);
    assert_bytes(out, "add k 4294967295 60 5\r\n");
    assert_int_equal(mc_compose_storage(out, MC_CMD_REPLACE, "k", 1, 1, -1, 1048576), 0);
    assert_bytes(out, "replace k 1 -1 1048576\r\n");
    assert_int_equal(mc_compose_storage(out, MC_CMD_PREPEND, "kx", 1, 2, 3, 4), 0);
    assert_bytes(out, "prepend k 2 3 4\r\n");
    /* cas needs its unique; no key; a key too long; not a storage command */
    assert_int_equal(mc_compose_storage(out, MC_CMD_CAS, "k", 1, 0, 0, 1), -1);
    assert_int_equal(mc_compose_storage(out, MC_CMD_SET, "", 0, 0, 0, 1), -1);
    char longkey[MC_KEY_MAX + 1];
    memset(longkey, 'x', sizeof(longkey));
    assert_int_equal(mc_compose_storage(out, MC_CMD_SET, longkey, MC_KEY_MAX + 1, 0, 0, 1), -1);
    assert_int_equal(mc_compose_storage(out, MC_CMD_DELETE, "k", 1, 0, 0, 1), -1);
    assert_int_equal(evbuffer_get_length(out), 0);
    assert_int_equal(mc_compose_storage(out, MC_CMD_SET, longkey, MC_KEY_MAX, 0, 0, 1), 0);
    assert_int_equal(evbuffer_get_length(out), strlen("set  0 0 1\r\n") + MC_KEY_MAX);
    evbuffer_drain(out, evbuffer_get_length(out));
}

static void
test_compose_delete_touch(void **state)
{
    struct evbuffer *out = *state;

    assert_int_equal(mc_compose_delete(out, "user:1", 6), 0);
    assert_bytes(out, "delete user:1\r\n");
    assert_int_equal(mc_compose_touch(out, "k", 1, 0), 0);
    assert_bytes(out, "touch k 0\r\n");
    assert_int_equal(mc_compose_touch(out, "k", 1, -2147483648LL), 0);
    assert_bytes(out, "touch k -2147483648\r\n");
    assert_int_equal(mc_compose_delete(out, "k", 0), -1);
    assert_int_equal(mc_compose_touch(out, NULL, 1, 5), -1);
    assert_int_equal(evbuffer_get_length(out), 0);
}

static void
test_compose_block(void **state)
{
    struct evbuffer *out = *state, *data = evbuffer_new();

    assert_non_null(data);
    evbuffer_add(data, "abc", 3);
    assert_int_equal(mc_compose_block(out, data, true), 0);
    assert_bytes(out, "abc\r\n");
    assert_int_equal(evbuffer_get_length(data), 3);   /* kept */
    assert_int_equal(mc_compose_block(out, data, false), 0);
    assert_bytes(out, "abc\r\n");
    assert_int_equal(evbuffer_get_length(data), 0);   /* moved */
    assert_int_equal(mc_compose_block(out, data, true), 0);
    assert_bytes(out, "\r\n");
    evbuffer_free(data);
}

static void
test_compose_value(void **state)
{
    struct evbuffer *out = *state, *in = evbuffer_new();
    struct mc_rsp rsp;

    assert_non_null(in);
    mc_rsp_init(&rsp);
    evbuffer_add(in, "VALUE k 5 3 99\r\nabc\r\n", 21);
    assert_int_equal(mc_rsp_read(in, &rsp, &limits), MC_OK);
    assert_int_equal(mc_compose_value(out, &rsp), 0);
    assert_bytes(out, "VALUE k 5 3 99\r\nabc\r\n");
    assert_int_equal(evbuffer_get_length(rsp.data), 0);
    mc_rsp_reset(&rsp);
    evbuffer_add(in, "END\r\n", 5);
    assert_int_equal(mc_rsp_read(in, &rsp, &limits), MC_OK);
    assert_int_equal(mc_compose_value(out, &rsp), -1);   /* not a VALUE */
    assert_int_equal(evbuffer_get_length(out), 0);
    mc_rsp_deinit(&rsp);
    evbuffer_free(in);
}

static void
test_compose_reply_line(void **state)
{
    struct evbuffer *out = *state;

    assert_int_equal(mc_compose_reply_line(out, "END"), 0);
    assert_int_equal(mc_compose_reply_line(out, "SERVER_ERROR out of memory"), 0);
    assert_bytes(out, "END\r\nSERVER_ERROR out of memory\r\n");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_compose_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_storage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_delete_touch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_reply_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
