/* sentinel: what Redis Sentinel says about a pool's masters, without
 * sockets: a small RESP reply reader, the replies of SENTINEL
 * get-master-addr-by-name, SENTINEL replicas, ROLE and the pub/sub
 * events read into a state, and the pool configuration made from a
 * state (the running one with the masters' addresses replaced). The
 * sockets and the thread are sentinel_app's. */
#ifndef STRATA_SENTINEL_H
#define STRATA_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata/conf.h"

#define SENTINEL_HOST_LEN     256
#define SENTINEL_MAX_REPLICAS 16        /* per master; more are ignored */
#define SENTINEL_MAX_DEPTH    8         /* nested arrays in one reply */
#define SENTINEL_MAX_BULK     (1 << 20) /* one string of a reply */
#define SENTINEL_MAX_ELEMS    100000    /* one array of a reply */

enum sentinel_status {
    SENTINEL_OK,       /* one whole reply read */
    SENTINEL_AGAIN,    /* the buffer ends inside the reply */
    SENTINEL_ERROR,    /* not RESP, or over a limit: drop the connection */
};

enum sentinel_vtype {
    SENTINEL_V_NIL,
    SENTINEL_V_STATUS,    /* +OK */
    SENTINEL_V_ERROR,     /* -ERR ... */
    SENTINEL_V_INT,       /* :1 */
    SENTINEL_V_BULK,      /* $3 foo */
    SENTINEL_V_ARRAY,     /* *2 ... */
};

/* One RESP value; strings are NUL-terminated copies. */
struct sentinel_val {
    enum sentinel_vtype  type;
    int64_t              integer;
    char                *str;     /* status, error, bulk */
    size_t               len;
    struct sentinel_val *elems;   /* array */
    size_t               n;
};

struct sentinel_node {
    char     host[SENTINEL_HOST_LEN];
    uint16_t port;
};

/* One master name: where its master is and its usable replicas, sorted. */
struct sentinel_shard {
    struct sentinel_node master;
    struct sentinel_node replicas[SENTINEL_MAX_REPLICAS];
    uint32_t             nreplicas;
};

/* A pool's masters, in the order of its master_names. */
struct sentinel_state {
    struct sentinel_shard *shards;
    uint32_t               nshards;
};

/* Reads one reply from buf[0..len): OK with *out (free it with
 * sentinel_val_deinit) and *used bytes consumed; AGAIN when incomplete;
 * ERROR on anything that is not RESP2. */
enum sentinel_status sentinel_resp_parse(const char *buf, size_t len, size_t *used,
                                         struct sentinel_val *out);
void sentinel_val_deinit(struct sentinel_val *v);

/* A command in RESP (an array of bulk strings): a heap buffer of *len
 * bytes, or NULL when out of memory. */
char *sentinel_command(uint32_t argc, const char *const *argv, size_t *len);

/* The reply of SENTINEL get-master-addr-by-name: 0 with *out, or -1
 * (nil: the Sentinel does not know the name; an error; garbage). */
int sentinel_master_reply(const struct sentinel_val *v, struct sentinel_node *out);
/* The reply of SENTINEL replicas NAME into shard->replicas: those not
 * flagged s_down, o_down or disconnected and whose link to the master is
 * ok, sorted by host and port. 0, or -1 when it is not such a reply. */
int sentinel_replicas_reply(const struct sentinel_val *v, struct sentinel_shard *shard);
/* Whether a ROLE reply says master. */
bool sentinel_role_is_master(const struct sentinel_val *v);
/* A pub/sub push ["message", CHANNEL, PAYLOAD]: true with the channel
 * copied into `channel` (cut to len); false for anything else
 * (subscribe confirmations). */
bool sentinel_event(const struct sentinel_val *v, char *channel, size_t len);

/* The payload of an instance event, "<type> <name> <ip> <port> @
 * <master-name> <master-ip> <master-port>" (e.g. +selected-slave): 0
 * with the instance's address in *node and the master's name in
 * `master` (cut to len); -1 for any other text. */
int sentinel_instance_event(const char *payload, struct sentinel_node *node, char *master,
                            size_t len);

/* Whether two shards say the same (master and replicas). */
bool sentinel_shard_equal(const struct sentinel_shard *a, const struct sentinel_shard *b);

/* Puts st into `pool` (a Sentinel pool with st->nshards master names):
 * master.servers[i] at st->shards[i].master; with sentinel_read_replicas
 * the `slaves` tiers rebuilt from the replicas (tier k holds replica
 * k mod n of each shard, its master when a shard has none; as many tiers
 * as the shard with most replicas; none: reads go to master). 0, or -1
 * when out of memory or the counts differ (pool unchanged then only for
 * the count check). */
int sentinel_pool_fill(struct conf_pool *pool, const struct sentinel_state *st);

/* A new configuration: `running` with pool `name` filled from st
 * (sentinel_pool_fill); NULL when the pool is not there, is not a
 * Sentinel pool of st's size, or out of memory. */
struct conf *sentinel_conf_switch(const struct conf *running, const char *name,
                                  const struct sentinel_state *st);

#endif
