/* policy: turns a parsed request into backend requests on a pool's servers
 * and assembles the reply. A plain pool (servers: only) behaves as
 * twemproxy: each key goes to one server; a multi-key get is split per
 * server and merged back in key order. */
#ifndef STRATA_POLICY_H
#define STRATA_POLICY_H

#include <stdint.h>

#include "strata/backend.h"
#include "strata/conf.h"
#include "strata/msg.h"
#include "strata/router.h"
#include "strata/stats.h"

struct event_base;

/* One tier of a pool in one worker: routing plus server connections. */
struct policy_tier {
    const struct conf_tier *conf;
    struct router           router;
    struct backend_server  *servers;
    uint32_t                nservers;
    uint32_t                eject_epoch;   /* bumped by backend on eject */
    uint32_t                built_epoch;
    int64_t                 next_rebuild_ms; /* an ejected server's return */
};

struct policy_pool {
    const struct conf_pool *conf;
    struct stats_pool      *stats;
    struct policy_tier      master;
    struct evbuffer        *scratch;    /* a request's bytes before sending */
};

int policy_pool_init(struct policy_pool *pp, const struct conf_pool *conf,
                     struct event_base *base, const struct mc_limits *limits,
                     struct stats_pool *stats, uint64_t seed,
                     char *err, size_t errlen);
void policy_pool_deinit(struct policy_pool *pp);

/* Sends msg's backend requests. msg_complete(msg) follows, later or (for
 * a request that needs no backend) before this returns. */
void policy_dispatch(struct policy_pool *pp, struct msg *msg);

/* Frees the scratch a msg keeps for the policy. */
void policy_msg_deinit(struct msg *msg);

#endif
