/* worker: a thread serving every pool on its own event_base. */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "strata/backend.h"
#include "strata/client.h"
#include "strata/crash.h"
#include "strata/log.h"
#include "strata/util.h"
#include "strata/worker.h"

/* How long a stopping worker waits for requests in flight (clients are
 * no longer read, so this bounds only slow backends and slow readers). */
#define WORKER_DRAIN_MAX_MS 5000
/* Freed bytes (below the peak) that make the sweep trim the heap. */
#define WORKER_TRIM_BYTES   (16 * 1024 * 1024)

static void on_accept(evutil_socket_t fd, void *arg)
{
    client_accept(arg, fd);
}

static int listener_open_pool(struct worker_pool *wp, char *err, size_t errlen)
{
    struct worker *w = wp->worker;
    const struct conf_pool *pool = wp->conf;
    int ufd = wp->shared->unix_fd;
    unsigned flags = LEV_OPT_CLOSE_ON_EXEC;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char what[96], why[128];
    snprintf(what, sizeof(what), "pool %s: worker %u", pool->name, w->id);
    if (ufd < 0) {
        /* A unix socket is opened once by main and shared by every worker. */
        if (util_resolve(&pool->listen.addr, &ss, &len, err, errlen) != 0)
            return -1;
        flags |= LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT;
    }
    if (listener_open(&wp->listener, w->base, ufd, (struct sockaddr *)&ss, len, flags,
                      pool->backlog, on_accept, wp, what, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "pool %s: cannot listen on %s: %s", pool->name,
                 pool->listen.text, why);
        return -1;
    }
    return 0;
}

/* Closes the pool's listener and its accept timer (idempotent). */
static void worker_pool_unlisten(struct worker_pool *wp)
{
    listener_close(&wp->listener);
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct worker *w = arg;
    /* Answered means written: replies still in an output buffer would be
     * lost by closing the client now. */
    bool busy = client_requests_in_flight(w) > 0 || client_output_pending(w) ||
                client_lingering(w);
    if (busy && util_now_ms() < w->drain_deadline_ms) {
        struct timeval tv = { 0, 10 * 1000 };
        evtimer_add(w->drain_ev, &tv);
        return;
    }
    client_close_all(w);
    conn_loop_stop(&w->loop);
}

/* Free records each cache keeps through a quiet spell. */
#define WORKER_IDLE_KEEP 64

/* Gives back what a burst left. Each cache (msgs, policy and backend
 * records) frees the free records beyond the most in use at once since
 * the last sweep; then the heap is trimmed (malloc_trim: glibc keeps
 * freed pages otherwise) when records were freed, when the worker's
 * buffered bytes have fallen WORKER_TRIM_BYTES below their peak, or when
 * the worker has had no new request for a whole sweep after serving
 * some since the last trim. So a burst does not stay resident after its
 * clients have gone. */
static void worker_trim(struct worker *w)
{
    uint32_t freed = msg_cache_shrink(&w->msgs, WORKER_IDLE_KEEP) +
                     policy_cache_shrink(&w->policy_cache, WORKER_IDLE_KEEP) +
                     backend_worker_shrink(&w->backends, WORKER_IDLE_KEEP);
    int64_t now = __atomic_load_n(&w->stats.buffered, __ATOMIC_RELAXED);
    uint64_t taken = w->msgs.taken;
    bool quiet = taken == w->sweep_taken && taken != w->trim_taken;
    w->sweep_taken = taken;
    if (now > w->trim_peak)
        w->trim_peak = now;
    if (freed == 0 && !quiet && w->trim_peak - now < WORKER_TRIM_BYTES)
        return;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    w->trim_peak = now;
    w->trim_taken = taken;
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    client_sweep(arg);
    worker_trim(arg);
}

/* The periodic sweep: partial requests that idle too long, memory trim. */
static int worker_sweep_start(struct worker *w)
{
    int timeout = w->rt->settings->client_request_timeout_ms;
    w->sweep_ev = event_new(w->base, -1, EV_PERSIST, on_sweep, w);
    int ms = timeout > 0 ? CLIENT_SWEEP_MS(timeout) : 1000;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    return w->sweep_ev != NULL ? event_add(w->sweep_ev, &tv) : -1;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct worker *w = arg;
    w->stopping = true;
    for (uint32_t p = 0; p < w->npools; p++)
        worker_pool_unlisten(w->pools[p]);
    client_stop_reading_all(w);
    w->drain_deadline_ms = util_now_ms() + WORKER_DRAIN_MAX_MS;
    on_drain(-1, 0, w);
}

/* ---- pools and reloads ---- */

struct pool_shared *pool_shared_new(const char *name)
{
    struct pool_shared *ps = util_xcalloc(1, sizeof(*ps));
    ps->name = util_xstrdup(name);
    ps->unix_fd = -1;
    return ps;
}

void pool_shared_free(struct pool_shared *ps)
{
    if (ps == NULL)
        return;
    free(ps->name);
    free(ps->unix_path);
    free(ps);
}

void config_gen_use(struct config_gen *gen)
{
    if (gen != NULL)
        __atomic_fetch_add(&gen->users, 1, __ATOMIC_RELAXED);
}

void config_gen_drop(struct config_gen *gen)
{
    if (gen != NULL)
        __atomic_fetch_sub(&gen->users, 1, __ATOMIC_RELEASE);
}

static uint64_t pool_seed(const struct worker *w)
{
    return ((uint64_t)w->id + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)util_now_ms();
}

/* A policy pool for wp's conf and counters, sharing the servers of
 * `donor` that it can. NULL, with err, when it cannot be built. */
static struct policy_pool *pool_policy_new(struct worker_pool *wp,
                                           const struct policy_pool *donor,
                                           char *err, size_t errlen)
{
    struct worker *w = wp->worker;
    struct policy_pool *pp = util_xcalloc(1, sizeof(*pp));
    if (policy_pool_init(pp, wp->conf, &w->backends, &w->rt->limits, wp->stats,
                         &w->policy_cache, w->rt->settings->async_queue_limit,
                         pool_seed(w), donor, err, errlen) != 0) {
        policy_pool_deinit(pp);
        free(pp);
        return NULL;
    }
    return pp;
}

/* A new pool of the worker: its policy and its listener. */
static struct worker_pool *worker_pool_new(struct worker *w, const struct conf_pool *conf,
                                           struct config_gen *gen, struct pool_shared *shared,
                                           struct stats_pool *stats, char *err, size_t errlen)
{
    struct worker_pool *wp = util_xcalloc(1, sizeof(*wp));
    wp->worker = w;
    wp->conf = conf;
    wp->gen = gen;
    wp->shared = shared;
    wp->stats = stats;
    config_gen_use(gen);
    if ((wp->policy = pool_policy_new(wp, NULL, err, errlen)) == NULL)
        return wp;   /* the caller frees it (worker_pool_free) */
    config_gen_use(gen);   /* the policy's */
    listener_open_pool(wp, err, errlen);
    return wp;
}

static void worker_pool_free(struct worker_pool *wp)
{
    worker_pool_unlisten(wp);
    if (wp->policy != NULL) {
        policy_pool_deinit(wp->policy);
        free(wp->policy);
        config_gen_drop(wp->gen);
    }
    config_gen_drop(wp->gen);
    free(wp);
}

/* A policy a reload replaced: kept until its requests and async writes
 * are done (reap). */
static void policy_retire(struct worker *w, struct policy_pool *pp, struct config_gen *gen)
{
    struct worker_retired *r = util_xcalloc(1, sizeof(*r));
    r->policy = pp;
    r->gen = gen;
    TAILQ_INSERT_TAIL(&w->retired, r, link);
}

static void retired_free(struct worker *w, struct worker_retired *r)
{
    TAILQ_REMOVE(&w->retired, r, link);
    policy_pool_deinit(r->policy);
    free(r->policy);
    config_gen_drop(r->gen);
    free(r);
}

static void reap_arm(struct worker *w)
{
    struct timeval tv = { 0, 100 * 1000 };
    if (w->reap_ev != NULL && !evtimer_pending(w->reap_ev, NULL))
        evtimer_add(w->reap_ev, &tv);
}

/* Frees retired policies with nothing in flight and removed pools whose
 * clients have all gone; runs from its own timer, never inside a
 * callback of what it frees. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct worker *w = arg;
    struct worker_retired *r, *rnext;
    for (r = TAILQ_FIRST(&w->retired); r != NULL; r = rnext) {
        rnext = TAILQ_NEXT(r, link);
        if (r->policy->inflight == 0)
            retired_free(w, r);
    }
    struct worker_pool *wp, *wnext;
    for (wp = TAILQ_FIRST(&w->removed); wp != NULL; wp = wnext) {
        wnext = TAILQ_NEXT(wp, link);
        /* Past the drain time, clients still there (not reading their
         * last replies, or not closing after them) are closed. */
        if (wp->nclients > 0 && util_now_ms() - wp->removed_ms > WORKER_DRAIN_MAX_MS)
            client_close_pool(w, wp);
        if (wp->nclients > 0 || (wp->policy != NULL && wp->policy->inflight > 0))
            continue;
        TAILQ_REMOVE(&w->removed, wp, link);
        worker_pool_free(wp);
    }
    if (!TAILQ_EMPTY(&w->retired) || !TAILQ_EMPTY(&w->removed))
        reap_arm(w);
}

/* The pool named `name` (same protocol) among the worker's, taken out of
 * `old` (so each is matched once), or NULL. */
static struct worker_pool *pool_take(struct worker_pool **old, uint32_t n,
                                     const struct conf_pool *conf)
{
    for (uint32_t i = 0; i < n; i++) {
        struct worker_pool *wp = old[i];
        if (wp != NULL && strcmp(wp->conf->name, conf->name) == 0 &&
            wp->conf->redis == conf->redis) {
            old[i] = NULL;
            return wp;
        }
    }
    return NULL;
}

static bool listen_same(const struct conf_pool *a, const struct conf_pool *b)
{
    return strcmp(a->listen.text, b->listen.text) == 0;
}

/* A pool in both configurations: the next requests use a policy built
 * from the new one (sharing unchanged servers); the old policy finishes
 * what it has. A changed listen moves the listener; clients stay. */
static void pool_update(struct worker *w, struct worker_pool *wp, const struct conf_pool *conf,
                        struct config_gen *gen, struct pool_shared *shared,
                        struct stats_pool *stats)
{
    char err[256];
    const struct conf_pool *old_conf = wp->conf;
    struct config_gen *old_gen = wp->gen;
    struct stats_pool *old_stats = wp->stats;
    wp->conf = conf;
    wp->stats = stats;
    struct policy_pool *pp = pool_policy_new(wp, wp->policy, err, sizeof(err));
    if (pp == NULL) {
        /* Out of memory: the pool keeps its previous configuration. */
        log_error("pool %s: worker %u: %s; the previous configuration stays",
                  conf->name, w->id, err);
        wp->conf = old_conf;
        wp->stats = old_stats;
        return;
    }
    policy_retire(w, wp->policy, old_gen);   /* takes the old policy's use */
    wp->policy = pp;
    config_gen_use(gen);                     /* the new policy's */
    wp->gen = gen;
    config_gen_use(gen);                     /* wp's */
    config_gen_drop(old_gen);
    bool moved = !listen_same(old_conf, conf) || wp->shared != shared;
    wp->shared = shared;
    if (moved) {
        worker_pool_unlisten(wp);
        if (listener_open_pool(wp, err, sizeof(err)) != 0)
            log_error("%s", err);
    }
}

/* A pool the new configuration does not have: no listener, its clients
 * answered and closed (client_stop_reading_pool), freed by the reap. */
static void pool_remove(struct worker *w, struct worker_pool *wp)
{
    worker_pool_unlisten(wp);
    wp->removed = true;
    wp->removed_ms = util_now_ms();
    TAILQ_INSERT_TAIL(&w->removed, wp, link);
    client_stop_reading_pool(w, wp);
}

/* Switches the worker to gen at a safe point (between batches of events):
 * nothing of the request path is on the stack. */
static void worker_apply(struct worker *w, struct config_gen *gen)
{
    const struct conf *conf = gen->conf;
    struct stats_view *view = gen->views[w->id];
    stats_view_carry(view, w->stats.view);
    struct worker_pool **old = w->pools;
    uint32_t nold = w->npools;
    struct worker_pool **pools = util_xcalloc(conf->npools + 1, sizeof(*pools));
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *cp = &conf->pools[p];
        struct worker_pool *wp = pool_take(old, nold, cp);
        if (wp != NULL) {
            pool_update(w, wp, cp, gen, gen->shared[p], &view->pools[p]);
        } else {
            char err[256] = "";
            wp = worker_pool_new(w, cp, gen, gen->shared[p], &view->pools[p], err, sizeof(err));
            if (err[0] != '\0')
                log_error("pool %s: worker %u: %s", cp->name, w->id, err);
        }
        pools[p] = wp;
    }
    for (uint32_t i = 0; i < nold; i++)
        if (old[i] != NULL)
            pool_remove(w, old[i]);
    free(old);
    w->pools = pools;
    w->npools = conf->npools;
    struct config_gen *prev = w->gen;
    config_gen_use(gen);
    w->gen = gen;
    __atomic_store_n(&w->stats.view, view, __ATOMIC_RELEASE);
    config_gen_drop(prev);
    reap_arm(w);
}

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct worker *w = arg;
    struct config_gen *gen = __atomic_exchange_n(&w->next_gen, NULL, __ATOMIC_ACQ_REL);
    if (gen == NULL)
        return;
    if (!w->stopping) {
        worker_apply(w, gen);
        log_info("worker %u: configuration %llu in force", w->id,
                 (unsigned long long)gen->generation);
    }
    __atomic_store_n(&w->applied, gen->generation, __ATOMIC_RELEASE);
}

void worker_reload(struct worker *w, struct config_gen *gen)
{
    __atomic_store_n(&w->next_gen, gen, __ATOMIC_RELEASE);
    event_active(w->reload_ev, EV_READ, 0);
}

int worker_init(struct worker *w, uint32_t id, const struct runtime *rt,
                char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->rt = rt;
    TAILQ_INIT(&w->clients);
    TAILQ_INIT(&w->removed);
    TAILQ_INIT(&w->retired);
    msg_cache_init(&w->msgs);
    policy_cache_init(&w->policy_cache);
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(err, errlen, "cannot create an event base");
        return -1;
    }
    conn_loop_init(&w->loop, w->base, rt->limits.read_chunk);
    backend_worker_init(&w->backends, &w->loop);
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->drain_ev = evtimer_new(w->base, on_drain, w);
    w->reload_ev = event_new(w->base, -1, 0, on_reload, w);
    w->reap_ev = evtimer_new(w->base, on_reap, w);
    if (w->stop_ev == NULL || w->drain_ev == NULL || w->reload_ev == NULL ||
        w->reap_ev == NULL || worker_sweep_start(w) != 0) {
        snprintf(err, errlen, "cannot create the worker's events");
        return -1;
    }
    stats_worker_init(&w->stats, rt->conf);
    w->msgs.acct = &w->stats.buffered;
    w->msgs.max_memory = &rt->max_memory;
    w->msgs.workers = rt->stats;
    w->msgs.nworkers = rt->nworkers;
    w->backends.acct = &w->stats.buffered;
    w->policy_cache.acct = &w->stats.buffered;
    w->gen = rt->gen;
    config_gen_use(w->gen);
    w->applied = rt->gen != NULL ? rt->gen->generation : 0;
    w->npools = rt->conf->npools;
    w->pools = util_xcalloc(w->npools + 1, sizeof(*w->pools));
    for (uint32_t p = 0; p < w->npools; p++) {
        w->pools[p] = worker_pool_new(w, &rt->conf->pools[p], rt->gen, rt->shared[p],
                                      &w->stats.view->pools[p], err, errlen);
        if (w->pools[p]->policy == NULL || w->pools[p]->listener.ev == NULL)
            return -1;
    }
    return 0;
}

/* Frees every pool, retired policy and removed pool (their requests in
 * flight fail); the clients are gone. */
static void worker_pools_free(struct worker *w)
{
    for (uint32_t p = 0; w->pools != NULL && p < w->npools; p++)
        if (w->pools[p] != NULL)
            worker_pool_free(w->pools[p]);
    free(w->pools);
    w->pools = NULL;
    w->npools = 0;
    struct worker_pool *wp;
    while ((wp = TAILQ_FIRST(&w->removed)) != NULL) {
        TAILQ_REMOVE(&w->removed, wp, link);
        worker_pool_free(wp);
    }
    struct worker_retired *r;
    while ((r = TAILQ_FIRST(&w->retired)) != NULL)
        retired_free(w, r);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    void *altstack = crash_thread_setup();
    log_info("worker %u started", w->id);
    if (conn_loop_run(&w->loop) != 0)
        log_error("worker %u: event loop failed", w->id);
    client_close_all(w);
    worker_pools_free(w);
    conn_loop_flush(&w->loop);
    log_info("worker %u stopped", w->id);
    crash_thread_teardown(altstack);
    return NULL;
}

int worker_start(struct worker *w)
{
    /* Signals belong to the main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    w->started = rc == 0;
    return rc == 0 ? 0 : -1;
}

void worker_stop(struct worker *w)
{
    if (w->stop_ev != NULL)
        event_active(w->stop_ev, EV_READ, 0);
}

void worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_deinit(struct worker *w)
{
    if (!w->started)
        worker_pools_free(w);
    for (uint32_t p = 0; w->pools != NULL && p < w->npools; p++)
        worker_pool_unlisten(w->pools[p]);
    free(w->pools);
    w->pools = NULL;
    policy_cache_deinit(&w->policy_cache);
    msg_cache_deinit(&w->msgs);
    backend_worker_deinit(&w->backends);
    config_gen_drop(w->gen);
    if (w->gen == NULL || w->stats.view != w->gen->views[w->id])
        stats_worker_deinit(&w->stats);   /* else main frees the view with its gen */
    struct event *evs[] = { w->stop_ev, w->drain_ev, w->sweep_ev, w->reload_ev, w->reap_ev };
    for (size_t i = 0; i < UTIL_ARRAY_LEN(evs); i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    if (w->base != NULL)
        event_base_free(w->base);
    memset(w, 0, sizeof(*w));
}
