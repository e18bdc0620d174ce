/* dns_app: server host names followed (see dns_app.h and
 * docs/operations.md, "Host names followed").
 *
 *   main thread, every dns_refresh_interval:
 *     host names of the running conf ─► job ─► resolver thread
 *   resolver thread: a lookup per name, DNS_LOOKUP_MS at most each
 *     (blocking, off the event loop)
 *     ─► answers ─► event_active(wake)
 *   main thread (wake):
 *     a failed name ─► WARN, counted, its last address kept
 *     a name resolving elsewhere ─► dns_conf_follow (conf_copy, the
 *     server pinned to the new address) ─► reload_apply: the workers
 *     switch, the old address's connections finish and close
 *
 * The job and the answers are behind a mutex only the main thread and
 * the resolver take; the request path never sees any of it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "app.h"
#include "dns_app.h"
#include "zk_app.h"
#include "strata/dns.h"
#include "strata/log.h"
#include "strata/reload.h"
#include "strata/util.h"

struct dns_app {
    struct app        *app;
    dns_resolve_fn     resolve;     /* dns_resolve_system */
    int                interval_ms;
    struct event      *timer;       /* main thread: posts a round */
    struct event      *wake;        /* activated by the resolver */
    pthread_t          thread;
    bool               running;
    /* under lock */
    pthread_mutex_t    lock;
    pthread_cond_t     cond;
    bool               stop;
    bool               busy;        /* a round posted and not collected */
    char             **job;         /* hosts to resolve; NULL: none */
    uint32_t           njob;
    struct dns_answer *done;        /* answers of the last round; NULL: none */
    uint32_t           ndone;
};

/* ---- the resolver thread ------------------------------------------------- */

/* Waits for a job (or stop) and takes it: false when stopping. */
static bool resolver_take(struct dns_app *da, char ***job, uint32_t *n)
{
    pthread_mutex_lock(&da->lock);
    while (!da->stop && da->job == NULL)
        pthread_cond_wait(&da->cond, &da->lock);
    bool stop = da->stop;
    *job = da->job;
    *n = da->njob;
    da->job = NULL;
    pthread_mutex_unlock(&da->lock);
    return !stop;
}

static void *resolver_run(void *arg)
{
    struct dns_app *da = arg;
    char **job = NULL;
    uint32_t n = 0;
    while (resolver_take(da, &job, &n)) {
        struct dns_answer *answers = util_xcalloc(n, sizeof(*answers));
        for (uint32_t i = 0; i < n; i++) {
            snprintf(answers[i].host, sizeof(answers[i].host), "%s", job[i]);
            da->resolve(job[i], &answers[i]);
        }
        dns_hosts_free(&job, n);
        pthread_mutex_lock(&da->lock);
        free(da->done);
        da->done = answers;
        da->ndone = n;
        pthread_mutex_unlock(&da->lock);
        event_active(da->wake, EV_READ, 0);
    }
    dns_hosts_free(&job, n);
    return NULL;
}

/* ---- the main thread ----------------------------------------------------- */

static void timer_arm(struct dns_app *da)
{
    struct timeval tv = { da->interval_ms / 1000, (da->interval_ms % 1000) * 1000 };
    evtimer_add(da->timer, &tv);
}

/* Every interval: the running configuration's host names to the
 * resolver, unless the previous round is still being resolved. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct dns_app *da = arg;
    uint32_t n = 0;
    char **hosts = dns_hosts(da->app->conf, &n);
    pthread_mutex_lock(&da->lock);
    bool busy = da->busy;
    if (!busy && hosts != NULL) {
        da->job = hosts;
        da->njob = n;
        da->busy = true;
        hosts = NULL;
        pthread_cond_signal(&da->cond);
    }
    pthread_mutex_unlock(&da->lock);
    if (busy)
        log_warn("dns: the lookups of the previous round (every %d ms) have not finished; "
                 "this round is skipped", da->interval_ms);
    dns_hosts_free(&hosts, n);
    timer_arm(da);
}

/* The failed lookups of a round: one WARN per host, counted. */
static void answers_warn(struct dns_app *da, const struct dns_answer *answers, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (answers[i].ok)
            continue;
        __atomic_fetch_add(&da->app->rt.dns_failures, 1, __ATOMIC_RELAXED);
        log_warn("dns: cannot resolve %s: %s; its servers keep their last address",
                 answers[i].host, answers[i].why);
    }
}

/* A round's answers: a new configuration when a name moved. */
static void answers_apply(struct dns_app *da, const struct dns_answer *answers, uint32_t n)
{
    struct app *app = da->app;
    if (app->queued != NULL) {
        log_info("dns: a configuration waits for the switch in progress; the next round "
                 "looks again");
        return;
    }
    struct conf *conf = dns_conf_follow(app->conf, answers, n);
    if (conf == NULL)
        return;
    char err[1024];
    if (reload_apply(app, conf, "dns (a server host name resolves elsewhere)", err,
                     sizeof(err)) != 0)
        log_error("dns: %s", err);
    else
        zk_app_republish(app);   /* the registration names the generation */
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct dns_app *da = arg;
    pthread_mutex_lock(&da->lock);
    struct dns_answer *answers = da->done;
    uint32_t n = da->ndone;
    da->done = NULL;
    da->busy = false;
    pthread_mutex_unlock(&da->lock);
    if (answers == NULL)
        return;
    answers_warn(da, answers, n);
    answers_apply(da, answers, n);
    free(answers);
}

/* ---- start and stop ------------------------------------------------------ */

void dns_app_fill(struct app *app, struct conf *conf)
{
    if (app->dns != NULL)
        dns_conf_pin(conf, app->conf, app->dns->resolve);
}

int dns_app_start(struct app *app)
{
    int interval = app->settings.dns_refresh_interval_ms;
    if (interval <= 0)
        return 0;
    struct dns_app *da = util_xcalloc(1, sizeof(*da));
    app->dns = da;
    da->app = app;
    da->resolve = dns_resolve_system;
    da->interval_ms = interval;
    pthread_mutex_init(&da->lock, NULL);
    pthread_cond_init(&da->cond, NULL);
    dns_conf_pin(app->conf, NULL, da->resolve);
    da->timer = evtimer_new(app->base, on_timer, da);
    da->wake = event_new(app->base, -1, 0, on_wake, da);
    if (da->timer == NULL || da->wake == NULL ||
        pthread_create(&da->thread, NULL, resolver_run, da) != 0) {
        log_error("dns: cannot start following the server host names");
        fprintf(stderr, "strata: dns: cannot start following the server host names\n");
        return -1;
    }
    da->running = true;
    timer_arm(da);
    log_notice("dns: server host names re-resolved every %d ms", interval);
    return 0;
}

void dns_app_stop(struct app *app)
{
    struct dns_app *da = app->dns;
    if (da == NULL)
        return;
    if (da->running) {
        pthread_mutex_lock(&da->lock);
        da->stop = true;
        pthread_cond_signal(&da->cond);
        pthread_mutex_unlock(&da->lock);
        pthread_join(da->thread, NULL);
    }
    if (da->timer != NULL)
        event_free(da->timer);
    if (da->wake != NULL)
        event_free(da->wake);
    dns_hosts_free(&da->job, da->njob);
    free(da->done);
    pthread_mutex_destroy(&da->lock);
    pthread_cond_destroy(&da->cond);
    free(da);
    app->dns = NULL;
}
