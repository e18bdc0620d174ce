/* test_listener: accepting with backoff, on real sockets with the
 * process's descriptors really exhausted (a low RLIMIT_NOFILE). */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "strata/listener.h"
#include "strata/util.h"

struct accepted {
    int      fds[4];
    unsigned n;
};

static void on_accept(evutil_socket_t fd, void *arg)
{
    struct accepted *a = arg;
    assert_true(a->n < 4);
    a->fds[a->n++] = fd;
}

/* A listener on 127.0.0.1, port from the kernel; *port gets it. */
static void open_listener(struct listener *l, struct event_base *base, struct accepted *a,
                          uint16_t *port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    char err[128];
    assert_int_equal(listener_open(l, base, -1, (struct sockaddr *)&sin, sizeof(sin),
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16, on_accept,
                                   a, "test", err, sizeof(err)),
                     0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(evconnlistener_get_fd(l->ev), (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
}

static int connect_to(uint16_t port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* Turns the loop until cond holds, for at most 3 s. */
#define TURN_UNTIL(base, cond)                                              \
    do {                                                                    \
        int64_t deadline_ = util_now_ms() + 3000;                           \
        while (!(cond) && util_now_ms() < deadline_) {                      \
            event_base_loop(base, EVLOOP_NONBLOCK);                         \
            struct timespec ts_ = { 0, 500 * 1000 };                        \
            nanosleep(&ts_, NULL);                                          \
        }                                                                   \
        assert_true(cond);                                                  \
    } while (0)

struct fixture {
    struct event_base *base;
    struct listener    l;
    struct accepted    a;
    int                client;   /* connected, waiting in the backlog */
};

static int setup(void **state)
{
    struct fixture *f = test_calloc(1, sizeof(*f));
    uint16_t port;
    f->base = event_base_new();
    open_listener(&f->l, f->base, &f->a, &port);
    f->client = connect_to(port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (unsigned i = 0; i < f->a.n; i++)
        close(f->a.fds[i]);
    close(f->client);
    listener_close(&f->l);
    event_base_free(f->base);
    test_free(f);
    return 0;
}

static void test_accepts(void **state)
{
    struct fixture *f = *state;
    TURN_UNTIL(f->base, f->a.n == 1);
    assert_int_equal(f->l.pauses, 0);
    listener_close(&f->l);
    assert_null(f->l.ev);
    listener_close(&f->l);   /* idempotent */
}

/* Out of descriptors with a connection waiting: one pause, not a spin;
 * accepted once a descriptor is free again, and the backoff is reset. */
static void test_backs_off_when_descriptors_run_out(void **state)
{
    struct fixture *f = *state;
    struct rlimit old, low;
    int spare[64], nspare = 0, fd;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 64;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (nspare < 64 && (fd = dup(0)) >= 0)
        spare[nspare++] = fd;
    assert_int_equal(errno, EMFILE);

    TURN_UNTIL(f->base, f->l.pauses == 1);
    assert_int_equal(f->l.pause_ms, LISTENER_PAUSE_MIN_MS);
    for (int i = 0; i < 1000; i++)            /* paused: no accept tried */
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(f->l.pauses <= 2);
    assert_int_equal(f->a.n, 0);

    close(spare[--nspare]);   /* two: the accept after it must see EAGAIN */
    close(spare[--nspare]);
    TURN_UNTIL(f->base, f->a.n == 1);
    assert_int_equal(f->l.pause_ms, 0);

    while (nspare > 0)
        close(spare[--nspare]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backs_off_when_descriptors_run_out, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
