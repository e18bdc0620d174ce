/* conf_guard: the shrink guard of reloads (see conf_guard.h). */
#include <stdio.h>
#include <string.h>

#include "strata/conf_guard.h"
#include "strata/stats.h"

/* The pool of `conf` named `name`, or NULL. */
static const struct conf_pool *guard_pool(const struct conf *conf, const char *name)
{
    for (uint32_t p = 0; p < conf->npools; p++)
        if (strcmp(conf->pools[p].name, name) == 0)
            return &conf->pools[p];
    return NULL;
}

/* The tier of `pool` named `name` ("master", "l1[0]", ...), or NULL. */
static const struct conf_tier *guard_tier(const struct conf_pool *pool, const char *name)
{
    char tname[64];
    for (uint32_t t = 0; t < stats_pool_tier_count(pool); t++) {
        stats_tier_name(pool, t, tname, sizeof(tname));
        if (strcmp(tname, name) == 0)
            return stats_pool_tier(pool, t);
    }
    return NULL;
}

/* One pool both configurations have: 0, or -1 with why. */
static int guard_pool_check(const struct conf_pool *old, const struct conf_pool *new,
                            uint32_t max_loss_pct, char *why, size_t whylen)
{
    char tname[64];
    for (uint32_t t = 0; t < stats_pool_tier_count(old); t++) {
        const struct conf_tier *ot = stats_pool_tier(old, t);
        stats_tier_name(old, t, tname, sizeof(tname));
        const struct conf_tier *nt = guard_tier(new, tname);
        if (nt == NULL || nt->nservers >= ot->nservers)
            continue;   /* a tier removed whole is a change of topology */
        uint32_t before = ot->nservers, after = nt->nservers;
        uint64_t loss_pct = (uint64_t)(before - after) * 100 / before;
        if (loss_pct <= max_loss_pct)
            continue;
        snprintf(why, whylen, "pool %s: tier %s would go from %u servers to %u "
                 "(%llu%% fewer; reload_max_server_loss is %u)", old->name, tname,
                 before, after, (unsigned long long)loss_pct, max_loss_pct);
        return -1;
    }
    return 0;
}

int conf_guard_check(const struct conf *running, const struct conf *next,
                     uint32_t max_loss_pct, char *why, size_t whylen)
{
    if (running == NULL || max_loss_pct >= 100)
        return 0;
    for (uint32_t p = 0; p < running->npools; p++) {
        const struct conf_pool *old = &running->pools[p];
        const struct conf_pool *new = guard_pool(next, old->name);
        if (new != NULL && guard_pool_check(old, new, max_loss_pct, why, whylen) != 0)
            return -1;
    }
    return 0;
}
