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
#include "strata/log.h"
#include "strata/util.h"
#include "strata/worker.h"

/* How long a stopping worker waits for requests in flight (clients are
 * no longer read, so this bounds only slow backends and slow readers). */
#define WORKER_DRAIN_MAX_MS 5000
/* Freed bytes (below the peak) that make the sweep trim the heap. */
#define WORKER_TRIM_BYTES   (16 * 1024 * 1024)

/* Accept backoff: out of descriptors, accept() fails at once on every
 * loop turn, so the listener is paused (10 ms, doubling to 1 s) and the
 * warning is written at most once a second, with the count of failures. */
#define WORKER_ACCEPT_PAUSE_MIN_MS 10
#define WORKER_ACCEPT_PAUSE_MAX_MS 1000
#define WORKER_ACCEPT_WARN_MS      1000

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)sa; (void)salen;
    struct worker_pool *wp = arg;
    wp->accept_pause_ms = 0;
    client_accept(wp, fd);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct worker_pool *wp = arg;
    if (wp->listener != NULL)
        evconnlistener_enable(wp->listener);
}

/* Pauses the listener for the next backoff step. */
static void accept_pause(struct worker_pool *wp)
{
    uint32_t ms = wp->accept_pause_ms * 2;
    if (ms < WORKER_ACCEPT_PAUSE_MIN_MS)
        ms = WORKER_ACCEPT_PAUSE_MIN_MS;
    if (ms > WORKER_ACCEPT_PAUSE_MAX_MS)
        ms = WORKER_ACCEPT_PAUSE_MAX_MS;
    wp->accept_pause_ms = ms;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evconnlistener_disable(wp->listener);
    evtimer_add(wp->accept_resume_ev, &tv);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    struct worker_pool *wp = arg;
    int err = EVUTIL_SOCKET_ERROR();
    bool exhausted = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    wp->accept_failures++;
    if (exhausted)
        accept_pause(wp);
    int64_t now = util_now_ms();
    if (now - wp->accept_warned_ms < WORKER_ACCEPT_WARN_MS)
        return;
    log_warn("pool %s: worker %u: accept failed: %s (%llu failures since the last report)%s",
             wp->conf->name, wp->worker->id, evutil_socket_error_to_string(err),
             (unsigned long long)wp->accept_failures,
             exhausted ? "; accepting paused, with backoff up to 1 s" : "");
    wp->accept_warned_ms = now;
    wp->accept_failures = 0;
}

static int listener_open(struct worker_pool *wp, char *err, size_t errlen)
{
    struct worker *w = wp->worker;
    const struct conf_pool *pool = wp->conf;
    int ufd = w->rt->unix_fds[wp->index];
    unsigned flags = LEV_OPT_CLOSE_ON_EXEC;
    if (ufd >= 0) {
        /* One unix socket, opened by main, shared by every worker. */
        wp->listener = evconnlistener_new(w->base, on_accept, wp, flags, 0, ufd);
    } else {
        struct sockaddr_storage ss;
        socklen_t len;
        if (util_resolve(&pool->listen.addr, &ss, &len, err, errlen) != 0)
            return -1;
        flags |= LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT;
        wp->listener = evconnlistener_new_bind(w->base, on_accept, wp, flags,
                                               pool->backlog, (struct sockaddr *)&ss,
                                               (int)len);
    }
    if (wp->listener == NULL) {
        snprintf(err, errlen, "pool %s: cannot listen on %s: %s", pool->name,
                 pool->listen.text, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    evconnlistener_set_error_cb(wp->listener, on_accept_error);
    wp->accept_resume_ev = evtimer_new(w->base, on_accept_resume, wp);
    if (wp->accept_resume_ev == NULL) {
        snprintf(err, errlen, "pool %s: cannot create the accept timer", pool->name);
        return -1;
    }
    return 0;
}

/* Closes the pool's listener and its accept timer (idempotent). */
static void worker_pool_unlisten(struct worker_pool *wp)
{
    if (wp->listener != NULL)
        evconnlistener_free(wp->listener);
    wp->listener = NULL;
    if (wp->accept_resume_ev != NULL)
        event_free(wp->accept_resume_ev);
    wp->accept_resume_ev = NULL;
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

/* Gives freed memory back to the kernel once the worker's buffered bytes
 * have fallen WORKER_TRIM_BYTES below their peak since the last trim:
 * glibc keeps freed heap pages otherwise, and a burst would stay
 * resident after its clients left. */
static void worker_trim(struct worker *w)
{
    int64_t now = __atomic_load_n(&w->stats.buffered, __ATOMIC_RELAXED);
    if (now > w->trim_peak)
        w->trim_peak = now;
    if (w->trim_peak - now < WORKER_TRIM_BYTES)
        return;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    w->trim_peak = now;
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
    for (uint32_t p = 0; p < w->npools; p++)
        worker_pool_unlisten(&w->pools[p]);
    client_stop_reading_all(w);
    w->drain_deadline_ms = util_now_ms() + WORKER_DRAIN_MAX_MS;
    on_drain(-1, 0, w);
}

int worker_init(struct worker *w, uint32_t id, const struct runtime *rt,
                char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->rt = rt;
    TAILQ_INIT(&w->clients);
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
    if (w->stop_ev == NULL || w->drain_ev == NULL || worker_sweep_start(w) != 0) {
        snprintf(err, errlen, "cannot create the worker's events");
        return -1;
    }
    stats_worker_init(&w->stats, rt->conf);
    w->msgs.acct = &w->stats.buffered;
    w->npools = rt->conf->npools;
    w->pools = util_xcalloc(w->npools, sizeof(*w->pools));
    for (uint32_t p = 0; p < w->npools; p++) {
        struct worker_pool *wp = &w->pools[p];
        wp->worker = w;
        wp->index = p;
        wp->conf = &rt->conf->pools[p];
        wp->stats = &w->stats.pools[p];
        uint64_t seed = ((uint64_t)id + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)util_now_ms();
        if (policy_pool_init(&wp->policy, wp->conf, &w->backends, &rt->limits, wp->stats,
                             &w->policy_cache, rt->settings->async_queue_limit, seed,
                             err, errlen) != 0)
            return -1;
        if (listener_open(wp, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    log_info("worker %u started", w->id);
    if (conn_loop_run(&w->loop) != 0)
        log_error("worker %u: event loop failed", w->id);
    client_close_all(w);
    for (uint32_t p = 0; p < w->npools; p++)
        policy_pool_deinit(&w->pools[p].policy);
    conn_loop_flush(&w->loop);
    log_info("worker %u stopped", w->id);
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
    for (uint32_t p = 0; p < w->npools; p++) {
        struct worker_pool *wp = &w->pools[p];
        worker_pool_unlisten(wp);
        if (!w->started && wp->policy.conf != NULL)
            policy_pool_deinit(&wp->policy);
    }
    free(w->pools);
    policy_cache_deinit(&w->policy_cache);
    msg_cache_deinit(&w->msgs);
    backend_worker_deinit(&w->backends);
    stats_worker_deinit(&w->stats);
    if (w->stop_ev != NULL)
        event_free(w->stop_ev);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
    if (w->sweep_ev != NULL)
        event_free(w->sweep_ev);
    if (w->base != NULL)
        event_base_free(w->base);
    memset(w, 0, sizeof(*w));
}
