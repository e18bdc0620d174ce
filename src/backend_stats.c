/* backend_stats: the servers' own counters, collected in the background
 * (see backend_stats.h for the picture). Everything runs on the main
 * thread's event base: no lock, and nothing a worker touches. */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "strata/backend_stats.h"
#include "strata/conf.h"
#include "strata/log.h"
#include "strata/metrics.h"
#include "strata/stats.h"
#include "strata/util.h"

#define BS_FIELD_NAME(f, help) #f,
#define BS_FIELD_HELP(f, help) help,
static const char *const bs_mc_names[] = { BACKEND_STATS_MC_LIST(BS_FIELD_NAME) };
static const char *const bs_mc_help[] = { BACKEND_STATS_MC_LIST(BS_FIELD_HELP) };
static const char *const bs_redis_names[] = { BACKEND_STATS_REDIS_LIST(BS_FIELD_NAME) };
static const char *const bs_redis_help[] = { BACKEND_STATS_REDIS_LIST(BS_FIELD_HELP) };
#undef BS_FIELD_NAME
#undef BS_FIELD_HELP

#define BS_MAX_FIELDS 16
#define BS_REPLY_MAX  (1 << 20)   /* a stats or INFO reply larger is refused */

/* One server in one round. */
struct bs_server {
    struct backend_stats *owner;
    char                 *pool;      /* names, as the configuration gives them */
    char                 *tier;
    char                 *label;     /* stats_server_label */
    bool                  redis;
    struct bufferevent   *bev;       /* while it is asked */
    bool                  ok;        /* answered this round */
    int64_t               v[BS_MAX_FIELDS];
};

struct backend_stats {
    struct event_base        *base;
    const struct conf *const *conf;
    int                       interval_ms;
    int                       timeout_ms;
    struct event             *timer;
    struct bs_server         *round;  /* being collected */
    uint32_t                  nround;
    uint32_t                  pending;
    struct bs_server         *last;   /* the last round done: written by the
                                         main thread under lock, read there
                                         freely and by workers under lock */
    uint32_t                  nlast;
    pthread_mutex_t           lock;
};

static void bs_servers_free(struct bs_server *s, uint32_t n)
{
    for (uint32_t i = 0; s != NULL && i < n; i++) {
        if (s[i].bev != NULL)
            bufferevent_free(s[i].bev);
        free(s[i].pool);
        free(s[i].tier);
        free(s[i].label);
    }
    free(s);
}

/* The round is over: it becomes the last one. */
static void bs_publish(struct backend_stats *bs)
{
    struct bs_server *old = bs->last;
    uint32_t nold = bs->nlast;
    pthread_mutex_lock(&bs->lock);
    bs->last = bs->round;
    bs->nlast = bs->nround;
    pthread_mutex_unlock(&bs->lock);
    bs_servers_free(old, nold);
    bs->round = NULL;
    bs->nround = 0;
    bs->pending = 0;
}

/* One server is done, answered or not. */
static void bs_server_done(struct bs_server *s, bool ok)
{
    struct backend_stats *bs = s->owner;
    if (s->bev != NULL)
        bufferevent_free(s->bev);
    s->bev = NULL;
    s->ok = ok;
    if (--bs->pending == 0)
        bs_publish(bs);
}

int backend_stats_parse(const char *text, const char *field, int64_t *v)
{
    size_t flen = strlen(field);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *name = strncmp(line, "STAT ", 5) == 0 ? line + 5 : line;
        /* name[flen] is read only once the first flen bytes matched (so
         * it is within the text, its NUL at worst) */
        if (strncmp(name, field, flen) == 0 && (name[flen] == ' ' || name[flen] == ':')) {
            char *end;
            long long x = strtoll(name + flen + 1, &end, 10);
            if (end == name + flen + 1)
                return -1;
            *v = x;
            return 0;
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return -1;
}

/* Whether the reply in `in` is whole: "END\r\n" closes memcached's; a
 * Redis reply is an optional "+OK" (AUTH) then a bulk "$N\r\n...\r\n".
 * Sets *body to where the fields start (copied, NUL-ended). */
static bool bs_reply_whole(struct bs_server *s, struct evbuffer *in, char **body)
{
    size_t len = evbuffer_get_length(in);
    char *text = (char *)evbuffer_pullup(in, (ev_ssize_t)len);
    if (text == NULL)
        return false;
    if (!s->redis) {
        if (len < 5 || memcmp(text + len - 5, "END\r\n", 5) != 0)
            return false;
        *body = util_xcalloc(1, len + 1);
        memcpy(*body, text, len);
        return true;
    }
    const char *bulk = memchr(text, '$', len);
    const char *eol = bulk != NULL ? memchr(bulk, '\n', len - (size_t)(bulk - text)) : NULL;
    if (eol == NULL)
        return false;
    long n = strtol(bulk + 1, NULL, 10);
    size_t start = (size_t)(eol + 1 - text);
    if (n < 0 || start + (size_t)n > len)
        return false;
    *body = util_xcalloc(1, (size_t)n + 1);
    memcpy(*body, text + start, (size_t)n);
    return true;
}

static void bs_on_read(struct bufferevent *bev, void *arg)
{
    struct bs_server *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    const char *const *names = s->redis ? bs_redis_names : bs_mc_names;
    size_t n = s->redis ? UTIL_ARRAY_LEN(bs_redis_names) : UTIL_ARRAY_LEN(bs_mc_names);
    char *body = NULL;
    if (evbuffer_get_length(in) > BS_REPLY_MAX) {
        bs_server_done(s, false);
        return;
    }
    if (!bs_reply_whole(s, in, &body))
        return;
    for (size_t f = 0; f < n; f++)
        if (backend_stats_parse(body, names[f], &s->v[f]) != 0)
            s->v[f] = 0;
    free(body);
    bs_server_done(s, true);
}

static void bs_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        bs_server_done(arg, false);
}

/* Asks server cs of `pool` (its tier named tier) for its counters. */
static void bs_ask(struct backend_stats *bs, struct bs_server *s, const struct conf_pool *pool,
                   const struct conf_server *cs)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[128];
    struct timeval tv = { bs->timeout_ms / 1000, (bs->timeout_ms % 1000) * 1000 };
    s->bev = util_resolve(&cs->addr, &ss, &len, err, sizeof(err)) == 0
                 ? bufferevent_socket_new(bs->base, -1, BEV_OPT_CLOSE_ON_FREE)
                 : NULL;
    if (s->bev == NULL) {
        s->ok = false;
        return;
    }
    bs->pending++;
    bufferevent_setcb(s->bev, bs_on_read, NULL, bs_on_event, s);
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_enable(s->bev, EV_READ);
    struct evbuffer *out = bufferevent_get_output(s->bev);
    if (s->redis && pool->redis_auth != NULL)
        evbuffer_add_printf(out, "AUTH %s\r\n", pool->redis_auth);
    evbuffer_add_printf(out, "%s\r\n", s->redis ? "INFO" : "stats");
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&ss, (int)len) != 0)
        bs_server_done(s, false);
}

/* The round's time is up: the servers still asked count as down, and
 * what answered is published. */
static void bs_round_end(struct backend_stats *bs)
{
    for (uint32_t i = 0; i < bs->nround; i++) {
        if (bs->round[i].bev == NULL)
            continue;
        bufferevent_free(bs->round[i].bev);
        bs->round[i].bev = NULL;
        bs->round[i].ok = false;
    }
    bs_publish(bs);
}

/* A round: every server of the running configuration is asked. */
static void bs_round(struct backend_stats *bs)
{
    const struct conf *conf = *bs->conf;
    uint32_t n = 0, i = 0;
    for (uint32_t p = 0; p < conf->npools; p++)
        n += stats_pool_server_count(&conf->pools[p]);
    if (bs->round != NULL)
        bs_round_end(bs);
    bs->round = util_xcalloc(n + 1, sizeof(*bs->round));
    bs->nround = n;
    bs->pending = 1;      /* until every server was asked */
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *pool = &conf->pools[p];
        const struct conf_tier *ct;
        for (uint32_t t = 0; (ct = stats_pool_tier(pool, t)) != NULL; t++) {
            char tier[32];
            stats_tier_name(pool, t, tier, sizeof(tier));
            for (uint32_t k = 0; k < ct->nservers; k++, i++) {
                struct bs_server *s = &bs->round[i];
                *s = (struct bs_server){ .owner = bs, .redis = pool->redis,
                                         .pool = util_xstrdup(pool->name),
                                         .tier = util_xstrdup(tier),
                                         .label = stats_server_label(&ct->servers[k]) };
                bs_ask(bs, s, pool, &ct->servers[k]);
            }
        }
    }
    if (--bs->pending == 0)
        bs_publish(bs);
}

static void bs_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct backend_stats *bs = arg;
    struct timeval tv = { bs->interval_ms / 1000, (bs->interval_ms % 1000) * 1000 };
    bs_round(bs);
    evtimer_add(bs->timer, &tv);
}

struct backend_stats *backend_stats_create(struct event_base *base,
                                           const struct conf *const *conf,
                                           int interval_ms, int timeout_ms)
{
    if (interval_ms <= 0)
        return NULL;
    struct backend_stats *bs = util_xcalloc(1, sizeof(*bs));
    bs->base = base;
    bs->conf = conf;
    bs->interval_ms = interval_ms;
    bs->timeout_ms = timeout_ms < interval_ms ? timeout_ms : interval_ms;
    bs->timer = evtimer_new(base, bs_on_timer, bs);
    if (bs->timer == NULL) {
        free(bs);
        return NULL;
    }
    pthread_mutex_init(&bs->lock, NULL);
    event_active(bs->timer, EV_TIMEOUT, 0);   /* a first round at once */
    return bs;
}

void backend_stats_destroy(struct backend_stats **bsp)
{
    struct backend_stats *bs = *bsp;
    if (bs == NULL)
        return;
    event_free(bs->timer);
    bs_servers_free(bs->round, bs->nround);
    bs_servers_free(bs->last, bs->nlast);
    pthread_mutex_destroy(&bs->lock);
    free(bs);
    *bsp = NULL;
}

/* ---- the stats command -------------------------------------------------- */

static bool bs_sum(const struct backend_stats *bs, const char *pool, const char *tier,
                   size_t f, int64_t *sum);

/* The tiers of `pool` in the last round, each once, in order: `tiers`
 * gets up to max names (pointers into the round). */
static uint32_t bs_tiers(const struct backend_stats *bs, const char *pool, const char **tiers,
                         uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < bs->nlast && n < max; i++) {
        const struct bs_server *s = &bs->last[i];
        bool seen = false;
        for (uint32_t k = 0; k < n && !seen; k++)
            seen = strcmp(tiers[k], s->tier) == 0;
        if (strcmp(s->pool, pool) == 0 && !seen)
            tiers[n++] = s->tier;
    }
    return n;
}

/* One line: "STAT tier:name v" for the stats command, "tier_name:v" for
 * Redis INFO. */
static void bs_line(struct evbuffer *out, bool info, const char *tier, const char *name,
                    int64_t v)
{
    if (info)
        evbuffer_add_printf(out, "%s_%s:%" PRId64 "\r\n", tier, name, v);
    else
        evbuffer_add_printf(out, "STAT %s:%s %" PRId64 "\r\n", tier, name, v);
}

/* One tier's lines. */
static void bs_tier_lines(const struct backend_stats *bs, const char *pool, const char *tier,
                          bool info, struct evbuffer *out)
{
    uint32_t servers = 0, up = 0;
    bool redis = false;
    for (uint32_t i = 0; i < bs->nlast; i++) {
        const struct bs_server *s = &bs->last[i];
        if (strcmp(s->pool, pool) != 0 || strcmp(s->tier, tier) != 0)
            continue;
        servers++;
        up += s->ok;
        redis = s->redis;
    }
    bs_line(out, info, tier, "servers", servers);
    bs_line(out, info, tier, "servers_up", up);
    const char *const *names = redis ? bs_redis_names : bs_mc_names;
    size_t n = redis ? UTIL_ARRAY_LEN(bs_redis_names) : UTIL_ARRAY_LEN(bs_mc_names);
    for (size_t f = 0; f < n; f++) {
        int64_t sum;
        if (bs_sum(bs, pool, tier, f, &sum))
            bs_line(out, info, tier, names[f], sum);
    }
}

static void bs_lines(struct backend_stats *bs, const char *pool, bool info,
                     struct evbuffer *out)
{
    const char *tiers[64];
    if (bs == NULL)
        return;
    pthread_mutex_lock(&bs->lock);
    uint32_t n = bs_tiers(bs, pool, tiers, UTIL_ARRAY_LEN(tiers));
    for (uint32_t t = 0; t < n; t++)
        bs_tier_lines(bs, pool, tiers[t], info, out);
    pthread_mutex_unlock(&bs->lock);
}

void backend_stats_stat_lines(struct backend_stats *bs, const char *pool,
                              struct evbuffer *out)
{
    bs_lines(bs, pool, false, out);
}

void backend_stats_info_lines(struct backend_stats *bs, const char *pool,
                              struct evbuffer *out)
{
    bs_lines(bs, pool, true, out);
}

/* ---- the metrics ------------------------------------------------------- */

static void bs_labels(struct evbuffer *out, const char *pool, const char *tier,
                      const char *server)
{
    evbuffer_add_printf(out, "{pool=\"");
    metrics_escape(out, pool, true);
    evbuffer_add_printf(out, "\",tier=\"");
    metrics_escape(out, tier, true);
    if (server != NULL) {
        evbuffer_add_printf(out, "\",server=\"");
        metrics_escape(out, server, true);
    }
    evbuffer_add_printf(out, "\"}");
}

/* Field f summed over the servers of (pool, tier) that answered; false
 * when none did. */
static bool bs_sum(const struct backend_stats *bs, const char *pool, const char *tier,
                   size_t f, int64_t *sum)
{
    bool any = false;
    *sum = 0;
    for (uint32_t i = 0; i < bs->nlast; i++) {
        const struct bs_server *s = &bs->last[i];
        if (!s->ok || strcmp(s->pool, pool) != 0 || strcmp(s->tier, tier) != 0)
            continue;
        *sum += s->v[f];
        any = true;
    }
    return any;
}

/* strata_backend_FIELD{pool,tier} for every pool of one protocol. */
static void bs_write_fields(struct evbuffer *out, const struct backend_stats *bs, bool redis,
                            const char *const *names, const char *const *help, size_t n)
{
    const struct conf *conf = *bs->conf;
    for (size_t f = 0; f < n; f++) {
        evbuffer_add_printf(out, "# HELP strata_backend_%s %s, summed over a tier's servers\n"
                            "# TYPE strata_backend_%s gauge\n", names[f], help[f], names[f]);
        for (uint32_t p = 0; p < conf->npools; p++) {
            const struct conf_pool *pool = &conf->pools[p];
            char tier[32];
            int64_t sum;
            for (uint32_t t = 0; pool->redis == redis && stats_pool_tier(pool, t) != NULL; t++) {
                stats_tier_name(pool, t, tier, sizeof(tier));
                if (!bs_sum(bs, pool->name, tier, f, &sum))
                    continue;
                evbuffer_add_printf(out, "strata_backend_%s", names[f]);
                bs_labels(out, pool->name, tier, NULL);
                evbuffer_add_printf(out, " %" PRId64 "\n", sum);
            }
        }
    }
}

void backend_stats_write(struct evbuffer *out, const struct backend_stats *bs)
{
    if (bs == NULL)
        return;
    evbuffer_add_printf(out, "# HELP strata_backend_up Whether the server answered the last "
                        "round of stats (backend_stats_interval)\n"
                        "# TYPE strata_backend_up gauge\n");
    for (uint32_t i = 0; i < bs->nlast; i++) {
        evbuffer_add_printf(out, "strata_backend_up");
        bs_labels(out, bs->last[i].pool, bs->last[i].tier, bs->last[i].label);
        evbuffer_add_printf(out, " %d\n", bs->last[i].ok ? 1 : 0);
    }
    bs_write_fields(out, bs, false, bs_mc_names, bs_mc_help, UTIL_ARRAY_LEN(bs_mc_names));
    bs_write_fields(out, bs, true, bs_redis_names, bs_redis_help,
                    UTIL_ARRAY_LEN(bs_redis_names));
}
