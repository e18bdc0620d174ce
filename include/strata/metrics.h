/* metrics: latency histograms per worker (one writer each, merged when
 * read) and the Prometheus text exposition (format 0.0.4) of every stats
 * counter, gauge and histogram.
 *
 *   worker: conn_loop_now_ns() (the clock, once per I/O callback)
 *           ──► metrics_hist_observe()
 *           (plain add, relaxed store: no lock, no atomic RMW)
 *   main:   metrics_write() ──► relaxed loads of every worker's view,
 *           summed (metrics_hist_merge) ──► "# HELP / # TYPE / samples"
 *
 * A histogram counts each observation in one bucket (not cumulative);
 * the writer makes them cumulative. Built with -DSTRATA_NO_HISTOGRAMS
 * (only to measure what they cost) the clock and the observation are
 * no-ops and the histograms stay at zero. */
#ifndef STRATA_METRICS_H
#define STRATA_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct evbuffer;
struct conf;
struct stats_worker;

/* ACTION(upper bound in ns, the same as Prometheus's "le" text): 50 µs
 * to 1 s; a last bucket (+Inf) takes what is above. Prometheus's default
 * buckets start at 5 ms, too coarse for a cache. */
#define METRICS_BUCKET_LIST(ACTION) \
    ACTION(50000,      "5e-05")     \
    ACTION(100000,     "0.0001")    \
    ACTION(250000,     "0.00025")   \
    ACTION(500000,     "0.0005")    \
    ACTION(1000000,    "0.001")     \
    ACTION(2500000,    "0.0025")    \
    ACTION(5000000,    "0.005")     \
    ACTION(10000000,   "0.01")      \
    ACTION(25000000,   "0.025")     \
    ACTION(50000000,   "0.05")      \
    ACTION(100000000,  "0.1")       \
    ACTION(250000000,  "0.25")      \
    ACTION(500000000,  "0.5")       \
    ACTION(1000000000, "1")

#define METRICS_BUCKET_ONE(ns, le) + 1
/* Buckets with a bound, and with +Inf. */
#define METRICS_NBOUNDS  (0 METRICS_BUCKET_LIST(METRICS_BUCKET_ONE))
#define METRICS_NBUCKETS (METRICS_NBOUNDS + 1)

/* One worker's histogram: bucket[i] counts observations in
 * (bound[i-1], bound[i]], the last one those above every bound. */
struct metrics_hist {
    int64_t bucket[METRICS_NBUCKETS];
    int64_t sum_ns;      /* of every observation */
};

/* The bucket bounds in ns (METRICS_NBOUNDS of them) and their "le" text. */
extern const int64_t metrics_bounds_ns[METRICS_NBOUNDS];
extern const char *const metrics_bounds_le[METRICS_NBOUNDS];

/* The monotonic clock in ns (vDSO, about 18 ns here: docs/benchmarks.md,
 * "Metrics cost"). The request path reads it through conn_loop_now_ns,
 * once per I/O callback. */
static inline int64_t metrics_now_ns(void)
{
#ifdef STRATA_NO_HISTOGRAMS
    return 0;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

/* The index of the bucket that takes `ns` (negative counts as 0). */
static inline uint32_t metrics_bucket_of(int64_t ns)
{
    uint32_t i = 0;
    while (i < METRICS_NBOUNDS && ns > metrics_bounds_ns[i])
        i++;
    return i;
}

static inline void metrics_relaxed_add(int64_t *field, int64_t n)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
}

/* Counts one observation of `ns` nanoseconds. The owning worker only. */
static inline void metrics_hist_observe(struct metrics_hist *h, int64_t ns)
{
#ifndef STRATA_NO_HISTOGRAMS
    if (ns < 0)
        ns = 0;
    metrics_relaxed_add(&h->bucket[metrics_bucket_of(ns)], 1);
    metrics_relaxed_add(&h->sum_ns, ns);
#else
    (void)h; (void)ns;
#endif
}

/* acc += h, read with relaxed loads (h may be a live worker's). */
void metrics_hist_merge(struct metrics_hist *acc, const struct metrics_hist *h);
/* to = from, both a worker's own (a reload's view carry). */
void metrics_hist_copy(struct metrics_hist *to, const struct metrics_hist *from);
/* Observations in h: the sum of its buckets. */
int64_t metrics_hist_count(const struct metrics_hist *h);

/* What the exposition shows beyond the workers' counters: the process
 * and its configuration (main thread, filled per scrape). */
struct conf_pool;

struct metrics_process {
    const struct conf          *conf;           /* the running configuration */
    struct stats_worker *const *workers;
    uint32_t                    nworkers;
    int64_t                     start_time_s;   /* unix seconds */
    uint64_t                    generation;     /* configuration generation */
    int64_t                     loaded_at_s;    /* when it was loaded, unix s */
    uint64_t                    reloads;
    uint64_t                    reload_failures;
    uint64_t                    dns_failures;   /* server host name lookups failed */
    int                         zk_connected;   /* 1, 0; -1: no ZooKeeper */
    /* The name of a pool's command slot (stats.h STATS_CMD_SLOTS), or
     * NULL past its commands: the protocol modules know them, not this. */
    const char *(*cmd_name)(const struct conf_pool *pool, uint32_t slot);
};

/* Appends the whole exposition (text format 0.0.4): process, reload,
 * every pool, server and tier counter of the stats JSON, the limit
 * counters and the latency histograms. docs/operations.md, "Monitoring",
 * lists every family. */
void metrics_write(struct evbuffer *out, const struct metrics_process *p);

/* A label value or HELP text as the text format wants it: backslash,
 * newline and (label values only) double quote escaped. */
void metrics_escape(struct evbuffer *out, const char *s, bool label);

#endif
