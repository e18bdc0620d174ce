/* worker: one thread with its own event_base, listeners (SO_REUSEPORT),
 * client connections and backend connections. Nothing on the request path
 * is shared between workers. */
#ifndef STRATA_WORKER_H
#define STRATA_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "strata/backend.h"
#include "strata/conf.h"
#include "strata/conn.h"
#include "strata/msg.h"
#include "strata/policy.h"
#include "strata/proto_mc.h"
#include "strata/stats.h"

struct event;
struct event_base;
struct evconnlistener;
struct client;

/* What every worker reads and nobody changes while they run. */
struct runtime {
    const struct conf     *conf;
    const struct settings *settings;
    struct mc_limits       limits;
    struct redis_limits    redis_limits;  /* limits.redis points here */
    uint32_t               nworkers;
    size_t                 max_memory;    /* buffered bytes of all workers; 0: none */
    uint32_t               max_clients;   /* client connections of the process; 0: none */
    int64_t                start_time_s;
    uint32_t              *pool_clients;  /* per pool, atomic: client_connections */
    int                   *unix_fds;      /* per pool: shared unix listener, or -1 */
    struct stats_worker  **stats;         /* per worker, for the stats command */
};

struct worker_pool {
    struct worker          *worker;
    const struct conf_pool *conf;
    uint32_t                index;
    struct evconnlistener  *listener;
    struct event           *accept_resume_ev; /* re-enables a paused listener */
    uint32_t                accept_pause_ms;  /* current backoff, 0: none */
    int64_t                 accept_warned_ms; /* last "accept failed" line */
    uint64_t                accept_failures;  /* since that line */
    int64_t                 refuse_warned_ms; /* last "refusing clients" line */
    uint64_t                refused;          /* clients refused since that line */
    struct policy_pool      policy;
    struct stats_pool      *stats;
};

TAILQ_HEAD(client_list, client);

struct worker {
    uint32_t               id;
    pthread_t              thread;
    bool                   started;
    struct event_base     *base;
    struct conn_loop       loop;        /* batches of events, then writes */
    struct backend_worker  backends;    /* shared by every backend server */
    const struct runtime  *rt;
    struct worker_pool    *pools;
    uint32_t               npools;
    struct stats_worker    stats;
    struct msg_cache       msgs;
    struct policy_cache    policy_cache; /* request records of every pool */
    struct client_list     clients;
    struct event          *stop_ev;     /* activated by the main thread */
    struct event          *drain_ev;    /* polls until requests are answered */
    struct event          *sweep_ev;    /* closes idle partial requests, trims */
    int64_t                trim_peak;   /* stats.buffered peak since last trim */
    int64_t                drain_deadline_ms;
};

/* Creates the event_base, binds listeners and sets up backends. Errors
 * (a port in use) are written to err. Runs in the main thread. */
int worker_init(struct worker *w, uint32_t id, const struct runtime *rt,
                char *err, size_t errlen);
int worker_start(struct worker *w);
/* Asks the worker to close its listeners, answer requests in flight and
 * exit. Safe from any thread. */
void worker_stop(struct worker *w);
void worker_join(struct worker *w);
void worker_deinit(struct worker *w);

#endif
