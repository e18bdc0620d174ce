/* dns: server host names followed, without threads or events (see
 * strata/dns.h and docs/operations.md, "Host names followed").
 *
 *   running conf ─► dns_hosts ─► (dns_app's thread: one lookup per name)
 *   answers ─► dns_pick per server ─► dns_conf_follow: a copy with the
 *              moved servers pinned to their new address ─► reload_apply
 *
 * A server is pinned through conf_addr.resolved: util_resolve connects
 * there without a lookup, and backend_server_reusable keeps a server's
 * connections only while the pinned address is the same. */
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "strata/dns.h"
#include "strata/log.h"
#include "strata/stats.h"
#include "strata/util.h"

/* ---- lookups ------------------------------------------------------------- */

/* Adds `sa` to out->addrs as text unless it is there already. */
static void answer_add(struct dns_answer *out, const struct sockaddr *sa)
{
    char text[DNS_ADDR_LEN];
    const void *bin = sa->sa_family == AF_INET
                      ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                      : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (out->naddrs == DNS_ADDRS_MAX || inet_ntop(sa->sa_family, bin, text, sizeof(text)) == NULL)
        return;
    for (uint32_t i = 0; i < out->naddrs; i++)
        if (strcmp(out->addrs[i], text) == 0)
            return;
    memcpy(out->addrs[out->naddrs++], text, sizeof(text));
}

/* One getaddrinfo_a request, held by the caller that waits for it and
 * by glibc's completion notice: whichever lets go last frees it. A lookup
 * past its bound is abandoned (never cancelled: a request glibc has
 * started cannot be), and freed when it ends. */
struct dns_lookup {
    struct gaicb    cb;
    struct addrinfo hints;
    int             refs;               /* atomic */
    char            host[];
};

static void lookup_drop(struct dns_lookup *l)
{
    if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (l->cb.ar_result != NULL)
        freeaddrinfo(l->cb.ar_result);
    free(l);
}

static void lookup_notified(union sigval sv)
{
    lookup_drop(sv.sival_ptr);
}

/* Waits for l until deadline (monotonic ms): gai_error's value then
 * (EAI_INPROGRESS: still running). */
static int lookup_wait(struct dns_lookup *l, int64_t deadline)
{
    const struct gaicb *list[] = { &l->cb };
    int rc;
    while ((rc = gai_error(&l->cb)) == EAI_INPROGRESS) {
        int64_t left = deadline - util_now_ms();
        if (left <= 0)
            break;
        struct timespec ts = { left / 1000, (left % 1000) * 1000000 };
        gai_suspend(list, 1, &ts);
    }
    return rc;
}

void dns_resolve_system(const char *host, struct dns_answer *out)
{
    size_t len = strlen(host) + 1;
    struct dns_lookup *l = util_xcalloc(1, sizeof(*l) + len);
    memcpy(l->host, host, len);
    l->hints = (struct addrinfo){ .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    l->cb = (struct gaicb){ .ar_name = l->host, .ar_request = &l->hints };
    l->refs = 2;
    struct sigevent sev = { .sigev_notify = SIGEV_THREAD,
                            .sigev_notify_function = lookup_notified,
                            .sigev_value.sival_ptr = l };
    struct gaicb *list[] = { &l->cb };
    out->ok = false;
    out->naddrs = 0;
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
    if (rc != 0)
        lookup_drop(l);   /* no notice will come */
    else
        rc = lookup_wait(l, util_now_ms() + DNS_LOOKUP_MS);
    for (struct addrinfo *ai = rc == 0 ? l->cb.ar_result : NULL; ai != NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            answer_add(out, ai->ai_addr);
    out->ok = out->naddrs > 0;
    if (rc == EAI_INPROGRESS)
        snprintf(out->why, sizeof(out->why), "no answer within %d ms", DNS_LOOKUP_MS);
    else if (!out->ok)
        snprintf(out->why, sizeof(out->why), "%s", rc != 0 ? gai_strerror(rc) : "no address");
    lookup_drop(l);
}

/* ---- which servers ------------------------------------------------------- */

bool dns_addr_is_name(const struct conf_addr *addr)
{
    unsigned char bin[sizeof(struct in6_addr)];
    if (addr->path != NULL || addr->host == NULL || addr->host[0] == '\0')
        return false;
    return inet_pton(AF_INET, addr->host, bin) != 1 && inet_pton(AF_INET6, addr->host, bin) != 1;
}

bool dns_pool_followed(const struct conf_pool *pool)
{
    return pool->nsentinels == 0;
}

/* Calls fn on every followed server of conf written with a host name. */
typedef void (*server_fn)(const struct conf_pool *pool, uint32_t tier,
                          struct conf_server *server, void *arg);

static void servers_each(const struct conf *conf, server_fn fn, void *arg)
{
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *pool = &conf->pools[p];
        const struct conf_tier *tier;
        for (uint32_t t = 0; dns_pool_followed(pool) && (tier = stats_pool_tier(pool, t)) != NULL;
             t++) {
            /* the conf's own servers: the caller owns conf */
            struct conf_server *servers = tier->servers;
            for (uint32_t i = 0; i < tier->nservers; i++)
                if (dns_addr_is_name(&servers[i].addr))
                    fn(pool, t, &servers[i], arg);
        }
    }
}

struct hosts_acc {
    char   **hosts;
    uint32_t n;
};

static void hosts_add(const struct conf_pool *pool, uint32_t tier, struct conf_server *s,
                      void *arg)
{
    (void)pool; (void)tier;
    struct hosts_acc *acc = arg;
    for (uint32_t i = 0; i < acc->n; i++)
        if (strcmp(acc->hosts[i], s->addr.host) == 0)
            return;
    acc->hosts = util_xrealloc(acc->hosts, acc->n + 1, sizeof(*acc->hosts));
    acc->hosts[acc->n++] = util_xstrdup(s->addr.host);
}

char **dns_hosts(const struct conf *conf, uint32_t *n)
{
    struct hosts_acc acc = { NULL, 0 };
    servers_each(conf, hosts_add, &acc);
    *n = acc.n;
    return acc.hosts;
}

void dns_hosts_free(char ***hosts, uint32_t n)
{
    for (uint32_t i = 0; *hosts != NULL && i < n; i++)
        free((*hosts)[i]);
    free(*hosts);
    *hosts = NULL;
}

/* ---- following ----------------------------------------------------------- */

const char *dns_pick(const char *in_use, const struct dns_answer *answer)
{
    if (!answer->ok || answer->naddrs == 0)
        return NULL;
    for (uint32_t i = 0; in_use != NULL && i < answer->naddrs; i++)
        if (strcmp(answer->addrs[i], in_use) == 0)
            return in_use;
    return answer->addrs[0];
}

static const struct dns_answer *answer_find(const struct dns_answer *answers, uint32_t n,
                                            const char *host)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(answers[i].host, host) == 0)
            return &answers[i];
    return NULL;
}

/* The address `s` moves to after `answers`, or NULL when it stays. */
static const char *server_move(const struct conf_server *s, const struct dns_answer *answers,
                               uint32_t n)
{
    const struct dns_answer *a = answer_find(answers, n, s->addr.host);
    const char *pick = a != NULL ? dns_pick(s->addr.resolved, a) : NULL;
    if (pick == NULL || (s->addr.resolved != NULL && strcmp(pick, s->addr.resolved) == 0))
        return NULL;
    return pick;
}

struct follow_acc {
    const struct dns_answer *answers;
    uint32_t                 n;
    uint32_t                 moved;
};

/* Pins `s` to its new address, logged. */
static void server_follow(const struct conf_pool *pool, uint32_t tier, struct conf_server *s,
                          void *arg)
{
    struct follow_acc *acc = arg;
    const char *to = server_move(s, acc->answers, acc->n);
    if (to == NULL)
        return;
    char tname[64];
    stats_tier_name(pool, tier, tname, sizeof(tname));
    log_notice("pool %s tier %s server %s: %s now resolves to %s (was %s)", pool->name, tname,
               s->name != NULL ? s->name : s->text, s->addr.host, to,
               s->addr.resolved != NULL ? s->addr.resolved : "not pinned");
    free(s->addr.resolved);
    s->addr.resolved = util_xstrdup(to);
    acc->moved++;
}

static void server_count_moves(const struct conf_pool *pool, uint32_t tier,
                               struct conf_server *s, void *arg)
{
    (void)pool; (void)tier;
    struct follow_acc *acc = arg;
    acc->moved += server_move(s, acc->answers, acc->n) != NULL;
}

struct conf *dns_conf_follow(const struct conf *running, const struct dns_answer *answers,
                             uint32_t nanswers)
{
    struct follow_acc acc = { answers, nanswers, 0 };
    servers_each(running, server_count_moves, &acc);
    if (acc.moved == 0)
        return NULL;
    struct conf *conf = conf_copy(running);
    if (conf == NULL) {
        log_error("dns: out of memory for the new configuration");
        return NULL;
    }
    acc.moved = 0;
    servers_each(conf, server_follow, &acc);
    return conf;
}

/* ---- pinning a configuration --------------------------------------------- */

struct pin_acc {
    const struct conf *running;
    const struct conf *conf;
    dns_resolve_fn     resolve;
    uint32_t           lookups;
    const char        *found;      /* pinned_find's result */
    const char        *host;
};

static void pinned_visit(const struct conf_pool *pool, uint32_t tier, struct conf_server *s,
                         void *arg)
{
    (void)pool; (void)tier;
    struct pin_acc *acc = arg;
    if (acc->found == NULL && s->addr.resolved != NULL && strcmp(s->addr.host, acc->host) == 0)
        acc->found = s->addr.resolved;
}

/* The address a server of `host` is pinned to in `conf`, or NULL. */
static const char *pinned_find(const struct conf *conf, const char *host, struct pin_acc *acc)
{
    acc->found = NULL;
    acc->host = host;
    if (conf != NULL)
        servers_each(conf, pinned_visit, acc);
    return acc->found;
}

static void server_pin(const struct conf_pool *pool, uint32_t tier, struct conf_server *s,
                       void *arg)
{
    (void)pool; (void)tier;
    struct pin_acc *acc = arg;
    if (s->addr.resolved != NULL)
        return;
    const char *to = pinned_find(acc->running, s->addr.host, acc);
    if (to == NULL)
        to = pinned_find(acc->conf, s->addr.host, acc);
    if (to != NULL) {
        s->addr.resolved = util_xstrdup(to);
        return;
    }
    struct dns_answer a = { .ok = false };
    snprintf(a.host, sizeof(a.host), "%s", s->addr.host);
    acc->resolve(s->addr.host, &a);
    acc->lookups++;
    if (dns_pick(NULL, &a) != NULL)
        s->addr.resolved = util_xstrdup(dns_pick(NULL, &a));
    else
        log_warn("dns: %s: %s; resolved where it is used", s->addr.host, a.why);
}

uint32_t dns_conf_pin(struct conf *conf, const struct conf *running, dns_resolve_fn resolve)
{
    struct pin_acc acc = { .running = running, .conf = conf, .resolve = resolve };
    servers_each(conf, server_pin, &acc);
    return acc.lookups;
}
