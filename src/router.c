/* router: twemproxy's server_pool_idx: hash tag, then the tier's hash
 * function, then its distribution over live servers. */
#include <stdlib.h>
#include <string.h>

#include "strata/router.h"
#include "strata/util.h"

int router_init(struct router *r, const struct conf_tier *tier, uint64_t seed)
{
    memset(r, 0, sizeof(*r));
    r->conf = tier;
    r->nnodes = tier->nservers;
    r->nodes = util_xcalloc(tier->nservers, sizeof(*r->nodes));
    r->rng = seed != 0 ? seed : 0x9e3779b97f4a7c15ULL;
    for (uint32_t i = 0; i < tier->nservers; i++) {
        const struct conf_server *cs = &tier->servers[i];
        r->nodes[i] = (struct hashkit_node){
            .name = cs->name,
            .host = cs->addr.path != NULL ? cs->addr.path : cs->addr.host,
            .port = cs->addr.port,
            .weight = cs->weight,
            .live = true,
        };
    }
    return router_rebuild(r);
}

void router_deinit(struct router *r)
{
    hashkit_ring_deinit(&r->ring);
    free(r->nodes);
    r->nodes = NULL;
    r->nnodes = 0;
}

bool router_set_live(struct router *r, uint32_t i, bool live)
{
    if (i >= r->nnodes || r->nodes[i].live == live)
        return false;
    r->nodes[i].live = live;
    return true;
}

int router_rebuild(struct router *r)
{
    return hashkit_ring_build(&r->ring, r->conf->distribution, r->nodes, r->nnodes);
}

void router_hash_key(const struct conf_tier *tier, const char **key, size_t *len)
{
    if (!tier->has_hash_tag)
        return;
    const char *end = *key + *len;
    const char *start = memchr(*key, tier->hash_tag[0], *len);
    if (start == NULL)
        return;
    const char *close = memchr(start + 1, tier->hash_tag[1], (size_t)(end - start - 1));
    if (close == NULL || close - start <= 1)
        return;
    *key = start + 1;
    *len = (size_t)(close - start - 1);
}

uint32_t router_pick(struct router *r, const char *key, size_t len)
{
    if (r->ring.nlive == 0)
        return UINT32_MAX;
    if (r->conf->distribution == HASHKIT_DIST_RANDOM)
        return hashkit_ring_pick(&r->ring, util_xorshift(&r->rng));
    router_hash_key(r->conf, &key, &len);
    return hashkit_ring_pick(&r->ring, hashkit_hash(r->conf->hash, key, len));
}
