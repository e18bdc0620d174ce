/* Unit tests of redis_info: INFO's text (Redis's format: "# Section"
 * headers, "key:value" lines, CRLF ends, one bulk string), which
 * sections a request selects, counters summed over workers; COMMAND's
 * replies from the command table. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/redis_info.h"

static const struct redis_limits lim = {
    .max_bulk = 1024, .max_args = 64, .max_request = 4096,
    .max_reply = 1 << 20, .max_depth = 8,
};

/* Two master shards (one named with a comma), and the same two as a
 * slave tier, two workers' counters. */
struct fixture {
    struct conf_server  servers[2];
    struct conf_server  slave_servers[2];
    struct conf_tier    slaves;
    struct conf_pool    pool;
    struct stats_server ss[2][4];
    struct stats_tier   st[2][2];
    struct stats_pool   sp[2];
    const struct stats_pool *stats[2];
    struct redis_info_pool info;
    struct redis_info_proc proc;
    struct redis_req    req;
    struct evbuffer    *in;
    struct evbuffer    *out;
    char               *text;     /* the last reply, NUL-ended */
};

static void
fixture_servers(struct conf_server *s)
{
    s[0] = (struct conf_server){ .addr = { .host = "127.0.0.1", .port = 6379 },
                                 .weight = 1, .name = "shard,a", .text = "127.0.0.1:6379:1" };
    s[1] = (struct conf_server){ .addr = { .host = "127.0.0.1", .port = 6380 },
                                 .weight = 1, .name = NULL, .text = "127.0.0.1:6380:1" };
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL || (f->in = evbuffer_new()) == NULL || (f->out = evbuffer_new()) == NULL)
        return -1;
    fixture_servers(f->servers);
    fixture_servers(f->slave_servers);
    f->pool.name = "cache";
    f->pool.redis = true;
    f->pool.master = (struct conf_tier){ .servers = f->servers, .nservers = 2,
                                         .server_retry_timeout_ms = 30000 };
    f->slaves = f->pool.master;
    f->slaves.servers = f->slave_servers;
    for (int w = 0; w < 2; w++) {
        f->sp[w].servers = f->ss[w];
        f->sp[w].nservers = 2;
        f->sp[w].tiers = f->st[w];
        f->sp[w].ntiers = 1;
        f->stats[w] = &f->sp[w];
    }
    f->info = (struct redis_info_pool){ .conf = &f->pool, .stats = f->stats, .nstats = 2 };
    f->proc = (struct redis_info_proc){
        .version = "9.8.7", .pid = 4242, .uptime_s = 2 * 86400 + 5, .workers = 2,
        .generation = 3, .source = "/etc/strata.yml", .loaded_at = 1700000000,
        .reloads = 2, .reload_failures = 1, .dns_failures = 5, .total_connections = 77,
        .now_ms = 1800000000000LL,
    };
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
    evbuffer_free(f->out);
    free(f->text);
    free(f);
    return 0;
}

/* Frames `raw` (a whole RESP request) into f->req. */
static void
frame(struct fixture *f, const char *raw)
{
    const char *err = NULL;

    redis_req_reset(&f->req);
    evbuffer_add(f->in, raw, strlen(raw));
    assert_int_equal(redis_req_read(f->in, &f->req, &lim, &err), REDIS_OK);
}

/* The reply in f->out as a string (f->text), the buffer emptied. */
static const char *
take(struct fixture *f)
{
    size_t n = evbuffer_get_length(f->out);

    free(f->text);
    f->text = calloc(1, n + 1);
    assert_non_null(f->text);
    evbuffer_remove(f->out, f->text, n);
    return f->text;
}

/* INFO's reply for the request `raw`: the bulk's payload (its length
 * checked against the head). */
static const char *
info(struct fixture *f, const char *raw)
{
    frame(f, raw);
    assert_int_equal(redis_info_compose(f->out, &f->req, &f->proc, &f->info), 0);
    const char *r = take(f);
    assert_int_equal(r[0], '$');
    char *end;
    long len = strtol(r + 1, &end, 10);
    assert_memory_equal(end, "\r\n", 2);
    assert_int_equal(strlen(end + 2), (size_t)len + 2);
    assert_string_equal(end + 2 + len, "\r\n");
    end[2 + len] = '\0';
    return end + 2;
}

/* Every line ends in CRLF; each is "# Name", "key:value" or the blank
 * line between two sections. */
static void
assert_info_format(const char *text)
{
    const char *p = text;
    bool blank_ok = false;

    while (*p != '\0') {
        const char *eol = strstr(p, "\r\n");
        assert_non_null(eol);
        assert_null(memchr(p, '\n', (size_t)(eol - p)));
        if (eol == p) {
            assert_true(blank_ok);
            assert_memory_equal(eol + 2, "# ", 2);
        } else if (*p == '#') {
            assert_memory_equal(p, "# ", 2);
        } else {
            const char *colon = memchr(p, ':', (size_t)(eol - p));
            assert_non_null(colon);
            assert_true(colon > p);
        }
        blank_ok = eol != p;
        p = eol + 2;
    }
}

static void
test_info_all_sections_in_order(void **state)
{
    struct fixture *f = *state;
    static const char *const raws[] = {
        "*1\r\n$4\r\nINFO\r\n", "*2\r\n$4\r\ninfo\r\n$3\r\nall\r\n",
        "*2\r\n$4\r\nINFO\r\n$7\r\nDEFAULT\r\n", "*2\r\n$4\r\nINFO\r\n$10\r\neverything\r\n",
    };

    for (size_t i = 0; i < sizeof(raws) / sizeof(raws[0]); i++) {
        const char *t = info(f, raws[i]);
        assert_info_format(t);
        const char *server = strstr(t, "# Server\r\n"), *clients = strstr(t, "\r\n\r\n# Clients\r\n");
        const char *stats = strstr(t, "\r\n\r\n# Stats\r\n"), *servers = strstr(t, "\r\n\r\n# Servers\r\n");
        assert_ptr_equal(server, t);
        assert_true(clients != NULL && stats != NULL && servers != NULL);
        assert_true(clients < stats && stats < servers);
        assert_null(strstr(t, "# Tiers"));   /* a plain pool */
    }
}

static void
test_info_server_section(void **state)
{
    struct fixture *f = *state;
    const char *t = info(f, "*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n");

    assert_string_equal(t,
        "# Server\r\nstrata_version:9.8.7\r\nproxy_mode:strata\r\nprocess_id:4242\r\n"
        "uptime_in_seconds:172805\r\nuptime_in_days:2\r\nworkers:2\r\npool:cache\r\n"
        "config_generation:3\r\nconfig_loaded_at:1700000000\r\n"
        "config_source:/etc/strata.yml\r\nreloads:2\r\nreload_failures:1\r\n"
        "dns_failures:5\r\n");
}

static void
test_info_stats_summed_over_workers(void **state)
{
    struct fixture *f = *state;

    f->sp[0].f[STATS_client_err] = 2;
    f->sp[1].f[STATS_client_err] = 3;
    f->sp[0].f[STATS_fragments] = 10;
    f->sp[1].f[STATS_client_connections] = 4;
    f->sp[0].limits[STATS_LIMIT_auth_failures] = 1;
    f->sp[1].limits[STATS_LIMIT_auth_failures] = 6;
    const char *t = info(f, "*2\r\n$4\r\nINFO\r\n$5\r\nStats\r\n");
    assert_string_equal(t,
        "# Stats\r\nclient_eof:0\r\nclient_err:5\r\nserver_ejects:0\r\nforward_error:0\r\n"
        "fragments:10\r\nreply_too_large:0\r\nout_of_memory:0\r\nreply_over_budget:0\r\n"
        "request_timeout:0\r\nclients_refused:0\r\nauth_failures:7\r\n");
    t = info(f, "*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n");
    assert_string_equal(t, "# Clients\r\nconnected_clients:4\r\ntotal_connections_received:77\r\n");
}

static void
test_info_servers_lines(void **state)
{
    struct fixture *f = *state;

    f->ss[0][0].f[STATS_requests] = 5;
    f->ss[1][0].f[STATS_requests] = 6;
    f->ss[1][0].f[STATS_responses] = 11;
    f->ss[0][1].f[STATS_server_timedout] = 1;
    /* ejected 10 s ago, retry after 30 s: still out */
    f->ss[0][1].f[STATS_server_ejected_at] = (f->proc.now_ms - 10000) * 1000;
    f->ss[1][1].f[STATS_server_ejected_at] = (f->proc.now_ms - 50000) * 1000;
    const char *t = info(f, "*2\r\n$4\r\nINFO\r\n$7\r\nservers\r\n");
    char want[512];
    snprintf(want, sizeof(want),
        "# Servers\r\n"
        "server0:tier=master,name=shard_a,addr=127.0.0.1:6379,requests=11,responses=11,"
        "server_err=0,server_timedout=0,server_eof=0,server_connections=0,"
        "server_ejected_at=0,ejected=0\r\n"
        "server1:tier=master,name=127.0.0.1:6380,addr=127.0.0.1:6380,requests=0,responses=0,"
        "server_err=0,server_timedout=1,server_eof=0,server_connections=0,"
        "server_ejected_at=%lld,ejected=1\r\n",
        (long long)((f->proc.now_ms - 10000) * 1000));
    assert_string_equal(t, want);
    /* a unix socket server: its path, without the weight */
    f->servers[1].addr = (struct conf_addr){ .path = "/tmp/redis.sock" };
    f->servers[1].text = "/tmp/redis.sock:1";
    t = info(f, "*2\r\n$4\r\nINFO\r\n$7\r\nservers\r\n");
    assert_non_null(strstr(t, "server1:tier=master,name=/tmp/redis.sock:,addr=/tmp/redis.sock,"));
    /* past server_retry_timeout: back */
    f->ss[0][1].f[STATS_server_ejected_at] = (f->proc.now_ms - 31000) * 1000;
    t = info(f, "*2\r\n$4\r\nINFO\r\n$7\r\nservers\r\n");
    assert_non_null(strstr(t, "server1:"));
    assert_non_null(strstr(strstr(t, "server1:"), ",ejected=0\r\n"));
}

static void
test_info_tiers_of_a_pool_with_slaves(void **state)
{
    struct fixture *f = *state;

    f->pool.tiered = true;
    f->pool.slaves = &f->slaves;
    f->pool.nslaves = 1;
    for (int w = 0; w < 2; w++) {
        f->sp[w].nservers = 4;
        f->sp[w].ntiers = 2;
        f->st[w][1].f[STATS_TIER_reads] = 3 + w;
        f->st[w][1].f[STATS_TIER_hits] = 100;   /* a memcached counter: not shown */
    }
    f->ss[1][3].f[STATS_requests] = 9;
    const char *t = info(f, "*1\r\n$4\r\nINFO\r\n");
    assert_info_format(t);
    assert_non_null(strstr(t, "\r\nserver2:tier=slaves[0],name=shard_a,addr=127.0.0.1:6379,"));
    assert_non_null(strstr(t, "\r\nserver3:tier=slaves[0],name=127.0.0.1:6380,"
                              "addr=127.0.0.1:6380,requests=9,"));
    const char *tiers = strstr(t, "\r\n\r\n# Tiers\r\n");
    assert_non_null(tiers);
    assert_string_equal(tiers + 4,
        "# Tiers\r\ntier0:name=master,servers=2,reads=0,read_fallbacks=0\r\n"
        "tier1:name=slaves[0],servers=2,reads=7,read_fallbacks=0\r\n");
}

static void
test_info_unknown_and_several_sections(void **state)
{
    struct fixture *f = *state;

    assert_string_equal(info(f, "*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n"), "");
    /* Redis 7 takes several; unknown ones add nothing */
    const char *t = info(f, "*4\r\n$4\r\nINFO\r\n$7\r\nCLIENTS\r\n$4\r\nnope\r\n$6\r\nserver\r\n");
    assert_non_null(strstr(t, "# Server\r\n"));
    assert_non_null(strstr(t, "\r\n\r\n# Clients\r\n"));
    assert_null(strstr(t, "# Stats"));
    /* tiers of a plain pool: nothing */
    assert_string_equal(info(f, "*2\r\n$4\r\nINFO\r\n$5\r\ntiers\r\n"), "");
}

static void
test_command_count_docs_list(void **state)
{
    struct fixture *f = *state;
    size_t n;
    char want[32];

    redis_cmd_table(&n);
    frame(f, "*2\r\n$7\r\nCOMMAND\r\n$5\r\nCOUNT\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    snprintf(want, sizeof(want), ":%zu\r\n", n);
    assert_string_equal(take(f), want);
    frame(f, "*2\r\n$7\r\ncommand\r\n$4\r\ndocs\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    assert_string_equal(take(f), "*0\r\n");
    frame(f, "*3\r\n$7\r\ncommand\r\n$4\r\nDOCS\r\n$3\r\nget\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    assert_string_equal(take(f), "*0\r\n");
    frame(f, "*2\r\n$7\r\ncommand\r\n$4\r\nlist\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    snprintf(want, sizeof(want), "*%zu\r\n$6\r\nappend\r\n", n);
    assert_memory_equal(take(f), want, strlen(want));
}

static void
test_command_info_entries(void **state)
{
    struct fixture *f = *state;

    frame(f, "*6\r\n$7\r\nCOMMAND\r\n$4\r\nINFO\r\n$3\r\nGET\r\n$4\r\nmset\r\n"
             "$4\r\nkeys\r\n$4\r\ninfo\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    assert_string_equal(take(f),
        "*4\r\n"
        "*6\r\n$3\r\nget\r\n:2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n"
        "*6\r\n$4\r\nmset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n"
        "$-1\r\n"
        "*6\r\n$4\r\ninfo\r\n:-1\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n");
}

/* COMMAND: one entry per table command, the whole reply one RESP unit. */
static void
test_command_whole_table(void **state)
{
    struct fixture *f = *state;
    struct redis_rsp rsp;
    size_t n;

    redis_cmd_table(&n);
    frame(f, "*1\r\n$7\r\nCOMMAND\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    redis_rsp_init(&rsp);
    rsp.want_elems = true;
    assert_int_equal(redis_rsp_read(f->out, &rsp, &lim), REDIS_OK);
    assert_int_equal(rsp.type, REDIS_RSP_ARRAY);
    assert_int_equal(rsp.nelems, n);
    assert_int_equal(evbuffer_get_length(f->out), 0);
    /* COMMAND INFO naming none: every command too, as Redis 7 */
    frame(f, "*2\r\n$7\r\nCOMMAND\r\n$4\r\ninfo\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    redis_rsp_reset(&rsp);
    assert_int_equal(redis_rsp_read(f->out, &rsp, &lim), REDIS_OK);
    assert_int_equal(rsp.nelems, n);
    redis_rsp_deinit(&rsp);
}

static void
test_command_unknown_subcommand(void **state)
{
    struct fixture *f = *state;

    frame(f, "*2\r\n$7\r\nCOMMAND\r\n$8\r\nGETK\r\nYS\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    assert_string_equal(take(f), "-ERR unknown subcommand 'GETK__YS'. Try COMMAND HELP.\r\n");
    frame(f, "*3\r\n$7\r\nCOMMAND\r\n$5\r\ncount\r\n$1\r\nx\r\n");
    assert_int_equal(redis_info_command(f->out, &f->req), 0);
    assert_string_equal(take(f), "-ERR unknown subcommand 'count'. Try COMMAND HELP.\r\n");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_info_all_sections_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_server_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_stats_summed_over_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_servers_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_tiers_of_a_pool_with_slaves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_unknown_and_several_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_count_docs_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_info_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_whole_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_unknown_subcommand, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
