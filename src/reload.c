/* reload: applying a new pool configuration (see reload.h).
 *
 *   new conf ─► resolve every address, test-bind new TCP listens, open new
 *               unix listeners ─► generation N
 *            ─► each worker: worker_reload ─► switches at its next safe point
 *   timer:   every worker on N? ─► close stale listeners, apply a queued conf
 *            generations nobody uses any more ─► freed
 *
 * Parsing and validation happen before (conf_yaml_load, on the main
 * thread); a worker never waits for any of this. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "app.h"
#include "strata/client.h"
#include "strata/conf_guard.h"
#include "strata/listener.h"
#include "strata/log.h"
#include "strata/notify.h"
#include "strata/reload.h"
#include "strata/unixsock.h"
#include "strata/util.h"
#include "dns_app.h"
#include "sentinel_app.h"

#define RELOAD_POLL_MS 20

/* ---- generations ---- */

/* The pool name's shared part, created the first time it is seen. */
static struct pool_shared *shared_for(struct app *app, const char *name)
{
    for (uint32_t i = 0; i < app->nshared; i++)
        if (strcmp(app->shared[i]->name, name) == 0)
            return app->shared[i];
    app->shared = util_xrealloc(app->shared, app->nshared + 1, sizeof(*app->shared));
    return app->shared[app->nshared++] = pool_shared_new(name);
}

static struct config_gen *gen_new(struct app *app, struct conf *conf, uint64_t generation,
                                  const char *source)
{
    struct config_gen *gen = util_xcalloc(1, sizeof(*gen));
    gen->conf = conf;
    gen->generation = generation;
    gen->source = util_xstrdup(source);
    gen->loaded_at = util_wall_s();
    gen->shared = util_xcalloc(conf->npools + 1, sizeof(*gen->shared));
    for (uint32_t p = 0; p < conf->npools; p++)
        gen->shared[p] = shared_for(app, conf->pools[p].name);
    gen->views = util_xcalloc(app->nworkers + 1, sizeof(*gen->views));
    return gen;
}

static void gen_free(struct config_gen *gen, uint32_t nworkers)
{
    for (uint32_t i = 0; i < nworkers; i++)
        stats_view_free(gen->views[i]);
    free(gen->views);
    free(gen->shared);
    free(gen->source);
    conf_destroy(&gen->conf);
    free(gen);
}

/* ---- unix listeners ---- */

static void stale_add(struct app *app, int fd, const char *path)
{
    uint32_t n = app->nstale + 1;
    app->stale_fds = util_xrealloc(app->stale_fds, n, sizeof(*app->stale_fds));
    app->stale_paths = util_xrealloc(app->stale_paths, n, sizeof(*app->stale_paths));
    app->stale_fds[app->nstale] = fd;
    app->stale_paths[app->nstale] = path != NULL ? util_xstrdup(path) : NULL;
    app->nstale = n;
}

/* Closes the listeners no worker uses any more and removes their files
 * (unless a new listener took the path over). */
static void stale_close(struct app *app)
{
    for (uint32_t i = 0; i < app->nstale; i++) {
        close(app->stale_fds[i]);
        bool reused = false;
        for (uint32_t s = 0; s < app->nshared; s++)
            reused |= app->shared[s]->unix_path != NULL && app->stale_paths[i] != NULL &&
                      strcmp(app->shared[s]->unix_path, app->stale_paths[i]) == 0;
        if (app->stale_paths[i] != NULL && !reused)
            unixsock_remove(app->stale_paths[i]);
        free(app->stale_paths[i]);
    }
    app->nstale = 0;
}

static bool pool_in(const struct conf *conf, const char *name)
{
    for (uint32_t p = 0; p < conf->npools; p++)
        if (strcmp(conf->pools[p].name, name) == 0)
            return true;
    return false;
}

/* Every unix listener `conf` needs, with the path unchanged kept open and
 * new ones opened now; the ones given up wait in the stale list for the
 * workers to let go of them. -1 (nothing changed) when one cannot be
 * opened. */
static int unix_listeners_prepare(struct app *app, const struct conf *conf,
                                  char *err, size_t errlen)
{
    int *fds = util_xcalloc(conf->npools + 1, sizeof(int));
    int rc = 0;
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *pool = &conf->pools[p];
        struct pool_shared *ps = shared_for(app, pool->name);
        fds[p] = -1;
        if (pool->listen.addr.path == NULL ||
            (ps->unix_fd >= 0 && strcmp(ps->unix_path, pool->listen.addr.path) == 0))
            continue;
        if ((fds[p] = app_unix_listen(pool, err, errlen)) < 0) {
            rc = -1;
            break;
        }
    }
    for (uint32_t p = 0; rc != 0 && p < conf->npools; p++)
        if (fds[p] >= 0)
            close(fds[p]);
    for (uint32_t p = 0; rc == 0 && p < conf->npools; p++) {
        struct pool_shared *ps = shared_for(app, conf->pools[p].name);
        bool tcp = conf->pools[p].listen.addr.path == NULL;
        if (fds[p] < 0 && !(tcp && ps->unix_fd >= 0))
            continue;   /* unchanged */
        if (ps->unix_fd >= 0)
            stale_add(app, ps->unix_fd, ps->unix_path);
        free(ps->unix_path);
        ps->unix_fd = fds[p];
        ps->unix_path = fds[p] >= 0 ? util_xstrdup(conf->pools[p].listen.addr.path) : NULL;
    }
    /* pools that are gone give up their unix listener */
    for (uint32_t s = 0; rc == 0 && s < app->nshared; s++) {
        struct pool_shared *ps = app->shared[s];
        if (ps->unix_fd >= 0 && !pool_in(conf, ps->name)) {
            stale_add(app, ps->unix_fd, ps->unix_path);
            ps->unix_fd = -1;
            free(ps->unix_path);
            ps->unix_path = NULL;
        }
    }
    free(fds);
    return rc;
}

/* ---- checks the pool file loader does not make ---- */

/* Every listen and server address resolves now, so that no worker meets
 * a name it cannot resolve halfway through a switch. */
static int conf_resolve_all(const struct conf *conf, const char *source,
                            char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char why[256];
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *pool = &conf->pools[p];
        if (pool->listen.addr.path == NULL &&
            util_resolve(&pool->listen.addr, &ss, &len, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s:%d: pool %s: listen %s: %s", source, pool->line,
                     pool->name, pool->listen.text, why);
            return -1;
        }
        const struct conf_tier *tier;
        for (uint32_t t = 0; (tier = stats_pool_tier(pool, t)) != NULL; t++) {
            for (uint32_t i = 0; i < tier->nservers; i++) {
                const struct conf_server *cs = &tier->servers[i];
                if (util_resolve(&cs->addr, &ss, &len, why, sizeof(why)) != 0) {
                    snprintf(err, errlen, "%s:%d: server %s: %s", source, cs->line,
                             cs->text, why);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* The listen of `pool` in the running configuration, or NULL when the
 * pool is new there. */
static const struct conf_pool *running_pool(const struct conf *running, const char *name)
{
    for (uint32_t p = 0; p < running->npools; p++)
        if (strcmp(running->pools[p].name, name) == 0)
            return &running->pools[p];
    return NULL;
}

/* Whether a pool of the running configuration listens at pool's address. */
static bool running_listens(const struct conf *running, const struct conf_pool *pool)
{
    for (uint32_t p = 0; p < running->npools; p++)
        if (strcmp(running->pools[p].listen.text, pool->listen.text) == 0)
            return true;
    return false;
}

/* Every TCP address a worker will have to bind anew (a new pool, a moved
 * listen) can be bound now: a port another program holds (another strata
 * too) rejects the file here rather than leave a pool without a listener
 * after the switch, or share a port with another process. */
static int conf_listen_check(const struct conf *running, const struct conf *conf,
                             const char *source, char *err, size_t errlen)
{
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *pool = &conf->pools[p];
        const struct conf_pool *was = running_pool(running, pool->name);
        if (pool->listen.addr.path != NULL ||
            (was != NULL && strcmp(was->listen.text, pool->listen.text) == 0))
            continue;
        struct sockaddr_storage ss;
        socklen_t len;
        char why[256];
        if (util_resolve(&pool->listen.addr, &ss, &len, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s:%d: pool %s: listen %s: %s", source, pool->line,
                     pool->name, pool->listen.text, why);
            return -1;
        }
        /* shared only where this process listens already (a pool moving
         * to another pool's address in the same reload) */
        int rc = listener_probe((struct sockaddr *)&ss, len, running_listens(running, pool));
        if (rc != 0) {
            snprintf(err, errlen, "%s:%d: pool %s: cannot listen on %s: %s", source,
                     pool->line, pool->name, pool->listen.text, strerror(rc));
            return -1;
        }
    }
    return 0;
}

/* ---- the switch ---- */

static bool all_switched(const struct app *app)
{
    for (uint32_t i = 0; i < app->nworkers; i++)
        if (__atomic_load_n(&app->workers[i].applied, __ATOMIC_ACQUIRE) != app->gen->generation)
            return false;
    return true;
}

static void timer_arm(struct app *app)
{
    struct timeval tv = { 0, RELOAD_POLL_MS * 1000 };
    if (app->reload_timer != NULL && !evtimer_pending(app->reload_timer, NULL))
        evtimer_add(app->reload_timer, &tv);
}

/* Frees the replaced generations nothing points into any more. */
static void old_gens_free(struct app *app)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < app->nold_gens; i++) {
        struct config_gen *g = app->old_gens[i];
        if (__atomic_load_n(&g->users, __ATOMIC_ACQUIRE) == 0)
            gen_free(g, app->nworkers);
        else
            app->old_gens[kept++] = g;
    }
    app->nold_gens = kept;
}

/* ---- the service manager (notify.h) ---- */

void reload_ready(struct app *app)
{
    char status[400];
    bool rejected = __atomic_load_n(&app->rt.reload_failures, __ATOMIC_RELAXED) !=
                    app->notify_failures;
    snprintf(status, sizeof(status), "%sserving %u pools with %u workers: configuration %llu "
             "from %s", rejected ? "reload rejected; " : "", app->conf->npools,
             app->nworkers, (unsigned long long)reload_generation(app), app->gen->source);
    notify_ready(status);
}

/* After a SIGUSR1 (app->notify_reload), READY=1 once nothing is left to
 * do: the file was rejected, or applied and in force in every worker with
 * no configuration queued behind it. */
static void reload_settle(struct app *app)
{
    if (!app->notify_reload || !all_switched(app) || app->queued != NULL)
        return;
    app->notify_reload = false;
    reload_ready(app);
}

static void on_reload_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct app *app = arg;
    bool switched = all_switched(app);
    if (switched)
        stale_close(app);
    if (switched && app->announced != app->gen->generation) {
        app->announced = app->gen->generation;
        log_notice("configuration %llu in force in every worker",
                   (unsigned long long)app->gen->generation);
    }
    if (switched && app->queued != NULL) {
        struct conf *conf = app->queued;
        char *source = app->queued_source;
        char err[512];
        app->queued = NULL;
        app->queued_source = NULL;
        if (reload_apply(app, conf, source, err, sizeof(err)) != 0)
            log_error("%s", err);
        free(source);
    }
    old_gens_free(app);
    reload_settle(app);
    if (!all_switched(app) || app->nold_gens > 0 || app->queued != NULL)
        timer_arm(app);
}

int reload_apply(struct app *app, struct conf *conf, const char *source,
                 char *err, size_t errlen)
{
    if (!all_switched(app)) {
        /* one switch at a time; the newest configuration waits */
        conf_destroy(&app->queued);
        free(app->queued_source);
        app->queued = conf;
        app->queued_source = util_xstrdup(source);
        timer_arm(app);
        return 0;
    }
    char why[400];
    dns_app_fill(app, conf);   /* host names keep the addresses in use */
    if (sentinel_app_fill(app, conf, why, sizeof(why)) != 0 ||
        conf_guard_check(app->conf, conf, app->settings.reload_max_server_loss, why,
                         sizeof(why)) != 0 ||
        conf_resolve_all(conf, source, why, sizeof(why)) != 0 ||
        conf_listen_check(app->conf, conf, source, why, sizeof(why)) != 0 ||
        unix_listeners_prepare(app, conf, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", source, why);
        reload_rejected(app, source, why);
        conf_destroy(&conf);
        return -1;
    }
    struct config_gen *gen = gen_new(app, conf, app->gen->generation + 1, source);
    for (uint32_t i = 0; i < app->nworkers; i++)
        gen->views[i] = stats_view_new(conf);
    app->old_gens = util_xrealloc(app->old_gens, app->nold_gens + 1, sizeof(*app->old_gens));
    app->old_gens[app->nold_gens++] = app->gen;
    app->gen = gen;
    app->conf = conf;
    __atomic_fetch_add(&app->rt.reloads, 1, __ATOMIC_RELAXED);
    if (app->settings.max_clients == 0)
        __atomic_store_n(&app->rt.max_clients, client_max_default(conf, app->nworkers),
                         __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < app->nworkers; i++)
        worker_reload(&app->workers[i], gen);
    log_notice("configuration %llu from %s: %u pools, handed to the workers",
               (unsigned long long)gen->generation, source, conf->npools);
    timer_arm(app);
    return 0;
}

void reload_rejected(struct app *app, const char *source, const char *why)
{
    __atomic_fetch_add(&app->rt.reload_failures, 1, __ATOMIC_RELAXED);
    log_error("configuration from %s rejected, the running one (%llu) stays: %s",
              source, (unsigned long long)reload_generation(app), why);
}

uint64_t reload_generation(const struct app *app)
{
    return app->gen != NULL ? app->gen->generation : 0;
}

/* ---- set-up and teardown ---- */

void reload_setup(struct app *app)
{
    app->gen = gen_new(app, app->conf, 1, app->settings.conf_file);
    app->reload_timer = evtimer_new(app->base, on_reload_timer, app);
}

void reload_teardown(struct app *app)
{
    if (app->reload_timer != NULL)
        event_free(app->reload_timer);
    app->reload_timer = NULL;
    stale_close(app);
    free(app->stale_fds);
    free(app->stale_paths);
    for (uint32_t i = 0; i < app->nold_gens; i++)
        gen_free(app->old_gens[i], app->nworkers);
    free(app->old_gens);
    if (app->gen != NULL) {
        app->gen->conf = NULL;   /* app->conf: main frees it */
        gen_free(app->gen, app->nworkers);
    }
    app->gen = NULL;
    for (uint32_t s = 0; s < app->nshared; s++) {
        struct pool_shared *ps = app->shared[s];
        if (ps->unix_fd >= 0) {
            close(ps->unix_fd);
            unixsock_remove(ps->unix_path);
        }
        pool_shared_free(ps);
    }
    free(app->shared);
    app->shared = NULL;
    app->nshared = 0;
    conf_destroy(&app->queued);
    free(app->queued_source);
}

/* ---- SIGUSR1 ---- */

/* The -C settings, then the pool file: rejected (logged, counted), or
 * handed to the workers. */
static void reload_file(struct app *app)
{
    char err[1024];
    const char *path = app->settings.conf_file;
    if (app_settings_reload(app, err, sizeof(err)) != 0)
        log_error("settings: %s; the running settings stay", err);
    if (strncmp(path, "zk://", 5) == 0) {
        log_notice("the pool configuration comes from %s and follows that node", path);
        return;
    }
    struct conf *conf = NULL;
    if (conf_yaml_load(path, &conf, err, sizeof(err)) != 0) {
        reload_rejected(app, path, err);
        return;
    }
    if (reload_apply(app, conf, path, err, sizeof(err)) != 0)
        log_error("%s", err);
}

void reload_from_file(struct app *app)
{
    notify_reloading();
    app->notify_reload = true;
    app->notify_failures = __atomic_load_n(&app->rt.reload_failures, __ATOMIC_RELAXED);
    reload_file(app);
    reload_settle(app);
}
