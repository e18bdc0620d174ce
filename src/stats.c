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
#define STATS_TIER_DESC(name, kind, desc) { #name, STATS_KIND_##kind, desc },
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

struct stats_view *stats_view_new(const struct conf *conf)
{
    struct stats_view *v = util_xcalloc(1, sizeof(*v));
    v->conf = conf;
    v->npools = conf->npools;
    v->pools = util_xcalloc(conf->npools + 1, sizeof(*v->pools));
    for (uint32_t p = 0; p < conf->npools; p++) {
        struct stats_pool *sp = &v->pools[p];
        sp->nservers = stats_pool_server_count(&conf->pools[p]);
        sp->servers = util_xcalloc(sp->nservers + 1, sizeof(*sp->servers));
        sp->ntiers = stats_pool_tier_count(&conf->pools[p]);
        sp->tiers = util_xcalloc(sp->ntiers + 1, sizeof(*sp->tiers));
    }
    return v;
}

void stats_view_free(struct stats_view *v)
{
    if (v == NULL)
        return;
    for (uint32_t p = 0; p < v->npools; p++) {
        free(v->pools[p].servers);
        free(v->pools[p].tiers);
    }
    free(v->pools);
    free(v);
}

static bool str_same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Server i of pool `to`'s flat order, found in `from`: the same tier
 * name and the same server (address and name); UINT32_MAX if none. */
static uint32_t stats_server_match(const struct conf_pool *to, uint32_t i,
                                   const struct conf_pool *from)
{
    const struct conf_tier *tier;
    uint32_t t = 0, first = 0;
    for (; (tier = stats_pool_tier(to, t)) != NULL; t++, first += tier->nservers)
        if (i < first + tier->nservers)
            break;
    if (tier == NULL)
        return UINT32_MAX;
    const struct conf_server *cs = &tier->servers[i - first];
    char name[32], other[32];
    stats_tier_name(to, t, name, sizeof(name));
    const struct conf_tier *ft;
    uint32_t base = 0;
    for (uint32_t u = 0; (ft = stats_pool_tier(from, u)) != NULL; u++, base += ft->nservers) {
        stats_tier_name(from, u, other, sizeof(other));
        if (strcmp(name, other) != 0)
            continue;
        for (uint32_t j = 0; j < ft->nservers; j++)
            if (strcmp(ft->servers[j].text, cs->text) == 0 &&
                str_same(ft->servers[j].name, cs->name))
                return base + j;
    }
    return UINT32_MAX;
}

static void stats_copy(int64_t *to, const int64_t *from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        __atomic_store_n(&to[i], __atomic_load_n(&from[i], __ATOMIC_RELAXED),
                         __ATOMIC_RELAXED);
}

void stats_view_carry(struct stats_view *to, const struct stats_view *from)
{
    for (uint32_t p = 0; p < to->npools; p++) {
        const struct conf_pool *tp = &to->conf->pools[p];
        for (uint32_t q = 0; q < from->npools; q++) {
            const struct conf_pool *fp = &from->conf->pools[q];
            if (strcmp(tp->name, fp->name) != 0)
                continue;
            struct stats_pool *dst = &to->pools[p];
            const struct stats_pool *src = &from->pools[q];
            stats_copy(dst->f, src->f, STATS_POOL_NFIELDS);
            stats_copy(dst->limits, src->limits, STATS_LIMIT_NFIELDS);
            stats_copy(dst->cmds, src->cmds, STATS_CMD_SLOTS);
            stats_copy(dst->reads, src->reads, STATS_READ_NFIELDS);
            metrics_hist_copy(&dst->latency, &src->latency);
            for (uint32_t s = 0; s < dst->nservers; s++) {
                uint32_t m = stats_server_match(tp, s, fp);
                if (m == UINT32_MAX)
                    continue;
                stats_copy(dst->servers[s].f, src->servers[m].f, STATS_SERVER_NFIELDS);
                metrics_hist_copy(&dst->servers[s].latency, &src->servers[m].latency);
            }
            for (uint32_t t = 0; t < dst->ntiers; t++) {
                char a[32], b[32];
                stats_tier_name(tp, t, a, sizeof(a));
                for (uint32_t u = 0; u < src->ntiers; u++) {
                    stats_tier_name(fp, u, b, sizeof(b));
                    if (strcmp(a, b) == 0)
                        stats_copy(dst->tiers[t].f, src->tiers[u].f, STATS_TIER_NFIELDS);
                }
            }
            break;
        }
    }
}

int stats_worker_init(struct stats_worker *sw, const struct conf *conf)
{
    memset(sw, 0, sizeof(*sw));
    sw->view = stats_view_new(conf);
    return 0;
}

void stats_worker_deinit(struct stats_worker *sw)
{
    stats_view_free(sw->view);
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
char *stats_server_label(const struct conf_server *cs)
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
                        const struct stats_view *const *views, uint32_t nviews,
                        uint32_t p, uint32_t s, bool first)
{
    json_open(out, label, first);
    for (int f = 0; f < STATS_SERVER_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nviews; w++)
            sum = stats_combine(server_desc[f].kind, sum,
                                stats_read(&views[w]->pools[p].servers[s].f[f]));
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
                         const struct stats_view *const *views, uint32_t nviews,
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
            char *label = stats_server_label(&tier->servers[i]);
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
            json_server(out, labels[i].name, views, nviews, p, labels[i].index, first);
        stats_labels_free(labels, tier->nservers);
        flat += tier->nservers;
    }
}

/* Tiered pools only (plain pools keep nutcracker's exact shape): one
 * object per tier, "tier:master", "tier:slave", "tier:l1[0]", ...; each
 * with the counters of its pool's protocol. */
static void json_tiers(struct evbuffer *out, const struct conf_pool *pool,
                       const struct stats_view *const *views, uint32_t nviews,
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
            for (uint32_t w = 0; w < nviews; w++)
                sum += stats_read(&views[w]->pools[p].tiers[t].f[f]);
            evbuffer_add_printf(out, "%s\"%s\":%lld", first ? "" : ", ",
                                tier_desc[f].name, (long long)sum);
            first = false;
        }
        evbuffer_add(out, "}", 1);
    }
}

static void json_pool(struct evbuffer *out, const struct conf_pool *pool,
                      const struct stats_view *const *views, uint32_t nviews,
                      uint32_t p, bool first)
{
    json_open(out, pool->name, first);
    for (int f = 0; f < STATS_POOL_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nviews; w++)
            sum = stats_combine(pool_desc[f].kind, sum,
                                stats_read(&views[w]->pools[p].f[f]));
        evbuffer_add_printf(out, "%s\"%s\":%lld", f == 0 ? "" : ", ",
                            pool_desc[f].name, (long long)sum);
    }
    json_servers(out, pool, views, nviews, p);
    if (pool->tiered)
        json_tiers(out, pool, views, nviews, p);
    evbuffer_add(out, "}", 1);
}

/* nutcracker's total_connections and curr_connections count every
 * connection it holds: one listening socket per pool, clients and server
 * connections. Ours hold the same kinds: a listening socket per pool and
 * worker (one shared unix socket), clients, and each worker's server
 * connections. A server connection ends with exactly one of server_eof,
 * server_err or server_timedout, so those sum to the ones closed. */
void stats_connections(const struct conf *conf, struct stats_worker *const *workers,
                       const struct stats_view *const *views, uint32_t nviews,
                       uint32_t nworkers, int64_t *total, int64_t *curr)
{
    int64_t listeners = 0, open = 0, closed = 0;
    int64_t clients_total = 0, clients_curr = 0;
    for (uint32_t p = 0; p < conf->npools; p++)
        listeners += conf->pools[p].listen.addr.path != NULL ? 1 : nworkers;
    for (uint32_t w = 0; w < nworkers; w++) {
        clients_total += stats_read(&workers[w]->total_connections);
        clients_curr += stats_read(&workers[w]->curr_connections);
    }
    for (uint32_t w = 0; w < nviews; w++) {
        for (uint32_t p = 0; p < views[w]->npools; p++) {
            const struct stats_pool *sp = &views[w]->pools[p];
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

/* The workers' views of `conf`: a worker still switching from an older
 * configuration is left out for that moment. Returns how many. */
uint32_t stats_views_of(const struct conf *conf, struct stats_worker *const *workers,
                        uint32_t nworkers, const struct stats_view **views)
{
    uint32_t n = 0;
    for (uint32_t w = 0; w < nworkers; w++) {
        const struct stats_view *v = __atomic_load_n(&workers[w]->view, __ATOMIC_ACQUIRE);
        if (v != NULL && (conf == NULL || v->conf == conf))
            views[n++] = v;
    }
    return n;
}

void stats_json(struct evbuffer *out, const struct conf *conf,
                struct stats_worker *const *workers, uint32_t nworkers,
                int64_t start_time_s)
{
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    const struct stats_view **views = util_xcalloc(nworkers + 1, sizeof(*views));
    uint32_t nviews = stats_views_of(conf, workers, nworkers, views);
    int64_t now = util_wall_s(), total, curr;
    stats_connections(conf, workers, views, nviews, nworkers, &total, &curr);
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
        json_pool(out, &conf->pools[pools[i].index], views, nviews,
                  pools[i].index, i == 0);
    stats_labels_free(pools, conf->npools);
    free(views);
    evbuffer_add(out, "}\n", 2);
}

void stats_limits_stat_lines(struct evbuffer *out, struct stats_worker *const *workers,
                             uint32_t nworkers)
{
    const struct stats_view **views = util_xcalloc(nworkers + 1, sizeof(*views));
    uint32_t nviews = stats_views_of(NULL, workers, nworkers, views);
    for (int f = 0; f < STATS_LIMIT_NFIELDS; f++) {
        int64_t sum = 0;
        for (uint32_t w = 0; w < nviews; w++)
            for (uint32_t p = 0; p < views[w]->npools; p++)
                sum += stats_read(&views[w]->pools[p].limits[f]);
        evbuffer_add_printf(out, "STAT %s %lld\r\n", limit_desc[f].name, (long long)sum);
    }
    free(views);
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
