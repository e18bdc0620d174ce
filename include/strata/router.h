/* router: key → server index within one tier: hash tag, hash function and
 * distribution, over the servers currently live. Pure: no sockets. */
#ifndef STRATA_ROUTER_H
#define STRATA_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata/conf.h"
#include "strata/hashkit.h"

struct router {
    const struct conf_tier *conf;
    struct hashkit_node    *nodes;    /* one per server, conf order */
    uint32_t                nnodes;
    struct hashkit_ring     ring;
    uint64_t                rng;      /* xorshift state for `random` */
};

/* Builds the ring over every server of `tier` (all live). 0 or -1. */
int router_init(struct router *r, const struct conf_tier *tier, uint64_t seed);
void router_deinit(struct router *r);

/* Marks server i live or not; returns true if that changed anything.
 * Call router_rebuild after a batch of changes. */
bool router_set_live(struct router *r, uint32_t i, bool live);
int router_rebuild(struct router *r);

/* The part of the key that is hashed: the text between the hash tag's two
 * characters when both are present and enclose something, else the key. */
void router_hash_key(const struct conf_tier *tier, const char **key, size_t *len);

/* Server index for `key`, or UINT32_MAX when no server is live. */
uint32_t router_pick(struct router *r, const char *key, size_t len);

#endif
