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
#define STATS_LIMIT_DESC(name, desc) { #name, STATS_KIND_COUNTER, desc },
static const struct stats_desc limit_desc[] = { STATS_LIMIT_LIST(STATS_LIMIT_DESC) };
#undef STATS_LIMIT_DESC

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
    if (t < pool->nreplicas)
        return &pool->replicas[t];
    t -= pool->nreplicas;
    return t < pool->nslaves ? &pool->slaves[t] : NULL;
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

/* ---- nutcracker's JSON ----
 *
 * nutcracker names a server in its stats by its name when the pool file
 * gives one, else by "host:port" as written ("host" alone for port 11211,
 * libmemcached's habit, and "path:" for a unix socket). It lists pools and
 * the servers of a pool sorted by that name, shorter names first, then
 * byte by byte (it sorts them to find duplicates and keeps that order).
 * We write the same names in the same order with the same separators, so
 * a parser, a diff or a regex written against nutcracker reads ours. */

struct stats_label {
    char    *name;    /* heap copy */
    size_t   len;
    uint32_t index;   /* pool index, or flat server index */
};

/* A server's name in the stats, as a new string. Unnamed servers keep
 * "host:port" exactly as the pool file writes it (cs->text without its
 * ":weight"), as nutcracker takes it verbatim. */
static char *server_label(const struct conf_server *cs)
{
    if (cs->name != NULL)
        return util_xstrdup(cs->name);
    const char *text = cs->text;
    const char *weight = strrchr(text, ':');
    size_t len = weight != NULL ? (size_t)(weight - text) : strlen(text);
    bool unix_path = cs->addr.path != NULL;
    if (!unix_path && cs->addr.port == 11211) {
        size_t port = len;                          /* drop ":11211" */
        while (port > 0 && text[port - 1] != ':')
            port--;
        if (port > 0)
            len = port - 1;
    }
    char *out = util_xcalloc(1, len + 2);
    memcpy(out, text, len);
    if (unix_path)
        out[len] = ':';                            /* nutcracker's "path:" */
    return out;
}

/* nutcracker's string_compare: length first, then bytes. */
static int stats_label_cmp(const void *l, const void *r)
{
    const struct stats_label *a = l, *b = r;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    int c = memcmp(a->name, b->name, a->len);
    if (c != 0)
        return c;
    return (a->index > b->index) - (a->index < b->index);
}

static void stats_labels_sort(struct stats_label *labels, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        labels[i].len = strlen(labels[i].name);
    qsort(labels, n, sizeof(*labels), stats_label_cmp);
}

static void stats_labels_free(struct stats_label *labels, uint32_t n)
{
    for (uint32_t i = 0; labels != NULL && i < n; i++)
        free(labels[i].name);
    free(labels);
}

/* A JSON string body: names come from the pool file, so escape what JSON
 * cannot carry raw (nutcracker does not; for ordinary names the bytes are
 * the same). */
static void json_string(struct evbuffer *out, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            evbuffer_add_printf(out, "\\%c", ch);
        else if (ch < 0x20)
            evbuffer_add_printf(out, "\\u%04x", ch);
        else
            evbuffer_add(out, s, 1);
    }
}

/* `, "name": {` before the first member of an object, `,"name": {` after
 * a closed one: nutcracker's separators. */
static void json_open(struct evbuffer *out, const char *name, bool first)
{
    if (first)
        evbuffer_add(out, ", \"", 3);
    else
        evbuffer_add(out, ",\"", 2);
    json_string(out, name);
    evbuffer_add(out, "\": {", 4);
}

static void json_server(struct evbuffer *out, const char *label,
                        struct stats_worker *const *workers, uint32_t nworkers,
                        uint32_t p, uint32_t s, bool first)
{
    json_open(out, label, first);
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

/* "master", "slave", "l1[i]", "replicas[i]" or "slaves[i]": tier t of a
 * pool in the order of stats_pool_tier. */
void stats_tier_name(const struct conf_pool *pool, uint32_t t, char *out, size_t len)
{
    uint32_t first_l1 = 1 + (pool->slave != NULL);
    uint32_t first_replica = first_l1 + pool->nl1;
    uint32_t first_slaves = first_replica + pool->nreplicas;
    if (t == 0)
        snprintf(out, len, "master");
    else if (t < first_l1)
        snprintf(out, len, "slave");
    else if (t < first_replica)
        snprintf(out, len, "l1[%u]", t - first_l1);
    else if (t < first_slaves)
        snprintf(out, len, "replicas[%u]", t - first_replica);
    else
        snprintf(out, len, "slaves[%u]", t - first_slaves);
}

/* The servers of each tier, in nutcracker's order within the tier; tiers
 * in the order master, slave, l1s, replicas (a plain pool has one). In a
 * tiered pool the servers of the other tiers than master are prefixed
 * with their tier, "slave:NAME", "l1[0]:NAME", since two tiers may hold
 * servers of the same name and a JSON object cannot repeat a key. */
static void json_servers(struct evbuffer *out, const struct conf_pool *pool,
                         struct stats_worker *const *workers, uint32_t nworkers,
                         uint32_t p)
{
    const struct conf_tier *tier;
    uint32_t flat = 0;
    bool first = true;
    for (uint32_t t = 0; (tier = stats_pool_tier(pool, t)) != NULL; t++) {
        struct stats_label *labels = util_xcalloc(tier->nservers + 1, sizeof(*labels));
        char prefix[32] = "";
        if (t > 0)
            stats_tier_name(pool, t, prefix, sizeof(prefix));
        for (uint32_t i = 0; i < tier->nservers; i++) {
            char *label = server_label(&tier->servers[i]);
            if (t > 0) {
                size_t len = strlen(prefix) + 1 + strlen(label) + 1;
                labels[i].name = util_xcalloc(1, len);
                snprintf(labels[i].name, len, "%s:%s", prefix, label);
                free(label);
            } else {
                labels[i].name = label;
            }
            labels[i].index = flat + i;
        }
        stats_labels_sort(labels, tier->nservers);
        for (uint32_t i = 0; i < tier->nservers; i++, first = false)
            json_server(out, labels[i].name, workers, nworkers, p, labels[i].index, first);
        stats_labels_free(labels, tier->nservers);
        flat += tier->nservers;
    }
}

/* Tiered pools only (plain pools keep nutcracker's exact shape): one
 * object per tier, "tier:master", "tier:slave", "tier:l1[0]", ...; each
 * with the counters of its pool's protocol. */
static void json_tiers(struct evbuffer *out, const struct conf_pool *pool,
                       struct stats_worker *const *workers, uint32_t nworkers,
                       uint32_t p)
{
    uint32_t ntiers = stats_pool_tier_count(pool);
    char tier[32], name[40];
    for (uint32_t t = 0; t < ntiers; t++) {
        stats_tier_name(pool, t, tier, sizeof(tier));
        snprintf(name, sizeof(name), "tier:%s", tier);
        json_open(out, name, false);
        bool first = true;
        for (int f = 0; f < STATS_TIER_NFIELDS; f++) {
            if (stats_tier_field_redis(f) != pool->redis)
                continue;
            int64_t sum = 0;
            for (uint32_t w = 0; w < nworkers; w++)
                sum += stats_read(&workers[w]->pools[p].tiers[t].f[f]);
            evbuffer_add_printf(out, "%s\"%s\":%lld", first ? "" : ", ",
                                tier_desc[f].name, (long long)sum);
            first = false;
        }
        evbuffer_add(out, "}", 1);
    }
}

static void json_pool(struct evbuffer *out, const struct conf_pool *pool,
                      struct stats_worker *const *workers, uint32_t nworkers,
                      uint32_t p, bool first)
{
    json_open(out, pool->name, first);
    for (int f = 0; f < STATS_POOL_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nworkers; w++)
            sum = stats_combine(pool_desc[f].kind, sum,
                                stats_read(&workers[w]->pools[p].f[f]));
        evbuffer_add_printf(out, "%s\"%s\":%lld", f == 0 ? "" : ", ",
                            pool_desc[f].name, (long long)sum);
    }
    json_servers(out, pool, workers, nworkers, p);
    if (pool->tiered)
        json_tiers(out, pool, workers, nworkers, p);
    evbuffer_add(out, "}", 1);
}

/* nutcracker's total_connections and curr_connections count every
 * connection it holds: one listening socket per pool, clients and server
 * connections. Ours hold the same kinds: a listening socket per pool and
 * worker (one shared unix socket), clients, and each worker's server
 * connections. A server connection ends with exactly one of server_eof,
 * server_err or server_timedout, so those sum to the ones closed. */
static void stats_connections(const struct conf *conf, struct stats_worker *const *workers,
                              uint32_t nworkers, int64_t *total, int64_t *curr)
{
    int64_t listeners = 0, open = 0, closed = 0;
    int64_t clients_total = 0, clients_curr = 0;
    for (uint32_t p = 0; p < conf->npools; p++)
        listeners += conf->pools[p].listen.addr.path != NULL ? 1 : nworkers;
    for (uint32_t w = 0; w < nworkers; w++) {
        clients_total += stats_read(&workers[w]->total_connections);
        clients_curr += stats_read(&workers[w]->curr_connections);
        for (uint32_t p = 0; p < workers[w]->npools; p++) {
            const struct stats_pool *sp = &workers[w]->pools[p];
            for (uint32_t s = 0; s < sp->nservers; s++) {
                const int64_t *f = sp->servers[s].f;
                open += stats_read(&f[STATS_server_connections]);
                closed += stats_read(&f[STATS_server_eof]) +
                          stats_read(&f[STATS_server_err]) +
                          stats_read(&f[STATS_server_timedout]);
            }
        }
    }
    *curr = listeners + clients_curr + open;
    *total = listeners + clients_total + open + closed;
}

void stats_json(struct evbuffer *out, const struct conf *conf,
                struct stats_worker *const *workers, uint32_t nworkers,
                int64_t start_time_s)
{
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    int64_t now = util_wall_s(), total, curr;
    stats_connections(conf, workers, nworkers, &total, &curr);
    static const char head[] = "{\"service\":\"nutcracker\", \"source\":\"";
    evbuffer_add(out, head, sizeof(head) - 1);
    json_string(out, host);
    evbuffer_add_printf(out,
        "\", \"version\":\"%s\", \"uptime\":%lld, \"timestamp\":%lld, "
        "\"total_connections\":%lld, \"curr_connections\":%lld",
        PACKAGE_VERSION, (long long)(now - start_time_s), (long long)now,
        (long long)total, (long long)curr);
    struct stats_label *pools = util_xcalloc(conf->npools + 1, sizeof(*pools));
    for (uint32_t p = 0; p < conf->npools; p++) {
        pools[p].name = util_xstrdup(conf->pools[p].name);
        pools[p].index = p;
    }
    stats_labels_sort(pools, conf->npools);
    for (uint32_t i = 0; i < conf->npools; i++)
        json_pool(out, &conf->pools[pools[i].index], workers, nworkers,
                  pools[i].index, i == 0);
    stats_labels_free(pools, conf->npools);
    evbuffer_add(out, "}\n", 2);
}

void stats_limits_stat_lines(struct evbuffer *out, struct stats_worker *const *workers,
                             uint32_t nworkers)
{
    for (int f = 0; f < STATS_LIMIT_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nworkers; w++)
            for (uint32_t p = 0; p < workers[w]->npools; p++)
                sum += stats_read(&workers[w]->pools[p].limits[f]);
        evbuffer_add_printf(out, "STAT %s %lld\r\n", limit_desc[f].name, (long long)sum);
    }
}

void stats_describe(FILE *out)
{
    fprintf(out, "pool stats:\n");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(pool_desc); i++)
        fprintf(out, "  %-20s\"%s\"\n", pool_desc[i].name, pool_desc[i].desc);
    fprintf(out, "\nserver stats:\n");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(server_desc); i++)
        fprintf(out, "  %-20s\"%s\"\n", server_desc[i].name, server_desc[i].desc);
    fprintf(out, "\ntier stats (tiered pools only, as \"tier:NAME\" objects):\n");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(tier_desc); i++)
        fprintf(out, "  %-20s\"%s\"\n", tier_desc[i].name, tier_desc[i].desc);
    fprintf(out, "\nlimit stats (the proxy's \"stats\" command, summed over pools):\n");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(limit_desc); i++)
        fprintf(out, "  %-20s\"%s\"\n", limit_desc[i].name, limit_desc[i].desc);
}
