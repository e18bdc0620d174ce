/* listener: accepting sockets with backoff when descriptors run out (see
 * listener.h for the picture). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "strata/listener.h"
#include "strata/log.h"
#include "strata/util.h"

static void listener_on_accept(struct evconnlistener *ev, evutil_socket_t fd,
                               struct sockaddr *sa, int salen, void *arg)
{
    (void)ev; (void)sa; (void)salen;
    struct listener *l = arg;
    l->pause_ms = 0;
    l->on_accept(fd, l->arg);
}

static void listener_on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct listener *l = arg;
    if (l->ev != NULL)
        evconnlistener_enable(l->ev);
}

/* Disables accepting for the next backoff step (10 ms, doubling to 1 s). */
static void listener_pause(struct listener *l)
{
    uint32_t ms = l->pause_ms * 2;
    if (ms < LISTENER_PAUSE_MIN_MS)
        ms = LISTENER_PAUSE_MIN_MS;
    if (ms > LISTENER_PAUSE_MAX_MS)
        ms = LISTENER_PAUSE_MAX_MS;
    l->pause_ms = ms;
    l->pauses++;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evconnlistener_disable(l->ev);
    evtimer_add(l->resume, &tv);
}

/* accept() failed (not EAGAIN): pause when descriptors or memory ran out,
 * and warn at most once a second with the count of failures. */
static void listener_on_error(struct evconnlistener *ev, void *arg)
{
    (void)ev;
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    bool exhausted = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    l->failures++;
    if (exhausted)
        listener_pause(l);
    int64_t now = util_now_ms();
    if (now - l->warned_ms < LISTENER_WARN_MS)
        return;
    log_warn("%s: accept failed: %s (%llu failures since the last report)%s", l->what,
             evutil_socket_error_to_string(err), (unsigned long long)l->failures,
             exhausted ? "; accepting paused, with backoff up to 1 s" : "");
    l->warned_ms = now;
    l->failures = 0;
}

int listener_open(struct listener *l, struct event_base *base, evutil_socket_t fd,
                  const struct sockaddr *sa, socklen_t salen, unsigned flags, int backlog,
                  listener_accept_cb on_accept, void *arg, const char *what, char *err,
                  size_t errlen)
{
    memset(l, 0, sizeof(*l));
    l->on_accept = on_accept;
    l->arg = arg;
    snprintf(l->what, sizeof(l->what), "%s", what);
    if (fd >= 0)
        l->ev = evconnlistener_new(base, listener_on_accept, l, flags, 0, fd);
    else
        l->ev = evconnlistener_new_bind(base, listener_on_accept, l, flags, backlog, sa,
                                        (int)salen);
    if (l->ev == NULL) {
        snprintf(err, errlen, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    evconnlistener_set_error_cb(l->ev, listener_on_error);
    if ((l->resume = evtimer_new(base, listener_on_resume, l)) == NULL) {
        snprintf(err, errlen, "cannot create the accept timer");
        listener_close(l);
        return -1;
    }
    return 0;
}

void listener_close(struct listener *l)
{
    if (l->ev != NULL)
        evconnlistener_free(l->ev);
    if (l->resume != NULL)
        event_free(l->resume);
    memset(l, 0, sizeof(*l));
}

int listener_probe(const struct sockaddr *sa, socklen_t salen, bool shared)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (shared)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    int rc = bind(fd, sa, salen) == 0 ? 0 : errno;
    close(fd);
    return rc;
}
