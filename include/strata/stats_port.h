/* stats_port: nutcracker's stats port. Every connection gets one document
 * (whatever render writes, the stats JSON) and is closed; it reads
 * nothing. Runs on the main thread. */
#ifndef STRATA_STATS_PORT_H
#define STRATA_STATS_PORT_H

#include <stdint.h>

#include "strata/listener.h"

struct evbuffer;
struct event_base;

/* Writes the document for one connection into `out`. */
typedef void (*stats_port_render)(struct evbuffer *out, void *arg);

struct stats_port {
    struct listener    listener;   /* backs off when descriptors run out */
    struct event_base *base;
    stats_port_render  render;
    void              *arg;
};

/* Listens on host:port. When the address is not a loopback one, a NOTICE
 * says the port is reachable from other hosts. 0, or -1 (logged). */
int stats_port_open(struct stats_port *sp, struct event_base *base, const char *host,
                    uint16_t port, stats_port_render render, void *arg);

/* Stops listening (idempotent); connections being written finish. */
void stats_port_close(struct stats_port *sp);

#endif
