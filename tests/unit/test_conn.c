/* Unit tests for the connection layer (src/conn.c) over socketpairs and a
 * loopback listener: reads in large extents whatever the arrival pattern,
 * gathered writes with write interest armed only while the kernel refuses
 * bytes or a turn's share is written, the owner's on_flush just before
 * each write, EOF mid-value, backpressure, connects.
 *
 * readv is wrapped (-Wl,--wrap=readv) to count the reads conn.c makes and
 * the space each offers the kernel. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "strata/conn.h"
#include "strata/util.h"

/* ---- readv counter ---- */

ssize_t __real_readv(int fd, const struct iovec *iov, int iovcnt);
ssize_t __wrap_readv(int fd, const struct iovec *iov, int iovcnt);

static int nreadv;
static size_t min_offered = SIZE_MAX;

ssize_t __wrap_readv(int fd, const struct iovec *iov, int iovcnt)
{
    size_t offered = 0;
    for (int i = 0; i < iovcnt; i++)
        offered += iov[i].iov_len;
    if (offered < min_offered)
        min_offered = offered;
    nreadv++;
    return __real_readv(fd, iov, iovcnt);
}

/* ---- a conn under test and what its owner saw ---- */

struct owner {
    struct conn *conn;
    int          inputs;      /* on_input calls */
    int          drained;
    int          flushes;     /* on_flush calls (flush_ops) */
    int          connected;
    int          errors;
    char         reason[128];
    bool         consume;     /* drain the input on each on_input */
    size_t       consumed;
};

static void on_input(struct conn *c, void *arg)
{
    struct owner *o = arg;
    o->inputs++;
    if (o->consume) {
        size_t n = evbuffer_get_length(conn_input(c));
        o->consumed += n;
        evbuffer_drain(conn_input(c), n);
        conn_want_read(c, true);
    }
}

static void on_drained(struct conn *c, void *arg)
{
    (void)c;
    ((struct owner *)arg)->drained++;
}

static void on_connected(struct conn *c, void *arg)
{
    (void)c;
    ((struct owner *)arg)->connected++;
}

static void on_error(struct conn *c, void *arg, const char *reason)
{
    (void)c;
    struct owner *o = arg;
    o->errors++;
    snprintf(o->reason, sizeof(o->reason), "%s", reason);
}

static const struct conn_ops ops = {
    .on_input = on_input,
    .on_drained = on_drained,
    .on_connected = on_connected,
    .on_error = on_error,
};

struct fixture {
    struct event_base *base;
    struct conn_loop   loop;
    struct owner       owner;
    int                peer;    /* the other end of the socketpair */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    int sv[2];
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    conn_loop_init(&f->loop, f->base, 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    f->peer = sv[1];
    f->owner.conn = conn_create(&f->loop, sv[0], 4 << 20, &ops, &f->owner);
    assert_non_null(f->owner.conn);
    nreadv = 0;
    min_offered = SIZE_MAX;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    conn_destroy(&f->owner.conn);
    if (f->peer >= 0)
        close(f->peer);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* One loop turn as conn_loop_run makes it, without blocking. */
static void turn(struct fixture *f)
{
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    conn_loop_flush(&f->loop);
}

/* Turns until cond(f) holds or 2 s pass. */
static bool turn_until(struct fixture *f, bool (*cond)(struct fixture *))
{
    int64_t deadline = util_now_ms() + 2000;
    while (!cond(f) && util_now_ms() < deadline) {
        event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        conn_loop_flush(&f->loop);
        if (!cond(f))
            usleep(1000);
    }
    return cond(f);
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Reads exactly n bytes from fd, or fails the test after 2 s. */
static void read_exact(int fd, void *p, size_t n)
{
    char *d = p;
    int64_t deadline = util_now_ms() + 2000;
    while (n > 0 && util_now_ms() < deadline) {
        ssize_t r = recv(fd, d, n, MSG_DONTWAIT);
        if (r > 0) {
            d += r;
            n -= (size_t)r;
        } else {
            assert_true(r < 0 && errno == EAGAIN);
            usleep(1000);
        }
    }
    assert_int_equal(n, 0);
}

static char *pattern(size_t n)
{
    char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (i * 7 + i / 251) % 26);
    return p;
}

static bool input_has_value(struct fixture *f)
{
    return evbuffer_get_length(conn_input(f->owner.conn)) >= 100;
}

/* A value arriving one byte at a time is all there, in order, and every
 * read offered the kernel a whole extent. */
static void test_one_byte_at_a_time(void **state)
{
    struct fixture *f = *state;
    char *v = pattern(100);
    for (int i = 0; i < 100; i++) {
        write_all(f->peer, v + i, 1);
        turn(f);
    }
    assert_true(turn_until(f, input_has_value));
    assert_int_equal(evbuffer_get_length(conn_input(f->owner.conn)), 100);
    assert_memory_equal(evbuffer_pullup(conn_input(f->owner.conn), 100), v, 100);
    assert_true(f->owner.inputs >= 1);
    assert_true(min_offered >= CONN_READ_EXTENT_MIN - CONN_CHAIN_HEADER);
    free(v);
}

struct burst {
    int         fd;
    const char *data;
    size_t      len;
};

static void *burst_writer(void *arg)
{
    struct burst *b = arg;
    write_all(b->fd, b->data, b->len);
    return NULL;
}

static bool input_has_mb(struct fixture *f)
{
    return f->owner.consumed + evbuffer_get_length(conn_input(f->owner.conn)) >= (1u << 20);
}

/* A 1 MB burst arrives intact in 64 KB extents: at most one read per
 * extent, plus the reads that found the socket momentarily empty. */
static void test_one_mb_burst(void **state)
{
    struct fixture *f = *state;
    size_t len = 1u << 20;
    char *v = pattern(len);
    int big = 4 << 20;
    setsockopt(f->peer, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct burst b = { f->peer, v, len };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, burst_writer, &b), 0);
    assert_true(turn_until(f, input_has_mb));
    pthread_join(th, NULL);
    struct evbuffer *in = conn_input(f->owner.conn);
    assert_int_equal(evbuffer_get_length(in), len);
    assert_memory_equal(evbuffer_pullup(in, (ev_ssize_t)len), v, len);
    assert_true(min_offered >= CONN_READ_EXTENT_MIN - CONN_CHAIN_HEADER);
    /* Each read that filled its extent took 64 KB or more. */
    assert_true(nreadv <= (int)(len / CONN_READ_EXTENT_MIN) + f->owner.inputs + 1);
    free(v);
}

/* Output waits for the end of the batch, goes out in one write, and
 * reports drained; no write interest is ever armed. */
static void test_gathered_write(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->owner.conn;
    evbuffer_add(conn_output(c), "VALUE ", 6);
    conn_send(c);
    evbuffer_add(conn_output(c), "a 0 1\r\nx\r\nEND\r\n", 15);
    conn_send(c);
    char buf[32];
    assert_int_equal(recv(f->peer, buf, sizeof(buf), MSG_DONTWAIT), -1);
    conn_loop_flush(&f->loop);
    assert_int_equal(f->owner.drained, 1);
    assert_false(conn_write_blocked(c));
    read_exact(f->peer, buf, 21);
    assert_memory_equal(buf, "VALUE a 0 1\r\nx\r\nEND\r\n", 21);
}

/* Replaces the fixture's conn with one on a new socketpair, with
 * `read_max` and `o`; returns it. */
static struct conn *recreate(struct fixture *f, size_t read_max, const struct conn_ops *o)
{
    conn_destroy(&f->owner.conn);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(f->peer);
    f->peer = sv[1];
    f->owner.conn = conn_create(&f->loop, sv[0], read_max, o, &f->owner);
    assert_non_null(f->owner.conn);
    return f->owner.conn;
}

/* An owner with on_flush: appends a marker to each write. */
static void on_flush_mark(struct conn *c, void *arg)
{
    ((struct owner *)arg)->flushes++;
    evbuffer_add(conn_output(c), "|", 1);
}

static const struct conn_ops flush_ops = {
    .on_input = on_input,
    .on_drained = on_drained,
    .on_flush = on_flush_mark,
    .on_connected = on_connected,
    .on_error = on_error,
};

/* on_flush runs once per write, just before it: what it appends goes
 * out after everything the batch added, in the same write. */
static void test_on_flush_appends_to_the_batch(void **state)
{
    struct fixture *f = *state;
    struct conn *c = recreate(f, 4 << 20, &flush_ops);
    evbuffer_add(conn_output(c), "a", 1);
    conn_send(c);
    evbuffer_add(conn_output(c), "b", 1);
    conn_send(c);
    assert_int_equal(f->owner.flushes, 0);
    conn_loop_flush(&f->loop);
    assert_int_equal(f->owner.flushes, 1);
    evbuffer_add(conn_output(c), "c", 1);
    conn_send(c);
    conn_loop_flush(&f->loop);
    assert_int_equal(f->owner.flushes, 2);
    char buf[8];
    read_exact(f->peer, buf, 5);
    assert_memory_equal(buf, "ab|c|", 5);
}

static bool output_empty(struct fixture *f)
{
    return evbuffer_get_length(conn_output(f->owner.conn)) == 0;
}

/* The kernel takes part of a large output: write interest is armed until
 * the rest is written, then disarmed, and on_drained follows once. */
static void test_short_write_arms_and_disarms(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->owner.conn;
    int small = 4096;
    setsockopt(conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    size_t len = 1u << 20;
    char *v = pattern(len);
    evbuffer_add(conn_output(c), v, len);
    conn_send(c);
    conn_loop_flush(&f->loop);
    assert_true(evbuffer_get_length(conn_output(c)) > 0);
    assert_true(conn_write_blocked(c));
    assert_int_equal(f->owner.drained, 0);
    /* While blocked, more output joins the backlog without a new write. */
    evbuffer_add(conn_output(c), "tail", 4);
    conn_send(c);
    char *got = malloc(len + 4);
    size_t have = 0;
    int64_t deadline = util_now_ms() + 5000;
    while (have < len + 4 && util_now_ms() < deadline) {
        ssize_t r = recv(f->peer, got + have, len + 4 - have, MSG_DONTWAIT);
        if (r > 0)
            have += (size_t)r;
        turn(f);
    }
    assert_int_equal(have, len + 4);
    assert_memory_equal(got, v, len);
    assert_memory_equal(got + len, "tail", 4);
    assert_true(turn_until(f, output_empty));
    assert_false(conn_write_blocked(c));
    assert_int_equal(f->owner.drained, 1);
    free(got);
    free(v);
}

/* A peer that reads whatever comes, as fast as it comes, into a buffer. */
struct sink {
    int     fd;
    char   *buf;
    size_t  want;
    size_t  have;
};

static void *sink_reader(void *arg)
{
    struct sink *k = arg;
    int64_t deadline = util_now_ms() + 10000;
    while (k->have < k->want && util_now_ms() < deadline) {
        ssize_t r = recv(k->fd, k->buf + k->have, k->want - k->have, 0);
        if (r <= 0)
            break;
        k->have += (size_t)r;
    }
    return NULL;
}

/* An output of 16 MB to a peer that reads as fast as it comes leaves over
 * several turns, CONN_WRITE_MAX_TURN bytes at most in one, with write
 * interest armed in between; all of it arrives, in order. The socket's
 * send buffer is made big enough for all of it where the test may
 * (SO_SNDBUFFORCE), so the kernel alone would take it in one turn. */
static void test_big_output_over_turns(void **state)
{
    struct fixture *f = *state;
    struct conn *c = f->owner.conn;
    size_t len = 16u << 20;
    char *v = pattern(len);
    struct sink k = { .fd = f->peer, .buf = malloc(len), .want = len };
    int big = 32 << 20;
    pthread_t th;
    assert_non_null(k.buf);
    (void)setsockopt(conn_fd(c), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
    evbuffer_add(conn_output(c), v, len);
    assert_int_equal(pthread_create(&th, NULL, sink_reader, &k), 0);
    conn_send(c);
    conn_loop_flush(&f->loop);
    assert_true(conn_written(c) <= CONN_WRITE_MAX_TURN);
    assert_true(evbuffer_get_length(conn_output(c)) > 0);
    assert_true(conn_write_blocked(c));
    assert_true(turn_until(f, output_empty));
    pthread_join(th, NULL);
    assert_int_equal(k.have, len);
    assert_memory_equal(k.buf, v, len);
    assert_int_equal(f->owner.drained, 1);
    assert_false(conn_write_blocked(c));
    free(k.buf);
    free(v);
}

static bool saw_eof(struct fixture *f)
{
    return conn_eof(f->owner.conn);
}

/* The peer closes after half a value: the half is in the input, EOF is
 * reported and reading stops. */
static void test_peer_closes_mid_value(void **state)
{
    struct fixture *f = *state;
    write_all(f->peer, "VALUE k 0 10\r\n12345", 19);
    close(f->peer);
    f->peer = -1;
    assert_true(turn_until(f, saw_eof));
    assert_int_equal(evbuffer_get_length(conn_input(f->owner.conn)), 19);
    assert_false(conn_reading(f->owner.conn));
    assert_int_equal(f->owner.errors, 0);
}

static bool got_input(struct fixture *f)
{
    return f->owner.inputs > 0;
}

/* Backpressure: with reading stopped nothing is read; started again, the
 * waiting bytes arrive. */
static void test_backpressure_stops_and_resumes(void **state)
{
    struct fixture *f = *state;
    conn_want_read(f->owner.conn, false);
    assert_false(conn_reading(f->owner.conn));
    write_all(f->peer, "get a\r\n", 7);
    for (int i = 0; i < 20; i++)
        turn(f);
    assert_int_equal(f->owner.inputs, 0);
    assert_int_equal(nreadv, 0);
    conn_want_read(f->owner.conn, true);
    assert_true(turn_until(f, got_input));
    assert_int_equal(evbuffer_get_length(conn_input(f->owner.conn)), 7);
}

static bool input_has_all_3000(struct fixture *f)
{
    return f->owner.consumed + evbuffer_get_length(conn_input(f->owner.conn)) >= 3000;
}

/* Reading stops by itself once the input holds read_max bytes and starts
 * again when the owner has consumed them. */
static void test_read_max_stops_reading(void **state)
{
    struct fixture *f = *state;
    recreate(f, 1000, &ops);
    char *v = pattern(3000);
    write_all(f->peer, v, 3000);
    assert_true(turn_until(f, got_input));
    size_t first = evbuffer_get_length(conn_input(f->owner.conn));
    assert_true(first >= 1000);
    assert_false(conn_reading(f->owner.conn));
    for (int i = 0; i < 10; i++)
        turn(f);
    assert_int_equal(evbuffer_get_length(conn_input(f->owner.conn)), first);
    f->owner.consume = true;
    evbuffer_drain(conn_input(f->owner.conn), first);
    f->owner.consumed = first;
    conn_want_read(f->owner.conn, true);
    assert_true(turn_until(f, input_has_all_3000));
    free(v);
}

static bool connected(struct fixture *f)
{
    return f->owner.connected > 0 || f->owner.errors > 0;
}

/* A socket bound to a kernel-chosen port of 127.0.0.1 (*sa), listening
 * if asked. */
static int loopback_port(struct sockaddr_in *sa, bool listening)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof(*sa);
    *sa = (struct sockaddr_in){ .sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(l, (struct sockaddr *)sa, len), 0);
    if (listening)
        assert_int_equal(listen(l, 4), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)sa, &len), 0);
    return l;
}

/* Replaces the fixture's conn with one connecting to sa. */
static void connect_owner(struct fixture *f, const struct sockaddr_in *sa)
{
    const char *why = NULL;
    conn_destroy(&f->owner.conn);
    f->owner.conn = conn_connect(&f->loop, (const struct sockaddr *)sa, sizeof(*sa),
                                 4096, &ops, &f->owner, &why);
    assert_non_null(f->owner.conn);
}

/* An outgoing connect reports through the loop, and bytes sent before it
 * completed are written once it has. */
static void test_connect_then_write(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_in sa;
    int l = loopback_port(&sa, true);
    connect_owner(f, &sa);
    assert_int_equal(f->owner.connected, 0);   /* never from inside the call */
    evbuffer_add(conn_output(f->owner.conn), "version\r\n", 9);
    conn_send(f->owner.conn);
    assert_true(turn_until(f, connected));
    assert_int_equal(f->owner.errors, 0);
    int s = accept(l, NULL, NULL);
    assert_true(s >= 0);
    char buf[9];
    read_exact(s, buf, 9);
    assert_memory_equal(buf, "version\r\n", 9);
    close(s);
    close(l);
}

/* A refused connect is an error from the loop, not from the call. */
static void test_connect_refused(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_in sa;
    close(loopback_port(&sa, false));   /* nothing listens on that port now */
    connect_owner(f, &sa);
    assert_int_equal(f->owner.errors, 0);
    assert_true(turn_until(f, connected));
    assert_int_equal(f->owner.errors, 1);
    assert_int_equal(f->owner.connected, 0);
    assert_string_equal(f->owner.reason, strerror(ECONNREFUSED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_byte_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_mb_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gathered_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_flush_appends_to_the_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_write_arms_and_disarms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_output_over_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_closes_mid_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_stops_and_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_max_stops_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_then_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
