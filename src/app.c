/* app: the process. Runtime set-up, the stats port, signals, the
 * workers' start and stop, the -C settings' reload and the unix listeners
 * that reload and zk_app use; main.c only parses flags and starts it.
 *
 *   app_run: runtime ─► stats port ─► signals ─► workers bound ─► user
 *            dropped ─► workers run ─► ZooKeeper ─► ready ─► event loop
 *            (SIGTERM) ─► teardown
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "strata/backend_stats.h"
#include "strata/client.h"
#include "strata/conf.h"
#include "strata/crash.h"
#include "strata/daemon.h"
#include "strata/listener.h"
#include "strata/log.h"
#include "strata/notify.h"
#include "strata/privs.h"
#include "strata/reload.h"
#include "strata/stats.h"
#include "strata/stats_port.h"
#include "strata/unixsock.h"
#include "strata/util.h"
#include "strata/worker.h"
#include "app.h"
#include "dns_app.h"
#include "sentinel_app.h"
#include "zk_app.h"

/* How long a server may take to answer backend_stats' request. */
#define APP_BACKEND_STATS_TIMEOUT_MS 1000
/* A unix socket listener whose pool file gives no mode: owner only. */
#define UNIX_SOCKET_DEFAULT_PERM 0700

void app_init(struct app *app)
{
    memset(app, 0, sizeof(*app));
    app->ready_fd = -1;
}

void app_deinit(struct app *app)
{
    zk_app_stop(app);
    conf_destroy(&app->conf);
    settings_deinit(&app->settings);
}

/* ---- stats port ---- */

/* nutcracker's JSON document, from the workers' counters. */
static void app_stats_render(struct evbuffer *out, void *arg)
{
    const struct app *app = arg;
    stats_json(out, app->conf, app->rt.stats, app->nworkers, app->rt.start_time_s);
}

static int app_stats_open(struct app *app)
{
    return stats_port_open(&app->stats_port, app->base, app->settings.stats_addr,
                           app->settings.stats_port, app_stats_render, app);
}

/* ---- signals ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    char name[32];
    crash_signal_name((int)sig, name, sizeof(name));
    switch (sig) {
    case SIGHUP:
        log_notice("signal %d (%s): reopening the log file", (int)sig, name);
        if (log_reopen() != 0)
            log_error("cannot reopen the log file '%s': %s; still writing to the file "
                      "opened before", app->settings.log_file, strerror(errno));
        break;
    case SIGTTIN:
        log_level_up();
        log_notice("signal %d (%s): log level up", (int)sig, name);
        break;
    case SIGTTOU:
        log_level_down();
        log_notice("signal %d (%s): log level down", (int)sig, name);
        break;
    case SIGUSR1:
        log_notice("signal %d (%s): reloading the configuration", (int)sig, name);
        reload_from_file(app);
        break;
    default:
        log_notice("signal %d (%s): stopping", (int)sig, name);
        notify_stopping();
        event_base_loopbreak(app->base);
        break;
    }
}

static void signals_setup(struct app *app, struct event **evs)
{
    static const int sigs[] = { SIGHUP, SIGTTIN, SIGTTOU, SIGTERM, SIGINT, SIGUSR1 };
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(sigs); i++) {
        evs[i] = evsignal_new(app->base, sigs[i], on_signal, app);
        evsignal_add(evs[i], NULL);
    }
}

/* ---- start and stop ---- */

/* bind() with a umask that leaves the new socket file no permissions at
 * all, so that it never exists with wider ones than `perm` (daemonize
 * sets the umask to 0); chmod() then gives exactly `perm`, whatever the
 * umask. Runs before any thread exists: the umask is process-wide. */
static int unix_bind(int fd, const struct sockaddr_storage *ss, socklen_t len,
                     const char *path, mode_t perm)
{
    mode_t old = umask(0777);
    int rc = bind(fd, (const struct sockaddr *)ss, len);
    umask(old);
    if (rc != 0)
        return -1;
    return chmod(path, perm);
}

/* Listens on the pool's unix socket, replacing a stale socket (never
 * another kind of file: unixsock_clear), with the pool file's mode or
 * UNIX_SOCKET_DEFAULT_PERM. Returns the fd, or -1 with err ("pool P:
 * cannot listen on PATH: why"). */
int app_unix_listen(const struct conf_pool *pool, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char why[400];
    const char *path = pool->listen.addr.path;
    mode_t perm = pool->listen.perm != 0 ? pool->listen.perm : UNIX_SOCKET_DEFAULT_PERM;
    int fd = -1;
    if (util_resolve(&pool->listen.addr, &ss, &len, why, sizeof(why)) != 0 ||
        unixsock_clear(path, why, sizeof(why)) != 0)
        goto error;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || unix_bind(fd, &ss, len, path, perm) != 0 ||
        listen(fd, pool->backlog) != 0) {
        snprintf(why, sizeof(why), "%s", strerror(errno));
        goto error;
    }
    log_info("pool %s: listening on %s, mode %04o", pool->name, path, (unsigned)perm);
    return fd;
error:
    snprintf(err, errlen, "pool %s: cannot listen on %s: %s", pool->name, path, why);
    if (fd >= 0)
        close(fd);
    return -1;
}

static int runtime_setup(struct app *app)
{
    struct runtime *rt = &app->rt;
    const struct conf *conf = app->conf;
    rt->conf = conf;
    rt->settings = &app->settings;
    rt->limits.max_line = app->settings.max_line_size;
    rt->limits.max_value = app->settings.max_value_size;
    rt->limits.read_chunk = app->settings.mbuf_size;
    rt->limits.max_reply = app->settings.max_reply_size;
    rt->limits.fence_replies = (enum mc_fence)app->settings.fence_replies;
    rt->limits.redis_fence_replies = app->settings.redis_fence_replies;
    /* Redis pools: Redis's limits for bulks, requests and replies; the
     * argument count is bounded by the line limit (each argument takes at
     * least 4 bytes of framing). */
    rt->redis_limits = (struct redis_limits){
        .max_bulk = app->settings.redis_max_value_size,
        .max_args = (uint32_t)(app->settings.max_line_size / 4),
        .max_request = app->settings.redis_max_request_size,
        .max_reply = app->settings.redis_max_reply_size,
        .max_depth = 32,
    };
    rt->limits.redis = &rt->redis_limits;
    rt->max_memory = app->settings.max_memory != 0 ? app->settings.max_memory
                                                   : util_default_max_memory();
    rt->nworkers = app->nworkers;
    rt->start_time_s = util_wall_s();
    rt->stats = util_xcalloc(app->nworkers, sizeof(*rt->stats));
    reload_setup(app);
    rt->gen = app->gen;
    rt->shared = app->gen->shared;
    for (uint32_t p = 0; p < conf->npools; p++) {
        struct pool_shared *ps = rt->shared[p];
        if (conf->pools[p].listen.addr.path == NULL)
            continue;
        char err[600];
        if ((ps->unix_fd = app_unix_listen(&conf->pools[p], err, sizeof(err))) < 0) {
            log_error("%s", err);
            return -1;
        }
        ps->unix_path = util_xstrdup(conf->pools[p].listen.addr.path);
    }
    return 0;
}

/* Every pool's TCP listen address is free of other listeners, probed
 * without SO_REUSEPORT before the workers bind with it: a second strata
 * started on the same pool file is refused ("Address already in use", as
 * nutcracker) instead of sharing its ports with the first, unless
 * share_listen_ports asks for that. 0, or -1 (logged and on stderr). */
static int listens_probe(const struct app *app)
{
    if (app->settings.share_listen_ports)
        return 0;   /* asked for: a fleet on one host, a binary hand-over */
    for (uint32_t p = 0; p < app->conf->npools; p++) {
        const struct conf_pool *pool = &app->conf->pools[p];
        struct sockaddr_storage ss;
        socklen_t len;
        char err[256];
        int rc = 0;
        if (pool->listen.addr.path != NULL)
            continue;
        if (util_resolve(&pool->listen.addr, &ss, &len, err, sizeof(err)) != 0)
            rc = -1;
        else if ((rc = listener_probe((struct sockaddr *)&ss, len, false)) != 0)
            snprintf(err, sizeof(err), "%s", strerror(rc));
        if (rc == 0)
            continue;
        log_error("pool %s: cannot listen on %s: %s", pool->name, pool->listen.text, err);
        fprintf(stderr, "strata: pool %s: cannot listen on %s: %s\n", pool->name,
                pool->listen.text, err);
        return -1;
    }
    return 0;
}

/* Sets up every worker, binding its listeners; no thread runs yet. */
static int workers_init(struct app *app)
{
    app->workers = util_xcalloc(app->nworkers, sizeof(*app->workers));
    char err[512];
    for (uint32_t i = 0; i < app->nworkers; i++) {
        if (worker_init(&app->workers[i], i, &app->rt, err, sizeof(err)) != 0) {
            log_error("%s", err);
            fprintf(stderr, "strata: %s\n", err);
            return -1;
        }
        app->rt.stats[i] = &app->workers[i].stats;
        app->gen->views[i] = app->workers[i].stats.view;
    }
    return 0;
}

/* Drops to settings.user (-u) once every listener is bound, before any
 * worker thread runs; running as root without -u is allowed, as
 * nutcracker, with a warning. Returns 0 or -1 (logged and on stderr). */
static int privileges_drop(const struct app *app)
{
    const char *user = app->settings.user;
    char err[512];
    if (user == NULL) {
        if (geteuid() == 0)
            log_warn("running as root: -u USER drops privileges once the listeners are bound");
        return 0;
    }
    if (privs_drop(user, err, sizeof(err)) != 0) {
        log_error("%s", err);
        fprintf(stderr, "strata: %s\n", err);
        return -1;
    }
    log_notice("running as user '%s' (uid %ld, gid %ld)", user, (long)getuid(), (long)getgid());
    return 0;
}

static int workers_start(struct app *app)
{
    for (uint32_t i = 0; i < app->nworkers; i++) {
        if (worker_start(&app->workers[i]) != 0) {
            log_error("cannot start worker %u", i);
            return -1;
        }
    }
    return 0;
}

static void app_teardown(struct app *app)
{
    zk_app_stop(app);   /* first: the registration goes before the listeners */
    sentinel_app_stop(app);
    dns_app_stop(app);
    for (uint32_t i = 0; app->workers != NULL && i < app->nworkers; i++)
        worker_stop(&app->workers[i]);
    for (uint32_t i = 0; app->workers != NULL && i < app->nworkers; i++)
        worker_join(&app->workers[i]);
    for (uint32_t i = 0; app->workers != NULL && i < app->nworkers; i++)
        worker_deinit(&app->workers[i]);
    free(app->workers);
    reload_teardown(app);
    free(app->rt.stats);
    stats_port_close(&app->stats_port);
    backend_stats_destroy(&app->backend_stats);
    app_metrics_stop(app);
    if (app->pid_written)
        unlink(app->settings.pid_file);
}

int app_settings_reload(struct app *app, char *err, size_t errlen)
{
    if (app->settings_file == NULL)
        return 0;
    struct settings fresh;
    settings_init(&fresh);
    if (settings_load(&fresh, app->settings_file, err, errlen) != 0) {
        settings_deinit(&fresh);
        return -1;
    }
    if (app->settings_override != NULL)   /* the command line wins */
        app->settings_override(&fresh, app->settings_override_arg);
    struct settings *s = &app->settings;
    if (fresh.log_level != s->log_level)
        log_level_set(fresh.log_level);
    s->log_level = fresh.log_level;
    /* read by the workers as they go: single aligned words */
    __atomic_store_n(&s->client_max_pending, fresh.client_max_pending, __ATOMIC_RELAXED);
    __atomic_store_n(&s->client_request_timeout_ms, fresh.client_request_timeout_ms,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->async_queue_limit, fresh.async_queue_limit, __ATOMIC_RELAXED);
    __atomic_store_n(&s->max_clients, fresh.max_clients, __ATOMIC_RELAXED);
    __atomic_store_n(&s->max_memory, fresh.max_memory, __ATOMIC_RELAXED);
    s->reload_max_server_loss = fresh.reload_max_server_loss;   /* main thread only */
    __atomic_store_n(&app->rt.max_memory, fresh.max_memory != 0 ? fresh.max_memory
                                                                : util_default_max_memory(),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&app->rt.max_clients, fresh.max_clients != 0 ? fresh.max_clients
                     : client_max_default(app->conf, app->nworkers), __ATOMIC_RELAXED);
    settings_deinit(&fresh);
    log_notice("settings: %s re-read", app->settings_file);
    return 0;
}


/* Read extents and values are 64 KB buffer chains that come and go with
 * every request. glibc's defaults (trim the heap once 128 KB..32 MB is
 * free at its top, a threshold that moves with use) give those pages
 * back and fault them in again with every large value; fixed thresholds
 * keep 8 MB per arena for reuse and return the rest. */
static void memory_tune(void)
{
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

/* File descriptors the configuration can use at most: every pool's
 * client_connections (0 counts as none: unlimited, reported apart), each
 * worker's server connections and listeners, and a few for the log, the
 * stats port and libevent. Sets *unlimited when a pool has no limit. */
static uint64_t fd_limit_needed(const struct app *app, bool *unlimited)
{
    uint64_t need = 16;
    *unlimited = false;
    for (uint32_t p = 0; p < app->conf->npools; p++) {
        const struct conf_pool *pool = &app->conf->pools[p];
        uint64_t conns = 0;
        for (uint32_t t = 0; t < stats_pool_tier_count(pool); t++) {
            const struct conf_tier *tier = stats_pool_tier(pool, t);
            conns += (uint64_t)tier->nservers * tier->server_connections;
        }
        need += pool->client_connections + (conns + 1) * app->nworkers;
        *unlimited |= pool->client_connections == 0;
    }
    return need;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit and logs what we got
 * against what the configured limits need: running out of descriptors
 * pauses accepting (worker.c), it must not come as a surprise. */
static void fd_limit_raise(const struct app *app)
{
    struct rlimit rl;
    bool unlimited;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    uint64_t need = fd_limit_needed(app, &unlimited);
    uint64_t have = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    const char *more = unlimited ? " plus one per client of a pool without client_connections" : "";
    if (have < need)
        log_warn("open files limit %llu is below the %llu the configuration needs%s",
                 (unsigned long long)have, (unsigned long long)need, more);
    else
        log_notice("open files limit %llu; the configuration needs %llu%s",
                   (unsigned long long)have, (unsigned long long)need, more);
}

int app_run(struct app *app)
{
    struct event *sig_evs[6] = { 0 };
    int rc = -1;
    memory_tune();
    evthread_use_pthreads();
    app->nworkers = app->settings.workers;
    app->base = event_base_new();
    if (app->base == NULL || runtime_setup(app) != 0 || app_stats_open(app) != 0 ||
        app_metrics_start(app) != 0)
        goto out;
    signals_setup(app, sig_evs);
    crash_setup();
    fd_limit_raise(app);
    app->rt.max_clients = app->settings.max_clients != 0 ? app->settings.max_clients
                          : client_max_default(app->conf, app->nworkers);
    if (listens_probe(app) != 0 || sentinel_app_start(app) != 0 || dns_app_start(app) != 0 ||
        workers_init(app) != 0 ||
        privileges_drop(app) != 0 || workers_start(app) != 0)
        goto out;
    log_notice("strata-%s started on pid %ld with %u workers, %u pools",
               PACKAGE_VERSION, (long)getpid(), app->nworkers, app->conf->npools);
    if (zk_app_start(app) != 0)
        goto out;
    app->backend_stats = backend_stats_create(app->base, (const struct conf *const *)&app->conf,
                                              app->settings.backend_stats_interval_ms,
                                              APP_BACKEND_STATS_TIMEOUT_MS);
    __atomic_store_n(&app->rt.backend_stats, app->backend_stats, __ATOMIC_RELEASE);
    daemon_ready(&app->ready_fd);
    reload_ready(app);   /* READY=1: listeners bound, workers running */
    event_base_dispatch(app->base);
    rc = 0;
out:
    app_teardown(app);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(sig_evs); i++)
        if (sig_evs[i] != NULL)
            event_free(sig_evs[i]);
    if (app->base != NULL)
        event_base_free(app->base);
    log_notice("strata stopped");
    return rc;
}
