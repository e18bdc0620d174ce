/* redis_info: the replies a Redis pool's proxy composes for INFO and
 * COMMAND. Pure functions of their inputs (no sockets, no worker state):
 * the client gathers the counters, these write RESP. */
#ifndef STRATA_REDIS_INFO_H
#define STRATA_REDIS_INFO_H

#include <stddef.h>
#include <stdint.h>

#include "strata/conf.h"
#include "strata/proto_redis.h"
#include "strata/stats.h"

struct evbuffer;

/* The process, for INFO's Server and Clients sections. */
struct redis_info_proc {
    const char *version;           /* strata's */
    long        pid;
    int64_t     uptime_s;
    uint32_t    workers;
    uint64_t    generation;        /* configuration generation; 0: none */
    const char *source;            /* where it came from; NULL: unknown */
    int64_t     loaded_at;         /* unix seconds; 0: unknown */
    uint64_t    reloads;
    uint64_t    reload_failures;
    uint64_t    dns_failures;      /* server host name lookups failed */
    int64_t     total_connections; /* client connections accepted, all pools */
    int64_t     now_ms;            /* wall clock, for "ejected" */
};

/* One pool: its configuration and its counters, one stats_pool per
 * worker serving it (summed here, relaxed loads). */
struct redis_info_pool {
    const struct conf_pool         *conf;
    const struct stats_pool *const *stats;
    uint32_t                        nstats;
    struct evbuffer                *backends; /* the servers' own counters as
                                                 INFO lines, or NULL */
};

/* INFO [section ...]: appends one RESP bulk string holding Redis's INFO
 * text ("# Name" headers, "key:value" lines, CRLF ends, a blank line
 * between sections). Sections: server, clients, stats, servers, tiers
 * (tiered pools only), backends (when pool->backends has lines); none given, or all/default/everything, gives all.
 * Names are matched in any case; unknown ones add nothing, so INFO of
 * only unknown sections is an empty bulk (as Redis). args[1..nargs) of
 * req are the section names. Returns 0, or -1 if `out` cannot grow. */
int redis_info_compose(struct evbuffer *out, const struct redis_req *req,
                       const struct redis_info_proc *proc,
                       const struct redis_info_pool *pool);

/* COMMAND [COUNT | DOCS ... | INFO name ... | LIST]: appends the reply
 * from the proxy's command table: COMMAND, every command in Redis's
 * short shape [name, arity, flags, first key, last key, step]; COUNT,
 * their number; DOCS, an empty array (whatever follows); INFO, one entry
 * or nil per name (every command when none is named); LIST, the names. Any other subcommand is an error
 * reply, as Redis answers one. Returns 0, or -1 if `out` cannot grow. */
int redis_info_command(struct evbuffer *out, const struct redis_req *req);

#endif
