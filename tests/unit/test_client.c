/* Unit tests for client: one client connection, from the bytes it sends
 * to the bytes it gets back.
 *
 * A real worker is set up (worker_init) from a pool file written to a
 * temp dir, loaded by the real loader; the pool's one server is a unix
 * socket where the test plays memcached. The client is one end of a
 * socketpair handed to client_accept; the test holds the other end and
 * drives the worker's loop one turn at a time. Asserted, as exact bytes on
 * both sides:
 *   - version and verbosity are answered without the backend;
 *   - pipelined gets are answered in request order, whatever order and
 *     pieces the server's replies come in;
 *   - noreply swallows its reply without shifting the next one;
 *   - quit closes after the earlier replies are written;
 *   - a half-closed client gets every reply, then EOF;
 *   - backpressure: reading stops at CLIENT_MAX_INFLIGHT requests in
 *     flight and resumes when replies flow;
 *   - a line over max_line gets CLIENT_ERROR and the connection closes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "strata/client.h"
#include "strata/conf.h"
#include "strata/util.h"
#include "strata/worker.h"
#include "test_sbuf.h"
#include "test_net.h"

struct fx {
    char                 dir[64];
    char                 pool_file[96];
    char                 mc_path[96];      /* the fake memcached */
    char                 proxy_path[96];   /* the pool's listener (unused) */
    struct settings      settings;
    struct conf         *conf;
    struct runtime       rt;
    struct pool_shared  *shared[1];
    struct stats_worker *stats[1];
    struct worker        w;
    int                  mc_lfd;           /* fake memcached's listener */
    int                  mc[2];            /* its accepted connections */
    int                  cfd;              /* the client's end */
};

static int unix_listen(const char *path)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    assert_true(strlen(path) < sizeof(un.sun_path));
    strcpy(un.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    assert_int_equal(listen(fd, 16), 0);
    net_nonblock(fd);
    return fd;
}

static void write_pool_file(struct fx *f, unsigned server_connections)
{
    FILE *fp = fopen(f->pool_file, "w");
    assert_non_null(fp);
    fprintf(fp, "alpha:\n"
                "  listen: %s\n"
                "  hash: fnv1a_64\n"
                "  distribution: ketama\n"
                "  server_connections: %u\n"
                "  servers:\n"
                "    - %s:1\n",
            f->proxy_path, server_connections, f->mc_path);
    assert_int_equal(fclose(fp), 0);
}

/* The runtime as main.c fills it, for one worker. */
static void runtime_fill(struct fx *f)
{
    settings_init(&f->settings);
    char err[512] = "";
    assert_int_equal(conf_yaml_load(f->pool_file, &f->conf, err, sizeof(err)), 0);
    f->shared[0] = pool_shared_new("alpha");
    f->shared[0]->unix_fd = unix_listen(f->proxy_path);
    f->rt = (struct runtime){
        .conf = f->conf,
        .settings = &f->settings,
        .limits = { .max_line = f->settings.max_line_size,
                    .max_value = f->settings.max_value_size,
                    .read_chunk = f->settings.mbuf_size },
        .nworkers = 1,
        .start_time_s = util_wall_s(),
        .shared = f->shared,
        .stats = f->stats,
    };
}

static struct fx *fx_new(unsigned server_connections)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/strata-client-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->pool_file, sizeof(f->pool_file), "%s/pool.yml", f->dir);
    snprintf(f->mc_path, sizeof(f->mc_path), "%s/mc.sock", f->dir);
    snprintf(f->proxy_path, sizeof(f->proxy_path), "%s/proxy.sock", f->dir);
    f->mc[0] = f->mc[1] = -1;
    write_pool_file(f, server_connections);
    f->mc_lfd = unix_listen(f->mc_path);
    runtime_fill(f);
    char err[512] = "";
    assert_int_equal(worker_init(&f->w, 0, &f->rt, err, sizeof(err)), 0);
    f->stats[0] = &f->w.stats;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_accept(f->w.pools[0], sv[0]);
    f->cfd = sv[1];
    net_nonblock(f->cfd);
    return f;
}

static int setup(void **state)
{
    *state = fx_new(1);
    return 0;
}

static int setup_two_conns(void **state)
{
    *state = fx_new(2);
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    client_close_all(&f->w);
    worker_deinit(&f->w);   /* fails what the backend still holds */
    close_fd(&f->cfd);
    close_fd(&f->mc[0]);
    close_fd(&f->mc[1]);
    close_fd(&f->mc_lfd);
    close_fd(&f->shared[0]->unix_fd);
    pool_shared_free(f->shared[0]);
    unlink(f->mc_path);
    unlink(f->proxy_path);
    unlink(f->pool_file);
    rmdir(f->dir);
    conf_destroy(&f->conf);
    settings_deinit(&f->settings);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static struct conn_loop *loop_of(struct fx *f)
{
    return &f->w.loop;
}

/* The client sends s. */
static void client_says(struct fx *f, const char *s)
{
    net_send_str(loop_of(f), f->cfd, s);
}

/* The client receives exactly want, and nothing more for a moment. */
static void client_gets(struct fx *f, const char *want)
{
    net_expect(loop_of(f), f->cfd, want);
    net_quiet(loop_of(f), f->cfd, 5);
}

/* The fake memcached accepts connection i and expects want on it. */
static void server_gets(struct fx *f, int i, const char *want)
{
    if (f->mc[i] < 0)
        f->mc[i] = net_accept(loop_of(f), f->mc_lfd);
    net_expect(loop_of(f), f->mc[i], want);
}

static void server_says(struct fx *f, int i, const char *s)
{
    net_send_str(loop_of(f), f->mc[i], s);
}

static bool client_gone(struct fx *f)
{
    return TAILQ_EMPTY(&f->w.clients);
}

static int64_t pool_stat(struct fx *f, enum stats_pool_field k)
{
    return f->w.stats.view->pools[0].f[k];
}

/* A new client may have CLIENT_START_WINDOW requests in flight until its
 * replies show their size; twelve small replies open the window to
 * CLIENT_MAX_INFLIGHT. */
static void client_warm_up(struct fx *f)
{
    for (int i = 0; i < 12; i++) {
        client_says(f, "get w\r\n");
        server_gets(f, 0, "get w\r\n");
        server_says(f, 0, "END\r\n");
        client_gets(f, "END\r\n");
    }
}

/* ---- tests ---- */

static void test_version_and_verbosity_without_backend(void **state)
{
    struct fx *f = *state;
    client_says(f, "version\r\nverbosity 1\r\n");
    client_gets(f, "VERSION " PACKAGE_VERSION "\r\nOK\r\n");
    assert_false(net_pending_accept(f->mc_lfd));   /* no backend connect */
    assert_int_equal(client_requests_in_flight(&f->w), 0);
}

/* get a and get b go out on two connections; b's reply comes first and
 * in pieces, then a's: the client gets a's reply, then b's. */
static void test_pipelined_gets_replied_in_order(void **state)
{
    struct fx *f = *state;
    client_says(f, "get a\r\nget b\r\n");
    char got[2][8] = { "", "" };
    for (int i = 0; i < 2; i++) {
        f->mc[i] = net_accept(loop_of(f), f->mc_lfd);
        net_read_exact(loop_of(f), f->mc[i], got[i], 7);
    }
    int ca = strcmp(got[0], "get a\r\n") == 0 ? 0 : 1;
    assert_string_equal(got[ca], "get a\r\n");
    assert_string_equal(got[1 - ca], "get b\r\n");

    const char *b_pieces[] = { "VALUE b 0 1\r\n", "B\r\nEN", "D\r\n" };
    for (size_t i = 0; i < UTIL_ARRAY_LEN(b_pieces); i++) {
        server_says(f, 1 - ca, b_pieces[i]);
        net_quiet(loop_of(f), f->cfd, 3);   /* b waits behind a */
    }
    server_says(f, ca, "VALUE a 0 1\r\nA");
    net_quiet(loop_of(f), f->cfd, 3);
    server_says(f, ca, "\r\nEND\r\n");
    client_gets(f, "VALUE a 0 1\r\nA\r\nEND\r\nVALUE b 0 1\r\nB\r\nEND\r\n");
}

/* The same on one connection, with one reply cut inside the other's
 * bytes. */
static void test_pipelined_gets_one_connection(void **state)
{
    struct fx *f = *state;
    client_says(f, "get a\r\nget b\r\n");
    server_gets(f, 0, "get a\r\nget b\r\n");
    server_says(f, 0, "VALUE a 0 2\r\nA");
    net_quiet(loop_of(f), f->cfd, 3);
    server_says(f, 0, "A\r\nEND\r\nEN");
    client_gets(f, "VALUE a 0 2\r\nAA\r\nEND\r\n");
    server_says(f, 0, "D\r\n");
    client_gets(f, "END\r\n");
}

static void test_noreply_swallowed_next_not_shifted(void **state)
{
    struct fx *f = *state;
    client_says(f, "set k 0 0 1 noreply\r\nx\r\nget k\r\n");
    server_gets(f, 0, "set k 0 0 1\r\nx\r\nget k\r\n");
    server_says(f, 0, "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n");
    client_gets(f, "VALUE k 0 1\r\nx\r\nEND\r\n");
    client_says(f, "delete k noreply\r\nversion\r\n");
    server_gets(f, 0, "delete k\r\n");
    server_says(f, 0, "DELETED\r\n");
    client_gets(f, "VERSION " PACKAGE_VERSION "\r\n");
}

/* A malformed noreply command is not answered (memcached writes nothing)
 * and never reaches a server; the next reply is the next request's. */
static void test_noreply_error_not_written(void **state)
{
    struct fx *f = *state;
    client_says(f, "incr k abc noreply\r\ntouch k noreply\r\n"
                   "gat 10\r\nincr noreply\r\nversion\r\n");
    client_gets(f, "END\r\nERROR\r\nVERSION " PACKAGE_VERSION "\r\n");
}

/* The reply to get a is written before the close; get b after quit is
 * never sent. */
static void test_quit_closes_after_earlier_replies(void **state)
{
    struct fx *f = *state;
    client_says(f, "get a\r\nquit\r\nget b\r\n");
    server_gets(f, 0, "get a\r\n");
    net_quiet(loop_of(f), f->cfd, 10);   /* not closed while a is out */
    assert_false(client_gone(f));
    server_says(f, 0, "VALUE a 0 1\r\nA\r\nEND\r\n");
    net_expect(loop_of(f), f->cfd, "VALUE a 0 1\r\nA\r\nEND\r\n");
    net_expect_closed(loop_of(f), f->cfd);
    assert_true(client_gone(f));
    net_quiet(loop_of(f), f->mc[0], 5);   /* no get b */
}

static void test_half_close_gets_every_reply_then_eof(void **state)
{
    struct fx *f = *state;
    client_says(f, "get a\r\nget b\r\nget c\r\n");
    assert_int_equal(shutdown(f->cfd, SHUT_WR), 0);
    server_gets(f, 0, "get a\r\nget b\r\nget c\r\n");
    net_quiet(loop_of(f), f->cfd, 10);
    server_says(f, 0, "VALUE a 0 1\r\nA\r\nEND\r\nEND\r\n");
    net_expect(loop_of(f), f->cfd, "VALUE a 0 1\r\nA\r\nEND\r\nEND\r\n");
    net_quiet(loop_of(f), f->cfd, 5);
    server_says(f, 0, "VALUE c 0 1\r\nC\r\nEND\r\n");
    net_expect(loop_of(f), f->cfd, "VALUE c 0 1\r\nC\r\nEND\r\n");
    net_expect_closed(loop_of(f), f->cfd);
    assert_true(client_gone(f));
    assert_int_equal(pool_stat(f, STATS_client_eof), 1);
    assert_int_equal(pool_stat(f, STATS_client_connections), 0);
}

/* "get kNNN\r\n" for n in [from, to). */
static void gets_text(struct sbuf *b, int from, int to)
{
    for (int i = from; i < to; i++)
        sbuf_printf(b, "get k%03d\r\n", i);
}

static void ends_text(struct sbuf *b, int n)
{
    for (int i = 0; i < n; i++)
        sbuf_add(b, "END\r\n", 5);
}

/* The client pipelines `total` gets (half-closing its side when asked):
 * the first `window` reach the server and no more until they are
 * answered, then the rest do; every reply reaches the client. */
static void pipeline_in_two_windows(struct fx *f, int window, int total, bool half_close)
{
    struct sbuf req = { 0 }, first = { 0 }, rest = { 0 }, ends = { 0 };
    gets_text(&req, 0, total);
    gets_text(&first, 0, window);
    gets_text(&rest, window, total);
    client_says(f, req.p);
    if (half_close)
        assert_int_equal(shutdown(f->cfd, SHUT_WR), 0);
    server_gets(f, 0, first.p);
    net_quiet(loop_of(f), f->mc[0], 30);   /* nothing past the window */
    assert_int_equal(client_requests_in_flight(&f->w), window);
    assert_int_equal(net_peek(f->cfd), 0);
    assert_false(client_gone(f));
    ends_text(&ends, window);
    server_says(f, 0, ends.p);
    net_expect(loop_of(f), f->cfd, ends.p);
    server_gets(f, 0, rest.p);
    free(ends.p);
    memset(&ends, 0, sizeof(ends));
    ends_text(&ends, total - window);
    server_says(f, 0, ends.p);
    net_expect(loop_of(f), f->cfd, ends.p);
    free(req.p);
    free(first.p);
    free(rest.p);
    free(ends.p);
}

/* The backend answers nothing: the proxy takes CLIENT_MAX_INFLIGHT
 * requests and no more; replies let the rest through. */
static void test_backpressure_stops_at_max_inflight(void **state)
{
    struct fx *f = *state;
    client_warm_up(f);
    pipeline_in_two_windows(f, CLIENT_MAX_INFLIGHT, CLIENT_MAX_INFLIGHT + 72, false);
    net_quiet(loop_of(f), f->cfd, 5);
    assert_int_equal(client_requests_in_flight(&f->w), 0);
}

/* Half-closed while paused: the requests the pause held back in the
 * input are still framed and answered before the EOF is acted on. */
static void test_half_close_while_paused_answers_all(void **state)
{
    struct fx *f = *state;
    client_warm_up(f);
    pipeline_in_two_windows(f, CLIENT_MAX_INFLIGHT, CLIENT_MAX_INFLIGHT + 10, true);
    net_expect_closed(loop_of(f), f->cfd);
    assert_true(client_gone(f));
}

/* A new client, before any reply: CLIENT_START_WINDOW requests reach the
 * backend, the rest wait until replies come back. */
static void test_new_client_starts_with_small_window(void **state)
{
    struct fx *f = *state;
    pipeline_in_two_windows(f, CLIENT_START_WINDOW, CLIENT_START_WINDOW + 8, false);
    net_quiet(loop_of(f), f->cfd, 5);
}

/* One byte past max_line (a final '\r' could still be half of "\r\n"). */
static void test_line_too_long_errors_and_closes(void **state)
{
    struct fx *f = *state;
    size_t n = f->rt.limits.max_line + 2;
    char *line = malloc(n);
    assert_non_null(line);
    memcpy(line, "get ", 4);
    memset(line + 4, 'k', n - 4);
    net_write_all(loop_of(f), f->cfd, line, n);
    free(line);
    net_expect(loop_of(f), f->cfd, "CLIENT_ERROR line too long\r\n");
    net_expect_closed(loop_of(f), f->cfd);
    assert_true(client_gone(f));
    assert_int_equal(pool_stat(f, STATS_client_err), 1);
    assert_false(net_pending_accept(f->mc_lfd));
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_version_and_verbosity_without_backend),
        cmocka_unit_test_setup_teardown(test_pipelined_gets_replied_in_order,
                                        setup_two_conns, teardown),
        T(test_pipelined_gets_one_connection),
        T(test_noreply_swallowed_next_not_shifted),
        T(test_noreply_error_not_written),
        T(test_quit_closes_after_earlier_replies),
        T(test_half_close_gets_every_reply_then_eof),
        T(test_backpressure_stops_at_max_inflight),
        T(test_half_close_while_paused_answers_all),
        T(test_new_client_starts_with_small_window),
        T(test_line_too_long_errors_and_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
