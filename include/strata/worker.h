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
#include "strata/listener.h"
#include "strata/msg.h"
#include "strata/policy.h"
#include "strata/proto_mc.h"
#include "strata/stats.h"

struct event;
struct event_base;
struct evconnlistener;
struct client;

/* What a pool shares across workers and reloads, one per pool name for
 * the life of the process (pools are matched by name on reload). */
struct pool_shared {
    char    *name;
    uint32_t clients;     /* atomic: its client connections, every worker */
    int      unix_fd;     /* the unix listener the workers share, or -1 */
    char    *unix_path;   /* what unix_fd listens on */
};

struct pool_shared *pool_shared_new(const char *name);
void pool_shared_free(struct pool_shared *ps);

/* One pool configuration as handed to the workers (reload): the conf,
 * each pool's shared part, and each worker's stats view of it. `users`
 * counts what still points into it (each worker's current view, each
 * worker pool and policy pool built from it); at 0 the main thread frees
 * it. */
struct config_gen {
    struct conf          *conf;
    uint64_t              generation;
    struct pool_shared  **shared;    /* per pool of conf */
    struct stats_view   **views;     /* per worker */
    char                 *source;    /* the file or zk:// URL it came from */
    int64_t               loaded_at; /* unix seconds */
    uint32_t              users;     /* atomic */
};

void config_gen_use(struct config_gen *gen);
void config_gen_drop(struct config_gen *gen);

/* What every worker reads; the live settings (reload) change in place. */
struct runtime {
    const struct conf     *conf;      /* the first configuration */
    const struct settings *settings;
    struct mc_limits       limits;
    struct redis_limits    redis_limits;  /* limits.redis points here */
    uint32_t               nworkers;
    size_t                 max_memory;    /* buffered bytes of all workers; 0: none */
    uint32_t               max_clients;   /* client connections of the process; 0: none */
    int64_t                start_time_s;
    struct backend_stats  *backend_stats; /* atomic: set once by main, or NULL */
    struct pool_shared   **shared;        /* per pool of conf */
    struct config_gen     *gen;           /* conf as generation 1, or NULL */
    uint64_t               reloads;       /* atomic: configurations applied */
    uint64_t               reload_failures; /* atomic: rejected */
    uint64_t               dns_failures;  /* atomic: server host name lookups
                                             that failed (dns_app) */
    struct stats_worker  **stats;         /* per worker, for the stats command */
};

struct worker_pool {
    struct worker          *worker;
    const struct conf_pool *conf;
    struct config_gen      *gen;              /* conf's, or NULL (no reload) */
    struct pool_shared     *shared;
    struct listener         listener;         /* backs off on EMFILE */
    int64_t                 refuse_warned_ms; /* last "refusing clients" line */
    uint64_t                refused;          /* clients refused since that line */
    int64_t                 auth_warned_ms;   /* last "failed AUTH" line */
    int64_t                 oom_warned_ms;    /* last "request refused" line */
    int64_t                 reject_warned_ms; /* last "unsupported command" line */
    uint64_t                rejected;         /* such requests since that line */
    uint64_t                auth_failed;      /* failed AUTHs since that line */
    struct policy_pool     *policy;
    struct stats_pool      *stats;
    uint32_t                nclients;         /* its clients on this worker */
    bool                    removed;          /* by a reload: clients draining */
    int64_t                 removed_ms;       /* when (util_now_ms) */
    TAILQ_ENTRY(worker_pool) link;            /* in the worker's removed list */
};

TAILQ_HEAD(worker_pool_list, worker_pool);

/* A policy pool a reload replaced, kept until its requests are done. */
struct worker_retired {
    TAILQ_ENTRY(worker_retired) link;
    struct policy_pool *policy;
    struct config_gen  *gen;
};

TAILQ_HEAD(worker_retired_list, worker_retired);

TAILQ_HEAD(client_list, client);

struct worker {
    uint32_t               id;
    pthread_t              thread;
    bool                   started;
    struct event_base     *base;
    struct conn_loop       loop;        /* batches of events, then writes */
    struct backend_worker  backends;    /* shared by every backend server */
    const struct runtime  *rt;
    struct worker_pool   **pools;
    uint32_t               npools;
    struct worker_pool_list removed;    /* pools a reload removed, draining */
    struct worker_retired_list retired; /* policies a reload replaced */
    struct config_gen     *gen;         /* whose view w->stats shows, or NULL */
    struct config_gen     *next_gen;    /* atomic: handed over by main */
    uint64_t               applied;     /* atomic: generation in force */
    struct event          *reload_ev;   /* activated by the main thread */
    struct event          *reap_ev;     /* frees what reloads retired */
    bool                   stopping;
    struct stats_worker    stats;
    struct msg_cache       msgs;
    struct policy_cache    policy_cache; /* request records of every pool */
    struct client_list     clients;
    struct event          *stop_ev;     /* activated by the main thread */
    struct event          *drain_ev;    /* polls until requests are answered */
    struct event          *sweep_ev;    /* closes idle partial requests, trims */
    int64_t                trim_peak;   /* stats.buffered peak since last trim */
    uint64_t               trim_taken;  /* msgs.taken at the last trim */
    uint64_t               sweep_taken; /* msgs.taken at the last sweep */
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
/* Hands `gen` to the worker, which switches to it at its next safe point
 * and then sets w->applied to gen->generation. Safe from any thread; one
 * at a time (wait for applied before the next). */
void worker_reload(struct worker *w, struct config_gen *gen);
void worker_join(struct worker *w);
void worker_deinit(struct worker *w);

#endif
