/* hashkit: the twelve key hash functions and the three server distributions
 * of twemproxy (nutcracker 0.5.0), bit-compatible with it. Pure code: no
 * sockets, no libevent, no global state. */
#ifndef STRATA_HASHKIT_H
#define STRATA_HASHKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ACTION(ENUM_SUFFIX, yaml_name) */
#define HASHKIT_HASH_LIST(ACTION)          \
    ACTION(ONE_AT_A_TIME, one_at_a_time)   \
    ACTION(MD5,           md5)             \
    ACTION(CRC16,         crc16)           \
    ACTION(CRC32,         crc32)           \
    ACTION(CRC32A,        crc32a)          \
    ACTION(FNV1_64,       fnv1_64)         \
    ACTION(FNV1A_64,      fnv1a_64)        \
    ACTION(FNV1_32,       fnv1_32)         \
    ACTION(FNV1A_32,      fnv1a_32)        \
    ACTION(HSIEH,         hsieh)           \
    ACTION(MURMUR,        murmur)          \
    ACTION(JENKINS,       jenkins)

#define HASHKIT_ENUM_HASH(e, n) HASHKIT_HASH_##e,
enum hashkit_hash { HASHKIT_HASH_LIST(HASHKIT_ENUM_HASH) HASHKIT_HASH_COUNT };
#undef HASHKIT_ENUM_HASH

#define HASHKIT_DIST_LIST(ACTION) \
    ACTION(KETAMA, ketama)        \
    ACTION(MODULA, modula)        \
    ACTION(RANDOM, random)

#define HASHKIT_ENUM_DIST(e, n) HASHKIT_DIST_##e,
enum hashkit_dist { HASHKIT_DIST_LIST(HASHKIT_ENUM_DIST) HASHKIT_DIST_COUNT };
#undef HASHKIT_ENUM_DIST

/* Names as written in the pool file ("fnv1a_64", "ketama"). */
const char *hashkit_hash_name(enum hashkit_hash hash);
bool hashkit_hash_parse(const char *name, enum hashkit_hash *out);
const char *hashkit_dist_name(enum hashkit_dist dist);
bool hashkit_dist_parse(const char *name, enum hashkit_dist *out);

/* The 32-bit hash of key[0..len) under `hash`, exactly as nutcracker
 * computes it (bytes >= 0x80 included: see src/hashkit/hashkit_int.h).
 * An unknown `hash` gives 0. nutcracker itself never hashes an empty key
 * or the key of a one-server pool (it uses 0); that is the caller's call. */
uint32_t hashkit_hash(enum hashkit_hash hash, const char *key, size_t len);

/*
 * One server as the distribution sees it. Its nutcracker name is `name`,
 * or when that is NULL "host" (port 11211), "host:" (unix socket, port 0)
 * or "host:port". Ketama hashes "<that name>-N" for its points, and every
 * distribution orders servers by that name (see hashkit_ring_build). A
 * pool file that spells a port unusually ("host:011212") is matched only
 * if the caller passes the verbatim "host:port" text as `name`.
 */
struct hashkit_node {
    const char *name;     /* server name from the pool file, NULL if none */
    const char *host;     /* host, or the unix socket path */
    uint16_t    port;     /* 0 for a unix socket */
    uint32_t    weight;   /* > 0 */
    bool        live;     /* false: ejected, left out of the ring */
};

struct hashkit_point {
    uint32_t value;       /* ketama: position on the continuum, sorted;
                             modula: running total of live weights up to
                             and including this node; random: 0 */
    uint32_t index;       /* index into the node array */
};

/* The continuum nutcracker builds for a distribution over live nodes.
 * Zero it before the first build; it owns `points` until deinit. */
struct hashkit_ring {
    enum hashkit_dist     dist;
    struct hashkit_point *points;   /* NULL when npoints is 0 */
    uint32_t              npoints;
    uint32_t              nlive;    /* live nodes in the ring */
};

/*
 * (Re)builds `ring` over the live nodes of nodes[0..nnodes), in
 * nutcracker's server order (by name: shorter first, then bytewise), which
 * is not necessarily the pool file's; indices still refer to `nodes`. The
 * node strings are not kept. Frees the previous points on success.
 * Returns 0, or -1 (ring left as it was) when out of memory, when `dist`
 * is unknown, when a live node has weight 0, or when the live weights add
 * up past UINT32_MAX.
 */
int hashkit_ring_build(struct hashkit_ring *ring, enum hashkit_dist dist,
                       const struct hashkit_node *nodes, uint32_t nnodes);

/* Frees the points and empties the ring; safe to call twice. */
void hashkit_ring_deinit(struct hashkit_ring *ring);

/* The node index for a key hash, or UINT32_MAX when no node is live.
 * For HASHKIT_DIST_RANDOM the caller passes a random number as `hash`
 * (nutcracker: random()); it picks live node hash % nlive, unweighted. */
uint32_t hashkit_ring_pick(const struct hashkit_ring *ring, uint32_t hash);

#endif
