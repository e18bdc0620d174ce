/* stats_tier: counters per tier of a tiered pool, per worker (one writer).
 * The stats port sums them over workers. */
#ifndef STRATA_STATS_TIER_H
#define STRATA_STATS_TIER_H

#include <stdint.h>

/* ACTION(field, kind, description): kind COUNTER or GAUGE */
#define STATS_TIER_LIST(ACTION)                                                \
    ACTION(hits,          COUNTER, "# keys read from this tier and found")              \
    ACTION(misses,        COUNTER, "# keys read from this tier and not found")          \
    ACTION(read_errors,   COUNTER, "# keys whose read from this tier failed")           \
    ACTION(writebacks,    COUNTER, "# values written back (add) to this tier")          \
    ACTION(async_sent,    COUNTER, "# asynchronous writes this tier acknowledged")      \
    ACTION(async_failed,  COUNTER, "# asynchronous writes that failed (after retries)") \
    ACTION(async_dropped, COUNTER, "# asynchronous writes dropped: queue full")         \
    ACTION(async_retried, COUNTER, "# asynchronous deletes retried")                    \
    ACTION(async_pending, GAUGE,   "# asynchronous writes queued or in flight now")   \
    ACTION(reads,         COUNTER, "# Redis reads this tier answered")                 \
    ACTION(read_fallbacks, COUNTER, "# Redis reads this replica failed, sent to master")

#define STATS_TIER_ENUM(name, kind, desc) STATS_TIER_##name,
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
