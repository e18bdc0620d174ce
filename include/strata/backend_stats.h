/* backend_stats: the servers' own counters, collected in the background
 * on the main thread and summed per pool and tier for the metrics.
 *
 *   every interval: for each server of the running configuration, a
 *   short connection of its own (never a data connection):
 *     memcached ─ "stats" ─► STAT lines ... END
 *     Redis     ─ [AUTH] "INFO" ─► a bulk of "field:value" lines
 *   a round done (or its time up) ─► the latest values, one set per server
 *   a scrape ─► strata_backend_FIELD{pool,tier} (the sum over the tier's
 *               servers that answered), strata_backend_up{pool,tier,server}
 *
 * A scrape never waits for a server: it reads the last round. */
#ifndef STRATA_BACKEND_STATS_H
#define STRATA_BACKEND_STATS_H

#include <stdint.h>

struct conf;
struct evbuffer;
struct event_base;
struct backend_stats;

/* memcached `stats` fields kept (the backends' own names). */
#define BACKEND_STATS_MC_LIST(ACTION)                                        \
    ACTION(curr_items,       "Items stored")                                 \
    ACTION(bytes,            "Bytes used by the items stored")              \
    ACTION(limit_maxbytes,   "Bytes the servers may use for items")         \
    ACTION(curr_connections, "Connections open at the servers")             \
    ACTION(cmd_get,          "Retrieval commands the servers received")     \
    ACTION(cmd_set,          "Storage commands the servers received")       \
    ACTION(get_hits,         "Keys the servers found")                      \
    ACTION(get_misses,       "Keys the servers did not find")               \
    ACTION(evictions,        "Items the servers evicted to make room")

/* Redis INFO fields kept. */
#define BACKEND_STATS_REDIS_LIST(ACTION)                                    \
    ACTION(used_memory,              "Bytes the servers use")               \
    ACTION(maxmemory,                "The servers' maxmemory, bytes")       \
    ACTION(connected_clients,        "Connections open at the servers")     \
    ACTION(total_commands_processed, "Commands the servers processed")      \
    ACTION(keyspace_hits,            "Keys the servers found")              \
    ACTION(keyspace_misses,          "Keys the servers did not find")       \
    ACTION(expired_keys,             "Keys the servers expired")            \
    ACTION(evicted_keys,             "Keys the servers evicted")

/* Starts collecting every interval_ms on `base` (the main thread's); the
 * configuration is read through *conf at each round (reloads change it).
 * NULL when interval_ms is 0 (off). */
struct backend_stats *backend_stats_create(struct event_base *base,
                                           const struct conf *const *conf,
                                           int interval_ms, int timeout_ms);
void backend_stats_destroy(struct backend_stats **bs);

/* The last round for one pool as STAT lines, "STAT TIER:FIELD SUM" per
 * tier and field (and TIER:servers, TIER:servers_up): what a memcached
 * pool's "stats backends" answers. Safe from a worker: it takes the lock
 * that only a round's end also takes (never a request path's). */
void backend_stats_stat_lines(struct backend_stats *bs, const char *pool,
                              struct evbuffer *out);
/* The same as Redis INFO lines, "TIER_FIELD:SUM" (a Redis pool's INFO
 * "backends" section). */
void backend_stats_info_lines(struct backend_stats *bs, const char *pool,
                              struct evbuffer *out);

/* Appends the families of the last round (text format 0.0.4). */
void backend_stats_write(struct evbuffer *out, const struct backend_stats *bs);

/* The value of `field` in a server's reply `text` (memcached "STAT f v"
 * lines or Redis "f:v" lines): 0 and *v set, or -1 when absent. */
int backend_stats_parse(const char *text, const char *field, int64_t *v);

#endif
