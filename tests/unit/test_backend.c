/* Unit tests for backend: pipelined connections to one memcached server.
 *
 * The test plays memcached on a real socket (127.0.0.1 on a port the
 * kernel chose; a unix path where nothing listens for connects that must
 * fail) and drives the worker's loop itself, one turn at a time. It
 * asserts the exact bytes the server receives and the exact events each
 * request's callback gets, as a log of lines "ID VALUE key flags len
 * data", "ID END" (the reply's last line), "ID FAIL reason":
 *   - a VALUE reply framed at every byte boundary;
 *   - requests of one batch gathered into one write, replies matched in
 *     order;
 *   - no callback from inside backend_send, even when the connect fails;
 *   - timeout, a garbled or unsolicited reply, a reply that does not
 *     fit its command (END, a number, VERSION or a VALUE to a set), a
 *     VALUE whose key the callback refuses, EOF in the middle of a
 *     value: every request in flight fails, the connection is reset, the
 *     next request reconnects; the server stats count each;
 *   - the clocks of `timeout` (over a unix socket, whose kernel buffer is
 *     small and fixed): a request's reply clock starts when the kernel
 *     took its last byte, not when it was queued; output the kernel
 *     refuses for `timeout` (a server that does not read) times out;
 *     a server that reads and answers slowly but steadily never does;
 *   - ejection after server_failure_limit failures, until
 *     server_retry_timeout;
 *   - a 1 MB value arrives intact;
 *   - Redis: the bytes of a reply still being framed are told to the
 *     head request's owner, and given back before its callback;
 *   - fences: a new connection sends the probe "mn" alone and holds the
 *     requests until it is answered. A server that answers ERROR (as
 *     memcached < 1.6 does; every test above plays one) gets no fences
 *     and its replies are matched by position; one that answers MN gets
 *     "mn" after every request, and a request is done only when the MN
 *     after its reply has come: an extra END before or after a reply, an
 *     MN where a reply is due or with nothing waiting, fail every request
 *     in flight (never a false miss) and reset the connection; a probe
 *     answered with anything else, or not at all, fails them too;
 *   - fences per batch: one "mn" after the requests one write carries,
 *     and their replies are held until its MN (two batches in flight
 *     complete apart); a skipped or an extra reply fails the whole batch
 *     before any of it is delivered;
 *   - Redis fences: "ECHO <token>:<seq>" after each batch, replies held
 *     until its exact echo; a skipped or extra reply, or an echo with
 *     another token, fails the batch "out of step"; an error to the
 *     first fence (NOAUTH) turns fences off on that connection;
 *   - the bookkeeping of backend_fence.c: tokens, the ECHO bytes, the
 *     match of a reply against the fence due, the held replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "strata/backend.h"
#include "strata/backend_fence.h"
#include "strata/conn.h"
#include "strata/util.h"
#include "test_sbuf.h"
#include "test_net.h"

#define BIG_VALUE (1 << 20)

struct fx {
    struct event_base     *base;
    struct conn_loop       loop;
    struct backend_worker  bw;
    struct conf_server     cs;
    struct conf_tier       tier;
    struct backend_server  s;
    struct stats_server    stats;
    struct stats_pool      pstats;
    uint32_t               epoch;     /* bumped by backend on eject */
    int                    lfd;       /* the fake memcached's listener, or -1 */
    int                    sfd;       /* its accepted connection, or -1 */
    char                   path[64];  /* unix path where nothing listens */
    char                   text[80];
};

/* fence_replies on: every test's fake server first sees the probe "mn"
 * (net_accept_probed); off, nothing is probed (the integration suite). */
static struct mc_limits limits = { .max_line = 4096, .max_value = BIG_VALUE,
                                   .read_chunk = 16384,
                                   .fence_replies = MC_FENCE_REQUEST };

/* Redis servers' limits (the Redis fence tests). */
static struct redis_limits rlimits = { .max_bulk = 1 << 20, .max_args = 1024,
                                       .max_request = 1 << 21, .max_reply = 1 << 21,
                                       .max_depth = 8 };

/* What the callbacks were told, in order; big values' data apart. */
static struct sbuf events;
static struct sbuf big;

static const char *events_str(void)
{
    return events.p != NULL ? events.p : "";
}

static void record_value(int id, struct mc_rsp *rsp)
{
    size_t n = evbuffer_get_length(rsp->data);
    sbuf_printf(&events, "%d VALUE %.*s %u %zu ", id, (int)rsp->key.len,
                rsp->line + rsp->key.off, rsp->flags, n);
    struct sbuf *to = n <= 64 ? &events : &big;
    char *tmp = malloc(n + 1);
    assert_non_null(tmp);
    assert_int_equal(evbuffer_remove(rsp->data, tmp, n), (int)n);
    sbuf_add(to, tmp, n);
    free(tmp);
    sbuf_add(&events, "\n", 1);
}

static bool on_reply(void *arg, enum backend_event ev, struct mc_rsp *rsp,
                     const char *reason)
{
    int id = (int)(intptr_t)arg;
    switch (ev) {
    case BACKEND_VALUE:
        /* keys starting "bad" stand for keys the request did not ask */
        if (rsp->key.len >= 3 && memcmp(rsp->line + rsp->key.off, "bad", 3) == 0)
            return false;
        record_value(id, rsp);
        break;
    case BACKEND_DONE:
        sbuf_printf(&events, "%d %s\n", id, rsp->line);
        break;
    case BACKEND_FAIL:
        sbuf_printf(&events, "%d FAIL %s\n", id, reason);
        break;
    }
    return true;
}

/* backend_send of a request given as text, tagged id in the log. */
static void send_req(struct fx *f, enum mc_cmd cmd, const char *bytes, int id)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    evbuffer_add(b, bytes, strlen(bytes));
    backend_send(&f->s, cmd, b, on_reply, (void *)(intptr_t)id);
    assert_int_equal(evbuffer_get_length(b), 0);   /* the bytes were moved */
    evbuffer_free(b);
}

/* backend_send of n bytes, tagged id in the log. */
static void send_raw(struct fx *f, enum mc_cmd cmd, const char *bytes, size_t n, int id)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    evbuffer_add(b, bytes, n);
    backend_send(&f->s, cmd, b, on_reply, (void *)(intptr_t)id);
    assert_int_equal(evbuffer_get_length(b), 0);
    evbuffer_free(b);
}

/* A set of `vlen` bytes of value: its request text, *n bytes (free it). */
static char *set_request(const char *key, size_t vlen, size_t *n)
{
    char head[64];
    int hn = snprintf(head, sizeof(head), "set %s 0 0 %zu\r\n", key, vlen);
    *n = (size_t)hn + vlen + 2;
    char *req = malloc(*n);
    assert_non_null(req);
    memcpy(req, head, (size_t)hn);
    memset(req + hn, 'v', vlen);
    memcpy(req + hn + vlen, "\r\n", 2);
    return req;
}

/* Waits until the log is exactly want. */
static void expect_events(struct fx *f, const char *want)
{
    NET_WAIT(&f->loop, events.len >= strlen(want));
    assert_string_equal(events_str(), want);
}

static int64_t stat_of(struct fx *f, enum stats_server_field k)
{
    return f->stats.f[k];
}

/* Accepts the proxy's connection; its first bytes are the probe, alone
 * (the requests wait for its answer); answers it with `answer`. */
static int accept_probe(struct fx *f, const char *answer)
{
    return net_accept_probed(&f->loop, f->lfd, answer);
}

/* A memcached < 1.6: "mn" is an unknown command, no fences. */
static int accept_unfenced(struct fx *f)
{
    return accept_probe(f, "ERROR\r\n");
}

/* A memcached >= 1.6: fences on. */
static int accept_fenced(struct fx *f)
{
    return accept_probe(f, "MN\r\n");
}

/* Preconnect to a memcached >= 1.6: the probe answered, fences on,
 * nothing queued. */
static void connect_fenced(struct fx *f)
{
    backend_server_connect(&f->s);
    f->sfd = accept_fenced(f);
    net_run_for(&f->loop, 5);
}

/* ---- fixtures ---- */

/* A TCP listener on 127.0.0.1, port chosen by the kernel. */
static int listen_tcp(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, len), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    net_nonblock(fd);
    return fd;
}

static struct fx *fx_new(int timeout_ms)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    free(events.p);
    free(big.p);
    memset(&events, 0, sizeof(events));
    memset(&big, 0, sizeof(big));
    f->lfd = f->sfd = -1;
    f->base = event_base_new();
    assert_non_null(f->base);
    conn_loop_init(&f->loop, f->base, limits.read_chunk);
    backend_worker_init(&f->bw, &f->loop);
    f->tier = (struct conf_tier){
        .servers = &f->cs, .nservers = 1,
        .hash = HASHKIT_HASH_MD5, .distribution = HASHKIT_DIST_KETAMA,
        .timeout_ms = timeout_ms, .server_connections = 1,
        .auto_eject_hosts = false, .server_retry_timeout_ms = 30000,
        .server_failure_limit = 2,
    };
    return f;
}

static void fx_server_init(struct fx *f, struct conf_addr addr)
{
    f->cs = (struct conf_server){ .addr = addr, .weight = 1, .text = f->text };
    char err[256] = "";
    assert_int_equal(backend_server_init(&f->s, &f->cs, &f->tier, &f->bw, &limits,
                                         &f->pstats, &f->stats, &f->epoch,
                                         err, sizeof(err)), 0);
}

/* A server listening on 127.0.0.1. */
static struct fx *fx_tcp(int timeout_ms)
{
    struct fx *f = fx_new(timeout_ms);
    uint16_t port;
    f->lfd = listen_tcp(&port);
    snprintf(f->text, sizeof(f->text), "127.0.0.1:%u:1", (unsigned)port);
    fx_server_init(f, (struct conf_addr){ .host = "127.0.0.1", .port = port });
    return f;
}

static int setup_tcp(void **state)
{
    *state = fx_tcp(-1);
    return 0;
}

/* fence_replies per batch ("mn" after each write). */
static int setup_batch(void **state)
{
    limits.fence_replies = MC_FENCE_BATCH;
    *state = fx_tcp(-1);
    return 0;
}

/* A Redis server with redis_fence_replies on (no AUTH, no SELECT). */
static int setup_redis(void **state)
{
    limits.redis_fence_replies = true;
    struct fx *f = fx_tcp(-1);
    backend_server_set_redis(&f->s, NULL, 0, &rlimits);
    *state = f;
    return 0;
}

static int setup_timeout(void **state)
{
    *state = fx_tcp(50);
    return 0;
}

/* 127.0.0.1 on a port that was free a moment ago: connect is refused. */
static int setup_refused(void **state)
{
    struct fx *f = fx_new(-1);
    uint16_t port;
    close(listen_tcp(&port));
    snprintf(f->text, sizeof(f->text), "127.0.0.1:%u:1", (unsigned)port);
    fx_server_init(f, (struct conf_addr){ .host = "127.0.0.1", .port = port });
    *state = f;
    return 0;
}

/* A unix path where nothing listens: connect fails at once. */
static struct fx *fx_nowhere(bool eject)
{
    struct fx *f = fx_new(-1);
    f->tier.auto_eject_hosts = eject;
    f->tier.server_retry_timeout_ms = 100;
    snprintf(f->path, sizeof(f->path), "/tmp/strata-test-nowhere-%ld.sock", (long)getpid());
    unlink(f->path);
    snprintf(f->text, sizeof(f->text), "%s:1", f->path);
    fx_server_init(f, (struct conf_addr){ .path = f->path });
    return f;
}

/* A server listening on a unix socket: the kernel holds about
 * net.core.wmem_default (200 KB) of what the proxy writes, and takes more
 * as soon as the server reads, so write progress follows the server. */
static int setup_unix_timeout(void **state)
{
    struct fx *f = fx_new(300);
    snprintf(f->path, sizeof(f->path), "/tmp/strata-test-unix-%ld.sock", (long)getpid());
    unlink(f->path);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", f->path);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    net_nonblock(f->lfd);
    snprintf(f->text, sizeof(f->text), "%s:1", f->path);
    fx_server_init(f, (struct conf_addr){ .path = f->path });
    *state = f;
    return 0;
}

static int setup_nowhere(void **state)
{
    *state = fx_nowhere(false);
    return 0;
}

static int setup_nowhere_eject(void **state)
{
    *state = fx_nowhere(true);
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    backend_server_deinit(&f->s);
    limits.fence_replies = MC_FENCE_REQUEST;
    limits.redis_fence_replies = false;
    if (f->sfd >= 0)
        close(f->sfd);
    if (f->lfd >= 0)
        close(f->lfd);
    if (f->path[0] != '\0')
        unlink(f->path);
    backend_worker_deinit(&f->bw);
    event_base_free(f->base);
    free(f);
    free(events.p);
    free(big.p);
    memset(&events, 0, sizeof(events));
    memset(&big, 0, sizeof(big));
    return 0;
}

/* ---- replies ---- */

/* Feeding the reply one byte at a time, running the loop after each:
 * the VALUE is delivered when its data block's last byte arrives, END
 * with the last byte, never earlier. */
static void test_get_reply_split_at_every_byte(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get foo\r\n", 1);
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get foo\r\n");
    const char *reply = "VALUE foo 5 3\r\nbar\r\nEND\r\n";
    size_t n = strlen(reply), value_end = strlen("VALUE foo 5 3\r\nbar\r\n");
    for (size_t i = 0; i < n; i++) {
        net_write_all(&f->loop, f->sfd, reply + i, 1);
        const char *want = i + 1 < value_end ? ""
                         : i + 1 < n ? "1 VALUE foo 5 3 bar\n"
                         : "1 VALUE foo 5 3 bar\n1 END\n";
        net_turn(&f->loop);
        expect_events(f, want);
    }
    assert_int_equal(stat_of(f, STATS_requests), 1);
    assert_int_equal(stat_of(f, STATS_request_bytes), 9);
    assert_int_equal(stat_of(f, STATS_responses), 1);
    assert_int_equal(stat_of(f, STATS_response_bytes), (int64_t)n);
    assert_int_equal(stat_of(f, STATS_out_queue), 0);
    assert_int_equal(stat_of(f, STATS_out_queue_bytes), 0);
    assert_int_equal(stat_of(f, STATS_server_connections), 1);
    assert_int_equal(backend_server_pending(&f->s), 0);
    net_quiet(&f->loop, f->sfd, 5);   /* nothing else was sent */
}

/* Data segments the peer of fd has sent to it so far. */
static uint32_t data_segs_in(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
    assert_true(len >= offsetof(struct tcp_info, tcpi_data_segs_in) + 4);
    return ti.tcpi_data_segs_in;
}

/* Three requests of one batch on a connected connection: nothing is
 * written inside backend_send, then one write (one TCP segment) carries
 * all three, and the replies go back to them in order. */
static void test_batch_is_one_write_replies_in_order(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get w\r\n", 0);   /* connect first */
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get w\r\n");
    net_send_str(&f->loop, f->sfd, "END\r\n");
    expect_events(f, "0 END\n");

    uint32_t segs = data_segs_in(f->sfd);
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_SET, "set b 0 0 1\r\nx\r\n", 2);
    send_req(f, MC_CMD_DELETE, "delete c\r\n", 3);
    assert_int_equal(net_peek(f->sfd), 0);
    assert_int_equal(backend_server_pending(&f->s), 3);
    net_turn(&f->loop);
    const char *want = "get a\r\nset b 0 0 1\r\nx\r\ndelete c\r\n";
    char got[256] = "";
    struct pollfd p = { .fd = f->sfd, .events = POLLIN };
    assert_int_equal(poll(&p, 1, NET_WAIT_MS), 1);
    ssize_t r = recv(f->sfd, got, sizeof(got) - 1, 0);   /* ONE read */
    assert_true(r > 0);
    assert_string_equal(got, want);
    assert_int_equal(data_segs_in(f->sfd) - segs, 1);

    net_send_str(&f->loop, f->sfd, "VALUE a 1 2\r\nAA\r\nEND\r\nSTO");
    net_send_str(&f->loop, f->sfd, "RED\r\nDELETED\r\n");
    expect_events(f, "0 END\n1 VALUE a 1 2 AA\n1 END\n2 STORED\n3 DELETED\n");
    assert_int_equal(stat_of(f, STATS_responses), 4);
}

/* ---- callbacks come from the loop ---- */

static void test_send_never_calls_back_inline(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    assert_string_equal(events_str(), "");
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get a\r\nget b\r\n");
    net_send_str(&f->loop, f->sfd, "END\r\nEND\r\n");
    expect_events(f, "1 END\n2 END\n");
}

/* connect() itself fails (no such path): the failure is still reported
 * from the loop. */
static void test_connect_fails_at_once_reported_later(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    assert_string_equal(events_str(), "");
    assert_int_equal(backend_server_pending(&f->s), 2);
    expect_events(f, "1 FAIL backend connect failed: No such file or directory\n"
                     "2 FAIL backend connect failed: No such file or directory\n");
    assert_int_equal(backend_server_pending(&f->s), 0);
    assert_int_equal(stat_of(f, STATS_out_queue), 0);
    assert_int_equal(stat_of(f, STATS_server_connections), 0);
    assert_true(backend_server_live(&f->s, util_now_ms()));   /* no auto_eject */
}

/* Nothing listens on the port: connection refused, from the loop. */
static void test_connect_refused_reported_later(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    assert_string_equal(events_str(), "");
    expect_events(f, "1 FAIL backend connect failed: Connection refused\n");
    assert_int_equal(backend_server_pending(&f->s), 0);
}

/* ---- failures reset the connection ---- */

/* The next request opens a new connection and is answered. */
static void expect_reconnect_to(struct fx *f, const char *log_before, bool fenced)
{
    char want[512];
    send_req(f, MC_CMD_GET, "get again\r\n", 9);
    if (f->sfd >= 0)
        close(f->sfd);
    f->sfd = fenced ? accept_fenced(f) : accept_unfenced(f);
    net_expect(&f->loop, f->sfd, fenced ? "get again\r\nmn\r\n" : "get again\r\n");
    net_send_str(&f->loop, f->sfd, fenced ? "END\r\nMN\r\n" : "END\r\n");
    snprintf(want, sizeof(want), "%s9 END\n", log_before);
    expect_events(f, want);
}

static void expect_reconnect(struct fx *f, const char *log_before)
{
    expect_reconnect_to(f, log_before, false);
}

/* Request 1 (`req1`, of cmd1) and "get b" (2) in flight, the server
 * answers `reply`: the callbacks' log must become `log` (both failed),
 * the connection is reset and the next request reconnects. */
static void expect_reset_by(struct fx *f, enum mc_cmd cmd1, const char *req1,
                            const char *reply, const char *log)
{
    char sent[256];
    send_req(f, cmd1, req1, 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    if (f->sfd < 0)   /* else the connection expect_reconnect made */
        f->sfd = accept_unfenced(f);
    snprintf(sent, sizeof(sent), "%sget b\r\n", req1);
    net_expect(&f->loop, f->sfd, sent);
    net_send_str(&f->loop, f->sfd, reply);
    expect_events(f, log);
    assert_int_equal(stat_of(f, STATS_server_err), 1);
    net_expect_closed(&f->loop, f->sfd);
    expect_reconnect(f, log);
}

/* Waits until requests 1 and 2 have failed by a timeout, at least
 * min_ms and less than max_ms after t0, counted once. Returns the log. */
static const char *expect_timed_out(struct fx *f, int64_t t0, int min_ms, int max_ms)
{
    const char *failed = "1 FAIL backend timed out\n2 FAIL backend timed out\n";
    expect_events(f, failed);
    int64_t took = util_now_ms() - t0;
    assert_true(took >= min_ms);
    assert_true(took < max_ms);
    assert_int_equal(stat_of(f, STATS_server_timedout), 1);
    return failed;
}

static void test_timeout_fails_and_reconnects(void **state)
{
    struct fx *f = *state;
    int64_t t0 = util_now_ms();
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get a\r\nget b\r\n");
    const char *failed = expect_timed_out(f, t0, 49, 1000);
    assert_int_equal(stat_of(f, STATS_server_connections), 0);
    net_expect_closed(&f->loop, f->sfd);
    expect_reconnect(f, failed);
    assert_int_equal(stat_of(f, STATS_server_connections), 1);
}

/* ---- when the clock starts (timeout 300 ms, unix socket) ---- */

#define STALL_VALUE (1 << 20)   /* far more than the kernel holds */

/* Queues a 1 MB set (1) and a get (2) behind it; the server accepts and
 * does not read. Returns the set's length. */
static size_t queue_behind_big_set(struct fx *f)
{
    size_t n;
    char *req = set_request("big", STALL_VALUE, &n);
    send_raw(f, MC_CMD_SET, req, n, 1);
    free(req);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    f->sfd = accept_unfenced(f);
    return n;
}

/* Reads n bytes while the loop runs (every byte, so the kernel takes
 * the proxy's output as fast as it is read). */
static void drain_exact(struct fx *f, size_t n)
{
    char *buf = malloc(n);
    assert_non_null(buf);
    net_read_exact(&f->loop, f->sfd, buf, n);
    free(buf);
}

/* The server does not read for 200 ms (less than the timeout), then
 * reads everything, then waits 200 ms more before answering: 400 ms
 * after the requests were queued, but neither the write stall nor any
 * reply wait reached 300 ms, so nothing times out. (Before, the
 * clock ran from queueing: both failed at 300 ms.) */
static void test_queued_behind_stalled_write_not_timed_out(void **state)
{
    struct fx *f = *state;
    size_t n = queue_behind_big_set(f);
    net_run_for(&f->loop, 200);
    assert_string_equal(events_str(), "");
    int queued = 0;   /* the kernel holds part of the set, refuses the rest */
    assert_int_equal(ioctl(f->sfd, FIONREAD, &queued), 0);
    assert_true(queued > 0 && (size_t)queued < n);
    drain_exact(f, n + strlen("get b\r\n"));
    net_run_for(&f->loop, 200);
    assert_string_equal(events_str(), "");
    net_send_str(&f->loop, f->sfd, "STORED\r\nEND\r\n");
    expect_events(f, "1 STORED\n2 END\n");
    assert_int_equal(stat_of(f, STATS_server_timedout), 0);
}

/* Discards what the server never read, up to the end of the stream:
 * the proxy closed the connection. */
static void expect_closed_after_unread(struct fx *f)
{
    char tmp[65536];
    int64_t deadline = util_now_ms() + NET_WAIT_MS;
    for (;;) {
        ssize_t r = recv(f->sfd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return;
        assert_true(r > 0 || errno == EAGAIN || errno == EWOULDBLOCK);
        assert_true(util_now_ms() < deadline);
        if (r < 0)
            net_tick(&f->loop);
    }
}

/* Written after a 200 ms stall and never answered: the requests time out
 * `timeout` after their last byte was taken (500 ms after queueing or
 * later), not 300 ms after queueing. */
static void test_written_request_times_out_from_write(void **state)
{
    struct fx *f = *state;
    int64_t t0 = util_now_ms();
    size_t n = queue_behind_big_set(f);
    net_run_for(&f->loop, 200);
    drain_exact(f, n + strlen("get b\r\n"));
    expect_timed_out(f, t0, 499, 2000);
    net_expect_closed(&f->loop, f->sfd);
}

/* A server that never reads: the output the kernel refuses is a write
 * stall, and after `timeout` of it everything in flight fails and the
 * connection is reset; the next request reconnects. */
static void test_write_stall_times_out(void **state)
{
    struct fx *f = *state;
    int64_t t0 = util_now_ms();
    queue_behind_big_set(f);
    const char *failed = expect_timed_out(f, t0, 299, 1500);
    expect_closed_after_unread(f);
    expect_reconnect(f, failed);
}

/* The server answers the 1 MB set before reading it (memcached does so
 * for a value it will not store) while the kernel still refuses the
 * set's bytes: the set is done, the get behind it is written later and
 * has its own clock, and is answered. */
static void test_answered_before_written(void **state)
{
    struct fx *f = *state;
    size_t n = queue_behind_big_set(f);
    net_run_for(&f->loop, 20);
    net_send_str(&f->loop, f->sfd, "SERVER_ERROR object too large for cache\r\n");
    expect_events(f, "1 SERVER_ERROR object too large for cache\n");
    drain_exact(f, n + strlen("get b\r\n"));
    net_run_for(&f->loop, 200);
    net_send_str(&f->loop, f->sfd, "END\r\n");
    expect_events(f, "1 SERVER_ERROR object too large for cache\n2 END\n");
    assert_int_equal(stat_of(f, STATS_server_timedout), 0);
}

#define SLOW_REQS  8
#define SLOW_VALUE (128 * 1024)
#define SLOW_STEP_MS 120

/* The server reads everything waiting once every SLOW_STEP_MS and then
 * answers each set it has whole: about a megabyte takes several steps,
 * well over the 300 ms timeout, yet no write stalls and no reply takes
 * longer than a step after its request was written: all are answered. */
static void test_slow_but_steady_server_never_times_out(void **state)
{
    struct fx *f = *state;
    size_t n = 0;
    for (int i = 1; i <= SLOW_REQS; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        char *req = set_request(key, SLOW_VALUE, &n);
        send_raw(f, MC_CMD_SET, req, n, i);
        free(req);
    }
    f->sfd = accept_unfenced(f);
    int64_t t0 = util_now_ms();
    size_t got = 0, answered = 0;
    char *buf = malloc(n * SLOW_REQS);
    assert_non_null(buf);
    while (answered < SLOW_REQS && util_now_ms() - t0 < 5000) {
        net_run_for(&f->loop, SLOW_STEP_MS);
        ssize_t r;
        while ((r = recv(f->sfd, buf + got, n * SLOW_REQS - got, MSG_DONTWAIT)) > 0)
            got += (size_t)r;
        for (; answered < got / n; answered++)
            net_send_str(&f->loop, f->sfd, "STORED\r\n");
    }
    free(buf);
    assert_int_equal(answered, SLOW_REQS);
    assert_true(util_now_ms() - t0 > 400);   /* slower than the timeout */
    char want[256] = "";
    for (int i = 1; i <= SLOW_REQS; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%d STORED\n", i);
    expect_events(f, want);
    assert_int_equal(stat_of(f, STATS_server_timedout), 0);
}

/* A reply that is not memcached's fails both requests in flight. */
static void test_garbage_reply_fails_inflight(void **state)
{
    expect_reset_by(*state, MC_CMD_GET, "get a\r\n", "HELLO\r\n",
                    "1 FAIL backend sent an invalid response\n"
                    "2 FAIL backend sent an invalid response\n");
}

/* A reply of the wrong kind for the head request (STORED to a get)
 * cannot be matched: the pipeline is lost. */
static void test_wrong_kind_of_reply_fails_inflight(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_DELETE, "delete b\r\n", 2);
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get a\r\ndelete b\r\n");
    net_send_str(&f->loop, f->sfd, "STORED\r\nDELETED\r\n");
    expect_events(f, "1 FAIL backend sent an invalid response\n"
                     "2 FAIL backend sent an invalid response\n");
    assert_int_equal(stat_of(f, STATS_server_err), 1);
}

/* A set answered with a line that is no reply to a set (END, a number,
 * VERSION, a VALUE) fails it and the request behind it, and the
 * connection is reset; the next request reconnects and is answered. */
static void test_reply_that_does_not_fit_fails(void **state)
{
    static const char *const lies[] = {
        "END\r\n", "42\r\n", "VERSION 1.6.21\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n",
    };
    struct fx *f = *state;
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        expect_reset_by(f, MC_CMD_SET, "set k 0 0 1\r\nv\r\n", lies[i],
                        "1 FAIL backend sent an invalid response\n"
                        "2 FAIL backend sent an invalid response\n");
        assert_int_equal(stat_of(f, STATS_server_connections), 1);
        free(events.p);
        memset(&events, 0, sizeof(events));
        f->stats.f[STATS_server_err] = 0;
    }
}

/* Each command against a reply of another command's kind. */
static void test_reply_of_another_command_fails(void **state)
{
    static const struct {
        enum mc_cmd cmd;
        const char *req;
        const char *rsp;
    } cases[] = {
        { MC_CMD_DELETE, "delete k\r\n", "STORED\r\n" },
        { MC_CMD_INCR, "incr k 1\r\n", "DELETED\r\n" },
        { MC_CMD_TOUCH, "touch k 0\r\n", "7\r\n" },
        { MC_CMD_GETS, "gets k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n" },
        { MC_CMD_GET, "get k\r\n", "VALUE k 0 1 9\r\nv\r\nEND\r\n" },
        { MC_CMD_FLUSH_ALL, "flush_all\r\n", "END\r\n" },
    };
    struct fx *f = *state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        send_req(f, cases[i].cmd, cases[i].req, 1);
        if (f->sfd >= 0)
            close(f->sfd);
        f->sfd = accept_unfenced(f);
        net_expect(&f->loop, f->sfd, cases[i].req);
        net_send_str(&f->loop, f->sfd, cases[i].rsp);
        expect_events(f, "1 FAIL backend sent an invalid response\n");
        net_expect_closed(&f->loop, f->sfd);
        close(f->sfd);
        f->sfd = -1;
        free(events.p);
        memset(&events, 0, sizeof(events));
    }
    assert_int_equal(stat_of(f, STATS_server_err), 6);
}

/* The callback refuses a VALUE (a key the request did not ask): that
 * request and the one behind it fail, the connection is reset. */
static void test_refused_key_fails_inflight(void **state)
{
    expect_reset_by(*state, MC_CMD_GET, "get a\r\n",
                    "VALUE a 0 1\r\nA\r\nVALUE bad 0 1\r\nB\r\nEND\r\n",
                    "1 VALUE a 0 1 A\n"
                    "1 FAIL backend returned a key it was not asked for\n"
                    "2 FAIL backend returned a key it was not asked for\n");
}

/* A reply with no request in flight resets the connection. */
static void test_unsolicited_reply_resets(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get a\r\n");
    net_send_str(&f->loop, f->sfd, "END\r\nEND\r\n");
    expect_events(f, "1 END\n");
    NET_WAIT(&f->loop, stat_of(f, STATS_server_err) == 1);
    net_expect_closed(&f->loop, f->sfd);
    assert_string_equal(events_str(), "1 END\n");
    expect_reconnect(f, "1 END\n");
}

static void test_eof_mid_value_fails(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get foo\r\n", 1);
    send_req(f, MC_CMD_GET, "get bar\r\n", 2);
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get foo\r\nget bar\r\n");
    net_send_str(&f->loop, f->sfd, "VALUE foo 0 10\r\nabc");
    close(f->sfd);
    f->sfd = -1;
    const char *failed = "1 FAIL backend closed the connection\n"
                         "2 FAIL backend closed the connection\n";
    expect_events(f, failed);
    assert_int_equal(stat_of(f, STATS_server_eof), 1);
    assert_int_equal(stat_of(f, STATS_server_err), 0);
    assert_int_equal(stat_of(f, STATS_server_connections), 0);
    expect_reconnect(f, failed);
}

/* ---- Redis: a reply being framed counts against its owner ---- */

static const struct redis_limits redis_lim = { .max_bulk = BIG_VALUE, .max_args = 1024,
                                               .max_request = BIG_VALUE + 4096,
                                               .max_reply = BIG_VALUE, .max_depth = 8 };

static void on_pending(void *arg, ssize_t n)
{
    sbuf_printf(&events, "%d PENDING %zd\n", (int)(intptr_t)arg, n);
}

static void on_redis_size(void *arg, struct redis_rsp *rsp, const char *reason)
{
    int id = (int)(intptr_t)arg;
    if (rsp == NULL)
        sbuf_printf(&events, "%d FAIL %s\n", id, reason);
    else
        sbuf_printf(&events, "%d REPLY %zu\n", id, evbuffer_get_length(rsp->data));
}

/* GET k to a Redis server, tagged id; the server has read it. */
static void redis_get(struct fx *f, int id)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    evbuffer_add(b, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 20);
    backend_send_redis(&f->s, redis_cmd_lookup("get", 3), 1, b, on_redis_size,
                       (void *)(intptr_t)id);
    evbuffer_free(b);
    if (f->sfd < 0)
        f->sfd = net_accept(&f->loop, f->lfd);
    net_expect(&f->loop, f->sfd, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
}

/* The bytes of a Redis reply that wait unframed in the input are told
 * to the head request's owner as they come (bw->redis_pending), and
 * given back before its callback: when the reply is whole, and when the
 * connection fails with half of it. */
static void test_redis_unframed_reply_is_told(void **state)
{
    struct fx *f = *state;
    backend_server_set_redis(&f->s, NULL, 0, &redis_lim);
    f->bw.redis_pending = on_pending;
    redis_get(f, 1);
    net_send_str(&f->loop, f->sfd, "$10\r\n0123");
    expect_events(f, "1 PENDING 9\n");
    net_send_str(&f->loop, f->sfd, "456789\r\n");
    expect_events(f, "1 PENDING 9\n1 PENDING -9\n1 REPLY 17\n");
    redis_get(f, 2);
    net_send_str(&f->loop, f->sfd, "$10\r\n01");
    close(f->sfd);
    f->sfd = -1;
    expect_events(f, "1 PENDING 9\n1 PENDING -9\n1 REPLY 17\n"
                     "2 PENDING 7\n2 PENDING -7\n2 FAIL backend closed the connection\n");
}

/* ---- ejection ---- */

/* Sends one request that fails, and waits for its failure. */
static void fail_once(struct fx *f, int id)
{
    size_t before = events.len;
    send_req(f, MC_CMD_GET, "get a\r\n", id);
    NET_WAIT(&f->loop, events.len > before);
}

static void test_two_failures_eject_until_retry(void **state)
{
    struct fx *f = *state;
    fail_once(f, 1);
    assert_true(backend_server_live(&f->s, util_now_ms()));
    assert_int_equal(f->epoch, 0);
    int64_t t0 = util_now_ms();
    fail_once(f, 2);
    int64_t t1 = util_now_ms();
    int64_t until = f->s.ejected_until_ms;
    assert_true(until >= t0 + 100 && until <= t1 + 100);
    assert_false(backend_server_live(&f->s, t1));
    assert_false(backend_server_live(&f->s, until - 1));
    assert_true(backend_server_live(&f->s, until));
    assert_int_equal(f->epoch, 1);
    assert_int_equal(f->pstats.f[STATS_server_ejects], 1);
    assert_true(stat_of(f, STATS_server_ejected_at) > 0);
    NET_WAIT(&f->loop, util_now_ms() >= until);
    assert_true(backend_server_live(&f->s, util_now_ms()));
}

static void test_no_eject_without_auto_eject(void **state)
{
    struct fx *f = *state;
    for (int i = 1; i <= 3; i++)
        fail_once(f, i);
    assert_int_equal(f->s.ejected_until_ms, 0);
    assert_true(backend_server_live(&f->s, util_now_ms()));
    assert_int_equal(f->epoch, 0);
    assert_int_equal(f->pstats.f[STATS_server_ejects], 0);
}

/* ---- large values ---- */

static void test_one_megabyte_value_intact(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get big\r\n", 1);
    f->sfd = accept_unfenced(f);
    net_expect(&f->loop, f->sfd, "get big\r\n");
    char *value = malloc(BIG_VALUE);
    assert_non_null(value);
    for (size_t i = 0; i < BIG_VALUE; i++)
        value[i] = (char)('a' + (i * 7 + i / 251) % 26);
    char head[64];
    int hn = snprintf(head, sizeof(head), "VALUE big 3 %d\r\n", BIG_VALUE);
    net_write_all(&f->loop, f->sfd, head, (size_t)hn);
    net_write_all(&f->loop, f->sfd, value, BIG_VALUE);
    net_send_str(&f->loop, f->sfd, "\r\nEND\r\n");
    expect_events(f, "1 VALUE big 3 1048576 \n1 END\n");
    assert_int_equal(big.len, BIG_VALUE);
    assert_memory_equal(big.p, value, BIG_VALUE);
    free(value);
}

/* ---- fences ---- */

/* Queues get a (1), set b (2) and get c d (3) while the probe is out,
 * answers it MN, and expects them written as `sent`. */
static void send_three_accept_fenced(struct fx *f, const char *sent)
{
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_SET, "set b 0 0 1\r\nx\r\n", 2);
    send_req(f, MC_CMD_GET, "get c d\r\n", 3);
    f->sfd = accept_fenced(f);
    net_expect(&f->loop, f->sfd, sent);
}

/* Requests queued while the probe is out go after its MN, in order, each
 * followed by "mn"; each is done only when its MN has come (the VALUEs
 * of a reply are delivered as they come). Fences and the probe are not
 * counted as requests or in the byte counters. */
static void test_fenced_replies_complete_after_mn(void **state)
{
    struct fx *f = *state;
    send_three_accept_fenced(f, "get a\r\nmn\r\nset b 0 0 1\r\nx\r\nmn\r\n"
                                "get c d\r\nmn\r\n");
    net_send_str(&f->loop, f->sfd, "VALUE a 0 1\r\nA\r\nEND\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n");
    net_run_for(&f->loop, 20);
    assert_string_equal(events_str(), "1 VALUE a 0 1 A\n");   /* END waits */
    net_send_str(&f->loop, f->sfd, "MN\r\nSTORED\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n1 END\n");
    net_run_for(&f->loop, 20);
    assert_string_equal(events_str(), "1 VALUE a 0 1 A\n1 END\n");
    net_send_str(&f->loop, f->sfd, "MN\r\nVALUE c 1 1\r\nC\r\nVALUE d 2 1\r\nD\r\n"
                                   "END\r\nMN\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n1 END\n2 STORED\n"
                     "3 VALUE c 1 1 C\n3 VALUE d 2 1 D\n3 END\n");
    assert_int_equal(stat_of(f, STATS_requests), 3);
    assert_int_equal(stat_of(f, STATS_request_bytes), 7 + 16 + 9);
    assert_int_equal(stat_of(f, STATS_responses), 3);
    assert_int_equal(stat_of(f, STATS_response_bytes), 21 + 8 + 37);
    assert_int_equal(stat_of(f, STATS_server_err), 0);
    assert_int_equal(backend_server_pending(&f->s), 0);

    /* later requests on the fenced connection: fenced at once */
    send_req(f, MC_CMD_DELETE, "delete e\r\n", 4);
    net_expect(&f->loop, f->sfd, "delete e\r\nmn\r\n");
    net_send_str(&f->loop, f->sfd, "DELETED\r\nMN\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n1 END\n2 STORED\n"
                     "3 VALUE c 1 1 C\n3 VALUE d 2 1 D\n3 END\n4 DELETED\n");
    net_quiet(&f->loop, f->sfd, 5);
}

/* The log becomes exactly `log`, one server error is counted, the
 * connection is closed and nothing is left in flight. */
static void expect_reset_logged(struct fx *f, const char *log)
{
    expect_events(f, log);
    NET_WAIT(&f->loop, stat_of(f, STATS_server_err) == 1);
    net_expect_closed(&f->loop, f->sfd);
    assert_string_equal(events_str(), log);
    assert_int_equal(backend_server_pending(&f->s), 0);
}

/* "get a" (1) and "get b" (2) on a fenced connection, written as `sent`
 * (with their fences); the server answers `reply`: the log must become
 * `log`, the connection is reset, and the next request reconnects
 * (probe first) and is answered. */
static void expect_fenced_reset(struct fx *f, const char *sent, const char *reply,
                                const char *log)
{
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    f->sfd = accept_fenced(f);
    net_expect(&f->loop, f->sfd, sent);
    net_send_str(&f->loop, f->sfd, reply);
    expect_reset_logged(f, log);
    expect_reconnect_to(f, log, true);
}

/* The same with a fence after each request. */
static void expect_fenced_reset_by(struct fx *f, const char *reply, const char *log)
{
    expect_fenced_reset(f, "get a\r\nmn\r\nget b\r\nmn\r\n", reply, log);
}

#define BOTH_INVALID "1 FAIL backend sent an invalid response\n" \
                     "2 FAIL backend sent an invalid response\n"

/* The lie of issue 8: an extra END while "get a" waits, then its real
 * reply. Unfenced, "get a" would be a false miss; fenced, the real
 * VALUE comes where a's MN is due: both gets fail, neither is a miss. */
static void test_fenced_extra_end_before_reply_fails_not_a_miss(void **state)
{
    expect_fenced_reset_by(*state, "END\r\nVALUE a 0 1\r\nA\r\nEND\r\nMN\r\n"
                                   "END\r\nMN\r\n", BOTH_INVALID);
}

/* The same lie with the real reply a miss too: END END where END MN is
 * due. */
static void test_fenced_extra_end_then_end_fails(void **state)
{
    expect_fenced_reset_by(*state, "END\r\nEND\r\nMN\r\n", BOTH_INVALID);
}

/* An extra END right after a's MN: it stands where b's reply is due, and
 * b's real reply comes where b's MN is due: a is answered, b fails. */
static void test_fenced_extra_end_after_mn_fails_next(void **state)
{
    expect_fenced_reset_by(*state, "END\r\nMN\r\nEND\r\nVALUE b 0 1\r\nB\r\n"
                                   "END\r\nMN\r\n",
                           "1 END\n2 FAIL backend sent an invalid response\n");
}

/* An MN where a reply is due (a lost reply, or a second MN). */
static void test_fenced_mn_instead_of_reply_fails(void **state)
{
    expect_fenced_reset_by(*state, "MN\r\nEND\r\nMN\r\n", BOTH_INVALID);
}

/* Both answered, then an MN with nothing waiting: the connection is
 * reset (nothing left to fail). */
static void test_fenced_mn_with_nothing_waiting_resets(void **state)
{
    expect_fenced_reset_by(*state, "END\r\nMN\r\nEND\r\nMN\r\nMN\r\n",
                           "1 END\n2 END\n");
}

/* A probe answered with anything but MN or ERROR: no memcached; what was
 * queued behind it fails, nothing of it was sent. */
static void test_probe_answered_with_a_reply_fails(void **state)
{
    struct fx *f = *state;
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    f->sfd = accept_probe(f, "END\r\n");
    expect_events(f, BOTH_INVALID);
    net_expect_closed(&f->loop, f->sfd);
    assert_int_equal(stat_of(f, STATS_server_err), 1);
    expect_reconnect(f, BOTH_INVALID);
}

/* A server that never answers the probe: the requests behind it are
 * never sent and fail after `timeout`, as behind any unanswered
 * request. */
static void test_probe_unanswered_times_out(void **state)
{
    struct fx *f = *state;
    int64_t t0 = util_now_ms();
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    f->sfd = net_accept(&f->loop, f->lfd);
    net_expect(&f->loop, f->sfd, "mn\r\n");
    expect_timed_out(f, t0, 49, 1000);
    net_expect_closed(&f->loop, f->sfd);
}

/* Preconnect: the probe goes out at once, and a request sent after the
 * (fenced) answer goes with its fence without waiting. */
static void test_preconnect_probes_first(void **state)
{
    struct fx *f = *state;
    connect_fenced(f);
    send_req(f, MC_CMD_INCR, "incr n 1\r\n", 1);
    net_expect(&f->loop, f->sfd, "incr n 1\r\nmn\r\n");
    net_send_str(&f->loop, f->sfd, "5\r\nMN\r\n");
    expect_events(f, "1 5\n");
    assert_int_equal(stat_of(f, STATS_requests), 1);
}

/* ---- fences per batch ---- */

/* Per batch: one "mn" after the requests one write carries; every
 * request of the batch is done only when that MN has come, in order
 * (VALUEs still go on as they come), and a request sent later goes in
 * the next batch with its own "mn". */
static void test_batch_fence_one_mn_per_write(void **state)
{
    struct fx *f = *state;
    send_three_accept_fenced(f, "get a\r\nset b 0 0 1\r\nx\r\nget c d\r\nmn\r\n");
    net_send_str(&f->loop, f->sfd, "VALUE a 0 1\r\nA\r\nEND\r\nSTORED\r\n"
                                   "VALUE c 1 1\r\nC\r\nEND\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n3 VALUE c 1 1 C\n");
    net_run_for(&f->loop, 20);   /* held until the batch's MN */
    assert_string_equal(events_str(), "1 VALUE a 0 1 A\n3 VALUE c 1 1 C\n");
    net_send_str(&f->loop, f->sfd, "MN\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n3 VALUE c 1 1 C\n1 END\n2 STORED\n3 END\n");
    assert_int_equal(stat_of(f, STATS_responses), 3);
    assert_int_equal(stat_of(f, STATS_response_bytes), 21 + 8 + 21);
    assert_int_equal(backend_server_pending(&f->s), 0);
    send_req(f, MC_CMD_DELETE, "delete e\r\n", 4);
    send_req(f, MC_CMD_INCR, "incr n 1\r\n", 5);
    net_expect(&f->loop, f->sfd, "delete e\r\nincr n 1\r\nmn\r\n");
    net_send_str(&f->loop, f->sfd, "DELETED\r\n7\r\nMN\r\n");
    expect_events(f, "1 VALUE a 0 1 A\n3 VALUE c 1 1 C\n1 END\n2 STORED\n3 END\n"
                     "4 DELETED\n5 7\n");
    net_quiet(&f->loop, f->sfd, 5);
}

/* A long batch gets a fence after every BACKEND_FENCE_BATCH_MAX
 * requests, and the rest its own before the write. */
static void test_batch_fence_at_most_max_requests(void **state)
{
    struct fx *f = *state;
    connect_fenced(f);
    struct sbuf want = { 0 };
    char req[32];
    for (int i = 0; i < BACKEND_FENCE_BATCH_MAX + 6; i++) {
        snprintf(req, sizeof(req), "get k%d\r\n", i);
        send_req(f, MC_CMD_GET, req, i);
        sbuf_add(&want, req, strlen(req));
        if (i + 1 == BACKEND_FENCE_BATCH_MAX)
            sbuf_add(&want, "mn\r\n", 4);
    }
    sbuf_add(&want, "mn\r\n", 4);
    sbuf_add(&want, "", 1);
    net_expect(&f->loop, f->sfd, want.p);
    free(want.p);
}

/* Two batches in flight: the first completes at its MN, the second's
 * replies wait for the second MN. */
static void test_batch_fence_two_batches_in_flight(void **state)
{
    struct fx *f = *state;
    connect_fenced(f);
    send_req(f, MC_CMD_GET, "get a\r\n", 1);
    net_expect(&f->loop, f->sfd, "get a\r\nmn\r\n");
    send_req(f, MC_CMD_GET, "get b\r\n", 2);
    net_expect(&f->loop, f->sfd, "get b\r\nmn\r\n");
    net_send_str(&f->loop, f->sfd, "END\r\nMN\r\nEND\r\n");
    expect_events(f, "1 END\n");
    net_run_for(&f->loop, 20);
    assert_string_equal(events_str(), "1 END\n");
    net_send_str(&f->loop, f->sfd, "MN\r\n");
    expect_events(f, "1 END\n2 END\n");
}

/* A batch of "get a", "get b" (one "mn" after both), answered with
 * `reply`: nothing of the batch is delivered before the lie is caught. */
static void expect_batch_reset_by(struct fx *f, const char *reply, const char *log)
{
    expect_fenced_reset(f, "get a\r\nget b\r\nmn\r\n", reply, log);
}

/* b's reply skipped: the MN lands where b's reply is due; a's END,
 * already whole, is not delivered either. */
static void test_batch_fence_skipped_reply_fails_the_batch(void **state)
{
    expect_batch_reset_by(*state, "END\r\nMN\r\n", BOTH_INVALID);
}

/* An extra END in the batch: b's real reply lands where the MN is due;
 * a would have been answered, b a false miss: both fail instead. */
static void test_batch_fence_extra_reply_fails_the_batch(void **state)
{
    expect_batch_reset_by(*state, "END\r\nEND\r\nVALUE b 0 1\r\nB\r\nEND\r\nMN\r\n",
                          BOTH_INVALID);
}

/* ---- Redis fences ---- */

/* A Redis reply: "ID <its bytes>" or "ID FAIL reason" in the log. */
static void on_redis_reply(void *arg, struct redis_rsp *rsp, const char *reason)
{
    int id = (int)(intptr_t)arg;
    if (rsp == NULL) {
        sbuf_printf(&events, "%d FAIL %s\n", id, reason);
        return;
    }
    char tmp[256];
    size_t n = evbuffer_copyout(rsp->data, tmp, sizeof(tmp) - 1);
    tmp[n] = '\0';
    sbuf_printf(&events, "%d %s", id, tmp);
}

/* "GET key" to the Redis server, tagged id. */
static void send_redis_get(struct fx *f, const char *key, int id)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    const char *argv[2] = { "GET", key };
    size_t argvlen[2] = { 3, strlen(key) };
    assert_int_equal(redis_compose_command(b, 2, argv, argvlen), 0);
    backend_send_redis(&f->s, redis_cmd_lookup("get", 3), 1, b, on_redis_reply,
                       (void *)(intptr_t)id);
    evbuffer_free(b);
}

/* Reads the fence "ECHO <token>:<seq>" that must come next; its echo
 * (the bulk reply) into reply. */
static void expect_redis_fence(struct fx *f, unsigned seq, char *reply, size_t len)
{
    char arg[64];
    int alen = snprintf(arg, sizeof(arg), "%u", seq) + BACKEND_FENCE_TOKEN_LEN + 1;
    char head[64];
    snprintf(head, sizeof(head), "*2\r\n$4\r\nECHO\r\n$%d\r\n", alen);
    net_expect(&f->loop, f->sfd, head);
    net_read_exact(&f->loop, f->sfd, arg, (size_t)alen + 2);
    arg[alen] = '\0';
    char want[16];
    snprintf(want, sizeof(want), ":%u", seq);
    assert_string_equal(arg + BACKEND_FENCE_TOKEN_LEN, want);
    snprintf(reply, len, "$%d\r\n%s\r\n", alen, arg);
}

#define GET_A "*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
#define GET_B "*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"

/* A batch of GET a, GET b gets one ECHO; the replies wait for its echo,
 * then go out in order; the next batch's ECHO counts on. */
static void test_redis_fence_holds_replies_until_echo(void **state)
{
    struct fx *f = *state;
    char echo[128];
    send_redis_get(f, "a", 1);
    send_redis_get(f, "b", 2);
    f->sfd = net_accept(&f->loop, f->lfd);
    net_expect(&f->loop, f->sfd, GET_A GET_B);
    expect_redis_fence(f, 0, echo, sizeof(echo));
    net_send_str(&f->loop, f->sfd, "$2\r\nva\r\n$-1\r\n");
    net_run_for(&f->loop, 20);
    assert_string_equal(events_str(), "");
    net_send_str(&f->loop, f->sfd, echo);
    expect_events(f, "1 $2\r\nva\r\n2 $-1\r\n");
    assert_int_equal(stat_of(f, STATS_responses), 2);
    assert_int_equal(stat_of(f, STATS_response_bytes), 8 + 5);
    send_redis_get(f, "a", 3);
    net_expect(&f->loop, f->sfd, GET_A);
    expect_redis_fence(f, 1, echo, sizeof(echo));
    net_send_str(&f->loop, f->sfd, "$2\r\nvb\r\n");
    net_send_str(&f->loop, f->sfd, echo);
    expect_events(f, "1 $2\r\nva\r\n2 $-1\r\n3 $2\r\nvb\r\n");
    assert_int_equal(stat_of(f, STATS_server_err), 0);
}

/* The owner of the held replies below refuses any over 10 bytes. */
static bool admit_small(void *arg, size_t n)
{
    (void)arg;
    return n <= 10;
}

static int64_t held_acct;   /* the worker's buffered bytes, for one test */

/* A reply held behind its fence is judged as it is held: the refused one
 * is dropped at once and an error stands in its place until the fence;
 * what is held counts in the worker's buffered bytes until delivered. */
static void test_redis_fence_judges_held_replies(void **state)
{
    struct fx *f = *state;
    char echo[128];
    held_acct = 0;
    f->bw.acct = &held_acct;
    f->bw.redis_admit = admit_small;
    send_redis_get(f, "a", 1);
    send_redis_get(f, "b", 2);
    f->sfd = net_accept(&f->loop, f->lfd);
    net_expect(&f->loop, f->sfd, GET_A GET_B);
    expect_redis_fence(f, 0, echo, sizeof(echo));
    net_send_str(&f->loop, f->sfd, "$2\r\nva\r\n$20\r\n01234567890123456789\r\n");
    /* "$2..va" (8 bytes) held, and the error (20) in place of b's 27 */
    NET_WAIT(&f->loop, held_acct == 8 + 20);
    assert_string_equal(events_str(), "");
    net_send_str(&f->loop, f->sfd, echo);
    expect_events(f, "1 $2\r\nva\r\n2 -ERR out of memory\r\n");
    NET_WAIT(&f->loop, held_acct == 0);
    f->bw.acct = NULL;
}

#define BOTH_STEP "1 FAIL backend sent an out-of-step reply\n" \
                  "2 FAIL backend sent an out-of-step reply\n"

/* GET a, GET b, then `lie(echo)` from the server: both fail out of
 * step, nothing delivered, the connection is reset. */
static void expect_redis_step_reset(struct fx *f, const char *before, bool echo_it,
                                    const char *after)
{
    char echo[128];
    send_redis_get(f, "a", 1);
    send_redis_get(f, "b", 2);
    f->sfd = net_accept(&f->loop, f->lfd);
    net_expect(&f->loop, f->sfd, GET_A GET_B);
    expect_redis_fence(f, 0, echo, sizeof(echo));
    net_send_str(&f->loop, f->sfd, before);
    if (echo_it)
        net_send_str(&f->loop, f->sfd, echo);
    net_send_str(&f->loop, f->sfd, after);
    expect_reset_logged(f, BOTH_STEP);
}

/* b's reply skipped: the echo lands where b's reply is due. */
static void test_redis_fence_skipped_reply(void **state)
{
    expect_redis_step_reset(*state, "$2\r\nva\r\n", true, "");
}

/* An extra reply: b's lands where the echo is due. */
static void test_redis_fence_extra_reply(void **state)
{
    expect_redis_step_reset(*state, "$2\r\nva\r\n$2\r\nva\r\n$2\r\nvb\r\n", true, "");
}

/* A value that looks like a fence but carries another token, or the
 * right token with another number, is not the echo due. */
static void test_redis_fence_wrong_echo(void **state)
{
    expect_redis_step_reset(*state, "$2\r\nva\r\n$2\r\nvb\r\n", false,
                            "$34\r\n0123456789abcdef0123456789abcdef:0\r\n");
}

/* A server that refuses ECHO (NOAUTH without redis_auth): the first
 * fence's error turns fences off on that connection; the replies held
 * behind it go out, and later requests are sent without fences. */
static void test_redis_fence_refused_turns_fences_off(void **state)
{
    struct fx *f = *state;
    char echo[128];
    send_redis_get(f, "a", 1);
    f->sfd = net_accept(&f->loop, f->lfd);
    net_expect(&f->loop, f->sfd, GET_A);
    expect_redis_fence(f, 0, echo, sizeof(echo));
    net_send_str(&f->loop, f->sfd, "-NOAUTH Authentication required.\r\n"
                                   "-NOAUTH Authentication required.\r\n");
    expect_events(f, "1 -NOAUTH Authentication required.\r\n");
    send_redis_get(f, "b", 2);
    net_expect(&f->loop, f->sfd, GET_B);
    net_quiet(&f->loop, f->sfd, 20);
    net_send_str(&f->loop, f->sfd, "-NOAUTH Authentication required.\r\n");
    expect_events(f, "1 -NOAUTH Authentication required.\r\n"
                     "2 -NOAUTH Authentication required.\r\n");
    assert_int_equal(stat_of(f, STATS_server_err), 0);
}

/* ---- fence bookkeeping (backend_fence.c) ---- */

/* A reply framed from text. */
static void frame_redis(struct redis_rsp *rsp, const char *text)
{
    struct evbuffer *in = evbuffer_new();
    assert_non_null(in);
    evbuffer_add(in, text, strlen(text));
    redis_rsp_reset(rsp);
    assert_int_equal(redis_rsp_read(in, rsp, &rlimits), REDIS_OK);
    evbuffer_free(in);
}

/* Tokens are 32 hex digits and differ; the ECHO is exact; only the
 * exact echo of the fence due is DUE, an echo of another fence of the
 * connection OTHER, anything else NONE. */
static void test_fence_token_compose_and_match(void **state)
{
    (void)state;
    char t1[BACKEND_FENCE_TOKEN_LEN + 1], t2[BACKEND_FENCE_TOKEN_LEN + 1];
    backend_fence_token(t1);
    backend_fence_token(t2);
    assert_int_equal(strlen(t1), BACKEND_FENCE_TOKEN_LEN);
    assert_int_equal(strspn(t1, "0123456789abcdef"), BACKEND_FENCE_TOKEN_LEN);
    assert_string_not_equal(t1, t2);
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    assert_int_equal(backend_fence_compose_redis(out, t1, 12), 0);
    char want[128], got[128];
    snprintf(want, sizeof(want), "*2\r\n$4\r\nECHO\r\n$35\r\n%s:12\r\n", t1);
    size_t n = evbuffer_copyout(out, got, sizeof(got) - 1);
    got[n] = '\0';
    assert_string_equal(got, want);
    evbuffer_free(out);

    struct redis_rsp rsp;
    redis_rsp_init(&rsp);
    snprintf(want, sizeof(want), "$35\r\n%s:12\r\n", t1);
    frame_redis(&rsp, want);
    assert_int_equal(backend_fence_match_redis(&rsp, t1, 12), BACKEND_FENCE_DUE);
    assert_int_equal(backend_fence_match_redis(&rsp, t1, 11), BACKEND_FENCE_OTHER);
    assert_int_equal(backend_fence_match_redis(&rsp, t1, 120), BACKEND_FENCE_OTHER);
    assert_int_equal(backend_fence_match_redis(&rsp, t2, 12), BACKEND_FENCE_NONE);
    snprintf(want, sizeof(want), "+%s:12\r\n", t1);
    frame_redis(&rsp, want);
    assert_int_equal(backend_fence_match_redis(&rsp, t1, 12), BACKEND_FENCE_NONE);
    frame_redis(&rsp, "$-1\r\n");
    assert_int_equal(backend_fence_match_redis(&rsp, t1, 12), BACKEND_FENCE_NONE);
    frame_redis(&rsp, "*1\r\n$2\r\nab\r\n");
    assert_int_equal(backend_fence_match_redis(&rsp, t1, 12), BACKEND_FENCE_NONE);
    redis_rsp_deinit(&rsp);
}

/* Held replies are swapped in (the caller gets an empty struct back),
 * kept in order past the first growth, and reset together. */
static void test_fence_held_replies_in_order(void **state)
{
    (void)state;
    struct backend_held h;
    backend_held_init(&h);
    struct redis_rsp rsp;
    redis_rsp_init(&rsp);
    char text[32];
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof(text), ":%d\r\n", i);
        frame_redis(&rsp, text);
        assert_int_equal(backend_held_push_redis(&h, &rsp), 0);
        assert_true(rsp.data == NULL || evbuffer_get_length(rsp.data) == 0);
    }
    assert_int_equal(h.n, 20);
    assert_true(h.cap >= 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(h.redis[i].integer, i);
    struct mc_rsp mc;
    mc_rsp_init(&mc);
    assert_int_equal(backend_held_push_mc(&h, &mc), -1);   /* one protocol */
    mc_rsp_deinit(&mc);
    backend_held_reset(&h);
    assert_int_equal(h.n, 0);
    assert_int_equal(evbuffer_get_length(h.redis[0].data), 0);
    redis_rsp_deinit(&rsp);
    backend_held_deinit(&h);
    assert_null(h.redis);
}

int main(void)
{
#define TCP(t) cmocka_unit_test_setup_teardown(t, setup_tcp, teardown)
#define BATCH(t) cmocka_unit_test_setup_teardown(t, setup_batch, teardown)
#define REDIS(t) cmocka_unit_test_setup_teardown(t, setup_redis, teardown)
    const struct CMUnitTest tests[] = {
        TCP(test_get_reply_split_at_every_byte),
        TCP(test_batch_is_one_write_replies_in_order),
        TCP(test_send_never_calls_back_inline),
        cmocka_unit_test_setup_teardown(test_connect_fails_at_once_reported_later,
                                        setup_nowhere, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused_reported_later,
                                        setup_refused, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_fails_and_reconnects,
                                        setup_timeout, teardown),
        cmocka_unit_test_setup_teardown(test_queued_behind_stalled_write_not_timed_out,
                                        setup_unix_timeout, teardown),
        cmocka_unit_test_setup_teardown(test_written_request_times_out_from_write,
                                        setup_unix_timeout, teardown),
        cmocka_unit_test_setup_teardown(test_write_stall_times_out,
                                        setup_unix_timeout, teardown),
        cmocka_unit_test_setup_teardown(test_slow_but_steady_server_never_times_out,
                                        setup_unix_timeout, teardown),
        cmocka_unit_test_setup_teardown(test_answered_before_written,
                                        setup_unix_timeout, teardown),
        TCP(test_garbage_reply_fails_inflight),
        TCP(test_wrong_kind_of_reply_fails_inflight),
        TCP(test_reply_that_does_not_fit_fails),
        TCP(test_reply_of_another_command_fails),
        TCP(test_refused_key_fails_inflight),
        TCP(test_unsolicited_reply_resets),
        TCP(test_eof_mid_value_fails),
        TCP(test_redis_unframed_reply_is_told),
        cmocka_unit_test_setup_teardown(test_two_failures_eject_until_retry,
                                        setup_nowhere_eject, teardown),
        cmocka_unit_test_setup_teardown(test_no_eject_without_auto_eject,
                                        setup_nowhere, teardown),
        TCP(test_one_megabyte_value_intact),
        TCP(test_fenced_replies_complete_after_mn),
        TCP(test_fenced_extra_end_before_reply_fails_not_a_miss),
        TCP(test_fenced_extra_end_then_end_fails),
        TCP(test_fenced_extra_end_after_mn_fails_next),
        TCP(test_fenced_mn_instead_of_reply_fails),
        TCP(test_fenced_mn_with_nothing_waiting_resets),
        TCP(test_probe_answered_with_a_reply_fails),
        cmocka_unit_test_setup_teardown(test_probe_unanswered_times_out,
                                        setup_timeout, teardown),
        TCP(test_preconnect_probes_first),
        BATCH(test_batch_fence_one_mn_per_write),
        BATCH(test_batch_fence_two_batches_in_flight),
        BATCH(test_batch_fence_at_most_max_requests),
        BATCH(test_batch_fence_skipped_reply_fails_the_batch),
        BATCH(test_batch_fence_extra_reply_fails_the_batch),
        REDIS(test_redis_fence_holds_replies_until_echo),
        REDIS(test_redis_fence_judges_held_replies),
        REDIS(test_redis_fence_skipped_reply),
        REDIS(test_redis_fence_extra_reply),
        REDIS(test_redis_fence_wrong_echo),
        REDIS(test_redis_fence_refused_turns_fences_off),
        cmocka_unit_test(test_fence_token_compose_and_match),
        cmocka_unit_test(test_fence_held_replies_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
