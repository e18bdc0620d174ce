/* app: the process as main.c runs it: settings, the running pool
 * configuration, the workers and the main thread's event base. Internal
 * to main.c and the main-thread modules beside it (reload). */
#ifndef STRATA_APP_H
#define STRATA_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "strata/conf.h"
#include "strata/worker.h"

struct event_base;
struct evconnlistener;
struct zk_app;

struct app {
    struct settings      settings;
    struct conf         *conf;
    struct runtime       rt;
    struct worker       *workers;
    uint32_t             nworkers;
    struct event_base   *base;
    struct evconnlistener *stats_listener;
    bool                 pid_written;
    struct zk_app       *zk;          /* -c zk://...: the configuration center */
};

#endif
