/* stats_tier: counters per tier of a tiered pool, per worker (one writer).
 * The stats port sums them over workers. */
#ifndef STRATA_STATS_TIER_H
#define STRATA_STATS_TIER_H

#include <stdint.h>

/* ACTION(field, description) */
#define STATS_TIER_LIST(ACTION)                                                \
    ACTION(hits,          "# keys read from this tier and found")              \
    ACTION(misses,        "# keys read from this tier and not found")          \
    ACTION(read_errors,   "# keys whose read from this tier failed")           \
    ACTION(writebacks,    "# values written back (add) to this tier")          \
    ACTION(async_sent,    "# asynchronous writes this tier acknowledged")      \
    ACTION(async_failed,  "# asynchronous writes that failed (after retries)") \
    ACTION(async_dropped, "# asynchronous writes dropped: queue full")         \
    ACTION(async_retried, "# asynchronous deletes retried")                    \
    ACTION(async_pending, "# asynchronous writes queued or in flight now")   \
    ACTION(reads,         "# Redis reads this tier answered")                 \
    ACTION(read_fallbacks, "# Redis reads this replica failed, sent to master")

#define STATS_TIER_ENUM(name, desc) STATS_TIER_##name,
enum stats_tier_field { STATS_TIER_LIST(STATS_TIER_ENUM) STATS_TIER_NFIELDS };
#undef STATS_TIER_ENUM

/* The counters from `reads` on are a Redis pool's; the ones before, a
 * memcached pool's. */
#define stats_tier_field_redis(f) ((f) >= STATS_TIER_reads)

struct stats_tier {
    int64_t f[STATS_TIER_NFIELDS];
};

#define stats_tier_add(st, name, n) stats_add(&(st)->f[STATS_TIER_##name], (n))

#endif
