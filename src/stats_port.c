/* stats_port: one document per connection, then close (stats_port.h). */
#include <netinet/in.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "strata/conf.h"
#include "strata/log.h"
#include "strata/stats_port.h"
#include "strata/util.h"

static void stats_on_written(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void stats_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what; (void)arg;
    bufferevent_free(bev);
}

static void stats_on_accept(evutil_socket_t fd, void *arg)
{
    struct stats_port *sp = arg;
    struct bufferevent *bev = bufferevent_socket_new(sp->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        return;
    }
    sp->render(bufferevent_get_output(bev), sp->arg);
    bufferevent_setcb(bev, NULL, stats_on_written, stats_on_event, sp);
    bufferevent_enable(bev, EV_WRITE);
}

/* True for 127.0.0.0/8 and ::1. */
static bool addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

/* The stats port publishes every pool's servers and counters to whoever
 * connects: say so when it is reachable from other hosts (nutcracker's
 * default, 0.0.0.0, is kept; docs/security.md). */
static void stats_exposure_note(const struct sockaddr_storage *ss, const struct conf_addr *addr)
{
    if (addr_is_loopback(ss))
        return;
    log_notice("stats port %s:%u is reachable from other hosts and publishes the pools' "
               "server names and counters; -a 127.0.0.1 keeps it local",
               addr->host, (unsigned)addr->port);
}

int stats_port_open(struct stats_port *sp, struct event_base *base, const char *host,
                    uint16_t port, stats_port_render render, void *arg)
{
    struct conf_addr addr = { .host = (char *)host, .port = port };
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    sp->base = base;
    sp->render = render;
    sp->arg = arg;
    if (util_resolve(&addr, &ss, &len, err, sizeof(err)) != 0) {
        log_error("stats: %s", err);
        return -1;
    }
    if (listener_open(&sp->listener, base, -1, (struct sockaddr *)&ss, len,
                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
                      stats_on_accept, sp, "stats port", err, sizeof(err)) != 0) {
        log_error("stats: cannot listen on %s:%u: %s", addr.host, (unsigned)addr.port, err);
        return -1;
    }
    stats_exposure_note(&ss, &addr);
    return 0;
}

void stats_port_close(struct stats_port *sp)
{
    listener_close(&sp->listener);
}
