/* metrics_http: the HTTP listener of metrics_listen, on the main thread.
 * One request per connection, then close:
 *
 *   accept (listener.c: EMFILE backoff; over METRICS_HTTP_MAX_CONNS open
 *   ones: closed at once)
 *     ──► read the head, at most METRICS_HTTP_MAX_REQUEST bytes (else 431),
 *         within METRICS_HTTP_READ_MS of the accept (else closed, no reply)
 *     ──► metrics_http_parse: GET /metrics ──► 200 + the exposition
 *                             another path ──► 404; bad request ──► 400;
 *                             another method ──► 405
 *     ──► written within METRICS_HTTP_WRITE_MS; then the write side is
 *         shut and input dropped until the client closes (no reset that
 *         could destroy the reply) or the deadline
 *
 * HTTP/1.0 and 1.1; every response says "Connection: close". The body is
 * made by the caller's fill callback (main: metrics_write). */
#ifndef STRATA_METRICS_HTTP_H
#define STRATA_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "strata/listener.h"

struct event_base;
struct evbuffer;

#define METRICS_HTTP_MAX_REQUEST 8192   /* bytes of request line and headers */
#define METRICS_HTTP_READ_MS     5000   /* the whole head must come in this */
#define METRICS_HTTP_WRITE_MS    10000  /* the client must take the reply in this */
#define METRICS_HTTP_MAX_CONNS   64     /* open at once; more are closed */

enum metrics_http_status {
    METRICS_HTTP_AGAIN,      /* the head is not whole yet */
    METRICS_HTTP_OK,         /* GET /metrics */
    METRICS_HTTP_NOT_FOUND,  /* GET of another path */
    METRICS_HTTP_METHOD,     /* not GET */
    METRICS_HTTP_BAD,        /* not an HTTP/1.0 or 1.1 request line */
};

/* Parses the request head in buf[0..len): the request line and, up to
 * an empty line, headers (ignored). No sockets. */
enum metrics_http_status metrics_http_parse(const char *buf, size_t len);

/* Appends the exposition to `out`. */
typedef void (*metrics_http_fill)(struct evbuffer *out, void *arg);

struct metrics_http_conn;
TAILQ_HEAD(metrics_http_conns, metrics_http_conn);

struct metrics_http {
    struct event_base *base;
    struct listener    listener;
    metrics_http_fill  fill;
    void              *arg;
    struct metrics_http_conns conns;  /* open now */
    uint32_t           nconns;
    uint64_t           refused;  /* closed at once: over METRICS_HTTP_MAX_CONNS */
};

/* Listens on `sa`. 0, or -1 with err. */
int metrics_http_open(struct metrics_http *h, struct event_base *base,
                      const struct sockaddr *sa, socklen_t salen, metrics_http_fill fill,
                      void *arg, char *err, size_t errlen);
/* Stops listening and closes the connections still open. */
void metrics_http_close(struct metrics_http *h);

/* "HOST:PORT" or "[V6]:PORT" into host (heap) and port. 0, or -1. */
int metrics_http_addr(const char *text, char **host, uint16_t *port);

#endif
