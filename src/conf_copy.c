/* conf_copy: a deep copy of a pool configuration, so that a main-thread
 * source (sentinel_app) can change one pool of the running configuration
 * and hand the result to reload as a new generation; and a pool found by
 * name. */
#include <stdlib.h>
#include <string.h>

#include "strata/conf.h"

/* strdup that keeps NULL; *ok turns false when out of memory. */
static char *copy_str(const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    *ok &= d != NULL;
    return d;
}

static void copy_addr(struct conf_addr *to, const struct conf_addr *from, bool *ok)
{
    *to = *from;
    to->host = copy_str(from->host, ok);
    to->path = copy_str(from->path, ok);
    to->resolved = copy_str(from->resolved, ok);
}

/* Servers of `n` entries (a tier's, or a pool's Sentinels). */
static struct conf_server *copy_servers(const struct conf_server *from, uint32_t n, bool *ok)
{
    if (n == 0)
        return NULL;
    struct conf_server *to = calloc(n, sizeof(*to));
    if (to == NULL) {
        *ok = false;
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        to[i] = from[i];
        copy_addr(&to[i].addr, &from[i].addr, ok);
        to[i].name = copy_str(from[i].name, ok);
        to[i].text = copy_str(from[i].text, ok);
    }
    return to;
}

static void copy_tier(struct conf_tier *to, const struct conf_tier *from, bool *ok)
{
    *to = *from;
    to->servers = copy_servers(from->servers, from->nservers, ok);
    if (to->servers == NULL)
        to->nservers = 0;
}

/* A list of `n` tiers, or NULL for none. */
static struct conf_tier *copy_tiers(const struct conf_tier *from, uint32_t n, bool *ok)
{
    if (from == NULL || n == 0)
        return NULL;
    struct conf_tier *to = calloc(n, sizeof(*to));
    if (to == NULL) {
        *ok = false;
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++)
        copy_tier(&to[i], &from[i], ok);
    return to;
}

static char **copy_names(char *const *from, uint32_t n, bool *ok)
{
    if (n == 0)
        return NULL;
    char **to = calloc(n, sizeof(*to));
    if (to == NULL) {
        *ok = false;
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++)
        to[i] = copy_str(from[i], ok);
    return to;
}

/* Copies every pointer of `from` into `to` (a bitwise copy of it); on
 * failure the counts of lists that could not be made are zeroed, so
 * conf_destroy frees what was made. */
static void copy_pool(struct conf_pool *to, const struct conf_pool *from, bool *ok)
{
    *to = *from;
    to->name = copy_str(from->name, ok);
    copy_addr(&to->listen.addr, &from->listen.addr, ok);
    to->listen.text = copy_str(from->listen.text, ok);
    to->redis_auth = copy_str(from->redis_auth, ok);
    to->sentinel_auth = copy_str(from->sentinel_auth, ok);
    copy_tier(&to->master, &from->master, ok);
    to->slave = copy_tiers(from->slave, from->slave != NULL ? 1 : 0, ok);
    to->l1 = copy_tiers(from->l1, from->nl1, ok);
    to->nl1 = to->l1 != NULL ? from->nl1 : 0;
    to->replicas = copy_tiers(from->replicas, from->nreplicas, ok);
    to->nreplicas = to->replicas != NULL ? from->nreplicas : 0;
    to->slaves = copy_tiers(from->slaves, from->nslaves, ok);
    to->nslaves = to->slaves != NULL ? from->nslaves : 0;
    to->sentinels = copy_servers(from->sentinels, from->nsentinels, ok);
    to->nsentinels = to->sentinels != NULL ? from->nsentinels : 0;
    to->master_names = copy_names(from->master_names, from->nmaster_names, ok);
    to->nmaster_names = to->master_names != NULL ? from->nmaster_names : 0;
}

struct conf_pool *conf_pool_find(const struct conf *conf, const char *name)
{
    for (uint32_t p = 0; p < conf->npools; p++)
        if (strcmp(conf->pools[p].name, name) == 0)
            return &conf->pools[p];
    return NULL;
}

struct conf *conf_copy(const struct conf *conf)
{
    bool ok = true;
    struct conf *to = calloc(1, sizeof(*to));
    if (to == NULL)
        return NULL;
    to->path = copy_str(conf->path, &ok);
    to->pools = calloc(conf->npools + 1, sizeof(*to->pools));
    if (to->pools == NULL) {
        conf_destroy(&to);
        return NULL;
    }
    for (uint32_t p = 0; p < conf->npools; p++) {
        to->npools = p + 1;
        copy_pool(&to->pools[p], &conf->pools[p], &ok);
    }
    if (!ok)
        conf_destroy(&to);
    return to;
}
