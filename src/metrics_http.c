/* metrics_http: GET /metrics on the metrics_listen address (see
 * metrics_http.h for the picture). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "strata/log.h"
#include "strata/metrics_http.h"
#include "strata/util.h"

/* One connection: its request, then its reply. */
struct metrics_http_conn {
    TAILQ_ENTRY(metrics_http_conn) link;
    struct metrics_http *h;
    struct bufferevent  *bev;
    struct event        *deadline;   /* read, then write deadline */
    bool                 replied;
};

/* ---- parsing (no sockets) ----------------------------------------------- */

/* The end of the head in buf: the offset after "\r\n\r\n" or "\n\n",
 * or 0 when not there yet. */
static size_t metrics_http_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Whether the target (up to its end) is /metrics, with or without a
 * query string. */
static bool metrics_http_target_ok(const char *t, size_t len)
{
    static const char path[] = "/metrics";
    size_t plen = sizeof(path) - 1;
    return len >= plen && memcmp(t, path, plen) == 0 && (len == plen || t[plen] == '?');
}

enum metrics_http_status metrics_http_parse(const char *buf, size_t len)
{
    size_t end = metrics_http_head_end(buf, len);
    if (end == 0)
        return METRICS_HTTP_AGAIN;
    const char *eol = memchr(buf, '\n', end);
    size_t line = (size_t)(eol - buf);
    if (line > 0 && buf[line - 1] == '\r')
        line--;
    const char *sp1 = memchr(buf, ' ', line);
    const char *sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', line - (size_t)(sp1 + 1 - buf)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == buf || sp2 == sp1 + 1)
        return METRICS_HTTP_BAD;
    size_t vlen = line - (size_t)(sp2 + 1 - buf);
    if (vlen != 8 || (memcmp(sp2 + 1, "HTTP/1.0", 8) != 0 && memcmp(sp2 + 1, "HTTP/1.1", 8) != 0))
        return METRICS_HTTP_BAD;
    if ((size_t)(sp1 - buf) != 3 || memcmp(buf, "GET", 3) != 0)
        return METRICS_HTTP_METHOD;
    return metrics_http_target_ok(sp1 + 1, (size_t)(sp2 - sp1 - 1)) ? METRICS_HTTP_OK
                                                                      : METRICS_HTTP_NOT_FOUND;
}

int metrics_http_addr(const char *text, char **host, uint16_t *port)
{
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || colon[1] == '\0')
        return -1;
    char *end;
    long v = strtol(colon + 1, &end, 10);
    if (*end != '\0' || v < 1 || v > 65535)
        return -1;
    size_t hlen = (size_t)(colon - text);
    if (text[0] == '[') {                     /* [v6]:port */
        if (hlen < 3 || text[hlen - 1] != ']')
            return -1;
        text++;
        hlen -= 2;
    }
    *host = util_xcalloc(1, hlen + 1);
    memcpy(*host, text, hlen);
    *port = (uint16_t)v;
    return 0;
}

/* ---- connections -------------------------------------------------------- */

static void metrics_http_conn_free(struct metrics_http_conn *mc)
{
    mc->h->nconns--;
    TAILQ_REMOVE(&mc->h->conns, mc, link);
    bufferevent_free(mc->bev);
    if (mc->deadline != NULL)
        event_free(mc->deadline);
    free(mc);
}

static void metrics_http_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    metrics_http_conn_free(arg);
}

static void metrics_http_arm(struct metrics_http_conn *mc, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(mc->deadline, &tv);
}

static const char *metrics_http_status_line(enum metrics_http_status st)
{
    switch (st) {
    case METRICS_HTTP_OK:        return "200 OK";
    case METRICS_HTTP_NOT_FOUND: return "404 Not Found";
    case METRICS_HTTP_METHOD:    return "405 Method Not Allowed";
    case METRICS_HTTP_AGAIN:     return "431 Request Header Fields Too Large";
    default:                     return "400 Bad Request";
    }
}

/* Queues the reply for `st` (the exposition for OK, a line of text
 * else) under the write deadline; from now on input is dropped, and the
 * connection closes once the reply is written (metrics_http_on_write). */
static void metrics_http_reply(struct metrics_http_conn *mc, enum metrics_http_status st)
{
    struct evbuffer *body = evbuffer_new();
    struct evbuffer *out = bufferevent_get_output(mc->bev);
    const char *status = metrics_http_status_line(st);
    if (body == NULL) {
        metrics_http_conn_free(mc);
        return;
    }
    if (st == METRICS_HTTP_OK)
        mc->h->fill(body, mc->h->arg);
    else
        evbuffer_add_printf(body, "%s\n", status);
    evbuffer_add_printf(out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n%s\r\n", status,
                        st == METRICS_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
                                              : "text/plain; charset=utf-8",
                        evbuffer_get_length(body),
                        st == METRICS_HTTP_METHOD ? "Allow: GET\r\n" : "");
    evbuffer_add_buffer(out, body);
    evbuffer_free(body);
    mc->replied = true;
    bufferevent_enable(mc->bev, EV_WRITE);
    metrics_http_arm(mc, METRICS_HTTP_WRITE_MS);
}

static void metrics_http_on_read(struct bufferevent *bev, void *arg)
{
    struct metrics_http_conn *mc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (mc->replied) {   /* lingering: what the client still sends is dropped */
        evbuffer_drain(in, len);
        return;
    }
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    enum metrics_http_status st = metrics_http_parse(buf, len);
    if (st == METRICS_HTTP_AGAIN && len < METRICS_HTTP_MAX_REQUEST)
        return;
    metrics_http_reply(mc, st);   /* AGAIN here: the head is too large */
}

/* The reply is written. Closing a socket with unread bytes makes the
 * kernel reset it, which can destroy the reply before the client reads
 * it: the write side is shut instead (the client sees the end), and what
 * it still sends is read and dropped until it closes or the deadline. */
static void metrics_http_on_write(struct bufferevent *bev, void *arg)
{
    struct metrics_http_conn *mc = arg;
    if (!mc->replied || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    bufferevent_disable(bev, EV_WRITE);
    bufferevent_enable(bev, EV_READ);
}

static void metrics_http_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev; (void)what;
    metrics_http_conn_free(arg);
}

/* A new connection: refused at once over METRICS_HTTP_MAX_CONNS, else
 * read under the read deadline. */
static void metrics_http_on_accept(evutil_socket_t fd, void *arg)
{
    struct metrics_http *h = arg;
    if (h->nconns >= METRICS_HTTP_MAX_CONNS) {
        h->refused++;
        close(fd);
        return;
    }
    struct bufferevent *bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        return;
    }
    struct metrics_http_conn *mc = util_xcalloc(1, sizeof(*mc));
    mc->h = h;
    mc->bev = bev;
    mc->deadline = evtimer_new(h->base, metrics_http_on_deadline, mc);
    TAILQ_INSERT_TAIL(&h->conns, mc, link);
    h->nconns++;
    if (mc->deadline == NULL) {
        metrics_http_conn_free(mc);
        return;
    }
    bufferevent_setwatermark(mc->bev, EV_READ, 0, METRICS_HTTP_MAX_REQUEST);
    bufferevent_setcb(mc->bev, metrics_http_on_read, metrics_http_on_write,
                      metrics_http_on_event, mc);
    bufferevent_enable(mc->bev, EV_READ);
    metrics_http_arm(mc, METRICS_HTTP_READ_MS);
}

int metrics_http_open(struct metrics_http *h, struct event_base *base,
                      const struct sockaddr *sa, socklen_t salen, metrics_http_fill fill,
                      void *arg, char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    h->base = base;
    h->fill = fill;
    h->arg = arg;
    TAILQ_INIT(&h->conns);
    return listener_open(&h->listener, base, -1, sa, salen,
                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
                         metrics_http_on_accept, h, "metrics listener", err, errlen);
}

void metrics_http_close(struct metrics_http *h)
{
    listener_close(&h->listener);
    while (h->nconns > 0)
        metrics_http_conn_free(TAILQ_FIRST(&h->conns));
}
