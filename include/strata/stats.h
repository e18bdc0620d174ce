/* stats: counters per worker, summed by the reader into nutcracker's JSON.
 * Each counter has one writer (its worker), so updates are plain relaxed
 * stores; the stats thread reads them without locks. */
#ifndef STRATA_STATS_H
#define STRATA_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "strata/conf.h"
#include "strata/metrics.h"
#include "strata/stats_tier.h"

struct evbuffer;

/* ACTION(field, kind, description) — names and meanings as nutcracker's. */
#define STATS_POOL_LIST(ACTION)                                                   \
    ACTION(client_eof,         COUNTER, "# eof on client connections")            \
    ACTION(client_err,         COUNTER, "# errors on client connections")         \
    ACTION(client_connections, GAUGE,   "# active client connections")            \
    ACTION(server_ejects,      COUNTER, "# times backend server was ejected")     \
    ACTION(forward_error,      COUNTER, "# times we encountered a forwarding error") \
    ACTION(fragments,          COUNTER, "# fragments created from a multi-vector request")

#define STATS_SERVER_LIST(ACTION)                                                 \
    ACTION(server_eof,         COUNTER,   "# eof on server connections")          \
    ACTION(server_err,         COUNTER,   "# errors on server connections")       \
    ACTION(server_timedout,    COUNTER,   "# timeouts on server connections")     \
    ACTION(server_connections, GAUGE,     "# active server connections")          \
    ACTION(server_ejected_at,  TIMESTAMP, "timestamp when server was ejected in usec since epoch") \
    ACTION(requests,           COUNTER,   "# requests")                           \
    ACTION(request_bytes,      COUNTER,   "total request bytes")                  \
    ACTION(responses,          COUNTER,   "# responses")                          \
    ACTION(response_bytes,     COUNTER,   "total response bytes")                 \
    ACTION(in_queue,           GAUGE,     "# requests in incoming queue")         \
    ACTION(in_queue_bytes,     GAUGE,     "current request bytes in incoming queue") \
    ACTION(out_queue,          GAUGE,     "# requests in outgoing queue")         \
    ACTION(out_queue_bytes,    GAUGE,     "current request bytes in outgoing queue")

/* Strata only: requests and clients refused by a memory or connection
 * limit (docs/reliability.md). Not in nutcracker's JSON, whose shape
 * stays exact: the proxy's own "stats" command lists them, summed over
 * workers and pools, and -D describes them. ACTION(field, description) */
#define STATS_LIMIT_LIST(ACTION)                                                  \
    ACTION(reply_too_large,   "# retrievals failed: reply over max_reply_size") \
    ACTION(out_of_memory,     "# requests refused: buffered bytes over max_memory") \
    ACTION(reply_over_budget, "# replies refused: the client's held reply bytes over client_max_pending") \
    ACTION(request_timeout,   "# clients closed: a partial request idle over client_request_timeout") \
    ACTION(clients_refused,   "# connections closed at once: max_clients reached") \
    ACTION(auth_failures,     "# Redis AUTH attempts refused: wrong password")

#define STATS_LIMIT_ENUM(name, desc) STATS_LIMIT_##name,
enum stats_limit_field { STATS_LIMIT_LIST(STATS_LIMIT_ENUM) STATS_LIMIT_NFIELDS };
#undef STATS_LIMIT_ENUM

#define STATS_ENUM_FIELD(name, kind, desc) STATS_##name,
enum stats_pool_field { STATS_POOL_LIST(STATS_ENUM_FIELD) STATS_POOL_NFIELDS };
enum stats_server_field { STATS_SERVER_LIST(STATS_ENUM_FIELD) STATS_SERVER_NFIELDS };
#undef STATS_ENUM_FIELD

struct stats_server {
    int64_t             f[STATS_SERVER_NFIELDS];
    struct metrics_hist latency;   /* backend round trips (metrics.h) */
};

/* Requests forwarded per command, per pool: a memcached pool's by enum
 * mc_cmd, a Redis pool's by the command's index in redis_cmd_table (the
 * policy counts them; the metrics name them). */
#define STATS_CMD_SLOTS 192

/* Keys a read asked for, per pool: found (a value) or not (a miss, a
 * nil). */
enum stats_read { STATS_READ_HIT, STATS_READ_MISS, STATS_READ_NFIELDS };

struct stats_pool {
    int64_t              f[STATS_POOL_NFIELDS];
    struct stats_server *servers;     /* every server of every tier */
    uint32_t             nservers;
    struct stats_tier   *tiers;       /* tiered pools: master, slave, l1s, replicas */
    uint32_t             ntiers;
    int64_t              limits[STATS_LIMIT_NFIELDS]; /* Strata only */
    int64_t              cmds[STATS_CMD_SLOTS];         /* Strata only */
    int64_t              reads[STATS_READ_NFIELDS];     /* Strata only */
    struct metrics_hist  latency;  /* client-observed request times (metrics.h) */
};

/* One worker's counters of one pool configuration, in its shape: a
 * reload gives each worker a new view (stats_view_carry keeps what
 * continues), published in stats_worker.view. */
struct stats_view {
    const struct conf *conf;
    struct stats_pool *pools;
    uint32_t           npools;
};

/* One worker's counters, written only by that worker. */
struct stats_worker {
    struct stats_view *view;    /* the current configuration's; read with
                                   an acquire load from other threads */
    int64_t            total_connections;
    int64_t            curr_connections;
    int64_t            buffered;   /* bytes in client buffers and replies
                                      gathered (max_memory's measure) */
};

static inline void stats_add(int64_t *field, int64_t n)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
}

static inline void stats_set(int64_t *field, int64_t v)
{
    __atomic_store_n(field, v, __ATOMIC_RELAXED);
}

#define stats_pool_add(sp, name, n)   stats_add(&(sp)->f[STATS_##name], (n))
#define stats_server_add(ss, name, n) stats_add(&(ss)->f[STATS_##name], (n))
#define stats_limit_add(sp, name, n)  stats_add(&(sp)->limits[STATS_LIMIT_##name], (n))

/* Number of servers of a pool across its tiers, in the order the stats
 * and the runtime index them: master, slave, each l1, each replica. */
uint32_t stats_pool_server_count(const struct conf_pool *pool);
/* The conf_server at flat index i of that order. */
const struct conf_server *stats_pool_server(const struct conf_pool *pool, uint32_t i);

/* Number of tiers of a pool (1 for a plain pool), and the i-th in the
 * order master, slave, each l1, each replica, each of a Redis pool's
 * slaves; NULL past the end. */
uint32_t stats_pool_tier_count(const struct conf_pool *pool);
const struct conf_tier *stats_pool_tier(const struct conf_pool *pool, uint32_t i);
/* The name of tier i in that order: "master", "slave", "l1[0]",
 * "replicas[0]", "slaves[0]", ... */
void stats_tier_name(const struct conf_pool *pool, uint32_t i, char *out, size_t len);

struct stats_view *stats_view_new(const struct conf *conf);
void stats_view_free(struct stats_view *v);
/* Copies into `to` the counters (gauges included) of every pool, server
 * and tier `from` has too: pools by name, tiers by name, servers by tier
 * and address. */
void stats_view_carry(struct stats_view *to, const struct stats_view *from);

int stats_worker_init(struct stats_worker *sw, const struct conf *conf);
void stats_worker_deinit(struct stats_worker *sw);

/* Sums the workers' counters and appends nutcracker's stats JSON: the same
 * field names, server names ("name", else "host:port"), order (pools and
 * servers sorted as nutcracker sorts them) and separators. Computed when
 * called, from live counters (nutcracker snapshots every -i ms). Workers
 * whose view is not of `conf` (switching) are left out. */
void stats_json(struct evbuffer *out, const struct conf *conf,
                struct stats_worker *const *workers, uint32_t nworkers,
                int64_t start_time_s);

/* The workers' views of `conf` (any, when NULL) into views[] (room for
 * nworkers): a worker still switching to it is left out. Returns how many. */
uint32_t stats_views_of(const struct conf *conf, struct stats_worker *const *workers,
                        uint32_t nworkers, const struct stats_view **views);
/* nutcracker's total_connections and curr_connections (stats_json). */
void stats_connections(const struct conf *conf, struct stats_worker *const *workers,
                       const struct stats_view *const *views, uint32_t nviews,
                       uint32_t nworkers, int64_t *total, int64_t *curr);
/* A server's name in the stats JSON (its name, else "host:port" as the
 * pool file writes it), as a new string the caller frees. */
char *stats_server_label(const struct conf_server *cs);

/* Appends "STAT name value\r\n" for each limit counter, summed over
 * the workers and their pools (the proxy's "stats" command). */
void stats_limits_stat_lines(struct evbuffer *out, struct stats_worker *const *workers,
                             uint32_t nworkers);

/* Writes the -D description of every field, nutcracker's sections first
 * ("pool stats:", "server stats:"), then Strata's tier section. */
void stats_describe(FILE *out);

#endif
