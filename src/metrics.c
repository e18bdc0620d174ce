/* metrics: histogram merge and the Prometheus text exposition of the
 * workers' counters (see metrics.h for the picture). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strata/metrics.h"
#include "strata/stats.h"
#include "strata/util.h"

#define METRICS_BOUND_NS(ns, le) ns,
#define METRICS_BOUND_LE(ns, le) le,
const int64_t metrics_bounds_ns[METRICS_NBOUNDS] = { METRICS_BUCKET_LIST(METRICS_BOUND_NS) };
const char *const metrics_bounds_le[METRICS_NBOUNDS] = { METRICS_BUCKET_LIST(METRICS_BOUND_LE) };
#undef METRICS_BOUND_NS
#undef METRICS_BOUND_LE

static int64_t metrics_load(const int64_t *field)
{
    return __atomic_load_n(field, __ATOMIC_RELAXED);
}

void metrics_hist_merge(struct metrics_hist *acc, const struct metrics_hist *h)
{
    for (uint32_t i = 0; i < METRICS_NBUCKETS; i++)
        acc->bucket[i] += metrics_load(&h->bucket[i]);
    acc->sum_ns += metrics_load(&h->sum_ns);
}

void metrics_hist_copy(struct metrics_hist *to, const struct metrics_hist *from)
{
    for (uint32_t i = 0; i < METRICS_NBUCKETS; i++)
        __atomic_store_n(&to->bucket[i], metrics_load(&from->bucket[i]), __ATOMIC_RELAXED);
    __atomic_store_n(&to->sum_ns, metrics_load(&from->sum_ns), __ATOMIC_RELAXED);
}

int64_t metrics_hist_count(const struct metrics_hist *h)
{
    int64_t n = 0;
    for (uint32_t i = 0; i < METRICS_NBUCKETS; i++)
        n += h->bucket[i];
    return n;
}

/* ---- the text format ---------------------------------------------------- */

/* Kinds of the stats lists (stats.h): the names of the text format. */
#define METRICS_KIND_COUNTER   0
#define METRICS_KIND_GAUGE     1
#define METRICS_KIND_TIMESTAMP 2   /* usec since the epoch: a gauge in seconds */

/* One family taken from a stats X-macro list. */
struct metrics_desc {
    const char *name;    /* the stats field */
    int         kind;
    const char *help;
};

#define METRICS_DESC(name, kind, desc) { #name, METRICS_KIND_##kind, desc },
#define METRICS_DESC2(name, desc) { #name, METRICS_KIND_COUNTER, desc },
static const struct metrics_desc pool_fields[] = { STATS_POOL_LIST(METRICS_DESC) };
static const struct metrics_desc server_fields[] = { STATS_SERVER_LIST(METRICS_DESC) };
static const struct metrics_desc tier_fields[] = { STATS_TIER_LIST(METRICS_DESC) };
static const struct metrics_desc limit_fields[] = { STATS_LIMIT_LIST(METRICS_DESC2) };
#undef METRICS_DESC
#undef METRICS_DESC2

void metrics_escape(struct evbuffer *out, const char *s, bool label)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            evbuffer_add(out, "\\\\", 2);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else if (*s == '"' && label)
            evbuffer_add(out, "\\\"", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

/* "# HELP name text\n# TYPE name type\n". A stats description's leading
 * "# " (nutcracker's "number of") is written out. */
static void metrics_family(struct evbuffer *out, const char *name, const char *type,
                           const char *help)
{
    evbuffer_add_printf(out, "# HELP %s ", name);
    if (strncmp(help, "# ", 2) == 0) {
        evbuffer_add_printf(out, "Number of ");
        help += 2;
    }
    metrics_escape(out, help, false);
    evbuffer_add_printf(out, "\n# TYPE %s %s\n", name, type);
}

/* Where a sample belongs: NULL members are left out. */
struct metrics_labels {
    const char *pool;
    const char *tier;
    const char *server;
    const char *key;     /* one more label: its name ("command"), and */
    const char *value;   /* its value, or both NULL */
};

/* `{pool="..",tier="..",server=".."` without the closing brace, so that
 * a histogram can add its "le". Writes nothing without labels. */
static void metrics_labels_open(struct evbuffer *out, const struct metrics_labels *l)
{
    const char *names[4] = { "pool", "tier", "server", l->key };
    const char *values[4] = { l->pool, l->tier, l->server, l->value };
    bool first = true;
    for (int i = 0; i < 4; i++) {
        if (values[i] == NULL)
            continue;
        evbuffer_add_printf(out, "%s%s=\"", first ? "{" : ",", names[i]);
        metrics_escape(out, values[i], true);
        evbuffer_add(out, "\"", 1);
        first = false;
    }
}

static bool metrics_labels_any(const struct metrics_labels *l)
{
    return l->pool != NULL || l->tier != NULL || l->server != NULL || l->value != NULL;
}

static void metrics_sample(struct evbuffer *out, const char *name,
                           const struct metrics_labels *l, int64_t v)
{
    evbuffer_add_printf(out, "%s", name);
    metrics_labels_open(out, l);
    evbuffer_add_printf(out, "%s %" PRId64 "\n", metrics_labels_any(l) ? "}" : "", v);
}

/* The family name of a stats field: strata_[PREFIX]FIELD, with "_total"
 * for a counter and "_seconds" for a timestamp. Returns the kind's
 * type name. */
static const char *metrics_name(const struct metrics_desc *d, const char *prefix,
                                char *buf, size_t len)
{
    static const char *const suffix[] = { "_total", "", "_seconds" };
    snprintf(buf, len, "strata_%s%s%s", prefix, d->name, suffix[d->kind]);
    return d->kind == METRICS_KIND_COUNTER ? "counter" : "gauge";
}

/* A stats value as the family shows it: a timestamp in seconds. */
static void metrics_value(struct evbuffer *out, const char *name,
                          const struct metrics_labels *l, int kind, int64_t v)
{
    if (kind != METRICS_KIND_TIMESTAMP) {
        metrics_sample(out, name, l, v);
        return;
    }
    evbuffer_add_printf(out, "%s", name);
    metrics_labels_open(out, l);
    evbuffer_add_printf(out, "} %" PRId64 ".%06" PRId64 "\n", v / 1000000, v % 1000000);
}

/* ---- one scrape --------------------------------------------------------- */

/* What a scrape reads: the workers' views of the running configuration. */
struct metrics_scrape {
    const struct metrics_process *p;
    const struct conf            *conf;
    const struct stats_view     **views;
    uint32_t                      nviews;
};

/* Sums field f of pool p over the views: counters and gauges add up, a
 * timestamp is the latest. `which` picks the array: pool, limit, tier t
 * or server s. */
enum metrics_array { METRICS_POOL, METRICS_LIMIT, METRICS_TIER, METRICS_SERVER };

static const int64_t *metrics_field(const struct stats_pool *sp, enum metrics_array which,
                                    uint32_t idx, int f)
{
    switch (which) {
    case METRICS_POOL:  return &sp->f[f];
    case METRICS_LIMIT: return &sp->limits[f];
    case METRICS_TIER:  return &sp->tiers[idx].f[f];
    default:            return &sp->servers[idx].f[f];
    }
}

static int64_t metrics_sum(const struct metrics_scrape *sc, uint32_t p, enum metrics_array which,
                           uint32_t idx, int f, int kind)
{
    int64_t acc = 0;
    for (uint32_t w = 0; w < sc->nviews; w++) {
        int64_t v = metrics_load(metrics_field(&sc->views[w]->pools[p], which, idx, f));
        acc = kind == METRICS_KIND_TIMESTAMP ? (v > acc ? v : acc) : acc + v;
    }
    return acc;
}

/* Writes pool p's sample(s) of family `name`, field f of its list. */
typedef void (*metrics_pool_fn)(struct evbuffer *out, const struct metrics_scrape *sc,
                                uint32_t p, const char *name, uint32_t f);

/* One family per field of a stats list (`fields`), named
 * strata_PREFIXfield, with every pool's samples from emit. */
static void metrics_families(struct evbuffer *out, const struct metrics_scrape *sc,
                             const struct metrics_desc *fields, uint32_t nfields,
                             const char *prefix, metrics_pool_fn emit)
{
    char name[128];
    for (uint32_t f = 0; f < nfields; f++) {
        const char *type = metrics_name(&fields[f], prefix, name, sizeof(name));
        metrics_family(out, name, type, fields[f].help);
        for (uint32_t p = 0; p < sc->conf->npools; p++)
            emit(out, sc, p, name, f);
    }
}

/* A pool field (STATS_POOL_LIST) or limit field (STATS_LIMIT_LIST). */
static void metrics_pool_value(struct evbuffer *out, const struct metrics_scrape *sc,
                               uint32_t p, const char *name, uint32_t f)
{
    struct metrics_labels l = { .pool = sc->conf->pools[p].name };
    metrics_value(out, name, &l, pool_fields[f].kind,
                  metrics_sum(sc, p, METRICS_POOL, 0, (int)f, pool_fields[f].kind));
}

static void metrics_limit_value(struct evbuffer *out, const struct metrics_scrape *sc,
                                uint32_t p, const char *name, uint32_t f)
{
    struct metrics_labels l = { .pool = sc->conf->pools[p].name };
    metrics_sample(out, name, &l, metrics_sum(sc, p, METRICS_LIMIT, 0, (int)f,
                                              METRICS_KIND_COUNTER));
}

/* Writes one server's sample(s) of family `name`: field f of server s
 * (flat index) of pool p. */
typedef void (*metrics_server_fn)(struct evbuffer *out, const struct metrics_scrape *sc,
                                  uint32_t p, uint32_t s, const char *name,
                                  const struct metrics_labels *l, uint32_t f);

/* Calls emit for every server of pool p, tier by tier, with its labels. */
static void metrics_servers(struct evbuffer *out, const struct metrics_scrape *sc, uint32_t p,
                            const char *name, metrics_server_fn emit, uint32_t f)
{
    const struct conf_pool *pool = &sc->conf->pools[p];
    const struct conf_tier *ct;
    char tier[32];
    uint32_t s = 0;
    for (uint32_t t = 0; (ct = stats_pool_tier(pool, t)) != NULL; t++) {
        stats_tier_name(pool, t, tier, sizeof(tier));
        for (uint32_t i = 0; i < ct->nservers; i++, s++) {
            char *server = stats_server_label(&ct->servers[i]);
            struct metrics_labels l = { .pool = pool->name, .tier = tier, .server = server };
            emit(out, sc, p, s, name, &l, f);
            free(server);
        }
    }
}

static void metrics_server_value(struct evbuffer *out, const struct metrics_scrape *sc,
                                 uint32_t p, uint32_t s, const char *name,
                                 const struct metrics_labels *l, uint32_t f)
{
    int kind = server_fields[f].kind;
    metrics_value(out, name, l, kind, metrics_sum(sc, p, METRICS_SERVER, s, (int)f, kind));
}

/* Field f of every server of pool p (STATS_SERVER_LIST). */
static void metrics_server_values(struct evbuffer *out, const struct metrics_scrape *sc,
                                  uint32_t p, const char *name, uint32_t f)
{
    metrics_servers(out, sc, p, name, metrics_server_value, f);
}

/* Tier field f of every tier of pool p (tiered pools only, as in the
 * stats JSON, and only the fields of the pool's protocol). */
static void metrics_tier_samples(struct evbuffer *out, const struct metrics_scrape *sc,
                                 uint32_t p, const char *name, uint32_t f)
{
    const struct conf_pool *pool = &sc->conf->pools[p];
    char tier[32];
    if (!pool->tiered || stats_tier_field_redis(f) != pool->redis)
        return;
    for (uint32_t t = 0; t < stats_pool_tier_count(pool); t++) {
        stats_tier_name(pool, t, tier, sizeof(tier));
        struct metrics_labels l = { .pool = pool->name, .tier = tier };
        metrics_sample(out, name, &l,
                       metrics_sum(sc, p, METRICS_TIER, t, (int)f, tier_fields[f].kind));
    }
}

/* name_bucket{..,le=".."} (cumulative), name_sum (seconds), name_count. */
static void metrics_hist_samples(struct evbuffer *out, const char *name,
                                 const struct metrics_labels *l, const struct metrics_hist *h)
{
    int64_t cum = 0;
    for (uint32_t i = 0; i < METRICS_NBUCKETS; i++) {
        cum += h->bucket[i];
        evbuffer_add_printf(out, "%s_bucket", name);
        metrics_labels_open(out, l);
        evbuffer_add_printf(out, "%sle=\"%s\"} %" PRId64 "\n", metrics_labels_any(l) ? "," : "{",
                            i < METRICS_NBOUNDS ? metrics_bounds_le[i] : "+Inf", cum);
    }
    evbuffer_add_printf(out, "%s_sum", name);
    metrics_labels_open(out, l);
    evbuffer_add_printf(out, "%s %" PRId64 ".%09" PRId64 "\n", metrics_labels_any(l) ? "}" : "",
                        h->sum_ns / 1000000000, h->sum_ns % 1000000000);
    evbuffer_add_printf(out, "%s_count", name);
    metrics_labels_open(out, l);
    evbuffer_add_printf(out, "%s %" PRId64 "\n", metrics_labels_any(l) ? "}" : "", cum);
}

static void metrics_pool_latency(struct evbuffer *out, const struct metrics_scrape *sc)
{
    static const char name[] = "strata_request_duration_seconds";
    metrics_family(out, name, "histogram",
                   "Client-observed request time: from the request framed to its reply "
                   "queued on the client connection's output");
    for (uint32_t p = 0; p < sc->conf->npools; p++) {
        struct metrics_hist h = { 0 };
        for (uint32_t w = 0; w < sc->nviews; w++)
            metrics_hist_merge(&h, &sc->views[w]->pools[p].latency);
        struct metrics_labels l = { .pool = sc->conf->pools[p].name };
        metrics_hist_samples(out, name, &l, &h);
    }
}

static void metrics_server_hist(struct evbuffer *out, const struct metrics_scrape *sc,
                                uint32_t p, uint32_t s, const char *name,
                                const struct metrics_labels *l, uint32_t f)
{
    (void)f;
    struct metrics_hist h = { 0 };
    for (uint32_t w = 0; w < sc->nviews; w++)
        metrics_hist_merge(&h, &sc->views[w]->pools[p].servers[s].latency);
    metrics_hist_samples(out, name, l, &h);
}

static void metrics_server_latency(struct evbuffer *out, const struct metrics_scrape *sc)
{
    static const char name[] = "strata_server_request_duration_seconds";
    metrics_family(out, name, "histogram",
                   "Backend round trip: from the request queued on a server connection "
                   "to its reply delivered (with fences, after the batch's fence)");
    for (uint32_t p = 0; p < sc->conf->npools; p++)
        metrics_servers(out, sc, p, name, metrics_server_hist, 0);
}

/* One unlabelled sample with its HELP and TYPE. */
static void metrics_single(struct evbuffer *out, const char *name, const char *type,
                           const char *help, int64_t v)
{
    static const struct metrics_labels none = { 0 };
    metrics_family(out, name, type, help);
    metrics_sample(out, name, &none, v);
}

static void metrics_process_families(struct evbuffer *out, const struct metrics_scrape *sc)
{
    const struct metrics_process *p = sc->p;
    int64_t total = 0, curr = 0;
    stats_connections(sc->conf, p->workers, sc->views, sc->nviews, p->nworkers, &total, &curr);
    metrics_family(out, "strata_build_info", "gauge", "Strata's version, always 1");
    evbuffer_add_printf(out, "strata_build_info{version=\"");
    metrics_escape(out, PACKAGE_VERSION, true);
    evbuffer_add_printf(out, "\"} 1\n");
    metrics_single(out, "strata_start_time_seconds", "gauge",
                   "When the process started, unix seconds", p->start_time_s);
    metrics_single(out, "strata_uptime_seconds", "gauge", "Seconds since the process started",
                   util_wall_s() - p->start_time_s);
    metrics_single(out, "strata_workers", "gauge", "Worker threads", p->nworkers);
    metrics_single(out, "strata_connections_total", "counter",
                   "Connections ever held (the stats JSON's total_connections)", total);
    metrics_single(out, "strata_curr_connections", "gauge",
                   "Connections held now (the stats JSON's curr_connections)", curr);
}

static void metrics_reload_families(struct evbuffer *out, const struct metrics_process *p)
{
    metrics_single(out, "strata_config_generation", "gauge",
                   "The running configuration's generation: 1 at start, +1 per reload",
                   (int64_t)p->generation);
    metrics_single(out, "strata_config_loaded_timestamp_seconds", "gauge",
                   "When the running configuration was loaded, unix seconds", p->loaded_at_s);
    metrics_single(out, "strata_reloads_total", "counter", "Configurations applied by reloads",
                   (int64_t)p->reloads);
    metrics_single(out, "strata_reload_failures_total", "counter",
                   "New configurations rejected", (int64_t)p->reload_failures);
    metrics_single(out, "strata_dns_failures_total", "counter",
                   "Server host name lookups that failed (dns_refresh_interval); the last "
                   "address stays", (int64_t)p->dns_failures);
    if (p->zk_connected >= 0)
        metrics_single(out, "strata_zookeeper_connected", "gauge",
                       "1 while the ZooKeeper session of -c zk://... is connected",
                       p->zk_connected);
}

/* Sums a pool's Strata-only array (cmds or reads) at index i over the
 * views. */
static int64_t metrics_sum_slot(const struct metrics_scrape *sc, uint32_t p, bool cmds,
                                uint32_t i)
{
    int64_t acc = 0;
    for (uint32_t w = 0; w < sc->nviews; w++) {
        const struct stats_pool *sp = &sc->views[w]->pools[p];
        acc += metrics_load(cmds ? &sp->cmds[i] : &sp->reads[i]);
    }
    return acc;
}

/* strata_commands_total{pool,command}: requests forwarded per command
 * (named by the process: cmd_name), those sent at least once. */
static void metrics_commands(struct evbuffer *out, const struct metrics_scrape *sc)
{
    const char *name = "strata_commands_total";
    metrics_family(out, name, "counter", "Requests forwarded to the servers, per command");
    for (uint32_t p = 0; sc->p->cmd_name != NULL && p < sc->conf->npools; p++) {
        const struct conf_pool *pool = &sc->conf->pools[p];
        const char *cmd;
        for (uint32_t i = 0; i < STATS_CMD_SLOTS && (cmd = sc->p->cmd_name(pool, i)); i++) {
            int64_t v = metrics_sum_slot(sc, p, true, i);
            struct metrics_labels l = { .pool = pool->name, .key = "command", .value = cmd };
            if (v > 0)
                metrics_sample(out, name, &l, v);
        }
    }
}

/* strata_read_keys_total{pool,result="hit"|"miss"}. */
static void metrics_reads(struct evbuffer *out, const struct metrics_scrape *sc)
{
    static const char *const results[STATS_READ_NFIELDS] = { "hit", "miss" };
    const char *name = "strata_read_keys_total";
    metrics_family(out, name, "counter",
                   "Keys asked for by reads (get, gets, gat, gats; Redis GET, MGET and other "
                   "reads of one value), found or not");
    for (uint32_t p = 0; p < sc->conf->npools; p++) {
        for (uint32_t r = 0; r < STATS_READ_NFIELDS; r++) {
            struct metrics_labels l = { .pool = sc->conf->pools[p].name, .key = "result",
                                        .value = results[r] };
            metrics_sample(out, name, &l, metrics_sum_slot(sc, p, false, r));
        }
    }
}

void metrics_write(struct evbuffer *out, const struct metrics_process *p)
{
    struct metrics_scrape sc = { .p = p, .conf = p->conf };
    sc.views = util_xcalloc(p->nworkers + 1, sizeof(*sc.views));
    sc.nviews = stats_views_of(p->conf, p->workers, p->nworkers, sc.views);
    metrics_process_families(out, &sc);
    metrics_reload_families(out, p);
    metrics_families(out, &sc, pool_fields, UTIL_ARRAY_LEN(pool_fields), "",
                     metrics_pool_value);
    metrics_families(out, &sc, limit_fields, UTIL_ARRAY_LEN(limit_fields), "",
                     metrics_limit_value);
    metrics_families(out, &sc, server_fields, UTIL_ARRAY_LEN(server_fields), "",
                     metrics_server_values);
    metrics_families(out, &sc, tier_fields, UTIL_ARRAY_LEN(tier_fields), "tier_",
                     metrics_tier_samples);
    metrics_commands(out, &sc);
    metrics_reads(out, &sc);
    metrics_pool_latency(out, &sc);
    metrics_server_latency(out, &sc);
    free(sc.views);
}
