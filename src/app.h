/* app: the process (app.c): settings, the running pool configuration,
 * the workers and the main thread's event base. Internal to main.c, app.c
 * and the main-thread modules beside it (reload, zk_app). */
#ifndef STRATA_APP_H
#define STRATA_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "strata/conf.h"
#include "strata/stats_port.h"
#include "strata/stats.h"
#include "strata/worker.h"

struct event;
struct event_base;
struct evconnlistener;
struct metrics_http;
struct zk_app;
struct sentinel_app;
struct dns_app;

struct app {
    struct settings      settings;
    const char          *settings_file;  /* -C, re-read on reload; NULL */
    /* applied over a re-read -C file (the command line: main.c) */
    void               (*settings_override)(struct settings *s, const void *arg);
    const void          *settings_override_arg;
    struct conf         *conf;           /* the newest configuration */
    struct runtime       rt;
    struct worker       *workers;
    uint32_t             nworkers;
    struct event_base   *base;
    struct stats_port    stats_port;     /* the JSON stats port */
    bool                 pid_written;
    int                  ready_fd;       /* -d: told once the daemon serves; -1 */
    /* reload (reload.c) */
    struct config_gen   *gen;            /* conf's generation */
    struct config_gen  **old_gens;       /* replaced, freed once unused */
    uint32_t             nold_gens;
    struct pool_shared **shared;         /* every pool name seen, for good */
    uint32_t             nshared;
    int                 *stale_fds;      /* unix listeners to close once every
                                            worker has switched */
    char               **stale_paths;    /* and the files to unlink, or NULL */
    uint32_t             nstale;
    struct conf         *queued;         /* waits for the switch in progress */
    char                *queued_source;
    struct event        *reload_timer;   /* follows a switch, frees old gens */
    uint64_t             announced;      /* last generation logged in force */
    bool                 notify_reload;  /* a SIGUSR1 waits for READY=1 */
    uint64_t             notify_failures;/* reload_failures when it came */
    struct zk_app       *zk;             /* -c zk://...: the configuration center */
    struct metrics_http *metrics;        /* metrics_listen, or NULL */
    struct sentinel_app *sentinel;       /* Redis pools that follow Sentinel */
    struct backend_stats *backend_stats; /* the servers' own stats, or NULL */
    struct dns_app      *dns;            /* server host names followed, or NULL */
};

/* Zeroes app (no -d: ready_fd -1); app_deinit frees what loading the
 * configuration made (the pool configuration, settings, ZooKeeper). */
void app_init(struct app *app);
void app_deinit(struct app *app);
/* Runs the process on the loaded configuration until SIGTERM/SIGINT:
 * 0, or -1 when it could not start (logged; on stderr too). */
int app_run(struct app *app);

/* Listens on the pool's unix socket, replacing only a stale socket: the
 * fd, or -1 with err. */
int app_unix_listen(const struct conf_pool *pool, char *err, size_t errlen);
/* Re-reads the -C file (and the command line over it) and applies its
 * live settings: log level, client_max_pending, max_memory,
 * client_request_timeout, max_clients, async_queue_limit,
 * reload_max_server_loss. 0, or -1 with err (nothing changed). */
int app_settings_reload(struct app *app, char *err, size_t errlen);

/* Listens on settings.metrics_listen when it is set (app_metrics.c);
 * 0, or -1 (logged and on stderr). Stop closes it; harmless without. */
int app_metrics_start(struct app *app);
void app_metrics_stop(struct app *app);

/* Generation 1 from app->conf, before the workers exist (reload.c); and
 * everything reload kept, freed after the workers (teardown). */
void reload_setup(struct app *app);
void reload_teardown(struct app *app);
/* SIGUSR1: re-reads -C's live settings and the pool file; RELOADING=1
 * now, READY=1 once it was rejected or is in force in every worker. */
void reload_from_file(struct app *app);
/* READY=1 to the service manager, with the running configuration (and a
 * rejected reload) in STATUS=. */
void reload_ready(struct app *app);

#endif
