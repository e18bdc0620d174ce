/* test_net: the fake peer's side of the socket tests (test_backend,
 * test_client). The test runs the proxy's loop one turn at a time, as
 * conn_loop_run does (a batch of events, then conn_loop_flush), and reads
 * or writes its own end of a socket between turns. Every wait has a
 * deadline, so a broken proxy fails a test instead of hanging it.
 * Include after <cmocka.h> and "test_sbuf.h". */
#ifndef STRATA_TEST_NET_H
#define STRATA_TEST_NET_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "strata/conn.h"
#include "strata/util.h"

/* The longest any one wait may take. */
#define NET_WAIT_MS 3000

/* One turn of the proxy's loop: the ready events, then the writes. */
static inline void net_turn(struct conn_loop *l)
{
    assert_true(event_base_loop(l->base, EVLOOP_NONBLOCK) >= 0);
    conn_loop_flush(l);
}

/* A turn, then a short sleep so that waiting does not spin. */
static inline void net_tick(struct conn_loop *l)
{
    net_turn(l);
    struct timespec ts = { 0, 200 * 1000 };
    nanosleep(&ts, NULL);
}

/* Turns the loop until cond holds or NET_WAIT_MS pass; fails if not.
 * cond is evaluated once per turn (it may have side effects). */
#define NET_WAIT(l, cond)                                        \
    do {                                                         \
        int64_t net_deadline_ = util_now_ms() + NET_WAIT_MS;     \
        bool net_ok_;                                            \
        while (!(net_ok_ = (cond)) && util_now_ms() < net_deadline_) \
            net_tick(l);                                         \
        assert_true(net_ok_);                                    \
    } while (0)

/* Turns the loop for about ms milliseconds. */
static inline void net_run_for(struct conn_loop *l, int ms)
{
    int64_t until = util_now_ms() + ms;
    while (util_now_ms() < until)
        net_tick(l);
}

static inline void net_nonblock(int fd)
{
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* Accepts one connection on lfd while the loop runs. Returns it,
 * non-blocking. */
static inline int net_accept(struct conn_loop *l, int lfd)
{
    int fd = -1;
    NET_WAIT(l, (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0);
    return fd;
}

/* True if a connection waits on lfd (nothing is accepted). */
static inline bool net_pending_accept(int lfd)
{
    struct pollfd p = { .fd = lfd, .events = POLLIN };
    return poll(&p, 1, 0) == 1;
}

/* Bytes readable on fd now, without taking them (0 at EOF too). */
static inline size_t net_peek(int fd)
{
    char tmp[65536];
    ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_PEEK | MSG_DONTWAIT);
    return n > 0 ? (size_t)n : 0;
}

/* Reads exactly n bytes into buf while the loop runs. */
static inline void net_read_exact(struct conn_loop *l, int fd, char *buf, size_t n)
{
    size_t got = 0;
    int64_t deadline = util_now_ms() + NET_WAIT_MS;
    while (got < n && util_now_ms() < deadline) {
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        net_tick(l);
    }
    assert_int_equal(got, n);
}

/* Reads strlen(want) bytes and asserts they are want. */
static inline void net_expect(struct conn_loop *l, int fd, const char *want)
{
    size_t n = strlen(want);
    char *got = malloc(n + 1);
    assert_non_null(got);
    net_read_exact(l, fd, got, n);
    got[n] = '\0';
    assert_string_equal(got, want);
    free(got);
}

/* Reads whatever arrives within ms milliseconds into b. */
static inline void net_read_for(struct conn_loop *l, int fd, struct sbuf *b, int ms)
{
    int64_t until = util_now_ms() + ms;
    char tmp[65536];
    while (util_now_ms() < until) {
        ssize_t r = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (r > 0)
            sbuf_add(b, tmp, (size_t)r);
        else
            net_tick(l);
    }
}

/* Asserts that nothing arrives on fd within ms milliseconds, and that
 * the peer has not closed it either. */
static inline void net_quiet(struct conn_loop *l, int fd, int ms)
{
    net_run_for(l, ms);
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    assert_int_equal(r, -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Writes all n bytes while the loop runs (the proxy may read slowly). */
static inline void net_write_all(struct conn_loop *l, int fd, const void *buf, size_t n)
{
    size_t put = 0;
    int64_t deadline = util_now_ms() + NET_WAIT_MS;
    while (put < n && util_now_ms() < deadline) {
        ssize_t w = send(fd, (const char *)buf + put, n - put, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            put += (size_t)w;
            continue;
        }
        assert_true(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        net_tick(l);
    }
    assert_int_equal(put, n);
}

static inline void net_send_str(struct conn_loop *l, int fd, const char *s)
{
    net_write_all(l, fd, s, strlen(s));
}

/* Waits until the peer has closed fd: end of file, or a reset (a unix
 * socket closed with unread bytes). No byte may arrive before it. */
static inline void net_expect_closed(struct conn_loop *l, int fd)
{
    int64_t deadline = util_now_ms() + NET_WAIT_MS;
    char c;
    for (;;) {
        ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return;
        assert_true(r < 0);   /* no more bytes */
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        assert_true(util_now_ms() < deadline);
        net_tick(l);
    }
}

/* Accepts the proxy's connection to a fake memcached: its first bytes
 * are the backend's probe "mn" alone (requests wait for its answer),
 * answered with `answer`: "ERROR\r\n" plays memcached < 1.6 (no fences,
 * replies matched by position), "MN\r\n" one that fences. */
static inline int net_accept_probed(struct conn_loop *l, int lfd, const char *answer)
{
    int fd = net_accept(l, lfd);
    net_expect(l, fd, "mn\r\n");
    net_quiet(l, fd, 5);
    net_send_str(l, fd, answer);
    return fd;
}

#endif
