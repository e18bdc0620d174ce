/* listener: an accepting socket that backs off when the process runs out
 * of descriptors, shared by the pools' listeners and the stats port.
 *
 *   accept ok ──► on_accept(fd), backoff reset
 *   EMFILE/ENFILE/ENOBUFS/ENOMEM ──► paused 10 ms, doubling to 1 s, then
 *                                    accepting again (timer)
 *   any failure ──► one warning a second, with the count since the last
 *
 * Out of descriptors, accept() fails at once on every loop turn while a
 * connection waits in the backlog: without the pause a listener spins. */
#ifndef STRATA_LISTENER_H
#define STRATA_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/util.h>

struct event;
struct event_base;
struct evconnlistener;

#define LISTENER_PAUSE_MIN_MS 10
#define LISTENER_PAUSE_MAX_MS 1000
#define LISTENER_WARN_MS      1000

/* Called with each accepted descriptor, which it now owns. */
typedef void (*listener_accept_cb)(evutil_socket_t fd, void *arg);

struct listener {
    struct evconnlistener *ev;        /* NULL: not listening */
    struct event          *resume;    /* re-enables a paused listener */
    listener_accept_cb     on_accept;
    void                  *arg;
    uint32_t               pause_ms;  /* current backoff, 0: none */
    int64_t                warned_ms; /* last "accept failed" line */
    uint64_t               failures;  /* since that line */
    uint64_t               pauses;    /* backoff steps taken, ever (tests) */
    char                   what[96];  /* names it in the warning */
};

/* Binds and listens on `sa` (flags: LEV_OPT_*; backlog as listen(2)), or
 * with fd >= 0 accepts on that listening descriptor instead (sa unused).
 * `what` names the listener in warnings ("pool a: worker 0"). Returns 0,
 * or -1 with l->ev NULL and the reason (errno's text) in err. */
int listener_open(struct listener *l, struct event_base *base, evutil_socket_t fd,
                  const struct sockaddr *sa, socklen_t salen, unsigned flags, int backlog,
                  listener_accept_cb on_accept, void *arg, const char *what, char *err,
                  size_t errlen);

/* Whether a TCP listener could be bound at `sa` now: 0, or an errno
 * (EADDRINUSE, ...). `shared` probes with SO_REUSEPORT, as the workers
 * bind: it succeeds where this process (or another with the option, of
 * the same user) already listens. Without it the probe fails wherever
 * anyone listens, which is how a second proxy started on the same pool
 * file is refused instead of silently sharing the port with the first. */
int listener_probe(const struct sockaddr *sa, socklen_t salen, bool shared);

/* Stops listening and frees the timer; the state is zeroed (idempotent). */
void listener_close(struct listener *l);

#endif
