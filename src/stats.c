/* stats: per-worker counters and their sum as nutcracker's JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "strata/stats.h"
#include "strata/util.h"

#define STATS_KIND_COUNTER   0
#define STATS_KIND_GAUGE     1
#define STATS_KIND_TIMESTAMP 2

struct stats_desc {
    const char *name;
    int         kind;
    const char *desc;
};

#define STATS_DESC(name, kind, desc) { #name, STATS_KIND_##kind, desc },
static const struct stats_desc pool_desc[] = { STATS_POOL_LIST(STATS_DESC) };
static const struct stats_desc server_desc[] = { STATS_SERVER_LIST(STATS_DESC) };
#undef STATS_DESC
#define STATS_TIER_DESC(name, desc) { #name, STATS_KIND_COUNTER, desc },
static const struct stats_desc tier_desc[] = { STATS_TIER_LIST(STATS_TIER_DESC) };
#undef STATS_TIER_DESC

const struct conf_tier *stats_pool_tier(const struct conf_pool *pool, uint32_t t)
{
    if (t == 0)
        return &pool->master;
    t--;
    if (pool->slave != NULL) {
        if (t == 0)
            return pool->slave;
        t--;
    }
    if (t < pool->nl1)
        return &pool->l1[t];
    t -= pool->nl1;
    return t < pool->nreplicas ? &pool->replicas[t] : NULL;
}

uint32_t stats_pool_tier_count(const struct conf_pool *pool)
{
    uint32_t n = 0;
    while (stats_pool_tier(pool, n) != NULL)
        n++;
    return n;
}

uint32_t stats_pool_server_count(const struct conf_pool *pool)
{
    uint32_t n = 0;
    const struct conf_tier *tier;
    for (uint32_t t = 0; (tier = stats_pool_tier(pool, t)) != NULL; t++)
        n += tier->nservers;
    return n;
}

const struct conf_server *stats_pool_server(const struct conf_pool *pool, uint32_t i)
{
    const struct conf_tier *tier;
    for (uint32_t t = 0; (tier = stats_pool_tier(pool, t)) != NULL; t++) {
        if (i < tier->nservers)
            return &tier->servers[i];
        i -= tier->nservers;
    }
    return NULL;
}

int stats_worker_init(struct stats_worker *sw, const struct conf *conf)
{
    memset(sw, 0, sizeof(*sw));
    sw->npools = conf->npools;
    sw->pools = util_xcalloc(conf->npools, sizeof(*sw->pools));
    for (uint32_t p = 0; p < conf->npools; p++) {
        struct stats_pool *sp = &sw->pools[p];
        sp->nservers = stats_pool_server_count(&conf->pools[p]);
        sp->servers = util_xcalloc(sp->nservers, sizeof(*sp->servers));
        sp->ntiers = stats_pool_tier_count(&conf->pools[p]);
        sp->tiers = util_xcalloc(sp->ntiers, sizeof(*sp->tiers));
    }
    return 0;
}

void stats_worker_deinit(struct stats_worker *sw)
{
    for (uint32_t p = 0; p < sw->npools; p++) {
        free(sw->pools[p].servers);
        free(sw->pools[p].tiers);
    }
    free(sw->pools);
    memset(sw, 0, sizeof(*sw));
}

static int64_t stats_read(const int64_t *field)
{
    return __atomic_load_n(field, __ATOMIC_RELAXED);
}

/* Sums one field over workers: counters and gauges add up, a timestamp is
 * the latest any worker saw. */
static int64_t stats_combine(int kind, int64_t acc, int64_t v)
{
    if (kind == STATS_KIND_TIMESTAMP)
        return v > acc ? v : acc;
    return acc + v;
}

static const char *server_label(const struct conf_server *cs)
{
    return cs->name != NULL ? cs->name : cs->text;
}

static void json_server(struct evbuffer *out, const struct conf_server *cs,
                        struct stats_worker *const *workers, uint32_t nworkers,
                        uint32_t p, uint32_t s)
{
    evbuffer_add_printf(out, ", \"%s\": {", server_label(cs));
    for (int f = 0; f < STATS_SERVER_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nworkers; w++)
            sum = stats_combine(server_desc[f].kind, sum,
                                stats_read(&workers[w]->pools[p].servers[s].f[f]));
        evbuffer_add_printf(out, "%s\"%s\":%lld", f == 0 ? "" : ", ",
                            server_desc[f].name, (long long)sum);
    }
    evbuffer_add(out, "}", 1);
}

/* Tiered pools only (plain pools keep nutcracker's exact shape): one
 * object per tier, "tier:master", "tier:slave", "tier:l1[0]", ... */
static void json_tiers(struct evbuffer *out, const struct conf_pool *pool,
                       struct stats_worker *const *workers, uint32_t nworkers,
                       uint32_t p)
{
    uint32_t ntiers = stats_pool_tier_count(pool);
    uint32_t nl1 = 0, nrep = 0;
    for (uint32_t t = 0; t < ntiers; t++) {
        const struct conf_tier *ct = stats_pool_tier(pool, t);
        if (ct == &pool->master)
            evbuffer_add_printf(out, ", \"tier:master\": {");
        else if (ct == pool->slave)
            evbuffer_add_printf(out, ", \"tier:slave\": {");
        else if (nl1 < pool->nl1 && ct == &pool->l1[nl1])
            evbuffer_add_printf(out, ", \"tier:l1[%u]\": {", nl1++);
        else
            evbuffer_add_printf(out, ", \"tier:replicas[%u]\": {", nrep++);
        for (int f = 0; f < STATS_TIER_NFIELDS; f++) {
            int64_t sum = 0;
            for (uint32_t w = 0; w < nworkers; w++)
                sum += stats_read(&workers[w]->pools[p].tiers[t].f[f]);
            evbuffer_add_printf(out, "%s\"%s\":%lld", f == 0 ? "" : ", ",
                                tier_desc[f].name, (long long)sum);
        }
        evbuffer_add(out, "}", 1);
    }
}

static void json_pool(struct evbuffer *out, const struct conf_pool *pool,
                      struct stats_worker *const *workers, uint32_t nworkers,
                      uint32_t p)
{
    evbuffer_add_printf(out, ", \"%s\": {", pool->name);
    for (int f = 0; f < STATS_POOL_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nworkers; w++)
            sum = stats_combine(pool_desc[f].kind, sum,
                                stats_read(&workers[w]->pools[p].f[f]));
        evbuffer_add_printf(out, "%s\"%s\":%lld", f == 0 ? "" : ", ",
                            pool_desc[f].name, (long long)sum);
    }
    uint32_t n = stats_pool_server_count(pool);
    for (uint32_t s = 0; s < n; s++)
        json_server(out, stats_pool_server(pool, s), workers, nworkers, p, s);
    if (pool->tiered)
        json_tiers(out, pool, workers, nworkers, p);
    evbuffer_add(out, "}", 1);
}

void stats_json(struct evbuffer *out, const struct conf *conf,
                struct stats_worker *const *workers, uint32_t nworkers,
                int64_t start_time_s)
{
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    int64_t now = util_wall_s(), total = 0, curr = 0;
    for (uint32_t w = 0; w < nworkers; w++) {
        total += stats_read(&workers[w]->total_connections);
        curr += stats_read(&workers[w]->curr_connections);
    }
    evbuffer_add_printf(out,
        "{\"service\":\"nutcracker\", \"source\":\"%s\", \"version\":\"%s\", "
        "\"uptime\":%lld, \"timestamp\":%lld, \"total_connections\":%lld, "
        "\"curr_connections\":%lld",
        host, PACKAGE_VERSION, (long long)(now - start_time_s), (long long)now,
        (long long)total, (long long)curr);
    for (uint32_t p = 0; p < conf->npools; p++)
        json_pool(out, &conf->pools[p], workers, nworkers, p);
    evbuffer_add(out, "}\n", 2);
}

void stats_describe(void)
{
    printf("This is strata-%s\n\npool stats:\n", PACKAGE_VERSION);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(pool_desc); i++)
        printf("  %-20s\"%s\"\n", pool_desc[i].name, pool_desc[i].desc);
    printf("\nserver stats:\n");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(server_desc); i++)
        printf("  %-20s\"%s\"\n", server_desc[i].name, server_desc[i].desc);
    printf("\ntier stats (tiered pools, as \"tier:NAME\" objects):\n");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(tier_desc); i++)
        printf("  %-20s\"%s\"\n", tier_desc[i].name, tier_desc[i].desc);
}
